"""The alignment module (text-encoder states -> UNet context) against its PyTorch reference.

The reference is tools/alignment_ref.py's Alignment with random weights (norms and
biases too), built in the test. f32: max abs error <= 1e-4 x the output's scale, for
the output and every traced block (proj_in, each encoder layer, proj_out); a failure
names the first block that diverged. Through the converter (save_pretrained, then
convert): f16 weights within 2e-3 x scale, q8_0 within 3e-2 and q4_0 within 0.25.
Measured over seeds 0-2, T = 24, on "small" and "blocks32": f16 3.6e-4 to 5.3e-4,
q8_0 7.4e-3 to 1.2e-2 (weights and, in ggml's quantized matmul, activations rounded to
8 bits: ~6e-3 per matmul), q4_0 5.8e-2 to 9.5e-2.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundles import ALIGNMENT_CONFIGS, FULL_COMPONENTS, alignment_bundle, alignment_ref, full_bundle, make_alignment
from click.testing import CliRunner
from gguf import GGUFValueType

import cutecpp
from cutecpp._binding import check, ffi, lib
from cutecpp.cli import cli
from cutecpp.convert import ALIGNMENT_SETTINGS, ConvertError, alignment_keys, convert

ROOT = Path(__file__).resolve().parent.parent
F32_TOL = 1e-4
TOL = {"f16": 2e-3, "q8_0": 3e-2, "q4_0": 0.25}
U32, STR, ARR, F32 = GGUFValueType.UINT32, GGUFValueType.STRING, GGUFValueType.ARRAY, GGUFValueType.FLOAT32
P = "cutecpp.alignment."


def states(name: str, n: int = 2, tokens: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, tokens, ALIGNMENT_CONFIGS[name]["in_dim"])).astype(np.float32)


def reference(module, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The reference output and each traced block's output, in the order the graph runs them."""
    modules = [("alignment.proj_in", module.proj_in)]
    modules += [(f"alignment.blocks.{i}", b) for i, b in enumerate(module.blocks)]
    modules.append(("alignment.proj_out", module.proj_out))
    blocks: dict[str, np.ndarray] = {}

    def hook(name):
        return lambda _m, _a, out: blocks.__setitem__(name, out.detach().numpy().copy())

    handles = [m.register_forward_hook(hook(name)) for name, m in modules]
    with torch.no_grad():
        out = module(torch.from_numpy(x)).numpy()
    for h in handles:
        h.remove()
    return out, {name: blocks[name] for name, _ in modules}


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max()) / max(float(np.abs(ref).max()), 1e-12)


def traced(ctx: cutecpp.Context, name: str, like: np.ndarray) -> np.ndarray:
    got = ctx.trace(name)
    assert got.shape == (1, *like.shape), name  # token sequences trace as [1, n, T, C]
    return got[0]


def block_report(ctx: cutecpp.Context, ref_blocks: dict[str, np.ndarray], tol: float) -> str:
    lines = []
    for name, ref in ref_blocks.items():
        err = relative_error(traced(ctx, name, ref), ref)
        lines.append(f"{name}: relative max error {err:.2e}")
        if err > tol:
            return "first diverging block: " + lines[-1] + "\n" + "\n".join(lines)
    return "no block diverged\n" + "\n".join(lines)


@pytest.fixture(scope="module")
def small_path(tmp_path_factory) -> Path:
    return alignment_bundle("small").write(tmp_path_factory.mktemp("alignment") / "small.gguf")


# --- parity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [1, 5, 24])
@pytest.mark.parametrize("name", list(ALIGNMENT_CONFIGS))
def test_f32_matches_reference(name, tokens, tmp_path):
    ctx = cutecpp.Context(cutecpp.Model.load(alignment_bundle(name).write(tmp_path / "a.gguf")), threads=2)
    ctx.set_trace(True)
    x = states(name, n=2, tokens=tokens)
    ref, ref_blocks = reference(make_alignment(name), x)
    got = ctx.align(x)
    assert got.shape == ref.shape == (2, tokens, ALIGNMENT_CONFIGS[name]["ctx_dim"])
    assert relative_error(got, ref) <= F32_TOL, block_report(ctx, ref_blocks, F32_TOL)
    assert len(ref_blocks) == ALIGNMENT_CONFIGS[name]["layers"] + 2
    for block, ref_block in ref_blocks.items():
        assert relative_error(traced(ctx, block, ref_block), ref_block) <= F32_TOL, block_report(
            ctx, ref_blocks, F32_TOL)
    np.testing.assert_array_equal(traced(ctx, "alignment.proj_out", ref), got)


