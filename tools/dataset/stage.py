"""The stage: the gradient background (changed by the light) and the place drawn behind, under and
around the animals.

Each place has a recipe here, keyed by its vocabulary id; a place without one is drawn from its
layout hint (ground / behind / over / around / corner) and its emoji, so a new vocabulary entry still
renders. A recipe works in two steps: `plan` (before the animals are laid out: where they stand and how
tall they may be) and `draw_back` / `draw_front` (after, knowing the animals' boxes). The four corner
squares of the picture (CORNER of its size) are kept free of everything except a ground band at the
bottom and the sun in a top corner, so a corner pixel shows the background.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from cutecpp.vocab import Entry

from . import art
from .paint import Box, Canvas, gradient, hsv, jitter_rgb

CORNER = 0.08  # fraction of the picture kept clean in each corner

GRASS = ((168, 222, 135), (120, 196, 104))
SAND = ((250, 228, 176), (238, 206, 146))
SNOW = ((246, 250, 255), (214, 228, 246))
SEA = ((132, 204, 240), (72, 160, 222))
POND = ((150, 214, 204), (98, 182, 176))
FLOOR = ((242, 226, 206), (224, 200, 176))
STONE = ((232, 228, 222), (210, 204, 198))
EARTH = ((232, 212, 150), (210, 182, 112))
SUNSET_SEA = ((252, 184, 132), (236, 136, 116))

# Pastel backgrounds when no light is named: (hue, weight). Yellow-cream is left to "bright" and a
# saturated peach to "warm", so that light words have something of their own to show.
PASTEL_HUES = ((345, 3.0), (12, 2.0), (280, 2.0), (205, 1.5), (155, 1.5))


@dataclass
class Plan:
    ground: float | None  # y the animals stand on (px); None: centred vertically
    max_h: float  # tallest a figure may be (px)
    top: float  # figures stay below this y (px)
    x_shift: float = 0.0  # the group moves sideways to leave room for a side glyph
    side: int = 1  # which side a side glyph goes (-1 left, +1 right)
    band_top: float | None = None


# --- background ----------------------------------------------------------------------------------

def background(size: int, light: Entry | None, rng: random.Random) -> tuple[np.ndarray, tuple, tuple]:
    """The gradient (array) and its top and bottom colours."""
    if light is None:
        hues, weights = zip(*PASTEL_HUES, strict=True)
        h = rng.choices(hues, weights=weights)[0] + rng.uniform(-8, 8)
        top = hsv(h, rng.uniform(0.05, 0.10), 1.0)
        bottom = hsv(h + rng.uniform(-10, 10), rng.uniform(0.14, 0.22), rng.uniform(0.96, 1.0))
    else:
        top_hex, bottom_hex = light.hints["background"]
        top = jitter_rgb(art.hex_rgb(top_hex), rng, 4, 0.08, 0.015)
        bottom = jitter_rgb(art.hex_rgb(bottom_hex), rng, 4, 0.08, 0.015)
    return gradient(size, top, bottom), top, bottom


def night_stars(canvas: Canvas, rng: random.Random) -> None:
    s = canvas.s
    for _ in range(rng.randint(7, 12)):
        x = rng.uniform(CORNER + 0.02, 1 - CORNER - 0.02) * s
        y = rng.uniform(0.03, 0.55) * s
        canvas.star(x, y, rng.uniform(0.008, 0.016) * s, (255, 244, 190))


# --- helpers ---------------------------------------------------------------------------------------

def _band(canvas: Canvas, top: float, colours, rng: random.Random, wave: float = 0.0, bulge: float = 0.0) -> None:
    s = canvas.s
    c0 = jitter_rgb(colours[0], rng, 3, 0.05, 0.02)
    c1 = jitter_rgb(colours[1], rng, 3, 0.05, 0.02)
    canvas.band(top, (c0, c1), wave=wave * s, bulge=bulge * s, phase=rng.uniform(0, 6.28), cycles=rng.uniform(1.5, 3))


def _free(box: tuple[float, float, float, float], avoid: list[Box], s: int) -> bool:
    """Inside the picture, out of the corner squares (the bottom ones only matter above a ground band,
    which covers them anyway), clear of every box in `avoid`."""
    x0, y0, x1, y1 = box
    c = CORNER * s
    if x0 < 0.02 * s or x1 > 0.98 * s or y0 < 0.02 * s or y1 > 0.98 * s:
        return False
    corners = ((0, 0), (s, 0)) if y0 > 0.6 * s else ((0, 0), (s, 0), (0, s), (s, s))
    for cx, cy in corners:
        if (x0 < c if cx == 0 else x1 > s - c) and (y0 < c if cy == 0 else y1 > s - c):
            return False
    return all(x1 <= a[0] or x0 >= a[2] or y1 <= a[1] or y0 >= a[3] for a in avoid)


def spots(rng: random.Random, s: int, n: int, half: tuple[float, float], avoid: list[Box],
          region: tuple[float, float, float, float] = (0, 0, 1, 1), tries: int = 40) -> list[tuple[float, ...]]:
    """Up to n (x, y, half-size) spots in `region` (fractions) clear of `avoid` and of each other. avoid[0]
    is the animals' box: after half the tries it is ignored (the thing goes behind the animals)."""
    taken = list(avoid)
    out: list[tuple[float, float, float]] = []
    for attempt in range(tries):
        if len(out) >= n:
            break
        if attempt == tries // 2 and avoid:
            taken = taken[1:]
        r = rng.uniform(*half) * s
        x = rng.uniform(region[0], region[2]) * s
        y = rng.uniform(region[1], region[3]) * s
        box = (x - r, y - r, x + r, y + r)
        if _free(box, taken, s):
            out.append((x, y, r))
            taken.append(tuple(int(v) for v in box))
    return out


