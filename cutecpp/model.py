"""A loaded, validated model bundle (docs/bundle-format.md)."""

from __future__ import annotations

import json
import os
from typing import Any

from ._binding import check, ffi, lib, text


class Model:
    """An immutable bundle loaded by the C core; safe to share between threads."""

    def __init__(self, handle) -> None:
        self._handle = handle

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True) -> Model:
        """Loads and validates the bundle at `path`; raises a CutecppError naming the problem."""
        params = lib.cutecpp_model_default_params()
        params.use_mmap = mmap
        out = ffi.new("struct cutecpp_model **")
        check(lib.cutecpp_model_load(os.fsencode(path), params, out))
        return cls(ffi.gc(out[0], lib.cutecpp_model_free))

    @property
    def info(self) -> dict[str, Any]:
        """Config, tensor count, parameters, bytes per dtype and file size."""
        return json.loads(text(lib.cutecpp_model_info_json(self._handle)))
