"""Give a trained diffusers UNet2DConditionModel more transformer blocks per attention, keeping what it
computes.

    new_config, new_state = deepen(config, state, layers=(1, 2, 2))

`layers` is diffusers' `transformer_layers_per_block`: the transformer blocks in each attention of each
level, the down blocks' level order (the mid block takes the last entry, the up blocks the reversed
list). The capacity goes where the prompt is read and costs little time: a block at 8x8 latent pixels
works on 64 positions, where a wider deepest stage would quadruple every convolution there (and the
bundle's size past its 60 MB budget; docs/cute-mini.md).

Each added BasicTransformerBlock (self-attention, cross-attention to the prompt, feed-forward) adds
each of its three parts to its input; their output layers (`attn1.to_out.0`, `attn2.to_out.0`,
`ff.net.2`) start at zero, so the new block starts as the identity and the deeper UNet computes exactly
what the old one did (tests/test_deepen_unet.py). Their other layers start at diffusers' random
initialisation (from `seed`), so training moves them as soon as the output layers leave zero.
"""

from __future__ import annotations

from typing import Any

import torch
from add_attention import grown_state

# The layers through which an added block's three parts reach the residual stream.
_OUTPUTS = (".attn1.to_out.0.", ".attn2.to_out.0.", ".ff.net.2.")


def layers_per_level(config: dict[str, Any]) -> tuple[int, ...]:
    """The config's transformer blocks per level (a single number means that many at every level)."""
    levels = len(config["block_out_channels"])
    value = config.get("transformer_layers_per_block", 1)
    if isinstance(value, int):
        return (value,) * levels
    if len(value) != levels or not all(isinstance(v, int) for v in value):
        raise ValueError(f"transformer_layers_per_block = {value!r}: give one whole number per level ({levels})")
    return tuple(value)


def deepen(config: dict[str, Any], state: dict[str, torch.Tensor], layers: tuple[int, ...] | list[int],
           seed: int = 0) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, state dict) of the UNet with `layers` transformer blocks per level, the added blocks
    starting as the identity."""
    old = layers_per_level(config)
    layers = tuple(layers)
    if len(layers) != len(old) or not all(isinstance(n, int) for n in layers):
        raise ValueError(f"deepen: give one whole number of transformer blocks per level ({len(old)}), not {layers}")
    if any(n < o for n, o in zip(layers, old, strict=True)):
        raise ValueError(f"deepen: {layers} would remove transformer blocks from {old}")
    new_config = {**config, "transformer_layers_per_block": layers}
    return new_config, grown_state(new_config, state, _OUTPUTS, seed)
