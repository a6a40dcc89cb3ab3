"""Give a trained diffusers UNet2DConditionModel cross-attention at a level that has none, keeping what
it computes.

    new_config, new_state = add_attention(config, state, level=0)

cute-mini's UNet reads the prompt only at its two lower levels (16x16 and 8x8 latent pixels at 512
pixels), where a hat or a pencil is one or two latent pixels; its top level (32x32) draws them without
seeing the words. This turns that level's DownBlock2D into a CrossAttnDownBlock2D and the matching
UpBlock2D into a CrossAttnUpBlock2D. The blocks' ResNets and samplers keep their names and weights;
each new Transformer2DModel (self-attention, cross-attention to the prompt, feed-forward) adds its output
to its input through `proj_out`, which starts at zero, so the new UNet starts out computing exactly what
the old one did and training decides what the new layers add (tests/test_add_attention.py).
The level's number of heads is the config's `attention_head_dim` entry for it (diffusers' name for the
number of heads when `num_attention_heads` is unset).
"""

from __future__ import annotations

from typing import Any

import torch


def add_attention(config: dict[str, Any], state: dict[str, torch.Tensor], level: int = 0,
                  seed: int = 0) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state dict) of the UNet with cross-attention added at `level` (0 = the top, full-size
    level), its new layers initialised from `seed` and their output projections zero."""
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    n = len(down)
    if not 0 <= level < n:
        raise ValueError(f"level {level}: the UNet has levels 0..{n - 1}")
    if down[level] != "DownBlock2D" or up[n - 1 - level] != "UpBlock2D":
        raise ValueError(f"level {level} already has attention ({down[level]}, {up[n - 1 - level]})")
    down[level], up[n - 1 - level] = "CrossAttnDownBlock2D", "CrossAttnUpBlock2D"
    new_config = {**config, "down_block_types": tuple(down), "up_block_types": tuple(up)}
    return new_config, grown_state(new_config, state, (".proj_out.",), seed)


def grown_state(new_config: dict[str, Any], state: dict[str, torch.Tensor], zero: tuple[str, ...],
                seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict of a UNet of `new_config` that holds every tensor of `state` (the old UNet's, all of
    whose names it must have) and new layers initialised from `seed`, those whose names contain one of
    `zero` set to zero (the layers through which the new ones reach the old ones' outputs). Shared with
    tools/deepen_unet.py."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        new_state = UNet2DConditionModel(**new_config).state_dict()
    missing = [k for k in state if k not in new_state]
    if missing:
        raise ValueError(f"the old UNet's {missing[0]} has no place in the new one")
    added = [k for k in new_state if k not in state]
    new_state.update(state)
    for k in added:
        if any(part in k for part in zero):
            new_state[k] = torch.zeros_like(new_state[k])
    return new_state