def scatter(canvas: Canvas, rng: random.Random, glyphs: list[str], n: int, h_range: tuple[float, float],
            avoid: list[Box], region: tuple[float, float, float, float] = (0, 0, 1, 1), angle: float = 0.0,
            ident: str = "") -> list[Box]:
    """Up to n glyphs at random free spots of `region` (fractions), not overlapping `avoid` or each other."""
    s = canvas.s
    taken = list(avoid)
    placed: list[Box] = []
    tries = n * 12
    for attempt in range(tries):
        if len(placed) >= n:
            break
        if attempt == tries // 2 and avoid:  # no room around the animals: tuck the rest behind them
            taken = taken[len(avoid):] + list(avoid[1:])
        ch = rng.choice(glyphs)
        h = rng.uniform(*h_range) * s
        w = h * art.glyph_aspect(ch)
        cx = rng.uniform(region[0], region[2]) * s
        cy = rng.uniform(region[1], region[3]) * s
        box = (cx - w / 2 - 2, cy - h / 2 - 2, cx + w / 2 + 2, cy + h / 2 + 2)
        if not _free(box, taken, s):
            continue
        a = rng.uniform(-angle, angle) if angle else 0.0
        b = canvas.glyph(ch, cx, cy, h, angle=a)
        taken.append(tuple(int(v) for v in box))
        placed.append(b)
    if ident:
        for b in placed:
            canvas.add_box("place", ident, b)
    return placed


def _grow(box: Box, m: float) -> Box:
    return (int(box[0] - m), int(box[1] - m), int(box[2] + m), int(box[3] + m))


# --- recipes -------------------------------------------------------------------------------------

