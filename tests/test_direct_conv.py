"""The direct 3x3 convolution (csrc/src/direct_conv.cpp) against PyTorch.

It takes the 3x3 stride-1 convolutions with few channels (blocks.cpp has the
rule), so the tiny decoders run on it: one conv alone over odd sizes (rows
not a whole number of 8-float vectors, one- and two-row images), every
channel count from 1 to 32 in and out, f16 kernels; then whole decoders where
it fuses ReLU, the residual add and the nearest upsampling into the conv.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundles import Bundle, decoder_state
from test_winograd import tiny_decoder_with_one_conv

import cutecpp
from cutecpp.bundle import tensor_name
from cutecpp.convert import header_keys, tiny_decoder_keys

# Each of 1, 3, 4, 8, 16, 24 and 32 channels appears as input and as output.
CHANNELS = [(1, 3), (3, 1), (4, 8), (8, 4), (16, 16), (24, 32), (32, 24), (3, 16), (16, 3)]
SIZES = [(1, 1), (2, 7), (5, 9), (1, 33), (5, 33), (2, 1)]  # (H, W)


def close(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| over the reference's scale; the tests want <= 1e-4."""
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


def conv_ref(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None) -> torch.Tensor:
    b = None if bias is None else torch.from_numpy(bias)
    return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(kernel.astype(np.float32)), b, padding=1)


