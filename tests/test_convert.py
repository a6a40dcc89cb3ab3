"""The diffusers -> cutecpp converter: safetensors reading, config checks, dtype policy, exact values, CLI.

The references are independent of the converter: the UNets' own state dicts from
torch, a dtype policy restated here, gguf's reader and dequantizer, and the C++
loader's own account of what it loaded.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundles import UNET_CONFIGS, decoder_state, make_kl, make_tiny, make_unet
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize

import cutecpp
from cutecpp.bundle import tensor_name
from cutecpp.convert import (
    TINY_DEFAULTS,
    UNET_DEFAULTS,
    ConvertError,
    convert,
    convert_unet,
    read_safetensors,
    tiny_decoder_keys,
    unet_keys,
    vae_decoder_keys,
)

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = "diffusion_pytorch_model.safetensors"
DTYPES = ["f32", "f16", "q8_0", "q4_0"]
# Bytes per 32 values in each bundle dtype (Q8_0: an f16 scale + 32 int8; Q4_0: an f16 scale + 16 bytes).
BYTES_PER_32 = {"f32": 128, "f16": 64, "q8_0": 34, "q4_0": 18}


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """name -> (folder written by diffusers' save_pretrained, the UNet's state dict as numpy)."""
    cache: dict[str, tuple[Path, dict[str, np.ndarray]]] = {}

    def get(name: str) -> tuple[Path, dict[str, np.ndarray]]:
        if name not in cache:
            unet = make_unet(name)
            folder = tmp_path_factory.mktemp(name)
            unet.save_pretrained(folder)
            cache[name] = folder, {k: v.detach().numpy() for k, v in unet.state_dict().items()}
        return cache[name]

    return get


def expected_dtype(shape: tuple[int, ...], dtype: str) -> str:
    """The documented policy, restated: 1-D in f32; quantized only where the last dim holds whole blocks."""
    if len(shape) == 1 or dtype == "f32":
        return "f32"
    if dtype == "f16" or shape[-1] % 32:
        return "f16"
    return dtype


# --- conversion of every test UNet with every dtype ------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNET_CONFIGS))
def test_convert_loads_with_policy(saved, name, dtype, tmp_path):
    folder, state = saved(name)
    out = tmp_path / f"{name}.gguf"
    summary = convert_unet(folder, out, dtype, f"id-{name}", name=f"test {name}", license="MIT")
    info = cutecpp.Model.load(out).info

    assert info["n_tensors"] == len(state) == summary.n_tensors
    assert info["n_params"] == sum(a.size for a in state.values()) == summary.n_params
    assert info["file_size"] == out.stat().st_size == summary.file_size

    expected: dict[str, dict[str, int]] = {}
    for array in state.values():
        kind = expected_dtype(array.shape, dtype)
        use = expected.setdefault(kind, {"tensors": 0, "bytes": 0})
        use["tensors"] += 1
        use["bytes"] += array.size * BYTES_PER_32[kind] // 32
    # The requested dtype really is used, so the checks below are not vacuous ("odd" has no row a
    # multiple of 32 values: there the policy keeps every tensor f16 or f32).
    assert dtype in expected or name == "odd"
    assert info["dtypes"] == expected
    assert {k: {"tensors": u.tensors, "bytes": u.bytes} for k, u in summary.by_dtype.items()} == expected

    config = info["config"]
    assert (config["model_id"], config["name"], config["license"]) == (f"id-{name}", f"test {name}", "MIT")
    unet = config["components"]["unet"]
    heads = UNET_CONFIGS[name]["attention_head_dim"]
    levels = len(UNET_CONFIGS[name]["block_out_channels"])
    assert unet["num_attention_heads"] == (list(heads) if isinstance(heads, tuple) else [heads] * levels)

    check_values(out, state, dtype)


def check_values(path: Path, state: dict[str, np.ndarray], dtype: str) -> None:
    """Every stored tensor against the original weights, through gguf's own reader and dequantizer."""
    originals = {tensor_name("unet", k): v for k, v in state.items()}
    tensors = GGUFReader(path).tensors
    assert sorted(t.name for t in tensors) == sorted(originals)
    for t in tensors:
        original = originals[t.name]
        kind = t.tensor_type.name.lower()
        assert kind == expected_dtype(original.shape, dtype), t.name
        if kind == "f32":
            np.testing.assert_array_equal(t.data, original, err_msg=t.name)
        elif kind == "f16":
            np.testing.assert_array_equal(t.data, original.astype(np.float16), err_msg=t.name)
        else:
            restored = dequantize(t.data, t.tensor_type).reshape(original.shape)
            check_block_error(t.name, original, restored, kind)