class Recipe:
    """Default recipe from the place's layout hint."""

    band: tuple | None = None

    def __init__(self, place: Entry) -> None:
        self.place = place
        self.layout = place.hints.get("layout", "behind")

    def plan(self, s: int, rng: random.Random, n: int) -> Plan:
        if self.layout in ("ground", "behind") or self.band is not None:
            bt = rng.uniform(0.76, 0.8) * s
            gy = bt + rng.uniform(0.06, 0.09) * s
            return Plan(ground=gy, max_h=gy - 0.09 * s, top=0.09 * s, band_top=bt, side=rng.choice((-1, 1)))
        return Plan(ground=None, max_h=0.8 * s, top=0.09 * s, side=rng.choice((-1, 1)))

    def draw_back(self, c: Canvas, plan: Plan, group: Box, rng: random.Random) -> None:
        s = c.s
        band = self.band or (GRASS if self.layout in ("ground", "behind") else None)
        ch = self.place.emoji
        if self.layout == "behind":
            x = s / 2 + plan.side * 0.3 * s
            c.add_box("place", self.place.id, c.glyph_bottom(ch, x, plan.band_top + 0.04 * s, 0.5 * s))
        if band is not None and plan.band_top is not None:
            _band(c, plan.band_top, band, rng, wave=0.008, bulge=0.02)
        if self.layout == "around":
            scatter(c, rng, [ch, *self.place.also], rng.randint(5, 8), (0.08, 0.13), [_grow(group, 0.02 * s)],
                    ident=self.place.id)
        elif self.layout == "corner":
            self._corner(c, plan, ch, rng)
        elif self.layout == "over":
            h = 0.75 * s
            c.add_box("place", self.place.id, c.glyph(ch, s / 2, group[1] + 0.1 * s, h * 0.6))

    def _corner(self, c: Canvas, plan: Plan, ch: str, rng: random.Random) -> None:
        s = c.s
        h = rng.uniform(0.19, 0.24) * s
        x = (0.04 * s + h / 2) if plan.side < 0 else (0.96 * s - h / 2)
        c.add_box("place", self.place.id, c.glyph(ch, x + rng.uniform(-0.01, 0.01) * s, 0.04 * s + h / 2, h))

    def draw_front(self, c: Canvas, plan: Plan, group: Box, rng: random.Random) -> None:
        pass


class Platform(Recipe):
    """The animals stand (or sit) on the place's glyph: iceberg, cloud, moon, island, bed."""

    band: tuple | None = None
    width = 1.15  # of the group's width
    min_width = 0.5  # of the picture
    aspect = None  # stretch the glyph to this width / height
    stand = 0.25  # the animals' feet this far down the glyph
    angle = 0.0
    ground = 0.7  # where the feet are, as a fraction of the picture
    shift = 0.0  # glyph centre moved by this fraction of its width

    def plan(self, s: int, rng: random.Random, n: int) -> Plan:
        gy = (self.ground + rng.uniform(-0.02, 0.02)) * s
        bt = rng.uniform(0.76, 0.8) * s if self.band else None
        return Plan(ground=gy, max_h=gy - 0.09 * s, top=0.09 * s, band_top=bt, side=rng.choice((-1, 1)))

    def _size(self, s: int, group: Box) -> tuple[float, float]:
        w = max(self.min_width * s, (group[2] - group[0]) * self.width)
        w = min(w, 0.9 * s)
        aspect = self.aspect or art.glyph_aspect(self.place.emoji, self.angle)
        return w, w / aspect

    def draw_back(self, c: Canvas, plan: Plan, group: Box, rng: random.Random) -> None:
        s = c.s
        if self.band is not None and plan.band_top is not None:
            _band(c, plan.band_top, self.band, rng, wave=0.01)
        self.extras(c, plan, group, rng)
        w, h = self._size(s, group)
        cx = (group[0] + group[2]) / 2 + self.shift * w
        top = plan.ground - self.stand * h
        g = art.glyph(self.place.emoji, h, width=w if self.aspect else None, angle=self.angle)
        box = c.paste(g, cx - g.width / 2, top)
        c.add_box("place", self.place.id, box)

    def extras(self, c: Canvas, plan: Plan, group: Box, rng: random.Random) -> None:
        pass


class Iceberg(Platform):
    band = SEA
    aspect = 2.1
    width = 1.05
    stand = 0.2
    ground = 0.7

    def extras(self, c, plan, group, rng):
        s = c.s
        for side in (-1, 1):
            if rng.random() < 0.8:
                x = s / 2 + side * rng.uniform(0.36, 0.4) * s
                c.glyph("🌊", x, plan.band_top + 0.09 * s, rng.uniform(0.1, 0.13) * s, flip=side < 0)