def one_conv(tmp_path, ic: int, oc: int, f16: bool = False, seed: int = 0):
    """A context on a one-conv decoder, the conv's kernel and bias, the conv that follows (oc -> 3)."""
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((oc, ic, 3, 3)).astype(np.float16 if f16 else np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    b = tiny_decoder_with_one_conv(oc, kernel, bias)
    path = b.write(tmp_path / f"conv-{ic}-{oc}.gguf")
    return path, kernel, bias, b.tensors["tiny_decoder.decoder.layers.2.weight"]


@pytest.mark.parametrize("ic, oc", CHANNELS)
def test_conv_matches_torch(tmp_path, ic, oc):
    path, kernel, bias, k_out = one_conv(tmp_path, ic, oc)
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    ctx.set_trace(True)
    rng = np.random.default_rng(1)
    for h, w in SIZES:
        z = (3 * rng.standard_normal((2, ic, h, w))).astype(np.float32)
        out = ctx.tiny_decode(z)
        x = np.tanh(z / 3) * 3  # the decoder's input scaling
        ref = conv_ref(x, kernel, bias)
        assert close(ctx.trace("tiny_decoder.decoder.layers.0"), ref.numpy()) <= 1e-4, (h, w)
        # then ReLU and the last conv (oc -> 3, with bias), and the [0, 1] -> [-1, 1] scaling
        ref_out = 2 * conv_ref(torch.relu(ref).numpy(), k_out, np.zeros(3, np.float32)) - 1
        assert close(out, ref_out.numpy()) <= 1e-4, (h, w)


def test_f16_kernel(tmp_path):
    path, kernel, bias, _ = one_conv(tmp_path, 8, 24, f16=True)
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    ctx.set_trace(True)
    z = np.random.default_rng(2).standard_normal((2, 8, 5, 9)).astype(np.float32)
    ctx.tiny_decode(z)
    ref = conv_ref(np.tanh(z / 3) * 3, kernel, bias).numpy()
    assert close(ctx.trace("tiny_decoder.decoder.layers.0"), ref) <= 1e-4


def tiny_decoder(tmp_path, channels: int, stages: int, blocks: int, factor: int = 2, latent: int = 4):
    """A random diffusers AutoencoderTiny and its decoder as a bundle."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(channels * 100 + stages * 10 + factor)
    vae = AutoencoderTiny(latent_channels=latent, decoder_block_out_channels=(channels,) * stages,
                          num_decoder_blocks=(blocks,) * stages, encoder_block_out_channels=(channels,) * stages,
                          num_encoder_blocks=(1,) * stages, upsampling_scaling_factor=factor).eval()
    b = Bundle()
    b.kv.update(header_keys(f"test-direct-{channels}-{stages}-{blocks}-{factor}", ["tiny_decoder"]))
    b.kv.update(tiny_decoder_keys(dict(vae.config)))
    for key, array in decoder_state(vae).items():
        b.tensors[tensor_name("tiny_decoder", key)] = array
    return vae, b.write(tmp_path / f"tiny-{channels}-{stages}-{blocks}-{factor}.gguf")


@pytest.mark.parametrize("path_switch", [None, "CUTECPP_DIRECT_CONV"])
@pytest.mark.parametrize("channels, factor", [(1, 2), (3, 2), (8, 3), (16, 2), (24, 2), (32, 2)])
def test_fused_relu_residual_upsample_match_diffusers(tmp_path, monkeypatch, channels, factor, path_switch):
    """Blocks (conv, ReLU, conv, ReLU, conv + skip, ReLU) and Upsample -> conv, layer by layer; on the
    direct kernel and (CUTECPP_DIRECT_CONV=0) on Winograd, which reads the upsampled input on the fly too."""
    if path_switch:
        monkeypatch.setenv(path_switch, "0")
    vae, path = tiny_decoder(tmp_path, channels, stages=3, blocks=1, factor=factor)
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    ctx.set_trace(True)
    z = (3 * np.random.default_rng(3).standard_normal((2, 4, 5, 3))).astype(np.float32)
    layers: dict[int, np.ndarray] = {}
    hooks = [layer.register_forward_hook(lambda _m, _a, out, i=i: layers.__setitem__(i, out.detach().numpy().copy()))
             for i, layer in enumerate(vae.decoder.layers)]
    with torch.no_grad():
        ref = vae.decode(torch.from_numpy(z)).sample.numpy()
    for hook in hooks:
        hook.remove()
    assert close(ctx.tiny_decode(z), ref) <= 1e-4
    # layers: 0 conv, 1 relu, then per stage block, (upsample, conv): 2 block, 3 up, 4 conv, 5 block, ...
    for i in (0, 2, 4, 5, 7, 8, 9):
        assert close(ctx.trace(f"tiny_decoder.decoder.layers.{i}"), layers[i]) <= 1e-4, f"layer {i}"


def test_threads_bit_identical(tmp_path):
    """Rows are shared between threads; each value is summed the same way whatever the split."""
    _, path = tiny_decoder(tmp_path, 16, stages=3, blocks=1, latent=16)
    model = cutecpp.Model.load(path)
    z = np.random.default_rng(4).standard_normal((2, 16, 7, 5)).astype(np.float32)
    one = cutecpp.Context(model, threads=1).tiny_decode(z)
    for threads in (2, 3):
        assert np.array_equal(cutecpp.Context(model, threads=threads).tiny_decode(z), one)


def test_switches_pick_the_other_paths(tmp_path, monkeypatch):
    """CUTECPP_DIRECT_CONV=0 (Winograd) and CUTECPP_WINOGRAD=0 (im2col) agree with the direct path,
    not to the bit: so the switches do change the path, and the two others stay covered at few channels."""
    vae, path = tiny_decoder(tmp_path, 8, stages=3, blocks=1)
    model = cutecpp.Model.load(path)
    z = np.random.default_rng(5).standard_normal((1, 4, 5, 6)).astype(np.float32)
    with torch.no_grad():
        ref = vae.decode(torch.from_numpy(z)).sample.numpy()
    direct = cutecpp.Context(model, threads=2).tiny_decode(z)
    assert close(direct, ref) <= 1e-4
    for switch in ("CUTECPP_DIRECT_CONV", "CUTECPP_WINOGRAD"):
        with monkeypatch.context() as m:
            m.setenv(switch, "0")
            other = cutecpp.Context(model, threads=2).tiny_decode(z)
        assert close(other, ref) <= 1e-4, switch
        assert not np.array_equal(other, direct), switch
