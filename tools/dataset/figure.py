"""One animal with everything it wears, holds and rides, and its mood: a Figure.

A figure is planned in units of its animal glyph's height (the glyph spans x 0..aspect, y 0..1), so
it can be measured before it is scaled, then rendered into its own transparent layer (which can be
tilted for dancing) and pasted. Where each thing goes follows the item's slot and the animal's anchors
(anatomy.py):

- head: on top, sinking into the top edge; a bow sits to one side, tilted; headphones over the ears
- face: over the eye line
- neck: under the chin of a face glyph / at the neck of a whole animal, hanging down
- body / legs / feet: over the torso of a whole animal; a face glyph gets them stacked under it (shirt,
  trousers, then a pair of shoes), which reads as a little character
- hand: held at the side at paw height (the facing side first, the other side for a second item);
  a balloon or kite floats above on a thin drawn string, an umbrella's canopy rises over the head
- back: behind the animal, peeking out on the side it faces away from
- ride: the vehicle under the animal, in front of it where the animal sits inside (car, train, ...)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from cutecpp.vocab import Entry, Vocabulary

from . import art
from .anatomy import Anchors, anchors

# Hand items by size (units of the animal's height); anything else is REGULAR.
REGULAR = 0.45
BIG = {"piano": 0.55, "drum": 0.53, "guitar": 0.62, "basket": 0.50, "bucket": 0.50, "watermelon": 0.47,
       "bouquet": 0.58, "teddy": 0.55, "cake": 0.50, "gift": 0.50, "trophy": 0.53, "lantern": 0.53,
       "sunflower": 0.55, "fishing_rod": 0.62, "violin": 0.58, "bamboo": 0.62, "magic_wand": 0.53,
       "tennis": 0.55, "microphone": 0.47, "flashlight": 0.45, "paintbrush": 0.53, "book": 0.43}
SMALL = {"candy": 0.35, "cherries": 0.38, "strawberry": 0.35, "apple": 0.38, "cookie": 0.35, "donut": 0.38,
         "bell": 0.38, "pencil": 0.43, "crayon": 0.40, "shell": 0.38, "maple_leaf": 0.40, "bone": 0.38,
         "magnifier": 0.43, "cupcake": 0.40, "pear": 0.40, "banana": 0.40, "carrot": 0.43, "juice": 0.40,
         "milk": 0.38, "hot_cocoa": 0.38, "baby_bottle": 0.40, "honey": 0.40, "bread": 0.38, "fan": 0.43,
         "grapes": 0.40, "rose": 0.45, "flower": 0.47, "ice_cream": 0.45, "lollipop": 0.47, "bubbles": 0.50}
FLOATING = {"balloon": (0.46, 0.62, 0.98), "kite": (0.44, 0.45, 0.5)}  # height, string start (x, y) in glyph
# Head items: width as a fraction of the hat width the anchors give.
HEAD_WIDTH = {"hat": 1.05, "top_hat": 0.8, "sun_hat": 1.25, "crown": 0.85, "grad_cap": 1.1, "helmet": 0.95}
# Ride items: width (of the animal's width), where the animal's bottom sits (fraction of the vehicle's
# height from its top), whether the vehicle is drawn in front of the animal.
RIDES = {"bicycle": (1.35, 0.5, False), "scooter": (1.0, 0.72, False), "skateboard": (1.25, 0.22, False),
         "car": (1.5, 0.55, True), "rocket": (1.25, 0.45, True), "boat": (1.35, 0.78, False),
         "train": (1.5, 0.3, True), "sled": (1.4, 0.45, True), "airplane": (1.3, 0.45, True)}
PAIRED = {"ballet_shoes", "socks", "skis"}  # the glyph already shows two
BLUSH = (255, 112, 150, 150)
STRING = (120, 120, 130)

Z_BACK, Z_ANIMAL, Z_BODY, Z_LEGS, Z_FEET, Z_NECK, Z_FACE, Z_HEAD, Z_HAND, Z_FRONT, Z_MOOD = range(-1, 10)


@dataclass
class Part:
    kind: str  # "animal", "item", "mood"
    ident: str
    ch: str | None
    box: tuple[float, float, float, float]  # units
    z: int
    flip: bool = False
    rgb: tuple[int, int, int] | None = None
    whole: bool = False
    angle: float = 0.0
    stretch: bool = False
    line: list[tuple[float, float]] | None = None
    ellipse: tuple[int, int, int, int] | None = None
    worn: bool = False  # part of the standing body (sets where the feet are)


@dataclass
class Figure:
    animal: str
    parts: list[Part] = field(default_factory=list)
    tilt: float = 0.0
    lift: float = 0.0

    def bbox(self) -> tuple[float, float, float, float]:
        bs = [p.box for p in self.parts]
        return min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs)

    def feet(self) -> float:
        """The y (units) the figure stands on."""
        return max(p.box[3] for p in self.parts if p.worn)

    def body_height(self) -> float:
        """Height (units) of the animal with what it wears, not counting a vehicle."""
        ws = [p.box for p in self.parts if p.worn and p.z != Z_FRONT and p.kind != "ride"]
        return max(b[3] for b in ws) - min(b[1] for b in ws)

    def core(self) -> tuple[float, float]:
        """Horizontal extent (units) used to space figures: the worn body, plus half of what sticks out
        (held things may overlap a neighbour a little)."""
        ws = [p.box for p in self.parts if p.worn]
        x0, x1 = min(b[0] for b in ws), max(b[2] for b in ws)
        bx0, _, bx1, _ = self.bbox()
        return x0 - (x0 - bx0) * 0.5, x1 + (bx1 - x1) * 0.5


def _box(cx: float, cy: float, w: float, h: float) -> tuple[float, float, float, float]:
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


@dataclass
class _Ink:
    left: np.ndarray
    right: np.ndarray


_INK: dict[str, _Ink] = {}


def _ink(ch: str) -> _Ink:
    """Per row of the glyph, the leftmost and rightmost inked x (fractions of its width)."""
    hit = _INK.get(ch)
    if hit is None:
        a = np.asarray(art.base_glyph(ch))[..., 3] > 96
        w = a.shape[1]
        any_ = a.any(1)
        left = np.where(any_, a.argmax(1), w // 2) / w
        right = np.where(any_, w - a[:, ::-1].argmax(1), w // 2) / w
        hit = _INK[ch] = _Ink(left, right)
    return hit


def ink_edge(ch: str, y: float, side: int, flip: bool) -> float:
    """The glyph's outer ink x (fraction of width) on `side` around row fraction y."""
    ink = _ink(ch)
    n = len(ink.left)
    lo, hi = max(0, int((y - 0.06) * n)), min(n, int((y + 0.06) * n) + 1)
    left, right = float(ink.left[lo:hi].min()), float(ink.right[lo:hi].max())
    if flip:
        left, right = 1 - right, 1 - left
    return left if side < 0 else right


