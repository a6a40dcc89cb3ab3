"""Pictures out: decoder output -> PIL image -> WebP/PNG bytes with metadata -> an atomic file write.

The metadata (prompt, seed, model, settings) travels inside the file: an XMP packet in WebP, an
iTXt chunk in PNG, both holding the same JSON under the name `cutecpp`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .errors import FileError, InvalidArgumentError

FORMATS = ("webp", "png")
WEBP_QUALITY = 90


def to_image(decoded: np.ndarray) -> Image.Image:
    """A decoder's `[3, H, W]` (or `[1, 3, H, W]`) output in [-1, 1] as an 8-bit RGB image."""
    arr = np.asarray(decoded, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise InvalidArgumentError(f"expected a [3, H, W] image, got shape {list(arr.shape)}")
    pixels = np.clip(np.rint((arr + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB")


def _xmp(meta: dict[str, Any]) -> bytes:
    payload = escape(json.dumps(meta, ensure_ascii=False, sort_keys=True))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:cutecpp="https://github.com/cutecpp/cutecpp/ns/1.0/">'
        f"<cutecpp:meta>{payload}</cutecpp:meta>"
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    ).encode()


def encode(image: Image.Image, fmt: str = "webp", meta: dict[str, Any] | None = None) -> bytes:
    """The picture as file bytes; `meta` must be JSON-serialisable."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown image format {fmt!r}; use one of {', '.join(FORMATS)}")
    buf = io.BytesIO()
    if fmt == "webp":
        kwargs: dict[str, Any] = {"quality": WEBP_QUALITY, "method": 4}
        if meta:
            kwargs["xmp"] = _xmp(meta)
        image.save(buf, "WEBP", **kwargs)
    else:
        info = PngInfo()
        if meta:
            info.add_itxt("cutecpp", json.dumps(meta, ensure_ascii=False, sort_keys=True))
        image.save(buf, "PNG", pnginfo=info, optimize=False)
    return buf.getvalue()


def read_meta(path_or_bytes: str | os.PathLike[str] | bytes) -> dict[str, Any] | None:
    """The `cutecpp` metadata of a picture written by `encode`, or None."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(src) as im:
        if "cutecpp" in im.info:
            return json.loads(im.info["cutecpp"])
        xmp = im.info.get("xmp")
    if not xmp:
        return None
    text = xmp.decode("utf-8") if isinstance(xmp, bytes) else str(xmp)
    start, end = text.find("<cutecpp:meta>"), text.find("</cutecpp:meta>")
    if start < 0 or end < 0:
        return None
    from xml.sax.saxutils import unescape

    return json.loads(unescape(text[start + len("<cutecpp:meta>") : end]))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` through a temporary file and a rename: a reader (or a power cut)
    sees the old file or the whole new one, never half a picture."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise FileError(f"{path}: is a directory; give a file name such as {path / 'picture.webp'}")
    if not directory.is_dir():
        raise FileError(f"{path}: the folder {directory} does not exist")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a picture is as readable as any new file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FileError(f"{path}: the disk is full ({len(data)} bytes to write)") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise FileError(f"{path}: cannot write here ({exc.strerror})") from None
        raise FileError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path
