"""Drawing primitives on a picture: gradient backgrounds, ground bands, glyph pasting, strings, stars.

The canvas is a PIL RGB image; glyphs are pasted with their alpha as the mask. Anything drawn by hand
(bands, strings, stars, blush) is anti-aliased, since the pictures are downscaled to 64x64 for
checking and a jagged edge there reads as noise.
"""

from __future__ import annotations

import colorsys
import math
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from . import art

Box = tuple[int, int, int, int]


def hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h % 360.0) / 360.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def jitter_rgb(rgb: tuple[int, int, int], rng: random.Random, dh: float, ds: float, dv: float) -> tuple[int, int, int]:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
    return hsv(h * 360 + rng.uniform(-dh, dh), s * (1 + rng.uniform(-ds, ds)), v + rng.uniform(-dv, dv))


def gradient(size: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    """A vertical gradient, size x size x 3 uint8 (eased so the middle stays light)."""
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    t = t * t * (3 - 2 * t) * 0.6 + t * 0.4
    col = np.asarray(top, np.float32)[None, :] * (1 - t[:, None]) + np.asarray(bottom, np.float32)[None, :] * t[:, None]
    col = np.round(col).astype(np.uint8)
    return np.repeat(col[:, None, :], size, axis=1)


@dataclass
class Canvas:
    size: int
    img: Image.Image
    boxes: list[dict] = field(default_factory=list)

    @property
    def s(self) -> int:
        return self.size

    def paste(self, g: Image.Image, x: float, y: float) -> Box:
        """Paste an RGBA image with its top-left at (x, y); returns its box clipped to the picture."""
        xi, yi = int(round(x)), int(round(y))
        self.img.paste(g, (xi, yi), g)
        return _clip((xi, yi, xi + g.width, yi + g.height), self.size)

    def glyph(self, ch: str, cx: float, cy: float, h: float, **kw) -> Box:
        """A glyph of height h centred at (cx, cy)."""
        g = art.glyph(ch, h, **kw)
        return self.paste(g, cx - g.width / 2, cy - g.height / 2)

    def glyph_bottom(self, ch: str, cx: float, bottom: float, h: float, **kw) -> Box:
        g = art.glyph(ch, h, **kw)
        return self.paste(g, cx - g.width / 2, bottom - g.height)

    def band(self, top: float, colours: tuple[tuple[int, int, int], tuple[int, int, int]], wave: float = 0.0,
             bulge: float = 0.0, phase: float = 0.0, cycles: float = 2.0) -> None:
        """A ground band from y=top (plus a gentle hill `bulge` and ripples `wave`, in px) to the bottom."""
        s = self.size
        y0 = max(0, int(top - abs(bulge) - abs(wave) - 2))
        if y0 >= s:
            return
        x = np.arange(s, dtype=np.float32)
        u = (x / s - 0.5) * 2
        edge = top - bulge * (1 - u * u) + wave * np.sin(u * math.pi * cycles + phase)
        ys = np.arange(y0, s, dtype=np.float32)[:, None]
        alpha = np.clip(ys - edge[None, :] + 0.5, 0.0, 1.0)[..., None]
        t = ((ys - y0) / max(1.0, s - y0))[..., None]
        colour = np.asarray(colours[0], np.float32) * (1 - t) + np.asarray(colours[1], np.float32) * t
        region = np.asarray(self.img.crop((0, y0, s, s)), np.float32)
        out = region * (1 - alpha) + colour * alpha
        self.img.paste(Image.fromarray(np.round(out).astype(np.uint8), "RGB"), (0, y0))

    def ellipse(self, box: tuple[float, float, float, float], rgba: tuple[int, int, int, int]) -> None:
        x0, y0, x1, y1 = box
        w, h = max(1, int(round(x1 - x0))), max(1, int(round(y1 - y0)))
        e = art.soft_ellipse(w, h, rgba)
        self.paste(e, x0, y0)

    def line(self, points: list[tuple[float, float]], rgb: tuple[int, int, int], width: float) -> None:
        """An anti-aliased polyline (drawn at 4x on a patch and scaled down)."""
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        pad = width * 2 + 2
        x0, y0 = int(min(xs) - pad), int(min(ys) - pad)
        x1, y1 = int(max(xs) + pad) + 1, int(max(ys) + pad) + 1
        k = 4
        patch = Image.new("RGBA", ((x1 - x0) * k, (y1 - y0) * k), (*rgb, 0))
        ImageDraw.Draw(patch).line([((x - x0) * k, (y - y0) * k) for x, y in points], fill=(*rgb, 255),
                                   width=max(1, int(round(width * k))), joint="curve")
        patch = patch.resize((x1 - x0, y1 - y0), Image.Resampling.BOX)
        self.img.paste(patch, (x0, y0), patch)

    def star(self, cx: float, cy: float, r: float, rgb: tuple[int, int, int]) -> None:
        """A small four-pointed twinkle."""
        k = 4
        n = max(3, int(math.ceil(r * 2 + 2)))
        patch = Image.new("RGBA", (n * k, n * k), (*rgb, 0))
        c = n * k / 2
        rr, ri = r * k, r * k * 0.28
        pts = []
        for i in range(8):
            a = math.pi / 4 * i
            rad = rr if i % 2 == 0 else ri
            pts.append((c + rad * math.sin(a), c - rad * math.cos(a)))
        ImageDraw.Draw(patch).polygon(pts, fill=(*rgb, 255))
        patch = patch.resize((n, n), Image.Resampling.BOX)
        self.paste(patch, cx - n / 2, cy - n / 2)

    def add_box(self, kind: str, ident: str, box: Box, **extra) -> None:
        if box[2] > box[0] and box[3] > box[1]:
            self.boxes.append({"kind": kind, "id": ident, "box": list(box), **extra})


def _clip(box: Box, s: int) -> Box:
    return max(0, box[0]), max(0, box[1]), min(s, box[2]), min(s, box[3])


def union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
