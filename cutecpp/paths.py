"""Where cutecpp keeps files it builds on first use (the text encoder, later the picture cache)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$CUTECPP_CACHE`, else `$XDG_CACHE_HOME/cutecpp`, else `~/.cache/cutecpp`.

    A kiosk service whose home is read-only sets CUTECPP_CACHE to a writable
    directory; nothing is created here, callers create what they write.
    """
    explicit = os.environ.get("CUTECPP_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cutecpp"