class Cloud(Platform):
    width = 1.25
    min_width = 0.6
    stand = 0.3
    ground = 0.72

    def extras(self, c, plan, group, rng):
        s = c.s
        scatter(c, rng, ["☁️"], rng.randint(1, 2), (0.07, 0.1), [_grow(group, 0.03 * s)], (0.1, 0.08, 0.9, 0.4))


class Moon(Platform):
    width = 1.2
    min_width = 0.6
    angle = -45.0  # Noto's crescent lies diagonally; turned, it opens upwards like a cradle
    stand = 0.4
    ground = 0.74


class Island(Platform):
    band = SEA
    width = 1.5
    min_width = 0.7
    stand = 0.7
    ground = 0.8
    shift = 0.12


class Bed(Platform):
    band = FLOOR
    width = 1.3
    min_width = 0.65
    stand = 0.5
    ground = 0.74


class Bath(Platform):
    """The tub is drawn in front: the animals sit in it."""

    band = FLOOR
    width = 1.2
    min_width = 0.55
    aspect = 2.0
    ground = 0.82

    def draw_back(self, c, plan, group, rng):
        _band(c, plan.band_top, self.band, rng)

    def draw_front(self, c, plan, group, rng):
        s = c.s
        w, h = self._size(s, group)
        top = plan.ground - 0.45 * h
        g = art.glyph(self.place.emoji, h, width=w)
        c.add_box("place", self.place.id, c.paste(g, (group[0] + group[2]) / 2 - g.width / 2, top))


class Band(Recipe):
    """A ground band of the place's colour with glyphs on it: grass, beach, desert, farm, snow, garden."""

    glyphs: tuple[str, ...] = ()
    n = (4, 7)
    h = (0.06, 0.1)
    side_glyph: str | None = None
    side_h = 0.3

    def draw_back(self, c: Canvas, plan: Plan, group: Box, rng: random.Random) -> None:
        s = c.s
        self.sky(c, plan, group, rng)
        if self.side_glyph:
            x = s / 2 + plan.side * rng.uniform(0.3, 0.34) * s
            box = c.glyph_bottom(self.side_glyph, x, plan.band_top + 0.06 * s, self.side_h * s)
            c.add_box("place", self.place.id, box)
        _band(c, plan.band_top, self.band, rng, wave=0.006, bulge=0.02)
        glyphs = list(self.glyphs) or [self.place.emoji, *self.place.also]
        region = (0.05, (plan.band_top + 0.04 * s) / s, 0.95, 0.95)
        scatter(c, rng, glyphs, rng.randint(*self.n), self.h, [_grow(group, 0.01 * s)], region, ident=self.place.id)

    def sky(self, c: Canvas, plan: Plan, group: Box, rng: random.Random) -> None:
        pass


class Grass(Band):
    band = GRASS
    glyphs = ("🌱",)
    n = (5, 8)
    h = (0.08, 0.12)


class Garden(Band):
    """Flowers along the back of the lawn (partly behind the animals) and more in front."""

    band = GRASS
    n = (3, 5)
    h = (0.08, 0.11)

    def draw_back(self, c, plan, group, rng):
        s = c.s
        _band(c, plan.band_top, self.band, rng, wave=0.006, bulge=0.02)
        glyphs = [self.place.emoji, *self.place.also]
        k = rng.randint(6, 8)
        for j in range(k):
            x = (0.08 + 0.84 * (j + rng.uniform(0.2, 0.8)) / k) * s
            h = rng.uniform(0.09, 0.13) * s
            c.add_box("place", self.place.id, c.glyph_bottom(rng.choice(glyphs), x, plan.band_top + 0.05 * s, h))
        region = (0.05, (plan.band_top + 0.06 * s) / s, 0.95, 0.96)
        scatter(c, rng, glyphs, rng.randint(*self.n), self.h, [_grow(group, 0.005 * s)], region, ident=self.place.id)