# Worst-case error of one value, in units of its 32-value block's largest magnitude m.
# Q8_0 stores d = m/127 (as f16) and round(x/d): error <= d/2 from rounding, plus |q| <= 127
# times the f16 rounding of d (relative 2^-11), so 0.5/127 + 2^-11 of m: 0.56/127, within
# the 1/127 one would guess. Q4_0 stores d = m/8 and q in [-8, 7]; the one value of magnitude
# m and sign opposite to the block's extreme is clipped from +8 to +7, a full d, plus 8 times
# the f16 rounding of d. The absolute term covers scales that are f16 subnormals (spacing 2^-24).
ERROR_BOUND = {
    "q8_0": (0.5 / 127 + 2**-11, 127 * 2**-25),
    "q4_0": (1 / 8 + 2**-11, 8 * 2**-25),
}


def check_block_error(name: str, original: np.ndarray, restored: np.ndarray, kind: str) -> None:
    relative, absolute = ERROR_BOUND[kind]
    blocks = original.reshape(-1, 32).astype(np.float64)
    error = np.abs(restored.reshape(-1, 32) - blocks).max(axis=1)
    bound = np.abs(blocks).max(axis=1) * relative * (1 + 1e-5) + absolute  # 1e-5: float32 arithmetic
    worst = int(np.argmax(error - bound))
    assert error[worst] <= bound[worst], f"{name}: block {worst} error {error[worst]:g} > bound {bound[worst]:g}"


def test_converted_sd1_sizes(saved, tmp_path):
    """The figures the report quotes: one model, each dtype; quantizing only ever shrinks the file."""
    folder, _ = saved("sd1")
    sizes = {d: convert_unet(folder, tmp_path / f"{d}.gguf", d, "sd1").file_size for d in DTYPES}
    assert sizes["f32"] > sizes["f16"] > sizes["q8_0"] > sizes["q4_0"]


# --- reading safetensors ---------------------------------------------------------------------------


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]], edit=None) -> Path:
    """A safetensors file written by hand from (dtype name, array) pairs; `edit` may change the header."""
    header: dict = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, (dtype, array) in tensors.items():
        blob = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if edit:
        edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"".join(blobs))
    return path


@pytest.mark.parametrize("name", sorted(UNET_CONFIGS))
def test_read_safetensors_matches_torch(saved, name):
    folder, state = saved(name)
    read = read_safetensors(folder / WEIGHTS)
    assert sorted(read) == sorted(state)
    for key, array in read.items():
        assert array.dtype == np.float32 and array.shape == state[key].shape, key
        np.testing.assert_array_equal(array, state[key], err_msg=key)


