"""Typed exceptions for the C core's status codes."""

from __future__ import annotations


class CutecppError(Exception):
    """Base of every error the cutecpp core reports."""

    status = -1


class InvalidArgumentError(CutecppError):
    status = 1


class FileError(CutecppError):
    """A missing, unreadable or unmappable file."""

    status = 2


class FormatError(CutecppError):
    """Not GGUF, truncated, or corrupt."""

    status = 3


class ModelError(CutecppError):
    """A valid GGUF file that is not a valid cutecpp bundle."""

    status = 4


class UnsupportedError(CutecppError):
    """A config value or dtype this build does not support."""

    status = 5


class OutOfMemoryError(CutecppError):
    status = 6


class InternalError(CutecppError):
    """A bug in cutecpp: please report it with the message."""

    status = 7


class CancelledError(CutecppError):
    """A progress callback stopped the run (returned False, or raised: then that exception propagates)."""

    status = 8


BY_STATUS: dict[int, type[CutecppError]] = {
    cls.status: cls
    for cls in (
        InvalidArgumentError,
        FileError,
        FormatError,
        ModelError,
        UnsupportedError,
        OutOfMemoryError,
        InternalError,
        CancelledError,
    )
}
