"""The fused normalisation and activation kernels (csrc/src/fused.h) against diffusers.

Every UNet parity test runs them (they are the default path); here they run on
widths and image sides that are not multiples of the 8-float vectors, and the
separate-op fallback (CUTECPP_FUSED=0, used where a kernel cannot take its
inputs) must stay exact too. f32 tolerance as in test_unet_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from bundles import VAE_CONFIGS, make_kl, make_unet, unet_bundle, vae_decoder_bundle
from test_unet_parity import F32_TOL, inputs, reference
from test_vae_decoder import TOL as VAE_TOL
from test_vae_decoder import reference as vae_reference
from test_vae_decoder import relative_error

import cutecpp


@pytest.mark.parametrize("fused", ["1", "0"])
@pytest.mark.parametrize("side", [6, 10])
def test_unet_odd_widths_match_diffusers(fused, side, tmp_path, monkeypatch):
    monkeypatch.setenv("CUTECPP_FUSED", fused)  # read when the graph is built
    path = unet_bundle("odd").write(tmp_path / "odd.gguf")
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    ctx.set_trace(True)
    sample, timesteps, context = inputs("odd", side=side, tokens=5)
    got = ctx.unet(sample, timesteps, context)
    ref, ref_blocks = reference(make_unet("odd"), sample, timesteps, context)
    for name, want in [("output", ref), *ref_blocks.items()]:
        have = got if name == "output" else ctx.trace(name)
        err = float(np.abs(have - want).max()) / float(np.abs(want).max())
        assert err <= F32_TOL, f"CUTECPP_FUSED={fused}, side {side}: {name} relative error {err:.2e}"


def test_fused_and_separate_ops_agree(tmp_path, monkeypatch):
    """Both paths compute the same function; they differ only by float rounding."""
    path = unet_bundle("sd1").write(tmp_path / "sd1.gguf")
    model = cutecpp.Model.load(path)
    sample, timesteps, context = inputs("sd1")
    out = {}
    for fused in ("1", "0"):
        monkeypatch.setenv("CUTECPP_FUSED", fused)
        out[fused] = cutecpp.Context(model, threads=2).unet(sample, timesteps, context)
    assert not np.array_equal(out["1"], out["0"])  # the switch really changes the graph
    assert np.abs(out["1"] - out["0"]).max() <= 1e-5 * np.abs(out["0"]).max()


@pytest.mark.parametrize("name", sorted(VAE_CONFIGS))
def test_vae_decoder_separate_ops_match_diffusers(name, tmp_path, monkeypatch):
    monkeypatch.setenv("CUTECPP_FUSED", "0")
    path = vae_decoder_bundle(name).write(tmp_path / f"{name}.gguf")
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    latents = np.random.default_rng(1).standard_normal((1, VAE_CONFIGS[name]["latent_channels"], 5, 3))
    latents = latents.astype(np.float32)
    ref, _ = vae_reference(make_kl(name), latents)
    assert relative_error(ctx.vae_decode(latents), ref) <= VAE_TOL
