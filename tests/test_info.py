"""`cutecpp info`, the binding, and the one-ggml-per-process linkage."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import cutecpp
from cutecpp._binding import check, ffi, lib
from cutecpp.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def test_info_json_fields():
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"version", "ggml_features", "int8_products", "threads", "llama_cpp_python", "default_model"}
    assert data["int8_products"] in (None, "avx-vnni", "avx512-vnni")
    assert data["version"] == cutecpp.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'\nversion = "{data["version"]}"' in pyproject
    assert f'"llama-cpp-python=={data["llama_cpp_python"]}"' in pyproject
    assert isinstance(data["ggml_features"], list) and all(isinstance(f, str) for f in data["ggml_features"])
    assert data["threads"] >= 1
    assert data["default_model"] is None or Path(data["default_model"]).is_file()


def test_info_text():
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0
    assert result.output.startswith(f"cutecpp {cutecpp.__version__}\n")


def test_info_model(micro_path):
    result = CliRunner().invoke(cli, ["info", "--model", str(micro_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["n_tensors"] == 208 and info["config"]["model_id"] == "test-micro-0"

    text = CliRunner().invoke(cli, ["info", "--model", str(micro_path)])
    assert text.exit_code == 0
    assert "test-micro-0" in text.output and "208 (51,364 parameters)" in text.output


def test_cli_entry_point_one_line_error(tmp_path):
    """The installed console script: one line on stderr, exit 1, no traceback."""
    run = subprocess.run([sys.executable, "-m", "cutecpp", "info", "--model", str(tmp_path / "x.gguf")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [f"Error: {tmp_path / 'x.gguf'}: no such file"]


def test_one_ggml_in_a_process_with_llama_cpp():
    """cutecpp and llama_cpp share the same ggml libraries, loaded once."""
    code = (
        "import llama_cpp, cutecpp\n"
        "maps = open('/proc/self/maps').read().split('\\n')\n"
        "libs = sorted({l.split()[-1] for l in maps if 'libggml' in l})\n"
        "print('\\n'.join(libs))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert run.returncode == 0, run.stderr
    libs = run.stdout.split()
    base = [p for p in libs if re.search(r"libggml-base\.so", p)]
    assert len(base) == 1, libs
    llama_dir = Path(__import__("llama_cpp").__file__).parent / "lib"
    assert Path(base[0]).parent.resolve() == llama_dir.resolve()


def test_cdef_is_the_public_header():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_ffi_build", ROOT / "cutecpp" / "_ffi_build.py")
    ffi_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ffi_build)
    declared = set(re.findall(r"\b(cutecpp_\w+)\s*\(", ffi_build.cdef_source(ffi_build.HEADER.read_text())))
    assert len(declared) >= 12
    for name in declared:
        assert hasattr(lib, name), name


def test_check_maps_status_to_exception():
    check(lib.CUTECPP_OK)
    for status, cls in cutecpp.errors.BY_STATUS.items():
        with pytest.raises(cls):
            check(status)


def test_context_threads(micro_path):
    model = cutecpp.Model.load(micro_path)
    params = lib.cutecpp_context_default_params()
    out = ffi.new("struct cutecpp_context **")
    check(lib.cutecpp_context_init(model._handle, params, out))
    assert lib.cutecpp_context_n_threads(out[0]) == lib.cutecpp_default_threads()
    lib.cutecpp_context_free(out[0])

    params.n_threads = 1 << 20
    with pytest.raises(cutecpp.InvalidArgumentError, match="too large"):
        check(lib.cutecpp_context_init(model._handle, params, out))
    assert out[0] == ffi.NULL
    with pytest.raises(cutecpp.InvalidArgumentError, match="model is NULL"):
        check(lib.cutecpp_context_init(ffi.NULL, lib.cutecpp_context_default_params(), out))


def test_null_arguments():
    out = ffi.new("struct cutecpp_model **")
    with pytest.raises(cutecpp.InvalidArgumentError, match="no model path"):
        check(lib.cutecpp_model_load(ffi.NULL, lib.cutecpp_model_default_params(), out))
    with pytest.raises(cutecpp.InvalidArgumentError):
        check(lib.cutecpp_model_load(b"x", lib.cutecpp_model_default_params(), ffi.NULL))
    lib.cutecpp_model_free(ffi.NULL)
    lib.cutecpp_context_free(ffi.NULL)
