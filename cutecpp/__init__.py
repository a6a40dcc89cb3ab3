"""cutecpp: an offline picture engine for children, on a small ggml C++ core."""

from ._binding import lib, text
from .errors import (
    CutecppError,
    FileError,
    FormatError,
    InternalError,
    InvalidArgumentError,
    ModelError,
    OutOfMemoryError,
    UnsupportedError,
)
from .info import default_model_path, system_info
from .model import Context, Model

__version__ = text(lib.cutecpp_version())

__all__ = [
    "Context",
    "CutecppError",
    "FileError",
    "FormatError",
    "InternalError",
    "InvalidArgumentError",
    "Model",
    "ModelError",
    "OutOfMemoryError",
    "UnsupportedError",
    "__version__",
    "default_model_path",
    "system_info",
]
