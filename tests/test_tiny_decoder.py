"""The C++ tiny decoder against diffusers' AutoencoderTiny (TAESD-style) decoder, and against
tools/latent_decoder.py's with a width per stage.

f32: max abs error <= 1e-4 x the output's scale, whole decoder and every layer.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from bundles import ROOT, TINY_CONFIGS, make_tiny, tiny_decoder_bundle
from gguf import GGUFValueType

import cutecpp
from cutecpp.convert import convert

sys.path.insert(0, str(ROOT / "tools"))
import latent_decoder  # noqa: E402


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_tiny_decoder_matches_diffusers(name, tmp_path):
    vae = make_tiny(name)
    path = tiny_decoder_bundle(name).write(tmp_path / f"{name}.gguf")
    check_every_layer(path, vae, TINY_CONFIGS[name]["latent_channels"])


def test_stage_widths_may_change(tmp_path):
    """A decoder wider at its first stages (tools/latent_decoder.py, as cute-mini's decoder fine-tune may
    train one), through the converter from its AutoencoderTiny folder; a stage without blocks too."""
    vae = make_tiny("taesd")
    torch.manual_seed(1)
    latent_decoder.swap_into(vae, latent_decoder.LatentDecoder((12, 8, 8, 4), (2, 1, 0, 1), latent_channels=4))
    vae.save_pretrained(tmp_path / "ae")
    convert(tmp_path / "wide.gguf", "f32", "test-wide", tiny_decoder=tmp_path / "ae")
    info = cutecpp.Model.load(tmp_path / "wide.gguf").info["config"]["components"]["tiny_decoder"]
    assert info["block_out_channels"] == [12, 8, 8, 4] and info["num_blocks"] == [2, 1, 0, 1]
    check_every_layer(tmp_path / "wide.gguf", vae.eval(), 4)


def check_every_layer(path, vae, latent_channels):
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    ctx.set_trace(True)
    rng = np.random.default_rng(0)
    latents = (3 * rng.standard_normal((2, latent_channels, 4, 3))).astype(np.float32)

    layers: dict[str, np.ndarray] = {}
    handles = [
        layer.register_forward_hook(lambda _m, _a, out, i=i: layers.__setitem__(i, out.detach().numpy().copy()))
        for i, layer in enumerate(vae.decoder.layers)
    ]
    with torch.no_grad():
        ref = vae.decode(torch.from_numpy(latents)).sample.numpy()
    for h in handles:
        h.remove()

    got = ctx.tiny_decode(latents)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    traced = 0
    for i, ref_layer in layers.items():
        try:
            got_layer = ctx.trace(f"tiny_decoder.decoder.layers.{i}")
        except cutecpp.InvalidArgumentError:
            continue  # ReLU and Upsample layers are fused into their neighbours
        traced += 1
        err = np.abs(got_layer - ref_layer).max()
        assert err <= 1e-4 * np.abs(ref_layer).max(), f"layer {i}: {err:.3e}"
    assert traced >= len(vae.config["num_decoder_blocks"]) + 1


def test_a_stage_of_no_channels_refused(tmp_path):
    b = tiny_decoder_bundle("taesd")
    b.set("cutecpp.tiny_decoder.block_out_channels", GGUFValueType.ARRAY, [8, 8, 0, 8], GGUFValueType.UINT32)
    with pytest.raises(cutecpp.UnsupportedError, match="channel counts must be 1 to 8192"):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))


def test_latent_scaling_is_undone_before_decoding(tmp_path):
    """Like vae_decode, tiny_decode takes latents as the UNet produced them."""
    vae = make_tiny("taesd")
    bundle = tiny_decoder_bundle("taesd")
    bundle.set("cutecpp.tiny_decoder.scaling_factor", GGUFValueType.FLOAT32, 0.5)
    bundle.set("cutecpp.tiny_decoder.shift_factor", GGUFValueType.FLOAT32, 0.25)
    ctx = cutecpp.Context(cutecpp.Model.load(bundle.write(tmp_path / "scaled.gguf")), threads=2)
    latents = np.random.default_rng(1).standard_normal((1, 4, 3, 3)).astype(np.float32)
    with torch.no_grad():
        ref = vae.decode(torch.from_numpy(latents / 0.5 + 0.25)).sample.numpy()
    got = ctx.tiny_decode(latents)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def per_channel_bundle(mean, std, *, scaling_factor=0.5, shift_factor=0.25):
    bundle = tiny_decoder_bundle("taesd")
    p = "cutecpp.tiny_decoder."
    bundle.set(p + "scaling_factor", GGUFValueType.FLOAT32, scaling_factor)
    bundle.set(p + "shift_factor", GGUFValueType.FLOAT32, shift_factor)
    for key, values in (("latents_mean", mean), ("latents_std", std)):
        if values is not None:
            bundle.set(p + key, GGUFValueType.ARRAY, values, GGUFValueType.FLOAT32)
    return bundle


def test_per_channel_latent_statistics_are_undone(tmp_path):
    """With latents_mean/latents_std the decoder sees latents * std / scaling_factor + mean + shift_factor
    (diffusers' per-channel convention; cute-mini's UNet learns per-channel normalised latents)."""
    vae = make_tiny("taesd")
    mean, std = [0.5, -1.0, 2.0, 0.0], [0.25, 1.5, 0.5, 2.0]
    path = per_channel_bundle(mean, std).write(tmp_path / "stats.gguf")
    model = cutecpp.Model.load(path)
    dec = model.info["config"]["components"]["tiny_decoder"]
    assert dec["latents_mean"] == pytest.approx(mean) and dec["latents_std"] == pytest.approx(std)
    latents = np.random.default_rng(2).standard_normal((2, 4, 3, 5)).astype(np.float32)
    m, s = (np.asarray(v, np.float32)[None, :, None, None] for v in (mean, std))
    with torch.no_grad():
        ref = vae.decode(torch.from_numpy(latents * s / 0.5 + m + 0.25)).sample.numpy()
        plain = vae.decode(torch.from_numpy(latents / 0.5 + 0.25)).sample.numpy()
    got = cutecpp.Context(model, threads=2).tiny_decode(latents)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.abs(got - plain).max() > 0.01  # the statistics changed the picture


@pytest.mark.parametrize(("mean", "std", "words"), [
    ([0.0] * 4, None, "'cutecpp.tiny_decoder.latents_std': missing"),
    (None, [1.0] * 4, "'cutecpp.tiny_decoder.latents_mean': missing"),
    ([0.0] * 3, [1.0] * 4, "has 3 values for 4 latent channels"),
    ([0.0] * 4, [1.0, 1.0, 0.0, 1.0], "values must be in (0, 1000)"),
    ([0.0, float("nan"), 0.0, 0.0], [1.0] * 4, "values must be in (-1000, 1000)"),
])
def test_bad_latent_statistics_refused(tmp_path, mean, std, words):
    with pytest.raises(cutecpp.UnsupportedError) as info:
        cutecpp.Model.load(per_channel_bundle(mean, std).write(tmp_path / "bad.gguf"))
    assert words in str(info.value)


def test_latent_statistics_of_another_type_refused(tmp_path):
    bundle = per_channel_bundle([0.0] * 4, [1.0] * 4)
    bundle.set("cutecpp.tiny_decoder.latents_std", GGUFValueType.ARRAY, [1] * 4, GGUFValueType.UINT32)
    with pytest.raises(cutecpp.ModelError, match="must be an array of float32"):
        cutecpp.Model.load(bundle.write(tmp_path / "bad.gguf"))
