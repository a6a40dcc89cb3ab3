"""The C++ UNet against diffusers on tiny random-weight models (no downloads).

f32: max abs error <= 1e-4 x the output's scale, for the whole model and for
every block (conv_in, each down block, the mid block, each up block, conv_out);
a failure names the first block that diverged.
f16 weights: the same comparison at 2e-3 x scale (weights rounded to 11
significant bits; activations stay f32 except inside Winograd convolutions,
whose f16 matmul rounds them to f16 too).
q8_0 / q4_0 (through the converter, which quantizes the matrices whose rows
are multiples of 32 and keeps the rest f16): whole model within QUANT_TOL x
scale, measured on these random-weight models (trained weights, with smaller
outliers, quantize better).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundles import UNET_CONFIGS, make_unet, unet_bundle

import cutecpp
from cutecpp.convert import convert_unet

F32_TOL = 1e-4
F16_TOL = 2e-3
# Measured on the "sd1" config over seeds 0-2, with the Winograd kernels quantized
# like the bundle (winograd.h): q8_0 3.2e-3 to 4.6e-3, q4_0 3.0e-2 to 3.3e-2 (f16
# for comparison: 6.5e-4 to 9.8e-4). Where q8_0 runs on int8 dot products
# (gemm_q8.h, AVX-VNNI) its 1x1 kernels are quantized too and the inputs of every
# product: q8_0 1.31e-2 to 1.37e-2 (ggml's products the same hour: 3.6e-3 to
# 3.7e-3). The bounds leave ~2-3x margin.
QUANT_TOL = {"q8_0": 3e-2, "q4_0": 1e-1}


def inputs(name: str, n: int = 2, side: int = 16, tokens: int = 7, seed: int = 0):
    cfg = UNET_CONFIGS[name]
    rng = np.random.default_rng(seed)
    sample = rng.standard_normal((n, cfg["in_channels"], side, side)).astype(np.float32)
    context = rng.standard_normal((n, tokens, cfg["cross_attention_dim"])).astype(np.float32)
    timesteps = np.array([999.0, 1.0, 500.0, 37.5][:n], np.float32)
    return sample, timesteps, context


def reference(unet, sample, timesteps, context) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """diffusers' output and each block's output, in the order the graph runs them."""
    blocks: dict[str, np.ndarray] = {}
    modules = [("unet.conv_in", unet.conv_in)]
    modules += [(f"unet.down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)]
    if unet.mid_block is not None:
        modules.append(("unet.mid_block", unet.mid_block))
    modules += [(f"unet.up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    modules.append(("unet.conv_out", unet.conv_out))

    def hook(name):
        def record(_module, _args, output):
            blocks[name] = (output[0] if isinstance(output, tuple) else output).detach().numpy().copy()

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in modules]
    with torch.no_grad():
        out = unet(torch.from_numpy(sample), torch.from_numpy(timesteps), torch.from_numpy(context)).sample.numpy()
    for h in handles:
        h.remove()
    return out, {name: blocks[name] for name, _ in modules}


def first_divergence(ctx: cutecpp.Context, ref_blocks: dict[str, np.ndarray], tol: float) -> str:
    lines = []
    for name, ref in ref_blocks.items():
        got = ctx.trace(name)
        err = float(np.abs(got - ref).max()) / max(float(np.abs(ref).max()), 1e-12)
        lines.append(f"{name}: relative max error {err:.2e}")
        if err > tol:
            return "first diverging block: " + lines[-1] + "\n" + "\n".join(lines)
    return "no block diverged"


def check_model(name: str, f16: bool, tmp_path, threads: int = 2) -> None:
    tol = F16_TOL if f16 else F32_TOL
    path = unet_bundle(name, f16=f16).write(tmp_path / f"{name}.gguf")
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=threads)
    ctx.set_trace(True)
    sample, timesteps, context = inputs(name)
    got = ctx.unet(sample, timesteps, context)
    ref, ref_blocks = reference(make_unet(name), sample, timesteps, context)
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    scale = float(np.abs(ref).max())
    assert err <= tol * scale, f"{name}: max error {err:.3e} > {tol} x {scale:.3f}\n" + first_divergence(
        ctx, ref_blocks, tol
    )
    for block, ref_block in ref_blocks.items():
        block_err = float(np.abs(ctx.trace(block) - ref_block).max())
        assert block_err <= tol * float(np.abs(ref_block).max()), f"{name}: block {block} error {block_err:.3e}"


@pytest.mark.parametrize("name", sorted(UNET_CONFIGS))
def test_unet_f32_matches_diffusers(name, tmp_path):
    check_model(name, f16=False, tmp_path=tmp_path)


@pytest.mark.parametrize("name", ["sd1", "latent16"])
def test_unet_f16_weights_match_diffusers(name, tmp_path):
    check_model(name, f16=True, tmp_path=tmp_path)


@pytest.mark.parametrize("dtype", sorted(QUANT_TOL))
def test_unet_quantized_within_tolerance(dtype, tmp_path):
    name = "sd1"
    make_unet(name).save_pretrained(tmp_path / "unet")
    convert_unet(tmp_path / "unet", tmp_path / f"{dtype}.gguf", dtype, model_id=f"test-{dtype}")
    model = cutecpp.Model.load(tmp_path / f"{dtype}.gguf")
    assert model.info["dtypes"][dtype]["tensors"] > 0  # something really is quantized
    sample, timesteps, context = inputs(name)
    got = cutecpp.Context(model, threads=2).unet(sample, timesteps, context)
    ref, _ = reference(make_unet(name), sample, timesteps, context)
    rel = float(np.abs(got - ref).max()) / float(np.abs(ref).max())
    assert rel <= QUANT_TOL[dtype], f"{dtype}: relative max error {rel:.2e}"


def test_same_result_for_any_thread_count_and_repeat(micro_path):
    model = cutecpp.Model.load(micro_path)
    sample, timesteps, context = inputs("micro")
    one = cutecpp.Context(model, threads=1).unet(sample, timesteps, context)
    two = cutecpp.Context(model, threads=2)
    first = two.unet(sample, timesteps, context)
    again = two.unet(sample, timesteps, context)  # the planned graph is reused
    assert np.array_equal(one, first) and np.array_equal(first, again)


def test_shape_change_replans(micro_path):
    ctx = cutecpp.Context(cutecpp.Model.load(micro_path), threads=2)
    for side, tokens in [(8, 3), (16, 7), (8, 3)]:
        sample, timesteps, context = inputs("micro", n=1, side=side, tokens=tokens)
        out = ctx.unet(sample, timesteps, context)
        ref, _ = reference(make_unet("micro"), sample, timesteps, context)
        assert np.abs(out - ref).max() <= F32_TOL * np.abs(ref).max()


def test_bad_inputs_are_refused(micro_path):
    ctx = cutecpp.Context(cutecpp.Model.load(micro_path), threads=1)
    sample, timesteps, context = inputs("micro", n=1, side=5)
    with pytest.raises(cutecpp.InvalidArgumentError, match="multiples of 2"):
        ctx.unet(sample, timesteps, context)
    sample, timesteps, context = inputs("micro", n=1)
    with pytest.raises(ValueError, match="latent channels"):
        ctx.unet(sample[:, :3], timesteps, context)
    with pytest.raises(cutecpp.InvalidArgumentError, match="no traced evaluation"):
        ctx.trace("unet.conv_in")
    ctx.set_trace(True)
    ctx.unet(sample, timesteps, context)
    with pytest.raises(cutecpp.InvalidArgumentError, match="no traced block 'unet.nope'"):
        ctx.trace("unet.nope")


def test_im2col_fallback_matches_diffusers(tmp_path):
    """With CUTECPP_WINOGRAD=0 every conv runs through im2col; that path must stay exact too."""
    import os
    import subprocess
    import sys

    path = unet_bundle("sd1").write(tmp_path / "sd1.gguf")
    sample, timesteps, context = inputs("sd1")
    np.savez(tmp_path / "in.npz", sample=sample, timesteps=timesteps, context=context)
    code = (
        "import sys, numpy as np, cutecpp\n"
        "d = np.load(sys.argv[2])\n"
        "ctx = cutecpp.Context(cutecpp.Model.load(sys.argv[1]), threads=2)\n"
        "np.save(sys.argv[3], ctx.unet(d['sample'], d['timesteps'], d['context']))\n"
    )
    env = dict(os.environ, CUTECPP_WINOGRAD="0")
    run = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "in.npz"), str(tmp_path / "out.npy")],
                         env=env, capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = np.load(tmp_path / "out.npy")
    ref, _ = reference(make_unet("sd1"), sample, timesteps, context)
    assert np.abs(got - ref).max() <= F32_TOL * np.abs(ref).max()
