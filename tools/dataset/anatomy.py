"""Where things go on each animal glyph: eyes, top of the head, neck, torso, feet, facing side.

All positions are fractions of the glyph's ink box (x of its width, y of its height) as Noto Color
Emoji 2.042 draws it, measured by eye on a 10x10 grid over each glyph. A face glyph ('head' shape)
has no torso: clothes for the body, legs and feet are stacked under it instead (compose.py).
An animal missing from the tables gets the defaults for its shape, so a new vocabulary entry still
renders, just less precisely.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Anchors:
    eye: tuple[float, float, float]  # centre x, y of the eyes; width of glasses (fraction of glyph width)
    top: tuple[float, float, float]  # where a hat's brim sits: x, y; hat width
    neck: tuple[float, float, float]  # x, y, width of a scarf
    torso: tuple[float, float, float]  # x, y, width of a shirt (body glyphs)
    feet: tuple[float, float]  # x of the feet, width of a pair of shoes
    facing: int  # -1 looks left, +1 right, 0 at the viewer
    head_r: float  # head radius as a fraction of the glyph height

    def flipped(self) -> Anchors:
        def fx(t):
            return (1.0 - t[0], *t[1:])

        return replace(self, eye=fx(self.eye), top=fx(self.top), neck=fx(self.neck), torso=fx(self.torso),
                       feet=(1.0 - self.feet[0], self.feet[1]), facing=-self.facing)


HEAD_DEFAULT = Anchors(eye=(0.5, 0.46, 0.72), top=(0.5, 0.08, 0.6), neck=(0.5, 0.93, 0.55),
                       torso=(0.5, 1.0, 0.8), feet=(0.5, 0.7), facing=0, head_r=0.5)

# Face glyphs that differ from the default: (eye x, eye y, glasses width), (top x, y, hat width), facing.
_HEADS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], int]] = {
    "bear": ((0.5, 0.45, 0.66), (0.5, 0.07, 0.56), 0),
    "cat": ((0.5, 0.5, 0.66), (0.5, 0.14, 0.5), 0),
    "rabbit": ((0.5, 0.64, 0.8), (0.5, 0.36, 0.62), 0),
    "dog": ((0.5, 0.55, 0.62), (0.5, 0.1, 0.6), 0),
    "panda": ((0.5, 0.46, 0.72), (0.5, 0.1, 0.56), 0),
    "polar_bear": ((0.5, 0.42, 0.6), (0.5, 0.1, 0.56), 0),
    "koala": ((0.5, 0.46, 0.56), (0.5, 0.12, 0.5), 0),
    "mouse": ((0.5, 0.46, 0.56), (0.5, 0.18, 0.44), 0),
    "hamster": ((0.5, 0.45, 0.66), (0.5, 0.08, 0.5), 0),
    "fox": ((0.5, 0.58, 0.62), (0.5, 0.2, 0.5), 0),
    "tiger": ((0.5, 0.46, 0.66), (0.5, 0.07, 0.56), 0),
    "lion": ((0.5, 0.47, 0.56), (0.5, 0.12, 0.5), 0),
    "wolf": ((0.5, 0.5, 0.56), (0.5, 0.16, 0.5), 0),
    "zebra": ((0.36, 0.36, 0.4), (0.55, 0.06, 0.5), -1),
    "monkey": ((0.5, 0.46, 0.64), (0.5, 0.06, 0.56), 0),
    "pig": ((0.5, 0.42, 0.66), (0.5, 0.08, 0.56), 0),
    "cow": ((0.5, 0.38, 0.6), (0.5, 0.1, 0.5), 0),
    "horse": ((0.36, 0.4, 0.44), (0.5, 0.08, 0.46), -1),
    "unicorn": ((0.32, 0.45, 0.42), (0.52, 0.12, 0.46), -1),
    "chicken": ((0.4, 0.36, 0.46), (0.55, 0.1, 0.42), -1),
    "frog": ((0.5, 0.26, 0.74), (0.5, 0.05, 0.5), 0),
    "dragon": ((0.36, 0.36, 0.44), (0.55, 0.12, 0.46), -1),
    "raccoon": ((0.5, 0.47, 0.66), (0.5, 0.12, 0.56), 0),
}

# Whole-animal glyphs: head centre (x, y), head radius (of the glyph height), torso centre (x, y),
# torso width (of the glyph width).
_BODIES: dict[str, tuple[float, float, float, float, float, float]] = {
    "black_cat": (0.2, 0.25, 0.17, 0.55, 0.6, 0.5),
    "poodle": (0.25, 0.25, 0.15, 0.5, 0.55, 0.45),
    "squirrel": (0.25, 0.3, 0.2, 0.35, 0.65, 0.32),
    "hedgehog": (0.25, 0.45, 0.22, 0.55, 0.62, 0.5),
    "elephant": (0.28, 0.35, 0.25, 0.6, 0.5, 0.5),
    "giraffe": (0.18, 0.1, 0.08, 0.55, 0.58, 0.5),
    "hippo": (0.2, 0.45, 0.25, 0.6, 0.5, 0.55),
    "rhino": (0.2, 0.45, 0.22, 0.62, 0.5, 0.5),
    "camel": (0.15, 0.18, 0.12, 0.55, 0.48, 0.5),
    "llama": (0.12, 0.15, 0.1, 0.6, 0.55, 0.5),
    "gorilla": (0.35, 0.22, 0.15, 0.5, 0.55, 0.5),
    "sheep": (0.3, 0.5, 0.22, 0.65, 0.5, 0.5),
    "goat": (0.15, 0.35, 0.13, 0.6, 0.5, 0.5),
    "deer": (0.2, 0.3, 0.1, 0.55, 0.5, 0.55),
    "moose": (0.3, 0.62, 0.2, 0.7, 0.72, 0.4),
    "rooster": (0.25, 0.22, 0.13, 0.45, 0.55, 0.5),
    "chick": (0.5, 0.3, 0.3, 0.5, 0.66, 0.6),
    "duck": (0.3, 0.15, 0.13, 0.55, 0.52, 0.5),
    "swan": (0.15, 0.2, 0.1, 0.6, 0.58, 0.55),
    "goose": (0.2, 0.1, 0.08, 0.6, 0.55, 0.55),
    "penguin": (0.35, 0.15, 0.15, 0.45, 0.6, 0.7),
    "owl": (0.5, 0.27, 0.25, 0.5, 0.7, 0.6),
    "parrot": (0.22, 0.15, 0.13, 0.42, 0.5, 0.45),
    "flamingo": (0.12, 0.08, 0.07, 0.6, 0.45, 0.5),
    "dove": (0.18, 0.45, 0.12, 0.5, 0.6, 0.5),
    "bird": (0.22, 0.3, 0.2, 0.42, 0.6, 0.45),
    "peacock": (0.5, 0.25, 0.08, 0.5, 0.72, 0.25),
    "turkey": (0.12, 0.25, 0.12, 0.5, 0.55, 0.5),
    "turtle": (0.2, 0.55, 0.22, 0.6, 0.45, 0.55),
    "crocodile": (0.3, 0.88, 0.1, 0.55, 0.55, 0.4),
    "lizard": (0.12, 0.08, 0.08, 0.45, 0.4, 0.4),
    "snake": (0.25, 0.15, 0.15, 0.55, 0.75, 0.55),
    "dinosaur": (0.15, 0.12, 0.1, 0.45, 0.65, 0.5),
    "fish": (0.25, 0.45, 0.25, 0.5, 0.5, 0.5),
    "tropical_fish": (0.25, 0.6, 0.2, 0.5, 0.5, 0.5),
    "pufferfish": (0.35, 0.45, 0.3, 0.45, 0.55, 0.6),
    "dolphin": (0.25, 0.3, 0.15, 0.5, 0.5, 0.4),
    "whale": (0.35, 0.55, 0.2, 0.5, 0.62, 0.5),
    "shark": (0.25, 0.25, 0.15, 0.5, 0.5, 0.45),
    "octopus": (0.6, 0.35, 0.3, 0.55, 0.62, 0.5),
    "squid": (0.42, 0.55, 0.18, 0.55, 0.4, 0.4),
    "jellyfish": (0.45, 0.2, 0.2, 0.45, 0.55, 0.55),
    "crab": (0.5, 0.45, 0.25, 0.5, 0.55, 0.5),
    "lobster": (0.45, 0.4, 0.12, 0.45, 0.6, 0.35),
    "shrimp": (0.3, 0.3, 0.12, 0.6, 0.45, 0.4),
    "seal": (0.3, 0.25, 0.25, 0.45, 0.65, 0.5),
    "otter": (0.22, 0.3, 0.2, 0.5, 0.55, 0.5),
    "beaver": (0.22, 0.25, 0.2, 0.35, 0.6, 0.4),
    "sloth": (0.2, 0.45, 0.15, 0.45, 0.62, 0.45),
    "kangaroo": (0.18, 0.25, 0.12, 0.45, 0.55, 0.4),
    "mammoth": (0.25, 0.3, 0.2, 0.6, 0.5, 0.5),
    "butterfly": (0.5, 0.3, 0.08, 0.5, 0.5, 0.3),
    "bee": (0.2, 0.45, 0.2, 0.6, 0.55, 0.45),
    "ladybug": (0.45, 0.18, 0.12, 0.55, 0.6, 0.6),
    "snail": (0.2, 0.45, 0.15, 0.5, 0.7, 0.5),
    "caterpillar": (0.2, 0.2, 0.14, 0.55, 0.7, 0.5),
    "ant": (0.2, 0.35, 0.2, 0.55, 0.55, 0.45),
}


def _from_body(hx: float, hy: float, r: float, tx: float, ty: float, tw: float, aspect: float) -> Anchors:
    # r is of the glyph height; widths here are of the glyph width, so scale by height / width.
    rw = r / aspect
    facing = -1 if hx < 0.42 else (1 if hx > 0.58 else 0)
    # Things worn on a small head are drawn larger than life (at least ~a third of the glyph's width),
    # or a hat on a giraffe would vanish in a 64 px thumbnail.
    return Anchors(
        eye=(hx, hy - 0.1 * r, min(0.9, max(0.3, 2.0 * rw))),
        top=(hx, max(0.0, hy - 0.85 * r), min(0.9, max(0.34, 2.1 * rw))),
        neck=(hx + 0.25 * (tx - hx), min(0.97, hy + 0.9 * r), min(0.8, max(0.3, 1.7 * rw))),
        torso=(tx, ty, tw),
        feet=(tx, min(0.8, max(0.35, tw))),
        facing=facing,
        head_r=r,
    )


def anchors(animal_id: str, shape: str, aspect: float, flip: bool = False) -> Anchors:
    """The anchors of an animal glyph (aspect: width / height of its ink), mirrored if `flip`."""
    if shape == "head":
        eye, top, facing = _HEADS.get(animal_id, (HEAD_DEFAULT.eye, HEAD_DEFAULT.top, 0))
        a = replace(HEAD_DEFAULT, eye=eye, top=top, facing=facing)
    else:
        a = _from_body(*_BODIES.get(animal_id, (0.5, 0.25, 0.2, 0.5, 0.6, 0.5)), aspect=aspect)
    return a.flipped() if flip else a


def faces_viewer(animal_id: str, shape: str) -> bool:
    """True for a face glyph looking straight out (mirroring it would change nothing useful)."""
    return shape == "head" and _HEADS.get(animal_id, (None, None, 0))[2] == 0
