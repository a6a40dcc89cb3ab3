"""What this installation is and can do: `cutecpp info`."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from ._binding import lib, text

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_MODEL_FILE = "cute-mini.gguf"


def default_model_path() -> Path | None:
    """The bundle shipped in the package, or None while no default model ships."""
    path = DATA_DIR / DEFAULT_MODEL_FILE
    return path if path.is_file() else None


def system_info() -> dict[str, Any]:
    default = default_model_path()
    return {
        "version": text(lib.cutecpp_version()),
        "ggml_features": text(lib.cutecpp_cpu_features()).split(),
        # what cutecpp's own q8_0 kernels run on (a run-time check, not ggml's build flags)
        "int8_products": text(lib.cutecpp_int8_products()) or None,
        "threads": int(lib.cutecpp_default_threads()),
        "llama_cpp_python": importlib.metadata.version("llama-cpp-python"),
        "default_model": str(default) if default else None,
    }