class Beach(Band):
    band = SAND
    glyphs = ()
    n = (0, 0)
    side_h = 0.3

    def draw_back(self, c, plan, group, rng):
        s = c.s
        _band(c, plan.band_top - 0.06 * s, SEA, rng, wave=0.006)
        x = s / 2 + plan.side * rng.uniform(0.3, 0.34) * s
        _band(c, plan.band_top, SAND, rng, wave=0.004, bulge=0.015)
        c.add_box("place", self.place.id, c.glyph_bottom("🏖️", x, plan.band_top + 0.16 * s, 0.28 * s))


class Desert(Band):
    band = SAND
    glyphs = ()
    n = (0, 0)
    side_glyph = "🌵"
    side_h = 0.42

    def sky(self, c, plan, group, rng):
        s = c.s
        if rng.random() < 0.6:
            x = s / 2 - plan.side * rng.uniform(0.32, 0.36) * s
            c.add_box("place", self.place.id, c.glyph_bottom("🌵", x, plan.band_top + 0.05 * s, 0.26 * s))


class Farm(Band):
    band = EARTH
    glyphs = ("🌾",)
    n = (4, 6)
    h = (0.12, 0.16)
    side_glyph = "🚜"
    side_h = 0.26


class Snow(Band):
    band = SNOW
    glyphs = ()
    n = (0, 0)
    side_glyph = "⛄"
    side_h = 0.32

    def sky(self, c, plan, group, rng):
        s = c.s
        scatter(c, rng, ["❄️"], rng.randint(5, 8), (0.05, 0.08), [_grow(group, 0.02 * s)], (0, 0, 1, 0.7),
                ident=self.place.id)


class Sea(Recipe):
    """Animals in the water: a wave band behind and a lower one in front."""

    def plan(self, s, rng, n):
        gy = rng.uniform(0.86, 0.89) * s
        return Plan(ground=gy, max_h=gy - 0.1 * s, top=0.06 * s, band_top=0.72 * s, side=rng.choice((-1, 1)))

    def draw_back(self, c, plan, group, rng):
        _band(c, plan.band_top, SEA, rng, wave=0.012)
        c.add_box("place", self.place.id, (0, int(plan.band_top), c.s, c.s))

    def draw_front(self, c, plan, group, rng):
        s = c.s
        top = plan.ground - 0.05 * s
        c0, c1 = SEA
        c.band(top, ((c0[0] - 20, c0[1] - 10, c0[2]), c1), wave=0.012 * s, phase=rng.uniform(0, 6.28), cycles=3)
        for side in (-1, 1):
            x = s / 2 + side * rng.uniform(0.33, 0.38) * s
            c.glyph("🌊", x, top - 0.02 * s, rng.uniform(0.12, 0.15) * s, flip=side < 0)


class Pond(Recipe):
    def plan(self, s, rng, n):
        gy = rng.uniform(0.82, 0.85) * s
        return Plan(ground=gy, max_h=gy - 0.08 * s, top=0.06 * s, band_top=rng.uniform(0.72, 0.75) * s,
                    side=rng.choice((-1, 1)))

    def draw_back(self, c, plan, group, rng):
        s = c.s
        _band(c, plan.band_top, POND, rng, wave=0.004)
        w = max(0.45 * s, (group[2] - group[0]) * 1.1)
        cx = (group[0] + group[2]) / 2
        pad = (cx - w / 2, plan.ground - 0.035 * s, cx + w / 2, plan.ground + 0.045 * s)
        c.ellipse(pad, (96, 178, 92, 255))
        c.ellipse((pad[0] + 0.01 * s, pad[1] + 0.005 * s, pad[2] - 0.01 * s, pad[3] - 0.012 * s), (122, 200, 110, 255))
        c.add_box("place", self.place.id, tuple(int(v) for v in pad))
        region = (0.03, (plan.band_top + 0.03 * s) / s, 0.97, 0.95)
        scatter(c, rng, ["🪷"], rng.randint(2, 3), (0.1, 0.13), [_grow(group, 0.01 * s), tuple(int(v) for v in pad)],
                region, ident=self.place.id)


