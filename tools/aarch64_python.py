#!/usr/bin/env python3
"""cutecpp installed in an aarch64 Python (the Raspberry Pi 5's) and run under qemu, here.

    python tools/aarch64_python.py -- -m cutecpp info        # any arguments of that Python
    python tools/aarch64_python.py --check-picture           # the README's first picture on both
                                                             # machines, compared value by value

Where tools/cross_aarch64.py checks the C++ core alone, this runs the whole product as a Pi would:
Debian bookworm's arm64 Python 3.11 (its packages' files, unpacked into a folder, no install),
the wheels pip picks for aarch64 (numpy, Pillow, cffi, gguf, click, the text encoder's parts and
llama-cpp-python's own dependencies), llama-cpp-python's Python files with its libraries built for
aarch64 (the llama.cpp that ggml comes from, as cross_aarch64.py builds it), and this checkout's
cutecpp with its core and cffi extension built for aarch64: the layout `pip install .` makes.
qemu's speed says nothing of a Pi's.

Needs what cross_aarch64.py needs, and Debian's arm64 package lists for the Python files:
`dpkg --add-architecture arm64 && apt-get update` (once, as root; nothing arm64 is installed).
Everything goes under the build folder of cross_aarch64.py (`python/`); the first build takes
~5 minutes (llama.cpp ~3), later ones rebuild what changed; a picture under qemu ~5 more (the
first also builds its text encoder there).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cross_aarch64 as cross  # noqa: E402
from cross_aarch64 import ROOT, BuildError, run  # noqa: E402

PY = "3.11"  # bookworm's
# Debian arm64 packages whose files make a working python3.11 with what cutecpp and its
# dependencies import (sqlite3 for the picture cache, ssl/hashlib, ctypes for llama_cpp).
DEBS = ["libc6", "libgcc-s1", "libstdc++6", "libgomp1", f"python{PY}-minimal", f"libpython{PY}-minimal",
        f"libpython{PY}-stdlib", f"libpython{PY}", f"libpython{PY}-dev", f"python{PY}-dev", "libexpat1", "zlib1g",
        "libffi8", "libssl3", "libsqlite3-0", "libbz2-1.0", "liblzma5", "libncursesw6", "libtinfo6", "libreadline8",
        "libuuid1", "libcrypt1", "libnsl2", "libtirpc3", "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3",
        "libkrb5support0", "libcom-err2", "libkeyutils1", "libdb5.3", "libgdbm6"]
PLATFORMS = ["manylinux2014_aarch64", "manylinux_2_28_aarch64"]
PROMPT, SEED = "小熊 穿蓝裤子 冰山上 笑", 1  # the README's first picture
# The core alone draws within one 8-bit level of x86-64 (tests/test_aarch64.py), but llama.cpp's
# aarch64 kernels give the text encoder's states ~0.5 % (relative) off x86-64's, and the guided
# steps carry that into local differences: measured 18.7 % of the values differ, by at most 116
# levels, 0.39 on average. A mean above this is no longer the same picture.
MAX_MEAN_LEVELS = 2.0


def sysroot(folder: Path, log: Path) -> Path:
    """The arm64 packages' files unpacked into one folder (qemu -L takes it as /)."""
    root = folder / "root"
    if (root / "usr" / "bin" / f"python{PY}").exists():
        return root
    debs = folder / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for name in DEBS:
        if not list(debs.glob(f"{name}_*_arm64.deb")):
            done = subprocess.run(["apt-get", "download", "-q", f"{name}:arm64"], cwd=debs, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise BuildError(f"apt-get download {name}:arm64 failed ({done.stderr.strip()[-300:]}); "
                                 "once, as root: dpkg --add-architecture arm64 && apt-get update")
    partial = folder / "root.partial"
    shutil.rmtree(partial, ignore_errors=True)
    for deb in sorted(debs.glob("*_arm64.deb")):
        run(["dpkg-deb", "-x", str(deb), str(partial)], log)
    partial.rename(root)
    return root


def dependencies(pyproject: Path, skip: str) -> list[str]:
    """The requirements in a pyproject's `dependencies = [...]` (not tomllib: Python 3.10 has none)."""
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", pyproject.read_text(), re.S | re.M)
    if block is None:
        raise BuildError(f"no dependencies list in {pyproject}")
    lines = (line.split("#", 1)[0] for line in block.group(1).splitlines())
    found = [m for line in lines for m in re.findall(r'"([^"]+)"', line)]
    return [d for d in found if not d.startswith(skip)]


def site(folder: Path, source: Path, llama_build: Path, stage: Path, root: Path, log: Path) -> Path:
    """site-packages for that Python: the aarch64 wheels, llama_cpp, and cutecpp from this checkout
    (linked against ggml as cross_aarch64.py stages it, `stage`, loading llama_cpp/lib's at run time)."""
    version = cross.pinned_llama_cpp_python()
    packages = folder / "site"
    done = packages / ".wheels-installed"
    if not done.exists():
        wheels = dependencies(ROOT / "pyproject.toml", "llama-cpp-python")
        wheels += dependencies(source.parent.parent / "pyproject.toml", "numpy")
        platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
        run([sys.executable, "-m", "pip", "install", "--quiet", "--only-binary=:all:", *platforms, "--python-version",
             PY, "--implementation", "cp", "--abi", "cp" + PY.replace(".", ""), "--target", str(packages), *wheels],
            log)
        done.write_text("\n".join(wheels) + "\n")
    # llama_cpp: its Python files and the libraries it loads (lib/), as its wheel lays them out
    run(["cmake", "--build", str(llama_build), "--target", "llama", "-j2"], log)
    llama = packages / "llama_cpp"
    shutil.rmtree(llama, ignore_errors=True)
    shutil.copytree(source.parent.parent / "llama_cpp", llama)
    (llama / "lib").mkdir()
    for so in (llama_build / "bin").glob("lib*.so*"):
        shutil.copy2(so, llama / "lib" / so.name, follow_symlinks=False)
    info = packages / f"llama_cpp_python-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: {version}\n")
    # cutecpp: this checkout's Python files, its core and cffi extension built for aarch64
    build = cross.checkout_build_dir(folder, "cutecpp-build")
    cross.configure(ROOT, build, ["-DCUTECPP_PYTHON=ON", f"-DCUTECPP_LLAMA_CPP_DIR={stage}",
                                  f"-DPython_EXECUTABLE={sys.executable}",
                                  f"-DPython_INCLUDE_DIR={root}/usr/include/python{PY}",
                                  f"-DCMAKE_C_FLAGS=-I{root}/usr/include"], log)
    run(["cmake", "--build", str(build), "-j2"], log)
    package = packages / "cutecpp"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(ROOT / "cutecpp", package, ignore=shutil.ignore_patterns("__pycache__", "_ffi_build.py"))
    run(["cmake", "--install", str(build), "--prefix", str(packages)], log)
    return packages


