"""The loader under AddressSanitizer + UndefinedBehaviorSanitizer, over a corpus
of several hundred corrupted bundles: no sanitizer report, no crash, and every
structurally broken file refused.

The sanitizer build is a separate CMake build of the core's sources linked
into csrc/tools/load_model.cpp (CUTECPP_SANITIZE=ON), made once per test run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import write_corpus

ROOT = Path(__file__).resolve().parent.parent
CORPUS_SIZE = 400


@pytest.fixture(scope="session")
def asan_driver(tmp_path_factory) -> Path:
    if shutil.which("cmake") is None:
        pytest.fail("cmake is needed to build the sanitizer driver (pip install cmake)")
    build = tmp_path_factory.mktemp("build-asan")
    configure = [
        "cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Debug",
        "-DCUTECPP_PYTHON=OFF", "-DCUTECPP_SANITIZE=ON", f"-DPython_EXECUTABLE={sys.executable}",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    for cmd in (configure, ["cmake", "--build", str(build), "--target", "cutecpp-load", "-j2"]):
        run = subprocess.run(cmd, capture_output=True, text=True)
        assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return build / "cutecpp-load"


def run_driver(driver: Path, files: list[Path]) -> dict[str, str]:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=87")
    results: dict[str, str] = {}
    for start in range(0, len(files), 100):
        chunk = [str(f) for f in files[start:start + 100]]
        run = subprocess.run([str(driver), *chunk], capture_output=True, env=env)
        stdout = run.stdout.decode("utf-8", errors="replace")
        report = run.stderr.decode("utf-8", errors="replace")
        assert run.returncode == 0, f"driver exited {run.returncode}:\n{report[-4000:]}"
        assert "Sanitizer" not in report and "runtime error" not in report, report[-4000:]
        for line in stdout.splitlines():
            status, _, rest = line.partition(" ")
            if status == "ok":
                results[rest] = "ok"
            else:
                code, _, rest = rest.partition(" ")
                results[rest.split(": ", 1)[0]] = f"error {code}"
        assert set(chunk) <= set(results), "the driver skipped files"
    return results


def test_valid_bundle_loads_clean(asan_driver, micro_path):
    assert run_driver(asan_driver, [micro_path]) == {str(micro_path): "ok"}


def test_corrupted_corpus(asan_driver, micro_path, full_path, tmp_path):
    # Two bases: the UNet-only bundle, and one with every component so the
    # decoders' config parsing and tensor inventories are exercised too.
    assert run_driver(asan_driver, [full_path]) == {str(full_path): "ok"}
    corpus = write_corpus(micro_path, tmp_path / "corpus-unet", CORPUS_SIZE // 2)
    corpus += write_corpus(full_path, tmp_path / "corpus-full", CORPUS_SIZE // 2)
    corpus += [(p, True) for p in sorted((ROOT / "tests" / "data").glob("fuzz-*.gguf"))]
    assert len(corpus) >= 300
    results = run_driver(asan_driver, [p for p, _ in corpus])
    must_fail = [str(p) for p, fail in corpus if fail]
    assert must_fail and all(results[p].startswith("error") for p in must_fail)
    refused = sum(1 for r in results.values() if r != "ok")
    # Most header damage must be caught; a few mutations (a name's byte, a
    # float value) leave a valid bundle.
    assert refused > 0.8 * len(corpus), f"only {refused} of {len(corpus)} refused"
