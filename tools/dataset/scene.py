"""What a picture shows (a Scene), how scenes are sampled, and the held-out rule.

A Scene holds exactly the concepts `cutecpp.prompt.parse_prompt` returns for its captions: animals
with counts, features (item id, colour id or None), place, light and expression, each in vocabulary
order, so `scene.concepts() == prompt concepts` is the round-trip check.

Held-out rule: an (animal id, item id, place id) triple is held out when the first 8 hex digits of
sha256("animal|item|place") read as an integer fall below 10 % of 2**32 (`is_heldout`). A picture
contains the triples of every animal in it with every item it wears or holds and its place (none
when it has no item or no place). `split="train"` never draws a picture that contains a held-out
triple; `split="heldout"` draws pictures built around one held-out triple, to score whether the model
composes pairs it has seen into a combination it has not.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from cutecpp.vocab import Entry, Vocabulary

HELDOUT_FRACTION = 0.10
SPLITS = ("train", "heldout")

# Sampling weights (the brief: ~60/25/15 % one/two/three animals, 0-2 features mostly 1-2, place in
# ~85 %, light ~20 %, expression ~30 %).
ANIMAL_COUNT_WEIGHTS = {1: 0.60, 2: 0.25, 3: 0.15}
FEATURE_COUNT_WEIGHTS = {0: 0.15, 1: 0.45, 2: 0.40}
P_SAME_SPECIES = {2: 0.7, 3: 0.6}  # otherwise the animals are of different kinds
P_COLOUR = 0.7  # a recolourable item gets a colour word
P_PLACE, P_LIGHT, P_EXPRESSION = 0.85, 0.20, 0.30


def is_heldout(animal: str, item: str, place: str) -> bool:
    """True if the (animal, item, place) triple is set aside for the held-out split."""
    digest = hashlib.sha256(f"{animal}|{item}|{place}".encode()).hexdigest()
    return int(digest[:8], 16) < HELDOUT_FRACTION * 2**32


@dataclass(frozen=True)
class Scene:
    animals: tuple[tuple[str, int], ...]  # (animal id, count), vocabulary order
    features: tuple[tuple[str, str | None], ...]  # (item id, colour id or None), vocabulary order
    place: str | None = None
    light: str | None = None
    expression: str | None = None
    members: tuple[str, ...] = ()  # one animal id per drawn animal, left to right

    @property
    def n_animals(self) -> int:
        return sum(n for _, n in self.animals)

    def concepts(self) -> dict:
        return {"animals": [list(a) for a in self.animals], "features": [list(f) for f in self.features],
                "place": self.place, "light": self.light, "expression": self.expression}

    def triples(self) -> list[tuple[str, str, str]]:
        if self.place is None:
            return []
        return [(a, item, self.place) for a, _ in self.animals for item, _ in self.features]

    def has_heldout(self) -> bool:
        return any(is_heldout(*t) for t in self.triples())


def prompt_concepts(prompt) -> dict:
    """The same dict as Scene.concepts() for a parsed cutecpp.prompt.Prompt."""
    return {"animals": [list(a) for a in prompt.animals], "features": [list(f) for f in prompt.features],
            "place": prompt.place, "light": prompt.light, "expression": prompt.expression}


def canonical_length(vocab: Vocabulary, scene: Scene) -> int:
    """Characters in the scene's canonical Chinese caption (= its encoder text without spaces)."""
    n = 0
    for a, k in scene.animals:
        n += len(vocab.get(a).zh[0]) + (len(vocab.count_entry(k).zh[0]) if k > 1 else 0)
    for item, colour in scene.features:
        e = vocab.get(item)
        n += len(e.zh[0]) + len(vocab.canonical_verb(e).zh[0]) + (len(vocab.get(colour).zh[0]) if colour else 0)
    return n + sum(len(vocab.get(x).zh[0]) for x in (scene.place, scene.light, scene.expression) if x)


def _weighted(rng: random.Random, weights: dict) -> int:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def make_scene(vocab: Vocabulary, animals: Sequence[tuple[str, int]], features: Sequence[tuple[str, str | None]],
               place: str | None = None, light: str | None = None, expression: str | None = None,
               rng: random.Random | None = None) -> Scene:
    """A scene from concepts (sorted into vocabulary order); members are shuffled by `rng` if given."""
    merged: dict[str, int] = {}
    for a, n in animals:
        merged[a] = merged.get(a, 0) + n
    animals_t = tuple(sorted(merged.items(), key=lambda a: vocab.get(a[0]).order))
    features_t = tuple(sorted(((i, c) for i, c in features), key=lambda f: vocab.get(f[0]).order))
    members = [a for a, n in animals_t for _ in range(n)]
    if rng is not None:
        rng.shuffle(members)
    return Scene(animals_t, features_t, place, light, expression, tuple(members))


