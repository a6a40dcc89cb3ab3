"""tools/add_attention.py: a UNet given cross-attention at its top level computes exactly what it did
before (training can go on from the shipped model), and the new layers do read the prompt once their
output projection moves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from unet_growth import CUTE_MINI_SMALL, inputs, trained_unet, unet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from add_attention import add_attention  # noqa: E402

CONFIG = CUTE_MINI_SMALL


def test_added_attention_starts_as_identity_and_reads_the_prompt():
    state = trained_unet(CONFIG).state_dict()
    x, t, ctx = inputs(CONFIG)
    with torch.no_grad():
        ref = unet(CONFIG, state)(x, t, encoder_hidden_states=ctx).sample
    config, grown = add_attention(dict(CONFIG), state, level=0)
    assert config["down_block_types"] == ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    assert config["up_block_types"] == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    added = sorted(k for k in grown if k not in state)
    assert added and all(k.startswith(("down_blocks.0.attentions.", "up_blocks.2.attentions.")) for k in added)
    assert all(torch.equal(grown[k], v) for k, v in state.items())
    grown_unet = unet(config, grown)
    with torch.no_grad():
        out = grown_unet(x, t, encoder_hidden_states=ctx).sample
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
        # once proj_out moves, the top level's new layers change the output, and with the prompt
        block = grown_unet.down_blocks[0].attentions[0]
        block.proj_out.weight.normal_(0, 0.5)
        moved = grown_unet(x, t, encoder_hidden_states=ctx).sample
        h = torch.randn(2, CONFIG["block_out_channels"][0], 8, 8, generator=torch.Generator().manual_seed(2))
        own, swapped = (block(h, encoder_hidden_states=c).sample for c in (ctx, ctx.flip(0)))
    assert (moved - ref).abs().max() > 1e-2
    assert (own - swapped).abs().max() > 1e-3  # the new block itself reads the prompt


def test_refuses_a_level_that_has_attention_or_does_not_exist():
    state = trained_unet(CONFIG).state_dict()
    with pytest.raises(ValueError, match="already has attention"):
        add_attention(dict(CONFIG), state, level=1)
    with pytest.raises(ValueError, match="levels 0..2"):
        add_attention(dict(CONFIG), state, level=3)