@pytest.mark.parametrize("torch_dtype", ["float16", "bfloat16"])
def test_read_half_precision_saved_by_torch(torch_dtype, tmp_path):
    """diffusers' own F16 and BF16 files; BF16 becomes the float32 torch itself widens it to."""
    import torch

    unet = make_unet("micro").to(getattr(torch, torch_dtype))
    unet.save_pretrained(tmp_path)
    read = read_safetensors(tmp_path / WEIGHTS)
    for key, tensor in unet.state_dict().items():
        expected = tensor.numpy() if torch_dtype == "float16" else tensor.float().numpy()
        assert read[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(read[key], expected, err_msg=key)
    convert_unet(tmp_path, tmp_path / "half.gguf", "f16", "half")


def test_read_hand_made_bf16(tmp_path):
    import torch

    values = torch.tensor([[1.0, -2.5, 3.14159, 1e-40], [65504.0, -1e30, float("inf"), 0.0]], dtype=torch.bfloat16)
    bits = values.view(torch.int16).numpy().view(np.uint16)
    f64 = np.array([1.0, 1 / 3, -1e300])
    f16 = np.array([[0.5, -0.25]], np.float16)
    path = write_safetensors(tmp_path / "m.safetensors", {"bf": ("BF16", bits), "d": ("F64", f64), "h": ("F16", f16)})
    read = read_safetensors(path)
    assert list(read) == ["bf", "d", "h"]  # __metadata__ skipped, header order kept
    assert read["bf"].dtype == np.float32
    np.testing.assert_array_equal(read["bf"], values.float().numpy())
    np.testing.assert_array_equal(read["d"], f64)
    np.testing.assert_array_equal(read["h"], f16)


def set_entry(name: str, field: str, value):
    def edit(header):
        header[name][field] = value

    return edit


def overlap(header):
    header["b"]["data_offsets"] = header["a"]["data_offsets"]


def not_an_object(header):
    header["a"] = 5


# Changes to a valid file of two 24-byte tensors, made to its header before writing...
HEADER_CASES = {
    "entry not an object": (not_an_object, ["'a'", "needs dtype, shape and data_offsets"]),
    "integer dtype": (set_entry("a", "dtype", "I64"), ["'a'", "I64", "not supported"]),
    "negative shape": (set_entry("b", "shape", [-2, 6]), ["'b'", "bad shape"]),
    "offsets disagree with shape": (set_entry("a", "data_offsets", [0, 20]), ["'a'", "hold 20 bytes", "needs 24"]),
    "reversed offsets": (set_entry("a", "data_offsets", [24, 0]), ["'a'", "bad data_offsets"]),
    "overlapping tensors": (overlap, ["'b'", "overlapping"]),
}
# ... or to its bytes after; each with words the message must contain.
BYTES_CASES = {
    "too short": (lambda d: d[:5], ["too short"]),
    "header beyond file": (lambda d: (1 << 40).to_bytes(8, "little") + d[8:], ["header length", "exceeds"]),
    "header not utf-8": (lambda d: d[:8] + b"\xff" * 16 + d[24:], ["corrupt safetensors header"]),
    "header not an object": (lambda d: (8).to_bytes(8, "little") + b"[]      ", ["not a JSON object"]),
    "truncated data": (lambda d: d[:-4], ["truncated"]),
    "trailing bytes": (lambda d: d + b"\0" * 8, ["trailing bytes"]),
}


@pytest.mark.parametrize("case", [*HEADER_CASES, *BYTES_CASES])
def test_corrupt_safetensors_refused(case, tmp_path):
    tensors = {"a": ("F32", np.arange(6, dtype=np.float32).reshape(2, 3)), "b": ("F16", np.ones((2, 6), np.float16))}
    path = tmp_path / "bad.safetensors"
    if case in HEADER_CASES:
        change, words = HEADER_CASES[case]
        write_safetensors(path, tensors, edit=change)
    else:
        change, words = BYTES_CASES[case]
        path.write_bytes(change(write_safetensors(path, tensors).read_bytes()))
    with pytest.raises(ConvertError) as info:
        read_safetensors(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# --- config checks ---------------------------------------------------------------------------------


def test_defaults_are_diffusers_defaults():
    """A key missing from config.json must mean what diffusers makes of it."""
    from diffusers import UNet2DConditionModel

    params = inspect.signature(UNet2DConditionModel.__init__).parameters
    diffusers_defaults = {k: list(p.default) if isinstance(p.default, tuple) else p.default
                          for k, p in params.items() if k != "self"}
    assert diffusers_defaults == UNET_DEFAULTS


REFUSED_SETTINGS = {
    "class_embed_type": "timestep",
    "num_class_embeds": 10,
    "addition_embed_type": "text_time",
    "time_cond_proj_dim": 256,
    "time_embedding_type": "fourier",
    "resnet_time_scale_shift": "scale_shift",
    "only_cross_attention": [True, False],
    "mid_block_only_cross_attention": True,
    "attention_type": "gated",
    "act_fn": "gelu",
    "conv_in_kernel": 7,
    "center_input_sample": True,
    "transformer_layers_per_block": [[1, 2], [1, 2]],  # a depth per layer, not per level
    "layers_per_block": [1, 2],
    "cross_attention_dim": [8, 16],
    "down_block_types": ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D"],  # one block for two levels
    "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
    "sample_size": None,
    "norm_eps": "small",
}


@pytest.mark.parametrize("key", list(REFUSED_SETTINGS))
def test_unsupported_setting_refused(saved, key, tmp_path):
    folder = copy_folder(saved("micro")[0], tmp_path / "unet")
    edit_config(folder, **{key: REFUSED_SETTINGS[key]})
    out = tmp_path / "m.gguf"
    with pytest.raises(ConvertError) as info:
        convert_unet(folder, out, "f16", "m")
    message = str(info.value)
    assert message.startswith(f"{folder / 'config.json'}: ") and key in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet"]


def test_unknown_and_foreign_configs_refused(saved):
    config = json.loads((saved("micro")[0] / "config.json").read_text())
    with pytest.raises(ConvertError, match="unknown UNet2DConditionModel setting.*use_fancy_attention"):
        unet_keys({**config, "use_fancy_attention": True})
    with pytest.raises(ConvertError, match="_class_name = 'AutoencoderKL'"):
        unet_keys({**config, "_class_name": "AutoencoderKL"})
    # JSON that is not a block name: refused as unsupported, not a TypeError
    with pytest.raises(ConvertError, match=r"down_block_types: \['CrossAttnDownBlock2D'\] is not supported"):
        unet_keys({**config, "down_block_types": [["CrossAttnDownBlock2D"], "DownBlock2D"]})
    with pytest.raises(ConvertError, match=r"mid_block_type = \{\} is not supported"):
        unet_keys({**config, "mid_block_type": {}})


def test_transformer_depth_per_level(saved):
    """One depth for every level is written as one number (as before per-level depths), a depth per level as
    an array; depths outside 1-8 or a list of the wrong length are refused."""
    config = json.loads((saved("micro")[0] / "config.json").read_text())
    key = "cutecpp.unet.transformer_layers_per_block"
    assert unet_keys(config)[key] == (GGUFValueType.UINT32, 1, None)
    assert unet_keys({**config, "transformer_layers_per_block": [1, 2]})[key] == (
        GGUFValueType.ARRAY, [1, 2], GGUFValueType.UINT32)
    with pytest.raises(ConvertError, match="1 to 8 blocks per attention"):
        unet_keys({**config, "transformer_layers_per_block": [1, 9]})
    with pytest.raises(ConvertError, match="one entry per level"):
        unet_keys({**config, "transformer_layers_per_block": [1, 2, 2]})


def test_transformer_blocks_in_all_capped(saved):
    """At most 128 transformer blocks in the whole UNet, counted as the C++ loader counts them. The micro
    UNet attends in the first level's down block (L layers), the last up block (L + 1 layers, the first
    level's depth) and the mid block (the last level's depth)."""
    config = json.loads((saved("micro")[0] / "config.json").read_text())

    def keys(layers: int, depth: list[int]):
        return unet_keys({**config, "layers_per_block": layers, "transformer_layers_per_block": depth})

    assert keys(7, [8, 8])  # 7*8 + 8*8 + 8 = 128: the cap itself
    assert keys(8, [7, 8])  # 8*7 + 9*7 + 8 = 127
    with pytest.raises(ConvertError, match="143 transformer blocks in all: cutecpp supports at most 128"):
        keys(8, [8, 7])  # 8*8 + 9*8 + 7
    with pytest.raises(ConvertError, match="136 transformer blocks in all"):
        unet_keys({**config, "layers_per_block": 8, "transformer_layers_per_block": 8, "mid_block_type": None})
    with pytest.raises(ConvertError, match="layers_per_block = 'two': expected a non-negative integer"):
        keys("two", [1, 1])  # checked before it is counted


def test_equivalent_spellings_accepted(saved):
    """Per-level lists of one value and settings that do not change the network convert as the plain form."""
    config = json.loads((saved("micro")[0] / "config.json").read_text())
    same = dict(only_cross_attention=[False, False], mid_block_only_cross_attention=False, upcast_attention=True,
                dropout=0.1, transformer_layers_per_block=[1, 1], layers_per_block=[1, 1], cross_attention_dim=[8, 8],
                attention_head_dim=[2, 2])
    assert unet_keys({**config, **same}) == unet_keys(config)
    dropped = ("_diffusers_version", "act_fn", "dropout", "conv_in_kernel")
    minimal = {k: v for k, v in config.items() if k not in dropped}
    assert unet_keys(minimal) == unet_keys(config)


# --- files and folders -----------------------------------------------------------------------------


def copy_folder(folder: Path, to: Path) -> Path:
    return Path(shutil.copytree(folder, to))


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_missing_folder(tmp_path):
    with pytest.raises(ConvertError, match=r"nope: no such directory \(expected a diffusers UNet folder"):
        convert_unet(tmp_path / "nope", tmp_path / "m.gguf", "f16", "m")


def test_folder_without_config(saved, tmp_path):
    folder = copy_folder(saved("micro")[0], tmp_path / "unet")
    (folder / "config.json").unlink()
    with pytest.raises(ConvertError, match="no config.json"):
        convert_unet(folder, tmp_path / "m.gguf", "f16", "m")


def test_bin_only_folder(saved, tmp_path):
    folder = copy_folder(saved("micro")[0], tmp_path / "unet")
    (folder / WEIGHTS).rename(folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ConvertError, match="convert to safetensors first"):
        convert_unet(folder, tmp_path / "m.gguf", "f16", "m")


def test_bad_options(saved, tmp_path):
    folder, _ = saved("micro")
    with pytest.raises(ConvertError, match="'q2_k' is not one of"):
        convert_unet(folder, tmp_path / "m.gguf", "q2_k", "m")
    with pytest.raises(ConvertError, match="no such directory"):
        convert_unet(folder, tmp_path / "missing" / "m.gguf", "f16", "m")


def test_loader_refusal_leaves_previous_output(saved, tmp_path):
    """A checkpoint missing a tensor converts, but the loader refuses it: the old bundle stays in place."""
    folder, state = saved("micro")
    out = tmp_path / "m.gguf"
    convert_unet(folder, out, "f16", "old")
    before = out.read_bytes()
    broken = copy_folder(folder, tmp_path / "unet")
    dropped = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    write_safetensors(broken / WEIGHTS, {k: ("F32", v) for k, v in state.items() if k != dropped})
    with pytest.raises(ConvertError) as info:
        convert_unet(broken, out, "f16", "new")
    assert str(info.value).startswith(f"{out}: the cutecpp loader refuses the converted bundle: ")
    assert f"missing tensor '{tensor_name('unet', dropped)}'" in str(info.value)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "unet"]


@pytest.mark.parametrize(("value", "dtype", "words"), [
    (float("nan"), "f32", "holds NaN or infinity"),
    (1e5, "f16", "beyond float16's range"),
])
def test_unrepresentable_values_refused(saved, tmp_path, value, dtype, words):
    folder, state = saved("micro")
    broken = copy_folder(folder, tmp_path / "unet")
    key = "conv_in.weight"
    bad = state[key].copy()
    bad.flat[5] = value
    tensors = {k: ("F32", bad if k == key else v) for k, v in state.items()}
    write_safetensors(broken / WEIGHTS, tensors)
    with pytest.raises(ConvertError, match=f"tensor '{key}': .*{words}"):
        convert_unet(broken, tmp_path / "m.gguf", dtype, "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet"]  # the partial file is gone too


# --- the command line ------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/convert_diffusers.py", *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_cli_converts(saved, tmp_path):
    folder, state = saved("sd1")
    out = tmp_path / "cute-test.gguf"
    run = run_cli("--unet", str(folder), "-o", str(out), "--dtype", "q8_0", "--name", "Cute", "--license", "MIT")
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    lines = run.stdout.splitlines()
    assert lines[0].split()[:4] == ["dtype", "tensors", "parameters", "bytes"]
    rows = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
    assert set(rows) == {"f32", "f16", "q8_0", "file"}
    assert rows["file"] == [str(len(state)), f"{sum(a.size for a in state.values()):,}", f"{out.stat().st_size:,}"]
    config = cutecpp.Model.load(out).info["config"]
    assert (config["model_id"], config["name"], config["license"]) == ("cute-test", "Cute", "MIT")


def test_cli_one_line_error(tmp_path):
    run = run_cli("--unet", str(tmp_path / "nope"), "-o", str(tmp_path / "m.gguf"))
    assert run.returncode == 1
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'nope'}: no such directory")



