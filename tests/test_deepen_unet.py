"""tools/deepen_unet.py: a UNet given more transformer blocks computes exactly what it did before (so
training can go on from a shipped model at a greater depth), and its new blocks can learn."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from unet_growth import CUTE_MINI_SMALL, forward, inputs, trained_unet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from deepen_unet import deepen, layers_per_level  # noqa: E402

CONFIG = CUTE_MINI_SMALL


def test_deepened_unet_computes_the_same_and_its_new_blocks_learn():
    from diffusers import UNet2DConditionModel

    narrow = trained_unet(CONFIG)
    state = narrow.state_dict()
    x, t, ctx = inputs(CONFIG)
    ref = forward(CONFIG, state, x, t, ctx)

    config, deep = deepen(dict(narrow.config), state, (1, 2, 3))
    assert layers_per_level(config) == (1, 2, 3)
    # Level 1: one more block in its down and its (second) up attentions; level 2 (and the mid block,
    # which takes the last level's depth): two more.
    assert "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight" in deep
    assert "up_blocks.1.attentions.1.transformer_blocks.1.ff.net.2.weight" in deep
    assert "mid_block.attentions.0.transformer_blocks.2.norm1.weight" in deep
    assert "down_blocks.1.attentions.0.transformer_blocks.2.norm1.weight" not in deep
    assert sum(v.numel() for v in deep.values()) > 1.3 * sum(v.numel() for v in state.values())
    got = forward(config, deep, x, t, ctx)
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()

    # The added blocks are not dead: one optimiser step on any loss changes the output.
    unet = UNet2DConditionModel(**config)
    unet.load_state_dict(deep)
    opt = torch.optim.SGD([p for n, p in unet.named_parameters() if ".transformer_blocks.1." in n], lr=0.1)
    unet(x, t, encoder_hidden_states=ctx).sample.pow(2).mean().backward()
    opt.step()
    with torch.no_grad():
        moved = unet(x, t, encoder_hidden_states=ctx).sample
    assert (moved - ref).abs().max() > 1e-3 * ref.abs().max()


def test_deepen_refuses_what_it_cannot_do():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**{**CONFIG, "transformer_layers_per_block": (1, 2, 2)})
    with pytest.raises(ValueError, match="remove"):
        deepen(dict(unet.config), unet.state_dict(), (1, 1, 2))
    with pytest.raises(ValueError, match="per level"):
        deepen(dict(unet.config), unet.state_dict(), (2, 2))