class FigureBuilder:
    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab

    def build(self, animal: Entry, features: list[tuple[Entry, tuple[int, int, int] | None]],
              expression: Entry | None, rng: random.Random, flip: bool, hand_side: int) -> Figure:
        ch = animal.emoji
        a = art.glyph_aspect(ch)
        shape = animal.hints.get("shape", "body")
        anc = anchors(animal.id, shape, a, flip)
        fig = Figure(animal.id)
        fig.parts.append(Part("animal", animal.id, ch, (0.0, 0.0, a, 1.0), Z_ANIMAL, flip=flip, worn=True))
        side = anc.facing or hand_side
        by_slot: dict[str, list[tuple[Entry, tuple | None]]] = {}
        for item, rgb in features:
            by_slot.setdefault(item.slot or "hand", []).append((item, rgb))
        stack_bottom = self._wear(fig, shape, a, anc, by_slot, rng)
        self._head(fig, a, anc, shape, by_slot.get("head", []), rng)
        self._face_neck(fig, a, anc, shape, by_slot)
        for k, (item, rgb) in enumerate(by_slot.get("hand", [])):
            self._hand(fig, ch, a, anc, shape, item, rgb, side if k == 0 else -side, flip)
        for item, rgb in by_slot.get("back", []):
            self._back(fig, ch, a, anc, item, rgb, -side, flip)
        for item, rgb in by_slot.get("ride", []):
            self._ride(fig, a, item, rgb, stack_bottom)
        if expression is not None:
            self._mood(fig, a, anc, shape, expression, rng, side)
        return fig

    # --- worn things ------------------------------------------------------------------------------

    def _glyph_part(self, item: Entry, rgb, box, z, **kw) -> Part:
        return Part("item", item.id, item.emoji, box, z, rgb=rgb, whole=item.id == "gift", **kw)

    def _wear(self, fig: Figure, shape: str, a: float, anc: Anchors, by_slot, rng) -> float:
        """Body, legs and feet; returns the y the figure now stands on."""
        bottom = 1.0
        body = by_slot.get("body", [])
        legs = by_slot.get("legs", [])
        feet = by_slot.get("feet", [])
        if shape == "head":
            y = 0.86
            for item, rgb in body:
                w = 0.8 * a
                h = min(max(w / art.glyph_aspect(item.emoji), 0.5), 0.72)
                fig.parts.append(self._glyph_part(item, rgb, (a / 2 - w / 2, y, a / 2 + w / 2, y + h), Z_BODY,
                                                  stretch=True, worn=True))
                y += h - 0.08
            for item, rgb in legs:
                ga = art.glyph_aspect(item.emoji)
                w = (0.52 if ga < 0.8 else 0.62) * a
                h = min(max(w / ga, 0.4), 0.62)
                fig.parts.append(self._glyph_part(item, rgb, (a / 2 - w / 2, y - 0.04, a / 2 + w / 2, y - 0.04 + h),
                                                  Z_LEGS, stretch=True, worn=True))
                y += h - 0.12
            bottom = max(1.0, y + 0.04) if (body or legs) else 1.0
            for item, rgb in feet:
                self._shoes(fig, item, rgb, a / 2, 0.4 * a, (y + 0.1) if (body or legs) else 0.94, 0.3)
                bottom = max(p.box[3] for p in fig.parts if p.worn)
            return bottom
        tx, ty, tw = anc.torso
        for item, rgb in body:
            w = tw * a * 1.05
            h = min(w / art.glyph_aspect(item.emoji), 0.55)
            fig.parts.append(self._glyph_part(item, rgb, _box(tx * a, ty, w, h), Z_BODY, stretch=True))
        for item, rgb in legs:
            w = tw * a * 0.8
            h = min(w / art.glyph_aspect(item.emoji), 0.4)
            fig.parts.append(self._glyph_part(item, rgb, (tx * a - w / 2, 0.98 - h, tx * a + w / 2, 0.98), Z_LEGS,
                                              stretch=True))
        for item, rgb in feet:
            self._shoes(fig, item, rgb, anc.feet[0] * a, anc.feet[1] * a, 0.94, 0.22)
            bottom = max(bottom, max(p.box[3] for p in fig.parts if p.worn))
        return bottom

    def _shoes(self, fig: Figure, item: Entry, rgb, cx: float, span: float, top: float, h: float) -> None:
        ga = art.glyph_aspect(item.emoji)
        if item.id in PAIRED:
            h2 = h * 1.3
            w = h2 * ga
            fig.parts.append(self._glyph_part(item, rgb, (cx - w / 2, top, cx + w / 2, top + h2), Z_FEET, worn=True))
            return
        w = h * ga
        for k, sx in enumerate((-1, 1)):
            x = cx + sx * span / 2
            fig.parts.append(self._glyph_part(item, rgb, (x - w / 2, top, x + w / 2, top + h), Z_FEET, flip=k == 0,
                                              worn=True))

    def _head(self, fig: Figure, a: float, anc: Anchors, shape: str, items, rng) -> None:
        tx, ty, tw = anc.top
        for item, rgb in items:
            ga = art.glyph_aspect(item.emoji)
            if item.id == "bow":
                w = max(0.3, tw * 0.75) * a
                h = w / ga
                sx = rng.choice((-1, 1))
                cx = tx * a + sx * tw * a * 0.35
                box = _box(cx, ty + 0.12 * h, w, h)
                fig.parts.append(self._glyph_part(item, rgb, box, Z_HEAD, angle=-sx * 15.0, worn=True))
            elif item.id == "headphones":
                ex, ey, ew = anc.eye
                if shape == "head":
                    w, cy = 0.98 * a, ey - 0.02
                else:
                    w, cy = 2.4 * anc.head_r, ey + 0.02
                h = w / ga
                fig.parts.append(self._glyph_part(item, rgb, (ex * a - w / 2, cy - 0.72 * h, ex * a + w / 2,
                                                              cy + 0.28 * h), Z_HEAD, worn=True))
            else:
                w = tw * a * HEAD_WIDTH.get(item.id, 1.0)
                h = w / ga
                sink = 0.3 if shape == "head" else 0.35
                flip = item.id == "hat" and anc.facing > 0
                box = (tx * a - w / 2, ty + sink * h - h, tx * a + w / 2, ty + sink * h)
                fig.parts.append(self._glyph_part(item, rgb, box, Z_HEAD, flip=flip, worn=True))

    def _face_neck(self, fig: Figure, a: float, anc: Anchors, shape: str, by_slot) -> None:
        ex, ey, ew = anc.eye
        for item, rgb in by_slot.get("face", []):
            w = ew * a * (1.08 if item.id == "goggles" else 1.0)
            h = w / art.glyph_aspect(item.emoji)
            fig.parts.append(self._glyph_part(item, rgb, _box(ex * a, ey, w, h), Z_FACE))
        nx, ny, nw = anc.neck
        for item, rgb in by_slot.get("neck", []):
            ga = art.glyph_aspect(item.emoji)
            h = (0.5 if shape == "head" else max(0.22, min(0.4, nw * a / ga * 0.8)))
            w = h * ga
            top = ny - (0.14 if shape == "head" else 0.1)
            fig.parts.append(self._glyph_part(item, rgb, (nx * a - w / 2, top, nx * a + w / 2, top + h), Z_NECK))

    # --- held, carried, ridden ------------------------------------------------------------------

    def _hand(self, fig: Figure, ch: str, a: float, anc: Anchors, shape: str, item: Entry, rgb, side: int,
              flip: bool) -> None:
        hy = 0.74 if shape == "head" else min(0.8, max(0.45, anc.torso[1]))
        edge = ink_edge(ch, hy, side, flip) * a
        ga = art.glyph_aspect(item.emoji)
        if item.id in FLOATING:
            h, sx, sy = FLOATING[item.id]
            w = h * ga
            cx = edge + side * (0.12 + w * 0.3)
            top = -0.32 if item.id == "balloon" else -0.4
            item_flip = side < 0 and item.id == "kite"
            fig.parts.append(self._glyph_part(item, rgb, (cx - w / 2, top, cx + w / 2, top + h), Z_HAND,
                                              flip=item_flip))
            gx = (1 - sx) if item_flip else sx
            start = (cx - w / 2 + gx * w, top + sy * h)
            end = (edge - side * 0.03, hy)
            mid = ((start[0] + end[0]) / 2 + side * 0.04, (start[1] + end[1]) / 2)
            fig.parts.append(Part("string", item.id, None, _bounds([start, mid, end]), Z_BACK + 0,
                                  line=[start, mid, end]))
            return
        if item.id == "umbrella":
            h = 0.85
            w = h * ga
            cx = edge + side * w * 0.15
            fig.parts.append(self._glyph_part(item, rgb, (cx - w / 2, hy + 0.08 - h, cx + w / 2, hy + 0.08), Z_HAND))
            return
        h = BIG.get(item.id) or SMALL.get(item.id) or REGULAR
        if shape == "head":
            h *= 1.08
        w = h * ga
        cx = edge + side * w * 0.12
        fig.parts.append(self._glyph_part(item, rgb, _box(cx, hy, w, h), Z_HAND, flip=side < 0 and item.id in
                                          ("guitar", "violin", "fishing_rod", "magic_wand", "paintbrush", "pencil",
                                           "crayon", "flashlight", "tennis", "microphone", "trumpet")))

    def _back(self, fig: Figure, ch: str, a: float, anc: Anchors, item: Entry, rgb, side: int, flip: bool) -> None:
        y = 0.62 if anc.facing == 0 else anc.torso[1]
        edge = ink_edge(ch, y, side, flip) * a
        h = 0.5
        w = h * art.glyph_aspect(item.emoji)
        cx = edge - side * w * 0.05
        fig.parts.append(self._glyph_part(item, rgb, _box(cx, y, w, h), Z_BACK, flip=side > 0))

    def _ride(self, fig: Figure, a: float, item: Entry, rgb, bottom: float) -> None:
        wf, sink, front = RIDES.get(item.id, (1.35, 0.5, True))
        w = max(a, 0.8) * wf
        h = w / art.glyph_aspect(item.emoji)
        top = bottom - sink * h
        part = self._glyph_part(item, rgb, (a / 2 - w / 2, top, a / 2 + w / 2, top + h), Z_FRONT if front else Z_BACK,
                                worn=True)
        part.kind = "ride"
        fig.parts.append(part)

    # --- mood ------------------------------------------------------------------------------------

    def _mood(self, fig: Figure, a: float, anc: Anchors, shape: str, e: Entry, rng: random.Random, side: int) -> None:
        ex, ey, ew = anc.eye
        if shape == "head":
            hx0, hy0, hx1, hy1 = 0.0, 0.0, a, 1.0
        else:
            r = anc.head_r
            hx0, hy0, hx1, hy1 = ex * a - r * 1.1, ey - r, ex * a + r * 1.1, ey + r
        ov = e.hints.get("overlay") or e.emoji
        away = -side
        head_side_x = hx1 if away > 0 else hx0

        def put(ch: str, cx: float, cy: float, h: float, z: int = Z_MOOD, flip: bool = False, angle: float = 0.0):
            w = h * art.glyph_aspect(ch)
            fig.parts.append(Part("mood", e.id, ch, _box(cx, cy, w, h), z, flip=flip, angle=angle))

        if e.id == "shy":
            if shape == "head":
                bw, bh, dx, cy = 0.17 * a, 0.09, 0.27 * a, ey + 0.17
            else:
                r = anc.head_r
                bw, bh, dx, cy = 0.7 * r, 0.38 * r, 0.45 * r, ey + 0.35 * r
            for sx in (-1, 1):
                fig.parts.append(Part("mood", e.id, None, _box(ex * a + sx * dx, cy, bw, bh), Z_MOOD, ellipse=BLUSH))
            return
        if e.id == "fly":
            for sx in (-1, 1):
                edge = ink_edge(fig.parts[0].ch or "", 0.5, sx, fig.parts[0].flip) * a
                put(ov, edge + sx * 0.12, 0.42, 0.5, z=Z_BACK - 1, flip=sx < 0)
            return
        if e.id == "dance":
            fig.tilt = rng.choice((-1, 1)) * rng.uniform(8, 12)
            put(ov, hx0 - 0.14, (hy0 + hy1) / 2 - 0.1, 0.24, angle=10)
            put("🎶" if rng.random() < 0.5 else ov, hx1 + 0.14, hy0 + 0.05, 0.22, angle=-10)
            return
        if e.id == "jump":
            fig.lift = 0.16
            put(ov, a / 2 + away * 0.3 * a, 1.0, 0.3, flip=away < 0)
            return
        if e.id == "swim":
            for sx in (-1, 1):
                put(ov, a / 2 + sx * 0.55 * a, 0.85, 0.28, flip=sx < 0)
            return
        if e.id == "run":
            put(ov, (0.0 if away < 0 else a) + away * 0.12, 0.78, 0.34, flip=away > 0)
            return
        if e.id == "sing":
            put(ov, (hx1 if side > 0 else hx0) + side * 0.12, ey + 0.05, 0.3)
            return
        if e.id == "wave":
            put(ov, head_side_x + away * 0.14, ey, 0.3, flip=away < 0)
            return
        size = {"sleep": 0.32, "love": 0.32, "surprised": 0.3, "smile": 0.3}.get(e.id, 0.3)
        put(ov, head_side_x + away * 0.08, hy0 + 0.06, size)


