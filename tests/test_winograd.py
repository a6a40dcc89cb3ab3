"""Winograd F(2x2, 3x3) convolutions against PyTorch's direct convolution.

The UNet and decoders use it for 3x3 stride-1 convs wider than 128x128 channels
(narrower ones take the direct kernel, tests/test_direct_conv.py); these tests
turn the direct path off and cover odd sizes (partial edge tiles), batches, f16
kernels and channel counts directly. f32 kernels: U and V in f32, 1e-5 x scale.
f16 kernels: U is stored in f16 and ggml's f16 matmul rounds V to f16 too, so
2e-3 x scale (measured 4.9e-4 on the case below).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundles import Bundle
from gguf import GGUFValueType

import cutecpp
from cutecpp.bundle import FORMAT_VERSION


@pytest.fixture(autouse=True)
def winograd_only(monkeypatch):
    """These channel counts would take the direct 3x3 path (direct_conv.cpp); test Winograd itself."""
    monkeypatch.setenv("CUTECPP_DIRECT_CONV", "0")


def tiny_decoder_with_one_conv(ic_oc: int, kernel: np.ndarray, bias: np.ndarray) -> Bundle:
    """A tiny-decoder bundle with zero blocks: its only layer is conv_in(latent -> ch), then conv to 3."""
    b = Bundle()
    U32, ARR, STR, F32 = GGUFValueType.UINT32, GGUFValueType.ARRAY, GGUFValueType.STRING, GGUFValueType.FLOAT32
    b.set("cutecpp.format_version", U32, FORMAT_VERSION)
    b.set("cutecpp.model_id", STR, "winograd-test")
    b.set("cutecpp.components", ARR, ["tiny_decoder"], STR)
    p = "cutecpp.tiny_decoder."
    for key, value in [("latent_channels", kernel.shape[1]), ("out_channels", 3), ("upsampling_scaling_factor", 2)]:
        b.set(p + key, U32, value)
    b.set(p + "block_out_channels", ARR, [ic_oc], U32)
    b.set(p + "num_blocks", ARR, [0], U32)
    b.set(p + "act_fn", STR, "relu")
    b.set(p + "upsample_fn", STR, "nearest")
    b.set(p + "scaling_factor", F32, 1.0)
    b.set(p + "shift_factor", F32, 0.0)
    b.tensors["tiny_decoder.decoder.layers.0.weight"] = kernel
    b.tensors["tiny_decoder.decoder.layers.0.bias"] = bias
    rng = np.random.default_rng(1)
    b.tensors["tiny_decoder.decoder.layers.2.weight"] = rng.standard_normal((3, ic_oc, 3, 3)).astype(np.float32)
    b.tensors["tiny_decoder.decoder.layers.2.bias"] = np.zeros(3, np.float32)
    return b


@pytest.mark.parametrize("n, ic, oc, h, w, f16", [
    (1, 4, 8, 7, 5, False),     # odd sides: partial tiles on both edges
    (2, 16, 32, 8, 8, False),   # batch
    (1, 3, 5, 1, 1, False),     # a single pixel
    (1, 8, 16, 9, 12, True),    # f16 kernel
    (1, 24, 20, 16, 14, True),  # gemm.h: a full and a partial 16-output panel, 56 tiles (two row chunks)
    # V is 2 MB per tile row here: 14 rows (7 per image, the last one partial) in four bands
    # of <= 8 MB (4, 4, 4 and 2 rows), the second one spanning both images.
    (2, 64, 64, 13, 1024, False),
])
def test_conv_matches_torch(tmp_path, n, ic, oc, h, w, f16):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((oc, ic, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    if f16:
        kernel = kernel.astype(np.float16)
    path = tiny_decoder_with_one_conv(oc, kernel, bias).write(tmp_path / "conv.gguf")
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    ctx.set_trace(True)
    x = (3 * rng.standard_normal((n, ic, h, w))).astype(np.float32)
    ctx.tiny_decode(x)
    got = ctx.trace("tiny_decoder.decoder.layers.0")

    # The decoder feeds conv_in with tanh(x / 3) * 3.
    inp = torch.from_numpy(np.tanh(x / 3) * 3)
    ref = torch.nn.functional.conv2d(inp, torch.from_numpy(kernel.astype(np.float32)), torch.from_numpy(bias),
                                     padding=1).numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= (2e-3 if f16 else 1e-5) * np.abs(ref).max()