MAX_CHARS = 20  # PromptRules.max_chars: every scene must be sayable within the prompt limit


class Sampler:
    """Draws scenes for a split from a vocabulary; every draw depends only on the rng given."""

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.animals = vocab.entries("animal")
        self.items = vocab.entries("item")
        self.places = vocab.entries("place")
        self.lights = vocab.entries("light")
        self.expressions = vocab.entries("expression")
        self.colours = vocab.entries("colour")

    def _colour(self, rng: random.Random, item: Entry) -> str | None:
        if item.recolour and rng.random() < P_COLOUR:
            return rng.choice(self.colours).id
        return None

    def _features(self, rng: random.Random, k: int, first: Entry | None = None) -> list[tuple[str, str | None]]:
        chosen: list[Entry] = [first] if first is not None else []
        while len(chosen) < k:
            item = rng.choice(self.items)
            same_slot = sum(1 for c in chosen if c.slot == item.slot)
            if item in chosen or same_slot >= self.vocab.slots[item.slot].max:
                continue
            chosen.append(item)
        return [(e.id, self._colour(rng, e)) for e in chosen]

    def _animals(self, rng: random.Random, n: int, first: Entry | None = None) -> list[tuple[str, int]]:
        a = first or rng.choice(self.animals)
        if n == 1 or first is not None or rng.random() < P_SAME_SPECIES[n]:
            return [(a.id, n)]
        others = [e for e in self.animals if e.id != a.id]
        if n == 2:
            return [(a.id, 1), (rng.choice(others).id, 1)]
        if rng.random() < 0.6:
            return [(a.id, 2), (rng.choice(others).id, 1)]
        b, c = rng.sample(others, 2)
        return [(a.id, 1), (b.id, 1), (c.id, 1)]

    def _extras(self, rng: random.Random) -> tuple[str | None, str | None]:
        light = rng.choice(self.lights).id if rng.random() < P_LIGHT else None
        expression = rng.choice(self.expressions).id if rng.random() < P_EXPRESSION else None
        return light, expression

    def sample(self, rng: random.Random, split: str = "train") -> Scene:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        if split == "heldout":
            return self._sample_heldout(rng)
        while True:
            n = _weighted(rng, ANIMAL_COUNT_WEIGHTS)
            animals = self._animals(rng, n)
            features = self._features(rng, _weighted(rng, FEATURE_COUNT_WEIGHTS))
            place = rng.choice(self.places).id if rng.random() < P_PLACE else None
            light, expression = self._extras(rng)
            scene = self._fit(make_scene(self.vocab, animals, features, place, light, expression, rng))
            if scene is not None and not scene.has_heldout():
                return scene

    def _sample_heldout(self, rng: random.Random) -> Scene:
        while True:
            animal, item, place = rng.choice(self.animals), rng.choice(self.items), rng.choice(self.places)
            if is_heldout(animal.id, item.id, place.id):
                break
        n = _weighted(rng, ANIMAL_COUNT_WEIGHTS)
        k = 2 if rng.random() < 0.3 else 1
        features = self._features(rng, k, first=item)
        while True:
            light, expression = self._extras(rng)
            animals = self._animals(rng, n, first=animal)
            scene = self._fit(make_scene(self.vocab, animals, features, place.id, light, expression, rng))
            if scene is not None:
                return scene
            n, features = 1, features[:1]

    def _fit(self, scene: Scene) -> Scene | None:
        """The scene, or without its mood and then its light if its caption would be too long; None
        if it still is."""
        for drop in ((), ("expression",), ("expression", "light")):
            fitted = replace(scene, **{k: None for k in drop})
            if canonical_length(self.vocab, fitted) <= MAX_CHARS:
                return fitted
        return None


def count_heldout(vocab: Vocabulary) -> tuple[int, int]:
    """(held-out triples, all triples) over the vocabulary's animals x items x places."""
    animals = [e.id for e in vocab.entries("animal")]
    items = [e.id for e in vocab.entries("item")]
    places = [e.id for e in vocab.entries("place")]
    held = sum(is_heldout(a, i, p) for a in animals for i in items for p in places)
    return held, len(animals) * len(items) * len(places)
