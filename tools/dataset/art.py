"""Glyph art: Noto Color Emoji glyphs as RGBA arrays, scaled, flipped, rotated and recoloured.

The font is a bitmap colour font with a single 109 px strike, so every glyph is drawn once at that
size, cropped to its ink and kept; everything larger is an upscale. Scaling happens in premultiplied
alpha (PIL's "RGBa"), otherwise the black of transparent pixels bleeds into the edges as a dark fringe.
Scaled glyphs are cached per process (bounded), since a dataset reuses the same few hundred glyphs at
a handful of sizes: sizes are rounded to a few pixels so that jittered scales still hit the cache.
"""

from __future__ import annotations

import functools
import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATH = Path(os.environ.get("CUTECPP_EMOJI_FONT", "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"))
FONT_SIZE = 109  # the font's only bitmap strike
INSTALL_HINT = "apt-get install fonts-noto-color-emoji"


class FontMissing(RuntimeError):
    """The emoji font is not installed."""


def font_available() -> bool:
    return FONT_PATH.is_file()


@functools.cache
def _font() -> ImageFont.FreeTypeFont:
    if not font_available():
        raise FontMissing(f"{FONT_PATH} not found: the dataset is drawn from Noto Color Emoji ({INSTALL_HINT})")
    return ImageFont.truetype(str(FONT_PATH), FONT_SIZE)


