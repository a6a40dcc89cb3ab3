"""Picture output (pixels, formats, metadata, atomic writes) and the SQLite picture cache."""

from __future__ import annotations

import errno
import io
import multiprocessing as mp
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from cutecpp.cache import PictureCache, picture_key
from cutecpp.errors import FileError, InvalidArgumentError
from cutecpp.image import encode, read_meta, to_image, write_atomic

META = {"prompt": "小熊 穿蓝裤子 冰山上 笑", "seed": 1, "model": "test"}


def test_to_image_maps_range_and_layout():
    arr = np.zeros((3, 2, 4), np.float32)
    arr[0] = -1.0
    arr[1] = 1.0
    arr[2, 1, 3] = 5.0  # clipped
    img = to_image(arr[None])
    assert img.size == (4, 2) and img.mode == "RGB"
    px = np.asarray(img)
    assert px.shape == (2, 4, 3)
    assert (px[..., 0] == 0).all() and (px[..., 1] == 255).all()
    assert px[1, 3, 2] == 255 and px[0, 0, 2] == 128
    with pytest.raises(InvalidArgumentError):
        to_image(np.zeros((4, 8, 8)))


@pytest.mark.parametrize("fmt", ["webp", "png"])
def test_encode_keeps_metadata(fmt):
    img = Image.new("RGB", (32, 24), (250, 200, 150))
    data = encode(img, fmt, META)
    with Image.open(io.BytesIO(data)) as back:
        assert back.format == fmt.upper() and back.size == (32, 24)
    assert read_meta(data) == META
    assert read_meta(encode(img, fmt)) is None


def test_png_is_lossless_and_formats_checked():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    back = Image.open(io.BytesIO(encode(img, "png")))
    assert np.array_equal(np.asarray(back), np.asarray(img))
    with pytest.raises(InvalidArgumentError, match="unknown image format"):
        encode(img, "gif")


def test_write_atomic(tmp_path):
    out = write_atomic(tmp_path / "a.webp", b"one")
    assert out.read_bytes() == b"one"
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    write_atomic(out, b"two")
    assert out.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.webp"]  # no temp files left
    with pytest.raises(FileError, match="does not exist"):
        write_atomic(tmp_path / "nope" / "a.webp", b"x")
    with pytest.raises(FileError, match="is a directory"):
        write_atomic(tmp_path, b"x")


def test_write_atomic_unwritable():
    # sysfs refuses new files even to root, like a read-only classroom share.
    with pytest.raises(FileError, match="cannot write here"):
        write_atomic("/sys/cutecpp-test.webp", b"x")


def test_write_atomic_full_disk(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(FileError, match="disk is full"):
        write_atomic(tmp_path / "a.webp", b"x" * 100)
    assert list(tmp_path.iterdir()) == []  # the partial temporary file is gone


# --- cache -------------------------------------------------------------------------------------


def test_key_is_stable_and_sensitive():
    a = picture_key(model="m", prompt="小熊", seed=1, steps=15)
    assert a == picture_key(steps=15, seed=1, prompt="小熊", model="m")
    assert a != picture_key(model="m", prompt="小熊", seed=2, steps=15)


def test_hit_miss_and_persistence(tmp_path):
    cache = PictureCache(tmp_path / "c.sqlite3")
    assert cache.get("k") is None
    cache.put("k", b"picture", META)
    assert cache.get("k") == (b"picture", META)
    cache.close()
    again = PictureCache(tmp_path / "c.sqlite3")
    assert again.get("k") == (b"picture", META)
    assert again.stats()["pictures"] == 1


def test_lru_eviction(tmp_path):
    cache = PictureCache(tmp_path / "c.sqlite3", max_bytes=300)
    for k in "abc":
        cache.put(k, b"x" * 100, {})
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", b"y" * 100, {})
    assert cache.get("b") is None
    assert all(cache.get(k) is not None for k in "acd")
    assert cache.stats()["bytes"] <= 300
    cache.put("huge", b"z" * 1000, {})  # larger than the whole cache: not stored, nothing evicted
    assert cache.get("huge") is None and cache.stats()["pictures"] == 3


def test_corrupt_file_is_rebuilt(tmp_path):
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    cache = PictureCache(path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert cache.get("k") is None
        cache.put("k", b"p", {})
    assert any("starting a new one" in str(x.message) for x in w)
    assert cache.get("k") == (b"p", {})
    assert any(p.name.startswith("c.sqlite3.corrupt-") for p in tmp_path.iterdir())


def test_unusable_directory_turns_cache_off(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = PictureCache(blocker / "sub" / "c.sqlite3")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cache.put("k", b"p", {})
        assert cache.get("k") is None
    assert not cache.enabled and any("turned off" in str(x.message) for x in w)


def _writer(path: str, start: int, n: int) -> None:
    cache = PictureCache(path, max_bytes=1 << 20)
    for i in range(start, start + n):
        cache.put(f"k{i}", bytes([i % 256]) * 500, {"i": i})
        assert cache.get(f"k{i}") is not None


def test_two_processes_share_the_file(tmp_path):
    path = str(tmp_path / "c.sqlite3")
    PictureCache(path).stats()  # create it first
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s, 40)) for s in (0, 1000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = PictureCache(path)
    assert cache.stats()["pictures"] == 80
    assert cache.get("k1039") == (bytes([1039 % 256]) * 500, {"i": 1039})
