"""Picture-level layout measures that need no network: is the subject centred, is the background clean.

Both work on the picture shrunk to ANALYSIS px (area average), so they cost a few milliseconds and
ignore pixel noise.

1. Background. The dataset's backgrounds change only from top to bottom (a vertical gradient, and
   ground bands such as grass or sea that span the whole width), so the background is estimated as one
   colour per row, from the picture's border: the median colour of the row's leftmost and rightmost
   EDGE columns. Where the two sides disagree (a tree or house at one side, the sun in a top corner)
   the side closer to the row above is taken, starting from the median of the two top rows (the
   dataset keeps the top corners clear). The row colours are then smoothed over 3 rows.
2. Foreground: pixels farther than THRESHOLD (Euclidean RGB, 0-255 scale) from their row's
   background colour, opened with a 3x3 square (single stray pixels dropped).
3. Subject: the foreground is dilated by MERGE of the side (so that an animal, what it holds and its
   balloon's string join up) and split into 8-connected components; the subject is the component
   holding the most foreground pixels together with every component holding at least SUBJECT_SHARE
   of that (two or three animals side by side are often apart). No subject when the foreground is
   under MIN_FOREGROUND or over MAX_FOREGROUND of the picture (an empty picture, or noise everywhere).
4. Centred: the subject's bounding box centre lies in the middle third of the width (the dataset
   composes by that rule) and in the middle half of the height: a ground platform under the animals
   (cloud, bath, iceberg, moon, bed) belongs to the foreground and puts the centre of renders at up
   to 0.73 of the height (300 held-out renders: x 0.38-0.60, y 0.37-0.73; all centred).
5. Clean: no stray blob, i.e. no 8-connected component of foreground outside the subject dilated by
   HALO of the side with at least BLOB of the picture's area (1.2 %: a 14 px square at 128 px, a
   61 px one at 512). Some places put big separate things around the animals by design (the sun in
   a corner, planets, the waves at the sides of the sea, a wide bed's ends, party poppers): for them
   (EXPECTED_STRAYS, from 400 held-out renders, where they leave such a blob in 10-44 % of pictures)
   clean is not measured; every other place's renders are clean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageFilter

ANALYSIS = 128
EDGE = 0.03
THRESHOLD = 12.0
MERGE = 0.03
SUBJECT_SHARE = 0.25
HALO = 0.06
BLOB = 0.012
CENTRE_X = (1 / 3, 2 / 3)
CENTRE_Y = (1 / 4, 3 / 4)
EXPECTED_STRAYS = frozenset({"sun", "space", "sea", "bed", "party"})
MIN_FOREGROUND = 0.005
MAX_FOREGROUND = 0.85


@dataclass
class Layout:
    centred: bool
    clean: bool
    subject: bool  # a subject was found at all
    centre: tuple[float, float] | None  # subject box centre (x, y) as fractions of the side
    box: tuple[float, float, float, float] | None  # subject box (x0, y0, x1, y1), fractions
    foreground: float  # fraction of the picture that is foreground
    stray_blobs: int
    stray_area: float  # fraction of the picture in stray blobs

    def as_dict(self) -> dict:
        d = asdict(self)
        for k in ("centre", "box"):
            if d[k] is not None:
                d[k] = [round(float(v), 4) for v in d[k]]
        d["foreground"], d["stray_area"] = round(d["foreground"], 4), round(d["stray_area"], 4)
        return d


def _array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8), "RGB")
    image = image.convert("RGB")
    if image.size != (ANALYSIS, ANALYSIS):
        image = image.resize((ANALYSIS, ANALYSIS), Image.Resampling.BOX)
    return np.asarray(image, np.float32)


def background_rows(arr: np.ndarray) -> np.ndarray:
    """One background colour per row [h, 3] (see the module docstring)."""
    h, w, _ = arr.shape
    m = max(1, int(round(EDGE * w)))
    left = np.median(arr[:, :m], axis=1)
    right = np.median(arr[:, w - m:], axis=1)
    prev = np.median(arr[:2].reshape(-1, 3), axis=0)
    rows = np.empty((h, 3), np.float32)
    for y in range(h):
        lv, rv = left[y], right[y]
        if np.linalg.norm(lv - rv) < THRESHOLD / 2:
            b = (lv + rv) / 2
        else:
            b = lv if np.linalg.norm(lv - prev) <= np.linalg.norm(rv - prev) else rv
        rows[y] = prev = b
    smooth = rows.copy()
    smooth[1:-1] = np.median(np.stack([rows[:-2], rows[1:-1], rows[2:]]), axis=0)
    return smooth


def foreground(image: Image.Image | np.ndarray) -> np.ndarray:
    """Boolean [ANALYSIS, ANALYSIS] foreground mask."""
    arr = _array(image)
    bg = background_rows(arr)
    mask = np.linalg.norm(arr - bg[:, None, :], axis=2) > THRESHOLD
    return _morph(_morph(mask, 3, "min"), 3, "max")


def _morph(mask: np.ndarray, size: int, op: str) -> np.ndarray:
    if size <= 1:
        return mask
    size += 1 - size % 2  # PIL's rank filters take odd sizes
    img = Image.fromarray(mask.astype(np.uint8) * 255, "L")
    f = ImageFilter.MaxFilter(size) if op == "max" else ImageFilter.MinFilter(size)
    return np.asarray(img.filter(f)) > 127


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components: (labels with 0 = background and 1..n, n). Union-find over row runs."""
    parent: list[int] = []

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    rows, prev = [], []
    for y in range(mask.shape[0]):
        cur = []
        for x0, x1 in _runs(mask[y]):
            k = len(parent)
            parent.append(k)
            for p0, p1, pk in prev:
                if p0 <= x1 and x0 <= p1:  # touching, diagonals included (runs are [x0, x1))
                    ra, rb = find(k), find(pk)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
            cur.append((x0, x1, k))
        rows.append(cur)
        prev = cur
    roots: dict[int, int] = {}
    labels = np.zeros(mask.shape, np.int32)
    for y, cur in enumerate(rows):
        for x0, x1, k in cur:
            r = find(k)
            labels[y, x0:x1] = roots.setdefault(r, len(roots) + 1)
    return labels, len(roots)