@functools.cache
def base_glyph(ch: str) -> Image.Image:
    """The glyph at the font's own size, cropped to its ink (RGBA)."""
    font = _font()
    canvas = Image.new("RGBA", (FONT_SIZE * 3, FONT_SIZE * 2), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((FONT_SIZE // 4, FONT_SIZE // 4), ch, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"the emoji font has no picture for {ch!r}")
    return canvas.crop(box)


@functools.cache
def glyph_aspect(ch: str, angle: float = 0.0) -> float:
    """width / height of the glyph's ink (after rotating it by `angle` degrees counter-clockwise)."""
    g = base_glyph(ch)
    if angle:
        g = g.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        g = g.crop(g.getbbox())
    return g.width / g.height


# --- colour --------------------------------------------------------------------------------------

def hex_rgb(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue in degrees [0, 360), saturation and value in [0, 1], for float RGB in [0, 1]."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = rgb.max(-1)
    mn = rgb.min(-1)
    d = mx - mn
    safe = np.where(d > 1e-6, d, 1.0)
    h = np.where(mx == r, (g - b) / safe % 6, np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60.0
    h = np.where(d > 1e-6, h, 0.0) % 360.0
    s = np.where(mx > 1e-6, d / np.where(mx > 1e-6, mx, 1.0), 0.0)
    return h, s, mx


def _dominant_hue(h: np.ndarray, s: np.ndarray, a: np.ndarray) -> float:
    """The hue most of the glyph's coloured ink has (a saturation-weighted 10-degree histogram)."""
    weight = s * a * (s > 0.15)
    hist, _ = np.histogram(h, bins=36, range=(0, 360), weights=weight)
    smooth = hist + 0.5 * (np.roll(hist, 1) + np.roll(hist, -1))
    return float(np.argmax(smooth) * 10 + 5)


def recolour_array(rgba: np.ndarray, target: tuple[int, int, int], whole: bool = False) -> np.ndarray:
    """Tint the glyph's main colour region to `target`, keeping its shading.

    The region is the ink whose hue is near the glyph's dominant hue (or, with `whole`, all coloured
    ink). Each pixel becomes target x (its value / the region's typical value), so the region's typical
    pixel is exactly the named colour, shadows are darker and highlights lighter. Near-black and
    near-white targets get a gentler shading range so that black stays black and white stays white."""
    arr = rgba.astype(np.float32) / 255.0
    rgb, a = arr[..., :3], arr[..., 3]
    h, s, v = rgb_to_hsv(rgb)
    if whole:
        hue_w = np.ones_like(h)
    else:
        dom = _dominant_hue(h, s, a)
        dist = np.abs((h - dom + 180.0) % 360.0 - 180.0)
        hue_w = np.clip((60.0 - dist) / 25.0, 0.0, 1.0)
    sat_w = np.clip((s - 0.10) / 0.12, 0.0, 1.0)
    m = hue_w * sat_w * (a > 0.02)
    if m.sum() < 1.0:
        return rgba
    ref = float(np.average(v, weights=m + 1e-9))
    shade = v / max(ref, 1e-3)
    t = np.asarray(target, np.float32) / 255.0
    lum = float(0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2])
    if lum < 0.2:  # black: keep it dark, show shape with a little lift
        t = np.maximum(t, 0.16)
        shade = 0.75 + 0.35 * (shade - 1.0)
    elif lum > 0.9:  # white: shadows go light grey, never dark
        shade = 1.0 + 0.45 * (shade - 1.0)
    shade = shade[..., None]
    dark = t * np.minimum(shade, 1.0)
    light = t + (1.0 - t) * np.clip(shade - 1.0, 0.0, 1.0) * 0.8
    new = np.where(shade <= 1.0, dark, light)
    m3 = m[..., None]
    out = rgb * (1.0 - m3) + np.clip(new, 0.0, 1.0) * m3
    res = np.concatenate([out, a[..., None]], -1)
    return np.round(res * 255.0).astype(np.uint8)


@functools.cache
def coloured_glyph(ch: str, rgb: tuple[int, int, int] | None, whole: bool = False) -> Image.Image:
    g = base_glyph(ch)
    if rgb is None:
        return g
    return Image.fromarray(recolour_array(np.asarray(g), rgb, whole), "RGBA")


# --- scaled glyphs -------------------------------------------------------------------------------

_CACHE: OrderedDict[tuple, Image.Image] = OrderedDict()
_CACHE_BYTES = [0]
CACHE_LIMIT = 192 * 1024 * 1024  # bytes of scaled glyphs kept per process


def _quantize(n: float) -> int:
    """Round a target size so that jittered scales share cache entries: 1 px steps below 40 px, then
    steps of 2.5 % (invisible next to the jitter, and far fewer distinct sizes to cache)."""
    if n < 40:
        return max(2, int(round(n)))
    return int(round(1.025 ** round(math.log(n) / math.log(1.025))))


def glyph(ch: str, height: float, *, rgb: tuple[int, int, int] | None = None, whole: bool = False,
          flip: bool = False, angle: float = 0.0, width: float | None = None) -> Image.Image:
    """The glyph scaled to `height` px (and `width`, if given, to stretch it), optionally recoloured,
    mirrored and rotated (degrees, counter-clockwise). RGBA, cropped to its ink."""
    hq = _quantize(height)
    base = base_glyph(ch)
    wq = _quantize(width) if width is not None else max(1, int(round(base.width * hq / base.height)))
    aq = int(round(angle / 3.0)) * 3
    key = (ch, hq, wq, rgb, whole, flip, aq)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    img = coloured_glyph(ch, rgb, whole).convert("RGBa")
    img = img.resize((wq, hq), Image.Resampling.BICUBIC if hq > base.height else Image.Resampling.LANCZOS)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if aq:
        img = img.rotate(aq, resample=Image.Resampling.BICUBIC, expand=True)
        box = img.getbbox()
        if box:
            img = img.crop(box)
    img = img.convert("RGBA")
    _CACHE[key] = img
    _CACHE_BYTES[0] += img.width * img.height * 4
    while _CACHE_BYTES[0] > CACHE_LIMIT and len(_CACHE) > 1:
        _, old = _CACHE.popitem(last=False)
        _CACHE_BYTES[0] -= old.width * old.height * 4
    return img


@functools.cache
def soft_ellipse(w: int, h: int, rgba: tuple[int, int, int, int]) -> Image.Image:
    """An anti-aliased filled ellipse (drawn 4x and scaled down)."""
    big = Image.new("RGBA", (w * 4, h * 4), (0, 0, 0, 0))
    ImageDraw.Draw(big).ellipse((0, 0, w * 4 - 1, h * 4 - 1), fill=rgba)
    return big.convert("RGBa").resize((w, h), Image.Resampling.BOX).convert("RGBA")
