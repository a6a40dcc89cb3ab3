"""Every kind of bad bundle is refused with a clear, typed error naming the problem.

Each case is checked through the Python API and through `cutecpp info --model`
(exit status 1, one line on stderr, no traceback).
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bundles import Bundle, alignment_bundle
from click.testing import CliRunner
from gguf import GGUFValueType

import cutecpp
from cutecpp.cli import cli

U32, I32, STR, ARR = GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.STRING, GGUFValueType.ARRAY
P = "cutecpp.unet."
A = "cutecpp.alignment."
T = "cutecpp.text_encoder."
SOME_MATRIX = "unet.down_blocks.0.attentions.0.tb.0.attn1.to_q.weight"
SOME_BIAS = "unet.conv_in.bias"


def patched(offset: int, fmt: str, value) -> Callable[[bytes], bytes]:
    """Overwrites a little-endian field of the written file."""

    def patch(data: bytes) -> bytes:
        return data[:offset] + struct.pack("<" + fmt, value) + data[offset + struct.calcsize(fmt):]

    return patch


# Each case: how to change the valid micro bundle (before writing) or its bytes
# (after writing), the exception type, and words the message must contain.
def drop_key(key):
    return lambda b: b.kv.pop(key)


def set_key(key, vtype, value, sub=None):
    return lambda b: b.set(key, vtype, value, sub)


def both(first, second):
    return lambda b: (first(b), second(b))


def drop_tensor(b):
    b.tensors.pop(SOME_MATRIX)


def extra_tensor(b):
    b.tensors["unet.not_a_layer.weight"] = np.zeros((4, 4), np.float32)


def wrong_shape(b):
    b.tensors["unet.conv_in.weight"] = np.zeros((8, 4, 1, 1), np.float32)


def int_tensor(b):
    b.tensors[SOME_MATRIX] = b.tensors[SOME_MATRIX].astype(np.int32)


def f16_bias(b):
    b.tensors[SOME_BIAS] = b.tensors[SOME_BIAS].astype(np.float16)


def wrong_arch(b):
    b.architecture = "llama"


def with_alignment(change):
    """Adds the small alignment module to the bundle, then applies `change`."""

    def add(b):
        part = alignment_bundle("small")
        b.kv.update({k: v for k, v in part.kv.items() if k.startswith(A)})
        b.tensors.update(part.tensors)
        b.set("cutecpp.components", ARR, ["unet", "alignment"], STR)
        change(b)

    return add


def drop(name):
    return lambda b: b.tensors.pop(name)


def with_text_encoder(change):
    """Adds a valid cutecpp.text_encoder section, then applies `change`."""

    def apply(b):
        b.set(T + "sha256", STR, "0" * 64)
        b.set(T + "layers", U32, 12)
        change(b)

    return apply


BUNDLE_CASES = {
    "wrong architecture": (wrong_arch, cutecpp.ModelError, ["general.architecture", "llama"]),
    "missing format version": (drop_key("cutecpp.format_version"), cutecpp.ModelError, ["missing key", "cutecpp.format_version"]),
    "future format version": (set_key("cutecpp.format_version", U32, 2), cutecpp.UnsupportedError, ["format version 2", "upgrade"]),
    "missing config key": (drop_key(P + "layers_per_block"), cutecpp.ModelError, ["missing key", P + "layers_per_block"]),
    "wrong key type": (set_key(P + "layers_per_block", STR, "1"), cutecpp.ModelError, [P + "layers_per_block", "uint32", "string"]),
    "signed instead of unsigned": (set_key(P + "in_channels", I32, 4), cutecpp.ModelError, [P + "in_channels", "int32"]),
    "array of wrong type": (set_key(P + "block_out_channels", ARR, [8, 16], I32), cutecpp.ModelError, [P + "block_out_channels", "array of uint32", "int32"]),
    "scalar instead of array": (set_key(P + "block_out_channels", U32, 8), cutecpp.ModelError, [P + "block_out_channels", "array"]),
    "unknown key": (set_key(P + "dropout", U32, 0), cutecpp.ModelError, ["unknown key", P + "dropout"]),
    "unknown component": (set_key("cutecpp.components", ARR, ["unet", "vae"], STR), cutecpp.UnsupportedError, ["unknown component", "vae"]),
    "duplicate component": (set_key("cutecpp.components", ARR, ["unet", "unet"], STR), cutecpp.UnsupportedError, ["unet", "twice"]),
    "unsupported block type": (set_key(P + "down_block_types", ARR, ["AttnDownBlock2D", "DownBlock2D"], STR), cutecpp.UnsupportedError, ["AttnDownBlock2D"]),
    "unsupported mid block": (set_key(P + "mid_block_type", STR, "UNetMidBlock2DSimpleCrossAttn"), cutecpp.UnsupportedError, ["UNetMidBlock2DSimpleCrossAttn"]),
    "absurd transformer layers": (set_key(P + "transformer_layers_per_block", U32, 1 << 20), cutecpp.UnsupportedError, ["transformer_layers_per_block", "1 to 8"]),
    "transformer layers per level mismatch": (set_key(P + "transformer_layers_per_block", ARR, [1, 1, 1], U32), cutecpp.UnsupportedError, ["transformer_layers_per_block", "3 entries"]),
    "too many transformer blocks in all": (both(set_key(P + "layers_per_block", U32, 8), set_key(P + "transformer_layers_per_block", U32, 8)), cutecpp.UnsupportedError, ["144 transformer blocks in all", "at most 128"]),
    "two transformer layers, one's tensors": (set_key(P + "transformer_layers_per_block", U32, 2), cutecpp.ModelError, ["missing tensor", ".tb.1."]),
    "length mismatch": (set_key(P + "num_attention_heads", ARR, [2, 2, 2], U32), cutecpp.UnsupportedError, ["num_attention_heads", "3 entries"]),
    "heads do not divide": (set_key(P + "num_attention_heads", ARR, [3, 2], U32), cutecpp.UnsupportedError, ["3 heads", "8 channels"]),
    "groups do not divide": (set_key(P + "norm_num_groups", U32, 3), cutecpp.UnsupportedError, ["norm_num_groups"]),
    "absurd channels": (set_key(P + "block_out_channels", ARR, [8, 1 << 30], U32), cutecpp.UnsupportedError, [str(1 << 30), "outside"]),
    "absurd levels": (set_key(P + "block_out_channels", ARR, [8] * 100, U32), cutecpp.UnsupportedError, ["100"]),
    "absurd layers": (set_key(P + "layers_per_block", U32, 1 << 31), cutecpp.UnsupportedError, ["layers_per_block", "outside"]),
    "bad norm eps": (set_key(P + "norm_eps", GGUFValueType.FLOAT32, float("nan")), cutecpp.UnsupportedError, ["norm_eps"]),
    "missing tensor": (drop_tensor, cutecpp.ModelError, ["missing tensor", SOME_MATRIX]),
    "extra tensor": (extra_tensor, cutecpp.ModelError, ["unexpected tensor", "unet.not_a_layer.weight"]),
    "wrong shape": (wrong_shape, cutecpp.ModelError, ["unet.conv_in.weight", "[8, 4, 1, 1]", "[8, 4, 3, 3]"]),
    "unsupported dtype": (int_tensor, cutecpp.UnsupportedError, [SOME_MATRIX, "i32"]),
    "1-D tensor not f32": (f16_bias, cutecpp.UnsupportedError, [SOME_BIAS, "must be f32"]),
    "alignment heads do not divide": (with_alignment(set_key(A + "heads", U32, 5)), cutecpp.UnsupportedError, [A + "heads", "5 heads do not divide dim 24"]),
    "alignment absurd layers": (with_alignment(set_key(A + "layers", U32, 1 << 31)), cutecpp.UnsupportedError, [A + "layers", "outside [0, 32]"]),
    "alignment missing key": (with_alignment(drop_key(A + "in_dim")), cutecpp.ModelError, ["missing key", A + "in_dim"]),
    "alignment unknown key": (with_alignment(set_key(A + "mask", U32, 1)), cutecpp.ModelError, ["unknown key", A + "mask"]),
    "alignment missing tensor": (with_alignment(drop("alignment.blocks.1.ff.fc2.weight")), cutecpp.ModelError, ["missing tensor", "alignment.blocks.1.ff.fc2.weight", "[24, 96]"]),
    "text encoder bad sha256": (set_key(T + "sha256", STR, "ABC"), cutecpp.UnsupportedError, [T + "sha256", "64 lowercase hex"]),
    "text encoder no layers": (with_text_encoder(drop_key(T + "layers")), cutecpp.ModelError, ["missing key", T + "layers"]),
    "text encoder zero layers": (with_text_encoder(set_key(T + "layers", U32, 0)), cutecpp.UnsupportedError, [T + "layers"]),
    "text encoder unknown key": (with_text_encoder(set_key(T + "vocab", U32, 1)), cutecpp.ModelError, ["unknown key", T + "vocab"]),
    "alignment keys without component": (with_alignment(set_key("cutecpp.components", ARR, ["unet"], STR)), cutecpp.ModelError, ["unknown key", A]),
}

# Cases on the written bytes of the valid bundle (GGUF v3 header: magic 0-3,
# version 4-7, tensor count 8-15, key count 16-23, first key length 24-31).
BYTES_CASES = {
    "empty file": (lambda d: b"", cutecpp.FormatError, ["empty"]),
    "not gguf": (lambda d: b"\x89PNG\r\n\x1a\n" + d[8:], cutecpp.FormatError, ["not a GGUF file"]),
    "text file": (lambda d: "小熊 穿蓝裤子\n".encode(), cutecpp.FormatError, ["not a GGUF file"]),
    "only magic": (lambda d: d[:4], cutecpp.FormatError, ["truncated", "GGUF header"]),
    "future gguf version": (patched(4, "I", 4), cutecpp.FormatError, ["version 4"]),
    "gguf v1": (patched(4, "I", 1), cutecpp.FormatError, ["GGUFv1"]),
    "big-endian version": (patched(4, "I", 3 << 24), cutecpp.FormatError, ["endian"]),
    "absurd tensor count": (patched(8, "Q", 1 << 62), cutecpp.FormatError, ["number of tensors"]),
    "absurd key count": (patched(16, "Q", 1 << 62), cutecpp.FormatError, ["key value pairs"]),
    "absurd string length": (patched(24, "Q", 1 << 40), cutecpp.FormatError, ["string length"]),
    "truncated header": (lambda d: d[:600], cutecpp.FormatError, []),
    "truncated data": (lambda d: d[: len(d) - 4096], cutecpp.FormatError, ["truncated", "needs bytes"]),
}


def write_case(micro: Bundle, name: str, tmp_path: Path) -> Path:
    path = tmp_path / "bad.gguf"
    if name in BUNDLE_CASES:
        bundle = copy.deepcopy(micro)
        BUNDLE_CASES[name][0](bundle)
        bundle.write(path)
    else:
        valid = micro.write(tmp_path / "valid.gguf").read_bytes()
        path.write_bytes(BYTES_CASES[name][0](valid))
    return path


ALL_CASES = {**BUNDLE_CASES, **BYTES_CASES}


@pytest.mark.parametrize("name", list(ALL_CASES))
def test_bad_bundle_refused(micro, name, tmp_path):
    _, error, words = ALL_CASES[name]
    path = write_case(micro, name, tmp_path)
    with pytest.raises(error) as info:
        cutecpp.Model.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"

    result = CliRunner().invoke(cli, ["info", "--model", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"Error: {message}"


def test_missing_file(tmp_path):
    with pytest.raises(cutecpp.FileError, match="no such file"):
        cutecpp.Model.load(tmp_path / "nope.gguf")


def test_directory(tmp_path):
    with pytest.raises(cutecpp.FileError, match="is a directory"):
        cutecpp.Model.load(tmp_path)


def test_fifo_is_refused_without_blocking(tmp_path):
    import os

    path = tmp_path / "pipe.gguf"
    os.mkfifo(path)
    with pytest.raises(cutecpp.FileError, match="not a regular file"):
        cutecpp.Model.load(path)


def test_device_file_is_refused():
    with pytest.raises(cutecpp.FileError, match="not a regular file"):
        cutecpp.Model.load("/dev/zero")


def test_error_is_per_thread(micro, tmp_path):
    """The C core's last-error message is thread-local: a failure elsewhere does not leak in."""
    import threading

    from cutecpp._binding import lib, text

    with pytest.raises(cutecpp.FileError):
        cutecpp.Model.load(tmp_path / "nope.gguf")
    seen = []
    worker = threading.Thread(target=lambda: seen.append(text(lib.cutecpp_last_error())))
    worker.start()
    worker.join()
    assert seen == [""]
    assert "no such file" in text(lib.cutecpp_last_error())


FUZZ_FINDS = sorted((Path(__file__).parent / "data").glob("fuzz-*.gguf"))


@pytest.mark.parametrize("path", FUZZ_FINDS, ids=[p.name for p in FUZZ_FINDS])
def test_fuzzer_finds_are_refused(path):
    """Inputs that once crashed the loader (tools/fuzz_loader.sh) stay refused."""
    with pytest.raises(cutecpp.FormatError, match="absurd shape|truncated|GGUF"):
        cutecpp.Model.load(path)