# --- several components in one bundle --------------------------------------------------------------


@pytest.fixture(scope="session")
def decoders(tmp_path_factory):
    """kind ("tiny" or "vae") -> (folder written by diffusers' save_pretrained, the model)."""
    tiny, vae = make_tiny("x16"), make_kl("latent16")
    folders = {}
    for kind, model in (("tiny", tiny), ("vae", vae)):
        folders[kind] = tmp_path_factory.mktemp(kind), model
        model.save_pretrained(folders[kind][0])
    return folders


def test_unet_and_both_decoders_in_one_bundle(saved, decoders, tmp_path):
    """A folder triple becomes one bundle whose three networks each match diffusers (f32)."""
    import torch

    unet_folder, unet_state = saved("latent16")
    (tiny_folder, tiny), (vae_folder, vae) = decoders["tiny"], decoders["vae"]
    out = tmp_path / "triple.gguf"
    summary = convert(out, "f32", "triple", unet=unet_folder, tiny_decoder=tiny_folder, vae=vae_folder,
                      name="Triple", license="MIT")
    model = cutecpp.Model.load(out)
    info = model.info
    assert list(info["config"]["components"]) == ["unet", "tiny_decoder", "vae_decoder"]
    stored = len(unet_state) + len(decoder_state(tiny)) + len(decoder_state(vae, ("decoder.", "post_quant_conv.")))
    assert info["n_tensors"] == summary.n_tensors == stored
    assert {t.name.split(".")[0] for t in GGUFReader(out).tensors} == {"unet", "tiny_decoder", "vae_decoder"}

    ctx = cutecpp.Context(model, threads=2)
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    timesteps = np.array([500.0], np.float32)
    context = rng.standard_normal((1, 5, 24)).astype(np.float32)
    latents = rng.standard_normal((1, 16, 3, 4)).astype(np.float32)
    unet = make_unet("latent16")
    with torch.no_grad():
        results = {
            "unet": (ctx.unet(sample, timesteps, context),
                     unet(*map(torch.from_numpy, (sample, timesteps, context))).sample.numpy()),
            "tiny": (ctx.tiny_decode(latents), tiny.decode(torch.from_numpy(latents)).sample.numpy()),
            "vae": (ctx.vae_decode(latents), vae.decode(torch.from_numpy(latents) / vae.config.scaling_factor
                                                        + vae.config.shift_factor).sample.numpy()),
        }
    for what, (got, ref) in results.items():
        assert got.shape == ref.shape, what
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max(), what


