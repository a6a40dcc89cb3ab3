"""Layout inputs for cute-mini's UNet: where the animals, the accessories and the place are, as masks
beside the latent. An experiment (docs/cute-mini-history.md, section 27), not a cutecpp feature: the core
reads no layout.

    config, state = add_layout_inputs(config, state)     # a trained UNet that also reads the masks
    masks = layout_masks(labels["boxes"], 512)           # float32 [3, 32, 32] from a render's boxes

The UNet's first convolution gets one more input channel per kind of box (LAYOUT_KINDS); their weights
start at zero, so the new UNet computes exactly what the old one did until training makes use of them
(tests/test_layout_unet.py). A mask is 1 on the latent pixels a box of its kind touches (the rule of
`train_unet.item_mask`, which `prepare` stores for each picture).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

LAYOUT_KINDS = ("animal", "item", "place")
# A mask's 1 as the UNet reads it. The masks' conv_in weights start at zero and Adam moves each weight by
# about the learning rate a step, whatever its gradient, so a larger input makes the masks' part of the
# output grow as many times faster: at 1, the first 400 steps from the bundle (lr warming up towards 1e-4)
# took those weights to a mean |w| of 5-9e-4, against the latent's 0.039. A run trained at another value
# reads wrongly at this one (the checkpoint does not record it).
MASK_VALUE = 10.0


def add_layout_inputs(config: dict[str, Any], state: dict[str, torch.Tensor]) -> tuple[dict[str, Any],
                                                                                      dict[str, torch.Tensor]]:
    """(config, state dict) of the UNet with len(LAYOUT_KINDS) more input channels after its latent ones,
    read through zero weights in conv_in."""
    if config["in_channels"] != config["out_channels"]:
        raise ValueError(f"the UNet already reads {config['in_channels'] - config['out_channels']} channels "
                         "besides its latent")
    weight = state["conv_in.weight"]
    extra = torch.zeros(weight.shape[0], len(LAYOUT_KINDS), *weight.shape[2:], dtype=weight.dtype)
    new_state = {**state, "conv_in.weight": torch.cat([weight, extra], dim=1)}
    return {**config, "in_channels": config["in_channels"] + len(LAYOUT_KINDS)}, new_state


def reads_layout(config: dict[str, Any]) -> bool:
    """Whether a UNet of this config takes the layout masks after its latent."""
    extra = config["in_channels"] - config["out_channels"]
    if extra not in (0, len(LAYOUT_KINDS)):
        raise ValueError(f"a UNet with {config['in_channels']} input and {config['out_channels']} output channels: "
                         f"not a latent with or without the {len(LAYOUT_KINDS)} layout masks")
    return extra > 0


def unet_input(latent: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """What a layout UNet reads: the latent [B, C, h, w], then the masks [B, 3, h, w] (0 or 1) at MASK_VALUE."""
    return torch.cat([latent, masks.to(latent.dtype) * MASK_VALUE], dim=1)


def layout_masks(boxes: list[dict], size: int) -> np.ndarray:
    """float32 [len(LAYOUT_KINDS), 32, 32]: each kind's boxes (a render's labels, in pixels of a `size`
    picture) as the latent pixels they touch."""
    from train_unet import item_mask

    return np.stack([item_mask(boxes, size, kind) for kind in LAYOUT_KINDS]).astype(np.float32)
