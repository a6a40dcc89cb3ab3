"""The judge's heads and the label encoding: a dataset labels dict (tools/make_dataset.py) <-> targets,
and network outputs -> judged concepts.

Heads (ids in vocabulary order, from the shipped cutecpp/data/vocab.json):

- dense class map, one channel per animal (80), item (101), expression (12) and place (37) id: a
  cell is positive where one of the picture's boxes of that id covers it (the central 60 % of the
  box, and always the cell holding its centre). Animals and items present = max over cells > 0.
- dense colour map (13 colour ids): at the cells of an item box, the colour that item shows (its
  colour word, else the vocabulary's `base` colour; cells of items with neither are ignored).
- global place (none + 37), light (none + 3), expression (none + 12), count (1-3 -> 0-2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cutecpp.vocab import Vocabulary, load_vocabulary

VOCAB: Vocabulary = load_vocabulary()


def _ids(category: str) -> tuple[str, ...]:
    return tuple(e.id for e in VOCAB.entries(category))


ANIMALS = _ids("animal")
ITEMS = _ids("item")
EXPRESSIONS = _ids("expression")
PLACES = _ids("place")
LIGHTS = _ids("light")
COLOURS = _ids("colour")

# Channel ranges of the dense map, in order.
DENSE_LAYOUT: dict[str, tuple[int, int]] = {}
_start = 0
for _name, _ids_ in (("animal", ANIMALS), ("item", ITEMS), ("expression", EXPRESSIONS), ("place", PLACES),
                     ("colour", COLOURS)):
    DENSE_LAYOUT[_name] = (_start, _start + len(_ids_))
    _start += len(_ids_)
DENSE_CLASSES = DENSE_LAYOUT["colour"][0]  # binary channels (animal, item, expression, place)
DENSE_CHANNELS = _start
STRIDE = 8  # pixels of the judge's input per dense cell

# Global heads: index 0 is "none" (count: 0 means one animal).
GLOBAL_SIZES = {"place": 1 + len(PLACES), "light": 1 + len(LIGHTS), "expression": 1 + len(EXPRESSIONS), "count": 3}
_GLOBAL_IDS = {"place": PLACES, "light": LIGHTS, "expression": EXPRESSIONS}
_INDEX = {cat: {k: i for i, k in enumerate(ids)} for cat, ids in
          (("animal", ANIMALS), ("item", ITEMS), ("expression", EXPRESSIONS), ("place", PLACES),
           ("light", LIGHTS), ("colour", COLOURS))}
_BOX_KINDS = ("animal", "item", "expression", "place")

VOCAB_IDS = {"animal": ANIMALS, "item": ITEMS, "expression": EXPRESSIONS, "place": PLACES, "light": LIGHTS,
             "colour": COLOURS}


def item_slot(item: str) -> str:
    """Where an item goes (hand, head, feet, ride, ...: the vocabulary's slot); "other" for an item
    without one or an id this vocabulary does not have (a score file from an older one)."""
    try:
        return VOCAB.get(item).slot or "other"
    except KeyError:
        return "other"


def item_colour(item: str, colour: str | None) -> str | None:
    """The colour an item shows: its colour word, else the glyph's own (`base`), else None."""
    return colour or VOCAB.get(item).base


def grid_size(size: int) -> int:
    if size % 32:
        raise ValueError(f"the judge's input size must be a multiple of 32, not {size}")
    return size // STRIDE


def _cells(box: Sequence[float], scale: float, g: int) -> tuple[slice, slice] | None:
    """Rows and columns of the cells a box marks (box in pixels of a picture `g * STRIDE / scale` wide)."""
    x0, y0, x1, y1 = (v * scale / STRIDE for v in box)
    if x1 <= x0 or y1 <= y0:
        return None
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, 0.3 * (x1 - x0), 0.3 * (y1 - y0)
    # cells whose centre (i + 0.5) lies in [c - h, c + h], always including the cell holding c
    c0 = min(int(np.ceil(cx - hw - 0.5)), int(cx))
    c1 = max(int(np.floor(cx + hw - 0.5)), int(cx))
    r0 = min(int(np.ceil(cy - hh - 0.5)), int(cy))
    r1 = max(int(np.floor(cy + hh - 0.5)), int(cy))
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, g - 1), min(r1, g - 1)
    if c1 < c0 or r1 < r0:
        return None
    return slice(r0, r1 + 1), slice(c0, c1 + 1)


@dataclass
class Targets:
    """What the judge should say about one picture (numpy; batched by `collate`)."""

    animals: np.ndarray  # [80] multi-hot
    items: np.ndarray  # [101] multi-hot
    place: int  # 0 = none
    light: int
    expression: int
    count: int  # animals - 1
    dense: np.ndarray  # [DENSE_CLASSES, g, g] 0/1
    colour: np.ndarray  # [g, g] colour index, -1 = no colour to learn here
    extra: dict = field(default_factory=dict)


def flip_boxes(boxes: Sequence[Mapping], size: int) -> list[dict]:
    """The boxes of the mirrored picture."""
    out = []
    for b in boxes:
        x0, y0, x1, y1 = b["box"]
        out.append({**b, "box": [size - x1, y0, size - x0, y1]})
    return out