def test_tiny_defaults_are_diffusers_defaults():
    from diffusers import AutoencoderTiny

    params = inspect.signature(AutoencoderTiny.__init__).parameters
    defaults = {k: list(p.default) if isinstance(p.default, tuple) else p.default
                for k, p in params.items() if k != "self"}
    assert defaults == TINY_DEFAULTS


@pytest.mark.parametrize(("key", "value"), [
    ("act_fn", "silu"),
    ("upsample_fn", "bilinear"),
    ("num_decoder_blocks", [1, 1]),
    ("decoder_block_out_channels", [8, 8, 8]),
    ("_class_name", "AutoencoderKL"),
    ("use_fancy_decoder", True),
])
def test_tiny_settings_refused_naming_the_key(decoders, key, value):
    config = dict(decoders["tiny"][1].config)
    with pytest.raises(ConvertError, match=key):
        tiny_decoder_keys({**config, key: value})


def test_latent_statistics_written_for_both_decoders(decoders):
    config = dict(decoders["tiny"][1].config)
    channels = config["latent_channels"]
    stats = {"latents_mean": [0.5] * channels, "latents_std": [2] * channels}
    keys = tiny_decoder_keys({**config, **stats})
    assert keys["cutecpp.tiny_decoder.latents_mean"] == (GGUFValueType.ARRAY, [0.5] * channels, GGUFValueType.FLOAT32)
    assert keys["cutecpp.tiny_decoder.latents_std"] == (GGUFValueType.ARRAY, [2.0] * channels, GGUFValueType.FLOAT32)
    assert "cutecpp.tiny_decoder.latents_mean" not in tiny_decoder_keys(config)
    vae = dict(make_kl("sd").config)
    n = vae["latent_channels"]
    keys = vae_decoder_keys({**vae, "latents_mean": [0.0] * n, "latents_std": [1.0] * n})
    assert keys["cutecpp.vae_decoder.latents_std"][1] == [1.0] * n