class Behind(Recipe):
    """One big glyph behind the animals, centred (backdrop) or to one side."""

    band = GRASS
    centred = False
    h = (0.5, 0.6)
    extra: str | None = None
    extra_h = 0.3

    def draw_back(self, c, plan, group, rng):
        s = c.s
        h = rng.uniform(*self.h) * s
        bottom = plan.band_top + 0.05 * s
        if self.centred:
            x = s / 2 + rng.uniform(-0.03, 0.03) * s
        else:
            x = s / 2 + plan.side * rng.uniform(0.27, 0.31) * s
            w = h * art.glyph_aspect(self.place.emoji)
            x = min(max(x, w / 2 + 0.02 * s), s - w / 2 - 0.02 * s)
        box = c.glyph_bottom(self.place.emoji, x, bottom, h)
        self.decorate(c, plan, box, rng)
        c.add_box("place", self.place.id, box)
        if self.extra:
            x2 = s / 2 - plan.side * rng.uniform(0.3, 0.34) * s
            c.add_box("place", self.place.id, c.glyph_bottom(self.extra, x2, bottom, self.extra_h * s))
        _band(c, plan.band_top, self.band, rng, wave=0.006, bulge=0.02)

    def decorate(self, c, plan, box, rng):
        pass

    def plan(self, s, rng, n):
        p = super().plan(s, rng, n)
        if self.centred:  # a backdrop must show around the animals
            p.max_h = min(p.max_h, rng.uniform(0.54, 0.6) * s)
        else:
            p.x_shift = -p.side * 0.06 * s
        return p


class MushroomHouse(Behind):
    h = (0.52, 0.6)

    def decorate(self, c, plan, box, rng):
        # a door on the stem (the stem is the glyph's lower third)
        w, h = box[2] - box[0], box[3] - box[1]
        c.glyph_bottom("🚪", box[0] + 0.5 * w, box[3] - 0.02 * h, 0.26 * h)


class Forest(Recipe):
    band = GRASS

    def draw_back(self, c, plan, group, rng):
        s = c.s
        k = rng.randint(4, 6)
        xs = np.linspace(0.12, 0.88, k) + np.array([rng.uniform(-0.03, 0.03) for _ in range(k)])
        bottom = plan.band_top + 0.04 * s
        for x in xs:
            ch = rng.choice([self.place.emoji, *self.place.also])
            h = rng.uniform(0.3, 0.42) * s
            c.add_box("place", self.place.id, c.glyph_bottom(ch, float(x) * s, bottom, h))
        _band(c, plan.band_top, self.band, rng, wave=0.006, bulge=0.02)


class Mushroom(Recipe):
    """Under a big mushroom: the cap spreads above the animals' heads, the stem goes into the grass."""

    def plan(self, s, rng, n):
        bt = rng.uniform(0.8, 0.83) * s
        gy = bt + 0.06 * s
        return Plan(ground=gy, max_h=0.44 * s, top=0.4 * s, band_top=bt)

    def draw_back(self, c, plan, group, rng):
        s = c.s
        cap_bottom = group[1] + 0.1 * (group[3] - group[1])
        h = rng.uniform(0.62, 0.68) * s
        top = max(0.03 * s, cap_bottom - 0.64 * h)
        g = art.glyph(self.place.emoji, h)
        box = c.paste(g, (group[0] + group[2]) / 2 - g.width / 2, top)
        c.add_box("place", self.place.id, box)
        _band(c, plan.band_top, GRASS, rng, wave=0.006, bulge=0.015)


class Sun(Recipe):
    def plan(self, s, rng, n):
        p = super().plan(s, rng, n)
        p.top = 0.12 * s
        return p


class Stars(Recipe):
    def draw_back(self, c, plan, group, rng):
        s = c.s
        scatter(c, rng, [self.place.emoji, *self.place.also], rng.randint(5, 8), (0.07, 0.12),
                [_grow(group, 0.02 * s)], ident=self.place.id)


