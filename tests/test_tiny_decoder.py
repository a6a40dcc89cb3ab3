"""The C++ tiny decoder against diffusers' AutoencoderTiny (TAESD-style) decoder.

f32: max abs error <= 1e-4 x the output's scale, whole decoder and every layer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundles import Bundle
from gguf import GGUFValueType

import cutecpp
from cutecpp.bundle import FORMAT_VERSION, tensor_name

# diffusers AutoencoderTiny configs: the TAESD layout (4 stages) shrunk, and a
# cute-mini-like one: 16 latent channels, 5 stages (x16 upsampling).
CONFIGS = {
    "taesd": dict(latent_channels=4, decoder_block_out_channels=(8, 8, 8, 8), num_decoder_blocks=(3, 3, 3, 1),
                  encoder_block_out_channels=(8, 8, 8, 8), num_encoder_blocks=(1, 3, 3, 3)),
    "x16": dict(latent_channels=16, decoder_block_out_channels=(8,) * 5, num_decoder_blocks=(1, 1, 1, 1, 1),
                encoder_block_out_channels=(8,) * 5, num_encoder_blocks=(1, 1, 1, 1, 1)),
}


def make_vae(name: str):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    return AutoencoderTiny(**CONFIGS[name]).eval()


def tiny_decoder_bundle(name: str) -> Bundle:
    vae = make_vae(name)
    cfg = vae.config
    U32, ARR, STR, F32 = GGUFValueType.UINT32, GGUFValueType.ARRAY, GGUFValueType.STRING, GGUFValueType.FLOAT32
    b = Bundle()
    b.set("cutecpp.format_version", U32, FORMAT_VERSION)
    b.set("cutecpp.model_id", STR, f"test-tiny-{name}")
    b.set("cutecpp.components", ARR, ["tiny_decoder"], STR)
    p = "cutecpp.tiny_decoder."
    b.set(p + "latent_channels", U32, cfg.latent_channels)
    b.set(p + "out_channels", U32, cfg.out_channels)
    b.set(p + "block_out_channels", ARR, list(cfg.decoder_block_out_channels), U32)
    b.set(p + "num_blocks", ARR, list(cfg.num_decoder_blocks), U32)
    b.set(p + "upsampling_scaling_factor", U32, cfg.upsampling_scaling_factor)
    b.set(p + "act_fn", STR, cfg.act_fn)
    b.set(p + "upsample_fn", STR, cfg.upsample_fn)
    b.set(p + "scaling_factor", F32, cfg.scaling_factor)
    b.set(p + "shift_factor", F32, cfg.shift_factor)
    for key, tensor in vae.state_dict().items():
        if key.startswith("decoder."):
            b.tensors[tensor_name("tiny_decoder", key)] = tensor.detach().numpy().astype(np.float32)
    return b


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tiny_decoder_matches_diffusers(name, tmp_path):
    vae = make_vae(name)
    path = tiny_decoder_bundle(name).write(tmp_path / f"{name}.gguf")
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    ctx.set_trace(True)
    rng = np.random.default_rng(0)
    latents = (3 * rng.standard_normal((2, CONFIGS[name]["latent_channels"], 4, 3))).astype(np.float32)

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
    assert traced >= len(CONFIGS[name]["num_decoder_blocks"]) + 1


def test_unequal_stage_channels_refused(tmp_path):
    b = tiny_decoder_bundle("taesd")
    b.set("cutecpp.tiny_decoder.block_out_channels", GGUFValueType.ARRAY, [8, 8, 8, 16], GGUFValueType.UINT32)
    with pytest.raises(cutecpp.UnsupportedError, match="repeated"):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))
