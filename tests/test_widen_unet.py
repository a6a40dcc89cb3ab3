"""tools/widen_unet.py: a UNet widened without noise computes what the narrow one does (so training can
go on from a shipped model at a larger width); with noise, the copies of a channel differ."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from unet_growth import CUTE_MINI_SMALL, forward, inputs, trained_unet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from widen_unet import widen  # noqa: E402

CONFIGS = {
    "cute-mini": CUTE_MINI_SMALL,
    # SD-style: attention everywhere, two layers per block, linear projections, 8 channels per group
    "sd-style": dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=2,
                     norm_num_groups=4, cross_attention_dim=12, attention_head_dim=2, use_linear_projection=True,
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("factor", [2, 3])
def test_widened_unet_computes_the_same(name, factor):
    config = CONFIGS[name]
    narrow = trained_unet(config)
    state = narrow.state_dict()
    x, t, ctx = inputs(config)
    ref = forward(config, state, x, t, ctx)

    wide_config, wide_state = widen(dict(narrow.config), state, factor=factor)
    assert wide_config["block_out_channels"] == tuple(factor * c for c in config["block_out_channels"])
    params = sum(v.numel() for v in wide_state.values())
    assert params > 2 * sum(v.numel() for v in state.values())
    got = forward(wide_config, wide_state, x, t, ctx)
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()

    # Noise parts the copies, and moves the output only a little.
    _, noisy = widen(dict(narrow.config), state, factor=factor, noise=0.01)
    w = noisy["down_blocks.0.resnets.0.conv1.weight"]
    assert not torch.equal(w[0], w[1])
    moved = (forward(wide_config, noisy, x, t, ctx) - ref).abs().max() / ref.abs().max()
    assert 0 < moved < 0.2


def test_widen_refuses_what_it_cannot_keep():
    from diffusers import UNet2DConditionModel

    narrow = UNet2DConditionModel(**CONFIGS["sd-style"])
    with pytest.raises(ValueError, match="whole number"):
        widen(dict(narrow.config), narrow.state_dict(), factor=1.5)
    with pytest.raises(ValueError, match="timestep features"):
        widen({**narrow.config, "freq_shift": 1}, narrow.state_dict())
