"""Compose a picture from a Scene: background, place, 1-3 animal figures side by side, labels.

The look (docs/dataset.md): a light pastel vertical gradient (the light word changes it), no shadows,
the animals large and centred (one animal ~55-65 % of the picture's height, two or three side by side
and smaller, all inside the central area), the place behind, under or around them, slight random
jitter in position, scale and hue. All randomness comes from the rng passed in.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image

from cutecpp.vocab import Vocabulary

from . import art
from .anatomy import faces_viewer
from .figure import Figure, FigureBuilder, render_figure
from .paint import Box, Canvas, union
from .scene import Scene
from .stage import background, night_stars, recipe

# Target animal size (its glyph's height, or width/1.15 for wide glyphs) by number of animals.
TARGET = {1: (0.55, 0.65), 2: (0.40, 0.46), 3: (0.31, 0.36)}
MAX_GROUP_WIDTH = 0.9  # of the picture
GAP = 0.015  # between figures, of the picture
CENTRE_LIMIT = 0.6  # the animals' centre stays above this fraction of the height


def compose(scene: Scene, vocab: Vocabulary, size: int, rng: random.Random) -> tuple[Image.Image, list[dict], dict]:
    """The picture (RGB), its boxes and background facts ({"top": rgb, "bottom": rgb})."""
    s = size
    light = vocab.get(scene.light) if scene.light else None
    grad, top, bottom = background(s, light, rng)
    canvas = Canvas(s, Image.fromarray(grad, "RGB"))
    if scene.light == "night":
        night_stars(canvas, rng)

    n = len(scene.members)
    place = vocab.get(scene.place) if scene.place else None
    rec = recipe(place) if place else None
    plan = rec.plan(s, rng, n) if rec else None

    features = []
    for item_id, colour in scene.features:
        item = vocab.get(item_id)
        rgb = art.hex_rgb(vocab.get(colour).hints["rgb"]) if colour else None
        features.append((item, rgb))
    expression = vocab.get(scene.expression) if scene.expression else None
    builder = FigureBuilder(vocab)
    hand_side = rng.choice((-1, 1))
    figures = []
    for animal_id in scene.members:
        animal = vocab.get(animal_id)
        flip = rng.random() < 0.5 and not faces_viewer(animal_id, animal.hints.get("shape", "body"))
        figures.append(builder.build(animal, features, expression, rng, flip, hand_side))

    scales, xs, feet_y = _layout(figures, s, n, plan, rng)
    group = _group_box(figures, scales, xs, feet_y)
    if rec is not None:
        rec.draw_back(canvas, plan, group, rng)
    for i, fig in enumerate(figures):
        _paste_figure(canvas, fig, i, scales[i], xs[i], feet_y[i])
    if rec is not None:
        rec.draw_front(canvas, plan, group, rng)
    return canvas.img, canvas.boxes, {"top": list(top), "bottom": list(bottom)}


def _layout(figures: list[Figure], s: int, n: int, plan, rng: random.Random):
    """Scale (px per unit), core-left x and feet y of each figure."""
    t = rng.uniform(*TARGET[min(n, 3)]) * s
    base = []
    for fig in figures:
        a = fig.parts[0].box[2]
        base.append(t / max(1.0, a / 1.15, 0.82 * fig.body_height()))
    gap = GAP * s
    cores = [f.core() for f in figures]
    boxes = [f.bbox() for f in figures]
    core_w = sum((c[1] - c[0]) * k for c, k in zip(cores, base, strict=True))
    full_w = core_w + (cores[0][0] - boxes[0][0]) * base[0] + (boxes[-1][2] - cores[-1][1]) * base[-1]
    heights = [(b[3] - b[1]) * k for b, k in zip(boxes, base, strict=True)]
    max_h = plan.max_h if plan else 0.82 * s  # 0.09 s kept clear at top and bottom
    fit = min(1.0, (MAX_GROUP_WIDTH * s - gap * (n - 1)) / max(1.0, core_w),
              (0.96 * s - gap * (n - 1)) / max(1.0, full_w), max_h / max(heights))
    if plan is not None and plan.ground is not None:
        room = plan.ground - plan.top  # everything above the feet must stay below plan.top
        for f, k in zip(figures, base, strict=True):
            above = (f.feet() - f.bbox()[1] + f.lift) * k * fit
            if above > room:
                fit *= room / above
    scales = [k * fit for k in base]
    widths = [(c[1] - c[0]) * k for c, k in zip(cores, scales, strict=True)]
    total = sum(widths) + gap * (n - 1)
    out_left = (cores[0][0] - boxes[0][0]) * scales[0]
    out_right = (boxes[-1][2] - cores[-1][1]) * scales[-1]
    shift = (plan.x_shift if plan else 0.0) + rng.uniform(-0.02, 0.02) * s
    left = s / 2 - total / 2 + shift
    left = min(max(left, 0.02 * s + out_left), 0.98 * s - out_right - total)
    xs = []
    x = left
    for w in widths:
        xs.append(x)
        x += w + gap
    if plan is not None and plan.ground is not None:
        # short animals on low ground would sit in the bottom third: raise the ground (and its band)
        tops = [(f.feet() - f.bbox()[1] + f.lift) * k for f, k in zip(figures, scales, strict=True)]
        bottoms = [(f.bbox()[3] - f.feet()) * k for f, k in zip(figures, scales, strict=True)]
        centre = plan.ground - (max(tops) - max(bottoms)) / 2
        if centre > CENTRE_LIMIT * s:
            d = centre - CENTRE_LIMIT * s
            plan.ground -= d
            if plan.band_top is not None:
                plan.band_top -= d
        feet = [plan.ground + rng.uniform(-0.006, 0.006) * s for _ in figures]
    else:
        # centre the group vertically on a common feet line
        tops = [(f.feet() - f.bbox()[1] + f.lift) * k for f, k in zip(figures, scales, strict=True)]
        bottoms = [(f.bbox()[3] - f.feet()) * k for f, k in zip(figures, scales, strict=True)]
        span = max(tops) + max(bottoms)
        y_top = s / 2 - span / 2 + rng.uniform(-0.02, 0.02) * s
        y_top = max(y_top, plan.top if plan is not None else 0.09 * s)
        feet = [y_top + max(tops)] * len(figures)
    return scales, xs, feet


def _figure_origin(fig: Figure, k: float, x: float, feet: float) -> tuple[float, float]:
    """Canvas position of the figure's unit origin (animal glyph's top-left); x is where its core starts."""
    x0 = fig.core()[0]
    return x - x0 * k, feet - (fig.feet() + fig.lift) * k


def _group_box(figures, scales, xs, feet) -> Box:
    boxes = []
    for f, k, x, fy in zip(figures, scales, xs, feet, strict=True):
        ox, oy = _figure_origin(f, k, x, fy)
        bx = f.bbox()
        boxes.append((int(ox + bx[0] * k), int(oy + bx[1] * k), int(ox + bx[2] * k), int(oy + bx[3] * k)))
    return union(boxes)


def _paste_figure(canvas: Canvas, fig: Figure, index: int, k: float, x: float, feet: float) -> None:
    layer, boxes, origin = render_figure(fig, k)
    ox, oy = _figure_origin(fig, k, x, feet)
    lx, ly = ox + origin[0] * k, oy + origin[1] * k
    if fig.tilt:
        cx, cy = layer.width / 2, layer.height / 2
        rot = layer.convert("RGBa").rotate(fig.tilt, resample=Image.Resampling.BICUBIC, expand=True).convert("RGBA")
        dx, dy = (rot.width - layer.width) / 2, (rot.height - layer.height) / 2
        boxes = {i: _rotate_box(b, fig.tilt, cx, cy, dx, dy) for i, b in boxes.items()}
        layer = rot
        lx, ly = lx - dx, ly - dy
        # keep the tilted figure inside the picture
        shift = min(max(lx, 0.01 * canvas.s), 0.99 * canvas.s - layer.width) - lx
        if layer.width < 0.98 * canvas.s:
            lx += shift
    canvas.paste(layer, lx, ly)
    s = canvas.s
    fig_boxes = []
    for i, b in boxes.items():
        p = fig.parts[i]
        box = (int(round(b[0] + lx)), int(round(b[1] + ly)), int(round(b[2] + lx)), int(round(b[3] + ly)))
        box = (max(0, box[0]), max(0, box[1]), min(s, box[2]), min(s, box[3]))
        fig_boxes.append(box)
        if p.kind == "animal":
            canvas.add_box("animal", p.ident, box, member=index)
        elif p.kind in ("item", "ride"):
            canvas.add_box("item", p.ident, box, member=index)
        elif p.kind == "mood":
            canvas.add_box("expression", p.ident, box, member=index)
    if fig_boxes:
        canvas.add_box("figure", fig.animal, union(fig_boxes), member=index)


def _rotate_box(b, angle: float, cx: float, cy: float, dx: float, dy: float):
    """The bounding box of box b after rotating the layer by `angle` degrees (CCW) about (cx, cy)."""
    a = np.deg2rad(angle)
    ca, sa = np.cos(a), np.sin(a)
    xs, ys = [], []
    for x, y in ((b[0], b[1]), (b[2], b[1]), (b[0], b[3]), (b[2], b[3])):
        u, v = x - cx, y - cy
        xs.append(cx + u * ca + v * sa + dx)
        ys.append(cy - u * sa + v * ca + dy)
    return min(xs), min(ys), max(xs), max(ys)
