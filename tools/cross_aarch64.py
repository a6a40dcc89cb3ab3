#!/usr/bin/env python3
"""Build cutecpp's C++ core for 64-bit ARM Linux (the Raspberry Pi 5) here, and run it under qemu.

    python tools/cross_aarch64.py                 # build; prints the folder holding libcutecpp.so
    python tools/cross_aarch64.py --run JOBS      # build, then run csrc/tools/run_ops.cpp's job file
                                                  # under qemu-aarch64

Needs cmake and Debian's cross compilers and user-mode qemu:
`apt-get install crossbuild-essential-arm64 qemu-user` (`.ci/run` installs them). ggml is built
from the source of the llama-cpp-python that cutecpp pins (`pip download`, once, into the build
folder), as `pip install llama-cpp-python` builds it on a Pi but for a fixed CPU instead of
-mcpu=native: the Pi 5's Cortex-A76 (armv8.2-a with int8 dot products and f16 arithmetic); the
core itself is built with cutecpp's CMakeLists.txt and the toolchain file tools/cross/ beside this
script, as on the Pi (plain aarch64: NEON, no extra flags). tests/test_aarch64.py runs the core's
computations this way against the x86-64 build and diffusers.

The build folder (--dir, default $CUTECPP_AARCH64_DIR or ~/.cache/cutecpp/aarch64) keeps the
source, ggml (built once per llama-cpp-python version) and the core's CMake build, one per checkout
(rebuilt incrementally on every call, so a changed kernel is picked up).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLCHAIN = ROOT / "tools" / "cross" / "aarch64-linux-gnu.cmake"
SYSROOT = Path("/usr/aarch64-linux-gnu")  # where crossbuild-essential-arm64 puts the C library
# The Raspberry Pi 5's Cortex-A76: what ggml's own -mcpu=native finds there.
GGML_ARM_ARCH = "armv8.2-a+dotprod+fp16"
TOOLS = {"aarch64-linux-gnu-g++": "crossbuild-essential-arm64", "qemu-aarch64": "qemu-user", "cmake": "cmake"}


class BuildError(RuntimeError):
    pass


def default_dir() -> Path:
    return Path(os.environ.get("CUTECPP_AARCH64_DIR") or Path.home() / ".cache" / "cutecpp" / "aarch64")


def missing_tools() -> list[str]:
    """The Debian packages (or cmake) this machine lacks for the build and the run."""
    return [package for tool, package in TOOLS.items() if shutil.which(tool) is None]


def pinned_llama_cpp_python() -> str:
    match = re.search(r"llama-cpp-python==([0-9.]+)", (ROOT / "pyproject.toml").read_text())
    if match is None:
        raise BuildError("pyproject.toml pins no llama-cpp-python version")
    return match.group(1)


def run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise BuildError(f"{' '.join(cmd[:3])} ... failed (exit {done.returncode}); the end of {log}:\n{tail}")


def configure(source: Path, build: Path, options: list[str], log: Path) -> None:
    """CMake for aarch64 (the toolchain file), Release, Ninja where there is one."""
    run(["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja" if shutil.which("ninja") else "Unix Makefiles",
         f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}", "-DCMAKE_BUILD_TYPE=Release", *options], log)


def llama_cpp_source(folder: Path, version: str, log: Path) -> Path:
    """llama.cpp as vendored by llama-cpp-python `version` (its sdist, from the package index)."""
    source = folder / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if (source / "ggml" / "CMakeLists.txt").exists():
        return source
    sdist_dir = folder / "sdist"
    sdist = sdist_dir / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "llama-cpp-python",
             "-d", str(sdist_dir), f"llama-cpp-python=={version}"], log)
    if not sdist.exists():
        raise BuildError(f"pip download left no {sdist.name} in {sdist_dir}")
    partial = folder / "source.partial"  # renamed when whole, so that an interrupted run starts again
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        try:
            tar.extractall(partial, filter="data")
        except TypeError:  # Python before 3.10.12 / 3.11.4: no filters (a pinned sdist from the index)
            tar.extractall(partial)
    (partial / f"llama_cpp_python-{version}").rename(folder / f"llama_cpp_python-{version}")
    partial.rmdir()
    return source


def build_ggml(folder: Path, version: str, log: Path) -> Path:
    """ggml-base and ggml-cpu for aarch64, staged as a llama-cpp-python install lays them out
    (PREFIX/llama_cpp/lib/*.so, PREFIX/include/*.h), which is what CMakeLists.txt looks for."""
    stage = folder / f"ggml-{version}-stage"
    lib = stage / "llama_cpp" / "lib"
    if (lib / "libggml-cpu.so").exists():
        return lib.parent
    source = llama_cpp_source(folder, version, log)
    build = folder / f"ggml-{version}-build"
    configure(source, build, [
        "-DBUILD_SHARED_LIBS=ON", "-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={GGML_ARM_ARCH}", "-DGGML_OPENMP=OFF",
        "-DLLAMA_BUILD_COMMON=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF"], log)
    run(["cmake", "--build", str(build), "--target", "ggml-cpu", "-j2"], log)
    (stage / "include").mkdir(parents=True, exist_ok=True)
    for header in (source / "ggml" / "include").glob("*.h"):
        shutil.copy2(header, stage / "include")
    tmp = lib.with_name("lib.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for so in (build / "bin").glob("libggml-*.so*"):
        if so.name.startswith(("libggml-base.so", "libggml-cpu.so")):
            shutil.copy2(so, tmp / so.name, follow_symlinks=False)
    tmp.rename(lib)  # last, so that an interrupted build is redone, not half used
    return lib.parent


def prepare(folder: Path | None = None) -> tuple[Path, Path, str, Path]:
    """The build folder, its fresh log, the pinned llama-cpp-python version and ggml staged for it
    (built the first time); refuses when a tool is missing."""
    folder = (folder or default_dir()).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    missing = missing_tools()
    if missing:
        raise BuildError(f"missing {', '.join(missing)}: apt-get install crossbuild-essential-arm64 qemu-user")
    log = folder / "build.log"
    log.write_text("")
    version = pinned_llama_cpp_python()
    return folder, log, version, build_ggml(folder, version, log)


def build(folder: Path | None = None) -> Path:
    """Builds (or brings up to date) libcutecpp.so and cutecpp-run for aarch64; returns their folder."""
    folder, log, _, llama_cpp = prepare(folder)
    core = checkout_build_dir(folder, "core")
    configure(ROOT, core, ["-DCUTECPP_PYTHON=OFF", "-DCUTECPP_TOOLS=ON", f"-DCUTECPP_LLAMA_CPP_DIR={llama_cpp}",
                           f"-DPython_EXECUTABLE={sys.executable}"], log)
    run(["cmake", "--build", str(core), "--target", "cutecpp-run", "-j2"], log)
    return core


def checkout_build_dir(folder: Path, name: str) -> Path:
    """A CMake build folder of this checkout's sources: CMake refuses to reuse one made from another
    checkout (a CI clone beside the working one), so each checkout gets its own."""
    return folder / f"{name}-{hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]}"


def qemu_command(core: Path, jobs: Path) -> list[str]:
    """cutecpp-run under user-mode qemu (its default CPU has every aarch64 feature the Pi 5 has)."""
    return ["qemu-aarch64", "-L", str(SYSROOT), str(core / "cutecpp-run"), str(jobs)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None,
                        help="the build folder (default: $CUTECPP_AARCH64_DIR or ~/.cache/cutecpp/aarch64)")
    parser.add_argument("--run", type=Path, metavar="JOBS", help="then run this job file under qemu-aarch64")
    args = parser.parse_args()
    try:
        core = build(args.dir)
    except BuildError as e:
        print(f"cross_aarch64: {e}", file=sys.stderr)
        return 1
    print(core)
    if args.run is None:
        return 0
    return subprocess.run(qemu_command(core, args.run)).returncode


if __name__ == "__main__":
    sys.exit(main())