@pytest.mark.parametrize(("stats", "words"), [
    ({"latents_mean": [0.0]}, "come together"),
    ({"latents_mean": [0.0], "latents_std": [1.0]}, "latents_mean has 1 values for"),
    ({"latents_mean": "zero", "latents_std": [1.0]}, "latents_mean = 'zero': expected a non-empty list"),
    ({"latents_mean": ["a"], "latents_std": [1.0]}, "latents_mean = 'a': expected a number"),
])
def test_bad_latent_statistics_refused(decoders, stats, words):
    config = dict(decoders["tiny"][1].config)
    with pytest.raises(ConvertError, match=re.escape(words)):
        tiny_decoder_keys({**config, **stats})
    n = config["latent_channels"]
    with pytest.raises(ConvertError, match="every value must be > 0"):
        tiny_decoder_keys({**config, "latents_mean": [0.0] * n, "latents_std": [1.0] * (n - 1) + [0.0]})


def test_folder_of_the_wrong_class(saved, decoders, tmp_path):
    with pytest.raises(ConvertError, match="_class_name = 'AutoencoderTiny': expected an AutoencoderKL config"):
        convert(tmp_path / "m.gguf", "f16", "m", vae=decoders["tiny"][0])
    with pytest.raises(ConvertError, match="_class_name = 'UNet2DConditionModel': expected an AutoencoderTiny"):
        convert(tmp_path / "m.gguf", "f16", "m", tiny_decoder=saved("micro")[0])
    with pytest.raises(ConvertError, match="nothing to convert"):
        convert(tmp_path / "m.gguf", "f16", "m")
    assert list(tmp_path.iterdir()) == []