def test_one_prompt_without_batch_axis(small_path):
    ctx = cutecpp.Context(cutecpp.Model.load(small_path), threads=2)
    x = states("small", n=2, tokens=7)
    batch = ctx.align(x)
    single = ctx.align(x[1])
    assert single.shape == (7, 16)
    np.testing.assert_array_equal(single, batch[1])  # rows are independent
    # Other float dtypes and strided views are converted, as unet() does.
    np.testing.assert_array_equal(ctx.align(x[1].astype(np.float64)), single)
    np.testing.assert_array_equal(ctx.align(np.asfortranarray(x[1])), single)


def test_reference_mask_matches_unpadded_prompts(small_path):
    """The reference's key-padding mask (training on padded batches) gives, on the real tokens,
    what cutecpp computes for each prompt alone: the mask is what padding-free inference means."""
    module = make_alignment("small")
    ctx = cutecpp.Context(cutecpp.Model.load(small_path), threads=2)
    x = states("small", n=2, tokens=9)
    lengths = [9, 4]
    x[1, lengths[1]:] = 1e3  # padding that would wreck the result if attended to
    mask = torch.tensor([[t < length for t in range(9)] for length in lengths])
    with torch.no_grad():
        padded = module(torch.from_numpy(x), mask).numpy()
    for row, length in enumerate(lengths):
        alone = ctx.align(x[row, :length])
        assert relative_error(alone, padded[row, :length]) <= F32_TOL


@pytest.mark.parametrize("dtype", sorted(TOL))
@pytest.mark.parametrize("name", ["small", "blocks32"])
def test_converted_within_tolerance(name, dtype, tmp_path):
    module = make_alignment(name)
    module.save_pretrained(tmp_path / "alignment")
    out = tmp_path / f"{dtype}.gguf"
    summary = convert(out, dtype, f"test-{dtype}", alignment=tmp_path / "alignment")
    model = cutecpp.Model.load(out)
    state = module.state_dict()
    assert model.info["n_tensors"] == summary.n_tensors == len(state)
    # The converter's dtype policy: 1-D in f32; quantized where rows hold whole 32-blocks, else f16.
    expected: dict[str, int] = {}
    for tensor in state.values():
        kind = "f32" if tensor.ndim == 1 else dtype if dtype == "f16" or tensor.shape[-1] % 32 == 0 else "f16"
        expected[kind] = expected.get(kind, 0) + 1
    assert {k: v["tensors"] for k, v in model.info["dtypes"].items()} == expected
    assert dtype in expected
    x = states(name, tokens=24)
    got = cutecpp.Context(model, threads=2).align(x)
    ref, _ = reference(module, x)
    assert relative_error(got, ref) <= TOL[dtype], f"{dtype}: relative max error {relative_error(got, ref):.2e}"


def test_same_result_for_any_thread_count_repeat_and_replan(small_path):
    model = cutecpp.Model.load(small_path)
    x = states("small", tokens=24)
    one = cutecpp.Context(model, threads=1).align(x)
    two = cutecpp.Context(model, threads=2)
    first = two.align(x)
    assert np.array_equal(one, first)
    assert np.array_equal(first, two.align(x))  # the planned graph is reused
    module = make_alignment("small")
    for n, tokens in [(1, 3), (2, 24), (1, 3)]:  # every shape change plans again
        y = states("small", n=n, tokens=tokens, seed=tokens)
        assert relative_error(two.align(y), reference(module, y)[0]) <= F32_TOL
    assert np.array_equal(first, two.align(x))


def test_context_feeds_the_unet(tmp_path):
    """In a bundle with a UNet, the alignment's output is the UNet's context."""
    model = cutecpp.Model.load(full_bundle().write(tmp_path / "full.gguf"))
    assert list(model.info["config"]["components"]) == FULL_COMPONENTS
    ctx = cutecpp.Context(model, threads=2)
    context = ctx.align(states("small", n=2, tokens=6))
    sample = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    eps = ctx.unet(sample, np.array([999.0, 1.0], np.float32), context)
    assert eps.shape == sample.shape and np.isfinite(eps).all()


# --- info -----------------------------------------------------------------------------------------


def test_info_lists_the_component(small_path):
    info = cutecpp.Model.load(small_path).info
    assert info["config"]["components"] == {
        "alignment": {**ALIGNMENT_CONFIGS["small"], "norm_eps": pytest.approx(1e-5)}}
    result = CliRunner().invoke(cli, ["info", "--model", str(small_path)])
    assert result.exit_code == 0
    assert "alignment:\n  in_dim: 32\n  dim: 24\n  ctx_dim: 16\n  layers: 2\n  heads: 3\n" in result.output


