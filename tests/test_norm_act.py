"""The fused GroupNorm(+SiLU) and LayerNorm ops (csrc/src/norm_act.cpp) against PyTorch and against
ggml's unfused ops (CUTECPP_FUSED_NORM=0), through whole models: the parity tests of the UNet,
decoders and alignment module run them too; these add large activations, odd sizes and threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundles import decoder_state, make_kl, unet_bundle, vae_decoder_bundle

import cutecpp
from cutecpp.bundle import tensor_name


def unet_inputs(seed: int = 0, n: int = 2, side: int = 8, tokens: int = 5, width: int = 32):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 4, side, side)).astype(np.float32), np.array([10.0, 700.0][:n], np.float32),
            rng.standard_normal((n, tokens, width)).astype(np.float32))


def test_fused_and_unfused_norms_agree(tmp_path, monkeypatch):
    path = unet_bundle("micro").write(tmp_path / "u.gguf")
    model = cutecpp.Model.load(path)
    width = model.info["config"]["components"]["unet"]["cross_attention_dim"]
    sample, t, ctx_states = unet_inputs(width=width)
    fused = cutecpp.Context(model, threads=2).unet(sample, t, ctx_states)
    monkeypatch.setenv("CUTECPP_FUSED_NORM", "0")
    plain = cutecpp.Context(model, threads=2).unet(sample, t, ctx_states)
    assert np.abs(fused - plain).max() <= 1e-5 * np.abs(plain).max()
    assert not np.array_equal(fused, plain)  # the two paths really differ (rounding), so both ran


def test_fused_norms_identical_for_any_thread_count(tmp_path):
    model = cutecpp.Model.load(unet_bundle("micro").write(tmp_path / "u.gguf"))
    width = model.info["config"]["components"]["unet"]["cross_attention_dim"]
    sample, t, ctx_states = unet_inputs(seed=3, width=width)
    outs = [cutecpp.Context(model, threads=k).unet(sample, t, ctx_states) for k in (1, 2, 3)]
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


@pytest.mark.parametrize("scale", [1.0, 300.0])
def test_silu_of_large_values(tmp_path, scale):
    """GroupNorm weights x300 push SiLU's input to +-1000: the exp's clamp must still give x or 0."""
    vae = make_kl("sd")
    with torch.no_grad():
        for name, p in vae.decoder.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.mul_(scale)
    b = vae_decoder_bundle("sd")
    for key, array in decoder_state(vae, ("decoder.", "post_quant_conv.")).items():
        b.tensors[tensor_name("vae_decoder", key)] = array
    ctx = cutecpp.Context(cutecpp.Model.load(b.write(tmp_path / "v.gguf")), threads=2)
    latents = np.random.default_rng(1).standard_normal((1, 4, 7, 3)).astype(np.float32)  # 21 px: vector tails
    with torch.no_grad():
        ref = vae.decode(torch.from_numpy(latents) / vae.config.scaling_factor).sample.numpy()
    got = ctx.vae_decode(latents)
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