def test_old_attention_names_renamed(tmp_path):
    """Checkpoints from before diffusers 0.14 (query/key/value/proj_attn) convert to the same bundle."""
    vae = make_kl("sd")  # has the mid-block attention
    vae.save_pretrained(tmp_path / "new")
    vae.save_pretrained(tmp_path / "old")
    former = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old_state = {}
    for key, tensor in vae.state_dict().items():
        for new, old in former.items():
            key = key.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        old_state[key] = ("F32", tensor.detach().numpy())
    assert sum(".attentions.0.proj_attn." in k for k in old_state) == 4  # the encoder's and the decoder's
    write_safetensors(tmp_path / "old" / WEIGHTS, old_state)
    tensors = {}
    for kind in ("old", "new"):  # with the encoder, whose attention is renamed too
        convert(tmp_path / f"{kind}.gguf", "f32", kind, vae=tmp_path / kind, encoders=True)
        tensors[kind] = {t.name: np.array(t.data) for t in GGUFReader(tmp_path / f"{kind}.gguf").tensors}
    assert sorted(tensors["old"]) == sorted(tensors["new"])
    assert "vae_encoder.encoder.mid_block.attentions.0.to_out.0.weight" in tensors["old"]
    for name, array in tensors["new"].items():
        np.testing.assert_array_equal(tensors["old"][name], array, err_msg=name)


def test_foreign_tensor_in_an_autoencoder_refused(decoders, tmp_path):
    folder, vae = decoders["vae"]
    broken = copy_folder(folder, tmp_path / "vae")
    tensors = {k: ("F32", v.detach().numpy()) for k, v in vae.state_dict().items()}
    tensors["text_model.weight"] = ("F32", np.zeros(3, np.float32))
    write_safetensors(broken / WEIGHTS, tensors)
    with pytest.raises(ConvertError, match="unexpected tensor 'text_model.weight' .expected a diffusers AutoencoderKL"):
        convert(tmp_path / "m.gguf", "f16", "m", vae=broken)


def test_cli_converts_several_folders(saved, decoders, tmp_path):
    out = tmp_path / "three.gguf"
    run = run_cli("--unet", str(saved("latent16")[0]), "--tiny-decoder", str(decoders["tiny"][0]),
                  "--vae", str(decoders["vae"][0]), "-o", str(out), "--dtype", "q8_0")
    assert run.returncode == 0, run.stderr
    assert list(cutecpp.Model.load(out).info["config"]["components"]) == ["unet", "tiny_decoder", "vae_decoder"]
    run = run_cli("-o", str(out))
    assert run.returncode == 2 and "give at least one of --unet, --tiny-decoder, --vae and --alignment" in run.stderr


def test_cli_with_encoders(decoders, tmp_path):
    out = tmp_path / "enc.gguf"
    run = run_cli("--tiny-decoder", str(decoders["tiny"][0]), "--vae", str(decoders["vae"][0]), "--with-encoders",
                  "-o", str(out), "--dtype", "f16")
    assert run.returncode == 0, run.stderr
    assert list(cutecpp.Model.load(out).info["config"]["components"]) == [
        "tiny_decoder", "vae_decoder", "tiny_encoder", "vae_encoder"]
    run = run_cli("--unet", str(tmp_path), "--with-encoders", "-o", str(out))
    assert run.returncode == 2 and "--with-encoders needs --tiny-decoder or --vae" in run.stderr
