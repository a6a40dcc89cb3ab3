"""cutecpp: an offline picture engine for children, on a small ggml C++ core."""

from ._binding import lib, text
from .errors import (
    CancelledError,
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
from .pipeline import Pipeline, Result
from .prompt import PromptError, check_prompt, parse_prompt
from .sampling import SAMPLERS, rng_normal
from .vocab import load_vocabulary

__version__ = text(lib.cutecpp_version())

__all__ = [
    "SAMPLERS",
    "CancelledError",
    "Context",
    "CutecppError",
    "FileError",
    "FormatError",
    "InternalError",
    "InvalidArgumentError",
    "Model",
    "ModelError",
    "OutOfMemoryError",
    "Pipeline",
    "PromptError",
    "Result",
    "UnsupportedError",
    "__version__",
    "check_prompt",
    "default_model_path",
    "load_vocabulary",
    "parse_prompt",
    "rng_normal",
    "system_info",
]
