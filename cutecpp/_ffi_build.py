"""Generates the C source of the cffi extension (out-of-line API mode).

The cdef is the public header's own declarations, the region between
CUTECPP_CDEF_BEGIN and CUTECPP_CDEF_END in csrc/include/cutecpp.h, so the
binding cannot drift from the library. CMake runs this script and compiles
its output together with the core:

    python cutecpp/_ffi_build.py OUT.c
"""

import re
import sys
from pathlib import Path

import cffi

HEADER = Path(__file__).resolve().parent.parent / "csrc" / "include" / "cutecpp.h"


def cdef_source(header_text: str) -> str:
    match = re.search(r"// CUTECPP_CDEF_BEGIN\n(.*?)// CUTECPP_CDEF_END", header_text, re.S)
    if match is None:
        raise SystemExit(f"{HEADER}: no CUTECPP_CDEF_BEGIN/END region")
    return match.group(1).replace("CUTECPP_API ", "")


# Python functions the C core calls back, defined with @ffi.def_extern() (cutecpp/sampling.py):
# no runtime-generated machine code, unlike ffi.callback().
PYTHON_CALLBACKS = 'extern "Python" bool _cutecpp_progress(int32_t, int32_t, void *);\n'


def make_ffi() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(cdef_source(HEADER.read_text(encoding="utf-8")) + PYTHON_CALLBACKS)
    ffi.set_source("cutecpp._cutecpp_cffi", '#include "cutecpp.h"')
    return ffi


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python _ffi_build.py OUT.c")
    make_ffi().emit_c_code(sys.argv[1])