def encode(labels: Mapping, input_size: int, flip: bool = False) -> Targets:
    """Targets for a labels dict (render's, or one built by hand with the same keys) as seen by a judge
    with `input_size` px input; `flip` = the picture was mirrored left-right."""
    g = grid_size(input_size)
    scale = input_size / labels["size"]
    animals = np.zeros(len(ANIMALS), np.float32)
    for a, _ in labels["animals"]:
        animals[_INDEX["animal"][a]] = 1.0
    items = np.zeros(len(ITEMS), np.float32)
    colours: dict[str, int] = {}
    for item, colour in labels["features"]:
        items[_INDEX["item"][item]] = 1.0
        shown = item_colour(item, colour)
        if shown is not None:
            colours[item] = _INDEX["colour"][shown]
    boxes = flip_boxes(labels.get("boxes", ()), labels["size"]) if flip else labels.get("boxes", ())
    dense = np.zeros((DENSE_CLASSES, g, g), np.float32)
    colour = np.full((g, g), -1, np.int64)
    colour_area = np.full((g, g), np.inf)
    for b in boxes:
        kind = b["kind"]
        if kind not in _BOX_KINDS:
            continue
        cells = _cells(b["box"], scale, g)
        if cells is None:
            continue
        dense[DENSE_LAYOUT[kind][0] + _INDEX[kind][b["id"]]][cells] = 1.0
        if kind == "item" and b["id"] in colours:
            x0, y0, x1, y1 = b["box"]
            area = (x1 - x0) * (y1 - y0)
            smaller = colour_area[cells] > area  # the smallest box wins a shared cell
            colour[cells] = np.where(smaller, colours[b["id"]], colour[cells])
            colour_area[cells] = np.where(smaller, area, colour_area[cells])
    n = len(labels["members"]) if "members" in labels else sum(k for _, k in labels["animals"])
    return Targets(
        animals=animals, items=items,
        place=_global_index("place", labels.get("place")), light=_global_index("light", labels.get("light")),
        expression=_global_index("expression", labels.get("expression")), count=min(max(n, 1), 3) - 1,
        dense=dense, colour=colour)


def _global_index(head: str, value: str | None) -> int:
    return 0 if value is None else 1 + _INDEX[head][value]


def collate(batch: Sequence[Targets]) -> dict[str, np.ndarray]:
    return {
        "animals": np.stack([t.animals for t in batch]), "items": np.stack([t.items for t in batch]),
        "place": np.array([t.place for t in batch]), "light": np.array([t.light for t in batch]),
        "expression": np.array([t.expression for t in batch]), "count": np.array([t.count for t in batch]),
        "dense": np.stack([t.dense for t in batch]), "colour": np.stack([t.colour for t in batch]),
    }


# --- outputs -> concepts ---------------------------------------------------------------------------

def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def decode(out: Mapping[str, np.ndarray], threshold: float = 0.5) -> dict:
    """One picture's outputs (numpy, no batch axis) -> the judged concepts:

    {"animals": [ids], "animal_top": id, "animal_scores": {id: p}, "count": 1-3, "items": [ids],
     "item_scores": {id: p}, "colours": {item id: colour id}, "place": id | None, "light": ...,
     "expression": ..., "probs": {head: p of the choice}}"""
    dense = np.asarray(out["dense"], np.float32)
    d, g = dense.shape[0], dense.shape[-1]
    assert d == DENSE_CHANNELS, d
    flat = dense.reshape(d, g * g)
    a0, a1 = DENSE_LAYOUT["animal"]
    i0, i1 = DENSE_LAYOUT["item"]
    c0, c1 = DENSE_LAYOUT["colour"]
    animal_logit = flat[a0:a1].max(1)
    item_logit = flat[i0:i1].max(1)
    animal_p, item_p = _sigmoid(animal_logit), _sigmoid(item_logit)
    items = [ITEMS[k] for k in np.flatnonzero(item_p > threshold)]
    colours = {}
    for item in items:
        k = _INDEX["item"][item]
        cell = int(flat[i0 + k].argmax())
        colours[item] = COLOURS[int(flat[c0:c1, cell].argmax())]
    res = {
        "animals": [ANIMALS[k] for k in np.flatnonzero(animal_p > threshold)],
        "animal_top": ANIMALS[int(animal_logit.argmax())],
        "animal_scores": {ANIMALS[k]: round(float(animal_p[k]), 4) for k in np.argsort(-animal_p)[:3]},
        "items": items,
        "item_scores": {ITEMS[k]: round(float(item_p[k]), 4) for k in np.argsort(-item_p)[:4]},
        "colours": colours,
        "count": int(np.asarray(out["count"]).argmax()) + 1,
    }
    probs = {}
    for head, ids in _GLOBAL_IDS.items():
        p = _softmax(np.asarray(out[head], np.float32))
        k = int(p.argmax())
        res[head] = None if k == 0 else ids[k - 1]
        probs[head] = round(float(p[k]), 4)
    probs["count"] = round(float(_softmax(np.asarray(out["count"], np.float32)).max()), 4)
    res["probs"] = probs
    return res


def concepts(labels: Mapping) -> dict:
    """The same shape as `decode` gives, from a labels dict or a parsed prompt's concepts (truth)."""
    n = len(labels["members"]) if labels.get("members") else sum(k for _, k in labels["animals"])
    return {
        "animals": sorted((a for a, _ in labels["animals"]), key=_INDEX["animal"].__getitem__),
        "count": n,
        "items": sorted((i for i, _ in labels["features"]), key=_INDEX["item"].__getitem__),
        "colours": {i: c for i, c in labels["features"] if c is not None},
        "place": labels.get("place"), "light": labels.get("light"), "expression": labels.get("expression"),
    }