def measure(image: Image.Image | np.ndarray) -> Layout:
    fg = foreground(image)
    s = fg.shape[0]
    frac = float(fg.mean())
    if not MIN_FOREGROUND <= frac <= MAX_FOREGROUND:
        return Layout(False, False, False, None, None, frac, 0, 0.0)
    merged = _morph(fg, 2 * int(round(MERGE * s)) + 1, "max")
    labels, n = components(merged)
    sizes = np.bincount(labels[fg], minlength=n + 1)
    sizes[0] = 0
    parts = np.flatnonzero(sizes >= SUBJECT_SHARE * sizes.max())
    main = np.isin(labels, parts) & fg
    ys, xs = np.nonzero(main)
    box = (float(xs.min() / s), float(ys.min() / s), float((xs.max() + 1) / s), float((ys.max() + 1) / s))
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    centred = bool(CENTRE_X[0] <= centre[0] <= CENTRE_X[1] and CENTRE_Y[0] <= centre[1] <= CENTRE_Y[1])
    halo = _morph(main, 2 * int(round(HALO * s)) + 1, "max")
    rest = fg & ~halo
    blobs, area = 0, 0
    if rest.any():
        rl, rn = components(rest)
        rs = np.bincount(rl[rest], minlength=rn + 1)[1:]
        big = rs[rs >= BLOB * s * s]
        blobs, area = int(len(big)), int(big.sum())
    return Layout(centred, blobs == 0, True, centre, box, frac, blobs, area / (s * s))