def build(folder: Path | None = None) -> tuple[Path, Path]:
    """(the arm64 root, its site-packages), built or brought up to date."""
    base, _, version, stage = cross.prepare(folder)  # the toolchain checks, ggml's source and build
    folder = base / "python"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "build.log"
    log.write_text("")
    source = cross.llama_cpp_source(base, version, log)
    root = sysroot(folder, log)
    return root, site(folder, source, base / f"ggml-{version}-build", stage, root, log)


def python(root: Path, packages: Path, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """That Python with those arguments, in the build folder (from a checkout's root, `-m cutecpp`
    would import the checkout's uncompiled package), its text encoder built in its own cache there."""
    env = dict(os.environ, PYTHONPATH=str(packages), PYTHONNOUSERSITE="1",
               CUTECPP_CACHE=str(packages.parent / "cache"))
    env.pop("CUTECPP_TEXT_ENCODER", None)
    return subprocess.run(["qemu-aarch64", "-L", str(root), str(root / "usr" / "bin" / f"python{PY}"), *args],
                          env=env, cwd=packages.parent, **kwargs)


def check_picture(root: Path, packages: Path, folder: Path) -> int:
    """The README's first picture drawn by this machine's installed cutecpp and by the aarch64 one."""
    import numpy as np
    from PIL import Image

    pictures = {}
    here = shutil.which("cutecpp", path=str(Path(sys.executable).parent)) or shutil.which("cutecpp")
    if here is None:
        print("no cutecpp command here: pip install . first", file=sys.stderr)
        return 1
    for machine, cmd in [("x86-64", [here]), ("aarch64", None)]:
        out = folder / f"{machine}.png"
        args = ["generate", PROMPT, "--seed", str(SEED), "--format", "png", "--no-cache", "-o", str(out)]
        done = (subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=folder) if cmd else
                python(root, packages, ["-m", "cutecpp", *args], capture_output=True, text=True))
        if done.returncode != 0:
            print(f"{machine}: cutecpp generate failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        pictures[machine] = np.asarray(Image.open(out).convert("RGB"), dtype=np.int16)
    diff = np.abs(pictures["x86-64"] - pictures["aarch64"])
    print(f"{PROMPT} (seed {SEED}): of {diff.size} values {int((diff > 0).sum())} differ, "
          f"{int((diff > 8).sum())} by more than 8 levels; the largest difference {int(diff.max())} of 255, "
          f"the mean {float(diff.mean()):.3f} (the pictures: {folder})")
    return 0 if diff.mean() <= MAX_MEAN_LEVELS else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None,
                        help="cross_aarch64.py's build folder (default: $CUTECPP_AARCH64_DIR or "
                             "~/.cache/cutecpp/aarch64)")
    parser.add_argument("--check-picture", action="store_true",
                        help="draw the README's first picture here and on aarch64; exit 1 if they differ by more "
                             f"than {MAX_MEAN_LEVELS} levels on average")
    parser.add_argument("args", nargs="*", help="arguments of the aarch64 Python (after --)")
    args = parser.parse_args()
    try:
        root, packages = build(args.dir)
    except BuildError as e:
        print(f"aarch64_python: {e}", file=sys.stderr)
        return 1
    if args.check_picture:
        return check_picture(root, packages, packages.parent)
    if not args.args:
        print(f"aarch64 Python: qemu-aarch64 -L {root} {root}/usr/bin/python{PY}, PYTHONPATH={packages}")
        return 0
    return python(root, packages, args.args).returncode


if __name__ == "__main__":
    sys.exit(main())
