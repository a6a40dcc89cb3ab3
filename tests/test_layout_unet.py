"""tools/layout_unet.py and tools/layout_score.py: a UNet given layout masks starts out computing what it
did without them, the masks mark each kind's boxes, and the scorer's PyTorch networks draw what the core
draws from the same weights."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cutecpp
from cutecpp.model import Context, Model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import cute_mini  # noqa: E402
import guidance_schedule  # noqa: E402
import layout_score  # noqa: E402
import layout_unet  # noqa: E402
import train_unet  # noqa: E402

SMALL = {**cute_mini.UNET, "block_out_channels": (32, 32, 32), "sample_size": 8}


def test_layout_inputs_start_as_the_unet_they_grow_from():
    torch.manual_seed(0)
    unet, _ = train_unet.make_models(SMALL)
    config, state = layout_unet.add_layout_inputs(SMALL, unet.state_dict())
    assert config["in_channels"] == SMALL["in_channels"] + 3 and config["out_channels"] == SMALL["out_channels"]
    assert layout_unet.reads_layout(config) and not layout_unet.reads_layout(SMALL)
    grown, _ = train_unet.make_models(config)
    grown.load_state_dict(state)  # strict
    x = torch.randn(2, SMALL["in_channels"], 8, 8)
    masks = (torch.rand(2, 3, 8, 8) > 0.5).float()
    t, ctx = torch.tensor([300.0, 800.0]), torch.randn(2, 5, SMALL["cross_attention_dim"])
    with torch.no_grad():
        want = unet(x, t, encoder_hidden_states=ctx).sample
        got = grown(layout_unet.unet_input(x, masks), t, encoder_hidden_states=ctx).sample
        assert torch.equal(got, want)  # the masks' weights are zero: nothing changes
        grown.conv_in.weight[:, -1] += 0.01  # ... until they are not: then the place mask is read, at MASK_VALUE
        moved = grown(layout_unet.unet_input(x, masks), t, encoder_hidden_states=ctx).sample
        grown.conv_in.weight[:, -1] += 0.01 * (layout_unet.MASK_VALUE - 1)  # the same change, read at 1
        by_hand = grown(torch.cat([x, masks], 1), t, encoder_hidden_states=ctx).sample
    assert (moved - want).abs().max() > 1e-3
    torch.testing.assert_close(moved, by_hand)
    with pytest.raises(ValueError, match="already reads 3 channels"):
        layout_unet.add_layout_inputs(config, state)
    with pytest.raises(ValueError, match="not a latent with or without"):
        layout_unet.reads_layout({"in_channels": 17, "out_channels": 16})


def test_layout_masks_mark_each_kind_of_box():
    boxes = [{"kind": "animal", "box": [128, 128, 384, 384]}, {"kind": "item", "box": [0, 0, 16, 16]},
             {"kind": "figure", "box": [0, 0, 512, 512]}, {"kind": "place", "box": [0, 480, 512, 512]}]
    masks = layout_unet.layout_masks(boxes, 512)
    assert masks.shape == (3, 32, 32) and masks.dtype == np.float32
    assert masks[0].sum() == 16 * 16 and masks[0, 8:24, 8:24].all()
    assert masks[1].sum() == 1 and masks[1, 0, 0] == 1
    assert masks[2].sum() == 2 * 32 and masks[2, 30:].all()


@pytest.fixture(scope="module")
def shipped_as_checkpoint(tmp_path_factory):
    """The shipped bundle's UNet and alignment as a training checkpoint (bundle_models reads them back)."""
    config, unet, align = train_unet.bundle_models(cutecpp.default_model_path())
    path = tmp_path_factory.mktemp("ckpt") / "shipped.pt"
    torch.save({"unet_config": config, "ema_unet": unet.state_dict(), "ema_align": align.state_dict(), "step": 7},
               path)
    return path


def test_torch_networks_draw_what_the_core_draws(shipped_as_checkpoint):
    """The scorer's loop with the checkpoint's networks in PyTorch against Context.sample with the same
    weights in the core (f16 there, widened to f32 here): the same schedule, guidance and noise."""
    nets = layout_score.TorchNetworks(shipped_as_checkpoint, threads=2)
    assert nets.step == 7 and not nets.layout
    ctx = Context(Model.load(cutecpp.default_model_path()), threads=2)
    states = np.random.default_rng(0).standard_normal((6, cute_mini.TEXT_HIDDEN)).astype(np.float32)
    cond = ctx.align(states)
    assert np.abs(nets.align(states) - cond).max() <= 1e-5 * np.abs(cond).max()  # measured 7e-7
    uncond = np.repeat(ctx.align(np.zeros((1, cute_mini.TEXT_HIDDEN), np.float32)), len(cond), axis=0)
    want = ctx.sample(cond, uncond, seed=3, latent_size=8)
    got = guidance_schedule.sample(ctx, cond, uncond, seed=3, latent_size=8, unet=nets.unet)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 2e-3, err  # measured 3.9e-4 (4.3e-4 at the full 32x32 latent)
    other = guidance_schedule.sample(ctx, cond, uncond, seed=4, latent_size=8, unet=nets.unet)
    assert np.abs(other - want).max() / np.abs(want).max() > 0.2  # another seed is far: the bound means something


def test_a_layout_unet_with_zero_mask_weights_draws_as_without(shipped_as_checkpoint, tmp_path):
    """The scorer feeds a layout UNet its masks after the latent: with conv_in's mask weights still zero
    it predicts what the UNet it grew from predicts; without masks it refuses."""
    st = torch.load(shipped_as_checkpoint, weights_only=True)
    config, st["ema_unet"] = layout_unet.add_layout_inputs(st["unet_config"], st["ema_unet"])
    torch.save({**st, "unet_config": config}, tmp_path / "layout.pt")
    plain = layout_score.TorchNetworks(shipped_as_checkpoint, threads=2)
    nets = layout_score.TorchNetworks(tmp_path / "layout.pt", threads=2)
    assert nets.layout
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 16, 8, 8)).astype(np.float32)
    t, c = np.array([900.0, 300.0], np.float32), rng.standard_normal((2, 5, 256)).astype(np.float32)
    masks = (rng.random((3, 8, 8)) > 0.5).astype(np.float32)
    want = plain.unet(x, t, c)
    np.testing.assert_allclose(nets.unet(x, t, c, masks), want, rtol=0, atol=1e-5 * np.abs(want).max())
    with pytest.raises(ValueError, match="reads layout masks"):
        nets.unet(x, t, c)


def test_other_layouts_are_training_pictures_of_the_prompts_kind():
    """--layout other: each prompt gets a different training picture whose animals, accessories' places
    and place are the prompt's."""
    import make_dataset

    others = layout_score.OtherLayouts()
    prompts = [make_dataset.labels(i, "heldout") for i in range(3)]
    for labels in [*prompts, prompts[0]]:
        boxes = others.boxes(labels, 128)
        assert layout_score.OtherLayouts.kind(make_dataset.labels(others.used[-1], "train")) == others.kind(labels)
        _, drawn = make_dataset.render(others.used[-1], "train", 128)
        assert boxes == drawn["boxes"]
    assert len(set(others.used)) == 4 and others.other_place == 0
