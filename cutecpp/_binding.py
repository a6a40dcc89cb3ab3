"""The compiled cffi extension and the one place statuses become exceptions."""

from __future__ import annotations

from .errors import BY_STATUS, InternalError

try:
    from ._cutecpp_cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "cutecpp's compiled core is missing or cannot load its ggml libraries "
        f"({exc}); reinstall with `pip install .` in an environment that has "
        "llama-cpp-python==0.3.36"
    ) from exc


def text(ptr) -> str:
    """A C string owned by the library, as str (undecodable bytes replaced)."""
    return ffi.string(ptr).decode("utf-8", errors="replace") if ptr != ffi.NULL else ""


def check(status: int) -> None:
    """Raises the typed exception for a failed call, with the C message."""
    if status == lib.CUTECPP_OK:
        return
    message = text(lib.cutecpp_last_error()) or text(lib.cutecpp_status_name(status))
    raise BY_STATUS.get(status, InternalError)(message)
