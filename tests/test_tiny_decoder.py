"""The C++ tiny decoder against diffusers' AutoencoderTiny (TAESD-style) decoder.

f32: max abs error <= 1e-4 x the output's scale, whole decoder and every layer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundles import TINY_CONFIGS, make_tiny, tiny_decoder_bundle
from gguf import GGUFValueType

import cutecpp


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_tiny_decoder_matches_diffusers(name, tmp_path):
    vae = make_tiny(name)
    path = tiny_decoder_bundle(name).write(tmp_path / f"{name}.gguf")
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    ctx.set_trace(True)
    rng = np.random.default_rng(0)
    latents = (3 * rng.standard_normal((2, TINY_CONFIGS[name]["latent_channels"], 4, 3))).astype(np.float32)

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
    assert traced >= len(TINY_CONFIGS[name]["num_decoder_blocks"]) + 1


def test_unequal_stage_channels_refused(tmp_path):
    b = tiny_decoder_bundle("taesd")
    b.set("cutecpp.tiny_decoder.block_out_channels", GGUFValueType.ARRAY, [8, 8, 8, 16], GGUFValueType.UINT32)
    with pytest.raises(cutecpp.UnsupportedError, match="repeated"):
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
