"""What the tests of the tools that grow a trained UNet share (tools/widen_unet.py, add_attention.py,
deepen_unet.py): a small UNet of cute-mini's layout, a "trained" one (every weight random, none zero),
fixed inputs, and a forward pass."""

from __future__ import annotations

from typing import Any

import torch

# cute-mini's layout, smaller: no attention at the top level, cross-attention below, conv projections
CUTE_MINI_SMALL: dict[str, Any] = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
    norm_num_groups=32, cross_attention_dim=24, attention_head_dim=(2, 4, 4),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))


def trained_unet(config: dict[str, Any]):
    """A UNet2DConditionModel of `config` (seed 0) with every weight moved off diffusers' initialisation,
    which zeroes some layers: a stand-in for trained weights, where every weight counts."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return unet


def inputs(config: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latents [2, 4, 8, 8], timesteps, a 5-token context) for `config`, the same every call."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=g)
    ctx = torch.randn(2, 5, config["cross_attention_dim"], generator=g)
    return x, torch.tensor([20.0, 700.0]), ctx


def unet(config: dict[str, Any], state: dict[str, torch.Tensor]):
    """A UNet2DConditionModel of `config` holding `state` (strictly), in eval mode."""
    from diffusers import UNet2DConditionModel

    model = UNet2DConditionModel(**config).eval()
    model.load_state_dict(state)
    return model


def forward(config: dict[str, Any], state: dict[str, torch.Tensor], x, t, ctx) -> torch.Tensor:
    with torch.no_grad():
        return unet(config, state)(x, t, encoder_hidden_states=ctx).sample