# --- bad inputs -----------------------------------------------------------------------------------


def test_bundle_without_alignment(micro_path):
    ctx = cutecpp.Context(cutecpp.Model.load(micro_path), threads=1)
    with pytest.raises(ValueError, match="the model has no alignment"):
        ctx.align(np.zeros((3, 32), np.float32))
    out = np.zeros(16, np.float32)
    with pytest.raises(cutecpp.InvalidArgumentError, match="the model has no alignment component"):
        check(lib.cutecpp_align(ctx._handle, ffi.from_buffer("float[]", np.zeros(32, np.float32)), 1, 1,
                                ffi.from_buffer("float[]", out, require_writable=True)))


def test_bad_inputs_refused(small_path):
    ctx = cutecpp.Context(cutecpp.Model.load(small_path), threads=1)
    for bad in (np.zeros((3, 31), np.float32), np.zeros((1, 2, 3, 32), np.float32), np.zeros(32, np.float32)):
        with pytest.raises(ValueError, match=r"expected states \[T, 32\] or \[n, T, 32\]"):
            ctx.align(bad)
    with pytest.raises(ValueError, match="floating-point"):
        ctx.align(np.zeros((3, 32), np.int32))
    with pytest.raises(cutecpp.InvalidArgumentError, match="1 to 4096 tokens, got 0"):
        ctx.align(np.zeros((0, 32), np.float32))
    with pytest.raises(cutecpp.InvalidArgumentError, match="1 to 4096 tokens, got 4097"):
        ctx.align(np.zeros((4097, 32), np.float32))
    with pytest.raises(cutecpp.InvalidArgumentError, match="batch size must be 1 to 64"):
        ctx.align(np.zeros((0, 3, 32), np.float32))
    ctx.set_trace(True)
    ctx.align(np.zeros((3, 32), np.float32))
    with pytest.raises(cutecpp.InvalidArgumentError, match="no traced block 'alignment.nope'"):
        ctx.trace("alignment.nope")


def test_null_arguments(small_path):
    ctx = cutecpp.Context(cutecpp.Model.load(small_path), threads=1)
    buf = np.zeros(32, np.float32)
    ptr = ffi.from_buffer("float[]", buf, require_writable=True)
    for args in [(ffi.NULL, ptr, 1, 1, ptr), (ctx._handle, ffi.NULL, 1, 1, ptr), (ctx._handle, ptr, 1, 1, ffi.NULL)]:
        with pytest.raises(cutecpp.InvalidArgumentError, match="cutecpp_align: NULL argument"):
            check(lib.cutecpp_align(*args))


# --- bad bundles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "vtype", "value", "named", "words"), [
    ("heads", U32, 5, "heads", "5 heads do not divide dim 24"),
    ("heads", U32, 0, "heads", "outside [1, 128]"),
    ("dim", U32, 8193, "dim", "outside [1, 8192]"),
    ("in_dim", U32, 0, "in_dim", "outside [1, 8192]"),
    ("ctx_dim", U32, 1 << 31, "ctx_dim", "outside [1, 8192]"),
    ("layers", U32, 33, "layers", "outside [0, 32]"),
    ("ff_mult", U32, 0, "ff_mult", "outside [1, 8]"),
    ("ff_mult", U32, 9, "ff_mult", "outside [1, 8]"),
    ("norm_eps", F32, 0.0, "norm_eps", "must be in (0, 1)"),
    ("norm_eps", F32, float("nan"), "norm_eps", "must be in (0, 1)"),
])
def test_bad_config_refused_naming_the_key(tmp_path, key, vtype, value, named, words):
    b = alignment_bundle("small")
    b.set(P + key, vtype, value)
    with pytest.raises(cutecpp.UnsupportedError) as info:
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))
    assert f"key '{P}{named}'" in str(info.value) and words in str(info.value)


def test_bad_keys_refused(tmp_path):
    b = alignment_bundle("small")
    b.kv.pop(P + "ff_mult")
    with pytest.raises(cutecpp.ModelError, match=f"missing key '{P}ff_mult'"):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))
    b = alignment_bundle("small")
    b.set(P + "dropout", F32, 0.1)
    with pytest.raises(cutecpp.ModelError, match=f"unknown key '{P}dropout'"):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))
    b = alignment_bundle("small")
    b.set(P + "layers", STR, "2")
    with pytest.raises(cutecpp.ModelError, match=f"{P}layers.*uint32"):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))