class Space(Recipe):
    def draw_back(self, c, plan, group, rng):
        s = c.s
        avoid = [_grow(group, 0.02 * s)]
        avoid += scatter(c, rng, [self.place.emoji], rng.randint(1, 2), (0.13, 0.18), avoid, ident=self.place.id)
        scatter(c, rng, ["⭐"], rng.randint(3, 5), (0.05, 0.08), avoid, ident=self.place.id)


class Rain(Recipe):
    def draw_back(self, c, plan, group, rng):
        s = c.s
        avoid = [_grow(group, 0.01 * s)]
        clouds = scatter(c, rng, [self.place.emoji], rng.randint(1, 2), (0.18, 0.24), avoid, (0.1, 0.08, 0.9, 0.3),
                         ident=self.place.id)
        for x, y, _ in spots(rng, s, 18, (0.02, 0.03), avoid + clouds, (0.04, 0.12, 0.96, 0.92), tries=80):
            c.line([(x, y - 0.022 * s), (x - 0.008 * s, y + 0.022 * s)], (110, 170, 230), max(1.0, 0.007 * s))


class Falling(Recipe):
    """Leaves or petals drifting around the animals (autumn, spring)."""

    def draw_back(self, c, plan, group, rng):
        s = c.s
        scatter(c, rng, [self.place.emoji, *self.place.also], rng.randint(6, 9), (0.06, 0.1),
                [_grow(group, 0.015 * s)], angle=40, ident=self.place.id)


class Party(Recipe):
    def draw_back(self, c, plan, group, rng):
        s = c.s
        avoid = [_grow(group, 0.015 * s)]
        avoid += scatter(c, rng, [self.place.emoji, *self.place.also], rng.randint(3, 4), (0.12, 0.16), avoid,
                         ident=self.place.id)
        palette = [(240, 98, 146), (255, 193, 7), (77, 182, 172), (121, 134, 203), (255, 138, 101)]
        for _ in range(60):
            x, y = rng.uniform(0.05, 0.95) * s, rng.uniform(0.05, 0.92) * s
            r = rng.uniform(0.008, 0.013) * s
            if _free((x - r, y - r, x + r, y + r), avoid, s):
                c.ellipse((x - r, y - r, x + r, y + r), (*rng.choice(palette), 255))


class Fireworks(Recipe):
    """Bursts drawn in the sky (the emoji is a dark tile, which would not sit well on a pastel sky)."""

    def draw_back(self, c, plan, group, rng):
        s = c.s
        palette = [(240, 98, 146), (255, 183, 77), (100, 181, 246), (174, 213, 129), (186, 104, 200)]
        sky = (0.05, 0.05, 0.95, 0.7)
        for x, y, r in spots(rng, s, rng.randint(3, 4), (0.08, 0.12), [_grow(group, 0.01 * s)], sky):
            col = rng.choice(palette)
            rays = rng.randint(10, 14)
            width = max(1.0, 0.012 * s)
            d = 0.06 * r
            for k in range(rays):
                a = 2 * math.pi * k / rays
                ca, sa = math.cos(a), math.sin(a)
                c.line([(x + 0.3 * r * ca, y + 0.3 * r * sa), (x + 0.82 * r * ca, y + 0.82 * r * sa)], col, width)
                c.ellipse((x + 0.95 * r * ca - d, y + 0.95 * r * sa - d, x + 0.95 * r * ca + d, y + 0.95 * r * sa + d),
                          (*col, 255))
            c.add_box("place", self.place.id, (int(x - r), int(y - r), int(x + r), int(y + r)))