def _bounds(points: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


# --- rendering -----------------------------------------------------------------------------------

def render_figure(fig: Figure, k: float) -> tuple[Image.Image, dict[int, tuple[int, int, int, int]], tuple]:
    """The figure at k px per unit: (RGBA layer, part index -> box in the layer, layer origin in units)."""
    x0, y0, x1, y1 = fig.bbox()
    pad = 2
    w = int(np.ceil((x1 - x0) * k)) + 2 * pad
    h = int(np.ceil((y1 - y0) * k)) + 2 * pad
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    boxes: dict[int, tuple[int, int, int, int]] = {}
    order = sorted(range(len(fig.parts)), key=lambda i: fig.parts[i].z)
    for i in order:
        p = fig.parts[i]
        bx0, by0, bx1, by1 = ((p.box[0] - x0) * k + pad, (p.box[1] - y0) * k + pad,
                              (p.box[2] - x0) * k + pad, (p.box[3] - y0) * k + pad)
        if p.line is not None:
            pts = [((x - x0) * k + pad, (y - y0) * k + pad) for x, y in p.line]
            _line(layer, pts, STRING, max(1.0, k * 0.008))
            continue
        if p.ellipse is not None:
            e = art.soft_ellipse(max(1, int(round(bx1 - bx0))), max(1, int(round(by1 - by0))), p.ellipse)
            _composite(layer, e, bx0, by0)
            boxes[i] = (int(bx0), int(by0), int(bx1), int(by1))
            continue
        g = art.glyph(p.ch, by1 - by0, rgb=p.rgb, whole=p.whole, flip=p.flip, angle=p.angle,
                      width=(bx1 - bx0) if p.stretch else None)
        cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
        gx, gy = cx - g.width / 2, cy - g.height / 2
        _composite(layer, g, gx, gy)
        boxes[i] = (int(round(gx)), int(round(gy)), int(round(gx)) + g.width, int(round(gy)) + g.height)
    return layer, boxes, (x0 - pad / k, y0 - pad / k)


def _composite(layer: Image.Image, g: Image.Image, x: float, y: float) -> None:
    xi, yi = int(round(x)), int(round(y))
    sx, sy = max(0, -xi), max(0, -yi)
    if sx >= g.width or sy >= g.height:
        return
    ex, ey = min(g.width, layer.width - xi), min(g.height, layer.height - yi)
    if ex <= sx or ey <= sy:
        return
    layer.alpha_composite(g, dest=(xi + sx, yi + sy), source=(sx, sy, ex, ey))


def _line(layer: Image.Image, pts: list[tuple[float, float]], rgb: tuple[int, int, int], width: float) -> None:
    """An anti-aliased polyline: drawn 4x on a patch around it, scaled down, composited."""
    kx = 4
    pad = width + 2
    x0, y0 = int(min(p[0] for p in pts) - pad), int(min(p[1] for p in pts) - pad)
    x1, y1 = int(max(p[0] for p in pts) + pad) + 1, int(max(p[1] for p in pts) + pad) + 1
    big = Image.new("RGBA", ((x1 - x0) * kx, (y1 - y0) * kx), (*rgb, 0))
    ImageDraw.Draw(big).line([((x - x0) * kx, (y - y0) * kx) for x, y in pts], fill=(*rgb, 255),
                             width=max(1, int(width * kx)), joint="curve")
    _composite(layer, big.resize((x1 - x0, y1 - y0), Image.Resampling.BOX), x0, y0)