def test_bad_tensors_refused(tmp_path):
    b = alignment_bundle("small")
    del b.tensors["alignment.blocks.1.attn.to_v.bias"]
    with pytest.raises(cutecpp.ModelError, match=r"missing tensor 'alignment.blocks.1.attn.to_v.bias' \[24\]"):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))
    b = alignment_bundle("small")
    b.tensors["alignment.blocks.2.norm1.weight"] = np.ones(24, np.float32)  # one layer too many
    with pytest.raises(cutecpp.ModelError, match="unexpected tensor 'alignment.blocks.2.norm1.weight'"):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))
    b = alignment_bundle("small")
    b.tensors["alignment.blocks.0.ff.fc1.weight"] = np.zeros((72, 24), np.float32)  # ff_mult 3, config says 4
    with pytest.raises(cutecpp.ModelError, match=r"'alignment.blocks.0.ff.fc1.weight' has shape \[72, 24\], "
                                                 r"the config implies \[96, 24\]"):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))


# --- the converter and the reference module -------------------------------------------------------


def test_reference_and_converter_agree_on_settings(tmp_path):
    ref = alignment_ref()
    assert tuple(ALIGNMENT_SETTINGS) == ref.CONFIG_KEYS
    module = make_alignment("one_head")
    folder = module.save_pretrained(tmp_path / "a")
    config = json.loads((folder / "config.json").read_text())
    assert config == {"_class_name": "Alignment", **ALIGNMENT_CONFIGS["one_head"]}
    assert {k.removeprefix(P): v[1] for k, v in alignment_keys(config).items()} == ALIGNMENT_CONFIGS["one_head"]
    again = ref.Alignment.from_pretrained(folder)
    for key, tensor in module.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor), key


@pytest.mark.parametrize(("change", "words"), [
    ({"_class_name": "UNet2DConditionModel"}, "_class_name = 'UNet2DConditionModel': expected an Alignment config"),
    ({"dropout": 0.1}, "unknown Alignment setting(s) dropout"),
    ({"heads": None}, "missing Alignment setting(s) heads"),
    ({"dim": "24"}, "dim = '24': expected a non-negative integer"),
    ({"layers": -1}, "layers = -1: expected a non-negative integer"),
    ({"ff_mult": True}, "ff_mult = True: expected a non-negative integer"),
    ({"norm_eps": "1e-5"}, "norm_eps = '1e-5': expected a number"),
    # Ranges are the loader's: the converter reports its refusal, naming the key.
    ({"heads": 5}, "loader refuses the converted bundle: key 'cutecpp.alignment.heads': 5 heads do not divide dim 24"),
    ({"layers": 40}, "key 'cutecpp.alignment.layers': value 40 is outside [0, 32]"),
    ({"norm_eps": 0}, "key 'cutecpp.alignment.norm_eps': must be in (0, 1)"),
])
def test_converter_refuses_naming_the_key(tmp_path, change, words):
    folder = make_alignment("small").save_pretrained(tmp_path / "a")
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    config = {k: v for k, v in config.items() if v is not None}
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "m.gguf"
    with pytest.raises(ConvertError) as info:
        convert(out, "f32", "m", alignment=folder)
    assert words in str(info.value)
    assert not out.exists()


def test_converter_refuses_foreign_weights(tmp_path):
    folder = make_alignment("small").save_pretrained(tmp_path / "a")
    other = make_alignment("no_layers").save_pretrained(tmp_path / "b")
    shutil.copy(other / "diffusion_pytorch_model.safetensors", folder)
    with pytest.raises(ConvertError, match=r"missing tensor 'alignment\.blocks\.0\..*\(32 of 40 expected tensors"):
        convert(tmp_path / "m.gguf", "f32", "m", alignment=folder)


def test_cli_converts_alignment_with_a_unet(tmp_path):
    from bundles import make_unet

    make_unet("micro").save_pretrained(tmp_path / "unet")
    make_alignment({**ALIGNMENT_CONFIGS["small"], "ctx_dim": 8}).save_pretrained(tmp_path / "alignment")
    out = tmp_path / "m.gguf"
    tool = str(ROOT / "tools" / "convert_diffusers.py")
    args = ["--unet", str(tmp_path / "unet"), "--alignment", str(tmp_path / "alignment"), "-o", str(out)]
    run = subprocess.run([sys.executable, tool, *args, "--dtype", "f16"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    components = cutecpp.Model.load(out).info["config"]["components"]
    assert list(components) == ["unet", "alignment"]
    assert components["alignment"]["ctx_dim"] == components["unet"]["cross_attention_dim"]
