"""q8_0 products on int8 dot products (csrc/src/gemm_q8.h) against diffusers and ggml's mul_mat.

Where the CPU has AVX-VNNI or AVX512-VNNI, a q8_0 bundle's Linears and quantized
Winograd products run in cutecpp's int8 kernel; CUTECPP_INT8=0 keeps them in
ggml's mul_mat, CUTECPP_INT8=avx512 prefers the EVEX encoding. In a q8_0 bundle
they also take the 1x1 conv kernels (which the file keeps f16), quantized at
load, and the widest 3x3 convs on images of at most 8 x 8 pixels as im2col
products (CUTECPP_IM2COL_Q8=1 takes every quantized one there). The "q8" test
UNet has Linears whose outputs are not a multiple of the kernel's 16-output
panels, 3x3 convs whose Winograd U is quantized and 1x1 convs on images whose
pixels are not a multiple of the 16-pixel panels; its cases run each use and
the tails: 6 x 6 latents (the 160-channel convs on 3 x 3 images, Winograd or,
forced, im2col) and 20 x 20 (Winograd on 10 x 10). On a CPU without either instruction set the int8 path cannot run: the
tests that need it skip, the others check ggml's path.
"""

from __future__ import annotations

import numpy as np
import pytest
from bundles import make_unet
from test_unet_parity import inputs, reference

import cutecpp
from cutecpp.convert import convert_unet
from cutecpp.info import system_info

# Measured on the "q8" UNet, weights and inputs of seeds 0-2, relative max error
# against diffusers fp32: ggml's path 1.4e-2 to 2.0e-2; the int8 kernels (1x1
# kernels quantized too) 1.5e-2 to 2.7e-2, and 1.1e-2 to 1.3e-2 with the im2col
# products (f16 weights: 1.0e-3 to 1.2e-3). Its wide quantized Winograd
# convolutions make it larger than the "sd1" UNet's (test_unet_parity.py); the
# bound leaves ~2x margin.
Q8_TOL = 5e-2

# (name, latent side, environment)
CASES = [("6x6", 6, {}), ("6x6 im2col", 6, {"CUTECPP_IM2COL_Q8": "1"}), ("20x20", 20, {})]


@pytest.fixture(scope="module")
def q8_bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("q8")
    make_unet("q8").save_pretrained(folder / "unet")
    convert_unet(folder / "unet", folder / "q8_0.gguf", "q8_0", model_id="test-q8")
    return folder / "q8_0.gguf"


@pytest.fixture(scope="module")
def q8_reference():
    """side -> (inputs, diffusers' output)"""
    out = {}
    for side in sorted({side for _, side, _ in CASES}):
        args = inputs("q8", side=side, tokens=7)
        out[side] = args, reference(make_unet("q8"), *args)[0]
    return out


def run(bundle, args, threads=2):
    # weights are packed for the int8 kernel when a model first uses them: a fresh model per setting
    return cutecpp.Context(cutecpp.Model.load(bundle), threads=threads).unet(*args)


def rel_err(got, ref) -> float:
    return float(np.abs(got - ref).max()) / float(np.abs(ref).max())


def set_env(monkeypatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def needs_int8():
    if system_info()["int8_products"] is None:
        pytest.skip("this CPU has no AVX-VNNI / AVX512-VNNI")


@pytest.mark.parametrize("setting", ["0", "1", "avx512"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_every_setting_within_the_q8_0_tolerance(setting, case, q8_bundle, q8_reference, monkeypatch):
    name, side, env = case
    set_env(monkeypatch, env)
    monkeypatch.setenv("CUTECPP_INT8", setting)
    isa = system_info()["int8_products"]
    assert isa in ({None} if setting == "0" else {None, "avx-vnni", "avx512-vnni"})
    args, ref = q8_reference[side]
    err = rel_err(run(q8_bundle, args), ref)
    assert err <= Q8_TOL, f"{name}, CUTECPP_INT8={setting} ({isa}): relative error {err:.2e}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_int8_path_runs_and_both_encodings_agree(case, q8_bundle, q8_reference, monkeypatch):
    needs_int8()
    name, side, env = case
    set_env(monkeypatch, env)
    args, ref = q8_reference[side]
    out = {}
    for setting in ("0", "1", "avx512"):
        monkeypatch.setenv("CUTECPP_INT8", setting)
        out[setting] = run(q8_bundle, args)
    # the int8 kernels really replaced ggml's products (whose result is not bit-identical) ...
    assert not np.array_equal(out["0"], out["1"])
    # ... and are about as close to diffusers (1x1 kernels and Winograd's U quantized the same way)
    assert rel_err(out["1"], ref) <= 1.5 * rel_err(out["0"], ref) + 1e-4, name
    # VEX and EVEX vpdpbusd give the same integers, summed in the same order
    np.testing.assert_array_equal(out["1"], out["avx512"])


def test_im2col_products_really_run(q8_bundle, q8_reference, monkeypatch):
    needs_int8()
    args, _ = q8_reference[6]
    monkeypatch.setenv("CUTECPP_IM2COL_Q8", "0")
    winograd = run(q8_bundle, args)
    monkeypatch.setenv("CUTECPP_IM2COL_Q8", "1")
    assert not np.array_equal(run(q8_bundle, args), winograd)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_int8_path_same_result_for_any_thread_count(case, q8_bundle, q8_reference, monkeypatch):
    needs_int8()
    name, side, env = case
    set_env(monkeypatch, env)
    monkeypatch.setenv("CUTECPP_INT8", "1")
    args, _ = q8_reference[side]
    one = run(q8_bundle, args, threads=1)
    for threads in (2, 3):
        np.testing.assert_array_equal(run(q8_bundle, args, threads=threads), one, err_msg=name)