class Sunset(Recipe):
    """A big half sun setting into a warm sea behind the animals (the emoji is a square tile)."""

    def plan(self, s, rng, n):
        bt = rng.uniform(0.72, 0.76) * s
        return Plan(ground=bt + 0.12 * s, max_h=rng.uniform(0.52, 0.58) * s, top=0.09 * s, band_top=bt,
                    side=rng.choice((-1, 1)))

    def draw_back(self, c, plan, group, rng):
        s = c.s
        r = rng.uniform(0.26, 0.3) * s
        x = s / 2 + plan.side * rng.uniform(0.12, 0.2) * s
        y = plan.band_top + 0.02 * s
        c.ellipse((x - r * 1.12, y - r * 1.12, x + r * 1.12, y + r * 1.12), (255, 214, 150, 255))
        c.ellipse((x - r, y - r, x + r, y + r), (255, 160, 80, 255))
        _band(c, plan.band_top, SUNSET_SEA, rng, wave=0.004)
        for k in range(3):
            yy = plan.band_top + (0.04 + 0.05 * k) * s
            half = r * (0.8 - 0.2 * k)
            c.line([(x - half, yy), (x + half, yy)], (255, 214, 160), max(1.0, 0.01 * s))
        c.add_box("place", self.place.id, (int(x - r), int(y - r), int(x + r), int(plan.band_top + 0.16 * s)))


class Fountain(Behind):
    band = STONE
    h = (0.4, 0.48)


class Christmas(Behind):
    band = SNOW
    h = (0.55, 0.65)


class Tent(Behind):
    h = (0.34, 0.4)


class Castle(Behind):
    centred = True
    h = (0.62, 0.72)


class Rainbow(Behind):
    """The Noto rainbow is half an arch: it and its mirror image make a whole one."""

    centred = True
    h = (0.55, 0.62)

    def draw_back(self, c, plan, group, rng):
        s = c.s
        h = rng.uniform(*self.h) * s
        g = art.glyph(self.place.emoji, h)
        right = art.glyph(self.place.emoji, h, flip=True)
        x = s / 2 + rng.uniform(-0.02, 0.02) * s
        bottom = plan.band_top + 0.05 * s
        b2 = c.paste(right, x - 2, bottom - g.height)  # overlap the halves: no seam
        b1 = c.paste(g, x - g.width + 1, bottom - g.height)
        c.add_box("place", self.place.id, (b1[0], b1[1], b2[2], b2[3]))
        _band(c, plan.band_top, self.band, rng, wave=0.006, bulge=0.02)


class Backdrop(Behind):
    centred = True
    h = (0.7, 0.8)


class Mountain(Behind):
    """Snowy peaks spread across the whole back of the picture."""

    band = SNOW
    centred = True

    def draw_back(self, c, plan, group, rng):
        s = c.s
        h = rng.uniform(0.5, 0.58) * s
        g = art.glyph(self.place.emoji, h, width=rng.uniform(0.92, 0.98) * s)
        box = c.paste(g, s / 2 - g.width / 2, plan.band_top + 0.05 * s - g.height)
        c.add_box("place", self.place.id, box)
        _band(c, plan.band_top, self.band, rng, wave=0.006, bulge=0.02)


class Playground(Behind):
    h = (0.5, 0.58)
    extra = "🎠"
    extra_h = 0.3


RECIPES: dict[str, type[Recipe]] = {
    "iceberg": Iceberg, "snow_mountain": Mountain, "mushroom_house": MushroomHouse, "mushroom": Mushroom,
    "garden": Garden, "rainbow": Rainbow, "grass": Grass, "beach": Beach, "sea": Sea, "island": Island,
    "forest": Forest, "tree": Behind, "moon": Moon, "stars": Stars, "snow": Snow, "castle": Castle,
    "cloud": Cloud, "sun": Sun, "house": Behind, "farm": Farm, "pond": Pond, "desert": Desert,
    "playground": Playground, "party": Party, "christmas": Christmas, "space": Space, "tent": Tent,
    "school": Behind, "fountain": Fountain, "rain": Rain, "autumn": Falling, "spring": Falling, "bed": Bed,
    "bath": Bath, "sunset": Sunset, "fireworks": Fireworks, "circus": Backdrop,
}


def recipe(place: Entry) -> Recipe:
    return RECIPES.get(place.id, Recipe)(place)
