"""Widen a trained diffusers UNet2DConditionModel by a whole factor, keeping what it computes.

    new_config, new_state = widen(config, state, factor=2, noise=0.01)

Every channel width (block_out_channels, and so the time embedding, the attention heads' widths,
the feed-forward widths) grows `factor` times; the latent channels, the cross-attention context and
the number of heads stay. Each old channel c becomes the channels factor*c .. factor*c + factor - 1
of the wider model, all copies of it (Net2Net's "wider" operation), so that:

- a layer's outputs (conv or linear rows, biases, norm weights) are repeated per copy;
- a layer's inputs from a widened space are repeated and divided by `factor`: the copies sum to the
  old input's contribution;
- GroupNorm and LayerNorm see each old group's values `factor` times over: same mean and variance
  (a new group is exactly the copies of the old group's channels, concatenations included);
- attention keeps its heads; a head's width grows `factor` times, so its dot products do too, and its
  softmax scale shrinks by sqrt(factor): the queries are scaled by 1/sqrt(factor) to keep the logits;
- the sinusoidal timestep features widen to twice the frequencies, among them every old one (the
  exponent -ln(10000) i / half: new frequency 2k is old frequency k); the time embedding's first
  layer reads only those columns, the others start at zero.

Copies of one channel would get identical gradients and never part, so `noise` (relative to each
tensor's standard deviation) is added to the widened weights, which moves the function only a little.
tests/test_widen_unet.py checks that without noise the wide model's output equals the narrow one's.
"""

from __future__ import annotations

import math
from typing import Any

import torch

# Input dimensions that are not channel spaces of the UNet: the latents and the text context.
_FIXED_INPUTS = ("conv_in.weight", ".attn2.to_k.weight", ".attn2.to_v.weight")


def _timestep_columns(old: int, factor: int) -> torch.Tensor:
    """For each column of the wider time_proj ([cos | sin] of `factor * old / 2` frequencies), the old
    column with the same frequency, or -1 where the old embedding had none."""
    half_old, half_new = old // 2, old * factor // 2
    cols = torch.full((old * factor,), -1, dtype=torch.long)
    for k in range(half_old):
        cols[factor * k] = k                        # cos of frequency k
        cols[half_new + factor * k] = half_old + k  # sin of frequency k
    return cols


def widen(config: dict[str, Any], state: dict[str, torch.Tensor], factor: int = 2, noise: float = 0.0,
          seed: int = 0) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from diffusers import UNet2DConditionModel

    if factor < 1 or int(factor) != factor:
        raise ValueError(f"widen: factor must be a whole number >= 1, not {factor}")
    if not config.get("flip_sin_to_cos", True) or config.get("freq_shift", 0) != 0:
        raise ValueError("widen: only the default timestep features (flip_sin_to_cos, freq_shift 0) are supported")
    if config.get("num_attention_heads") is not None:
        raise ValueError("widen: give heads as attention_head_dim (diffusers' heads count), not num_attention_heads")
    new_config = {k: v for k, v in config.items() if not k.startswith("_")}
    new_config["block_out_channels"] = tuple(c * factor for c in config["block_out_channels"])
    template = UNet2DConditionModel(**new_config).state_dict()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, new in template.items():
        old = state[name].float()
        w = old
        for dim in range(old.dim()):
            if new.shape[dim] == old.shape[dim]:
                continue
            if new.shape[dim] != factor * old.shape[dim]:
                raise ValueError(f"widen: {name} dim {dim}: {old.shape[dim]} -> {new.shape[dim]} is not x{factor}")
            if name == "time_embedding.linear_1.weight" and dim == 1:
                cols = _timestep_columns(old.shape[1], factor)
                w = torch.cat([w, torch.zeros_like(w[:, :1])], dim=1)[:, cols]  # -1 picks the zero column
                continue
            w = w.index_select(dim, torch.arange(new.shape[dim]) // factor)
            if dim == 1 and not name.endswith(_FIXED_INPUTS):
                w = w / factor  # an input from a widened space: the copies share its weight
        if name.endswith(".to_q.weight") and w.shape != old.shape:
            w = w / math.sqrt(factor)
        if noise and w.dim() > 1 and w.shape != old.shape:
            w = w + noise * w.std() * torch.randn(w.shape, generator=gen)
        out[name] = w.to(new.dtype).contiguous()
    return new_config, out
