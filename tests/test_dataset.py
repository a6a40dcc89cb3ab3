"""The dataset maker (tools/make_dataset.py): deterministic pictures, labels that round-trip through
the prompt rules, the held-out split, every vocabulary entry drawable, colours that read, centred
animals and clean backgrounds."""

from __future__ import annotations

import colorsys
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from dataset import art  # noqa: E402

if not art.font_available():
    pytest.skip(f"the dataset is drawn from Noto Color Emoji ({art.FONT_PATH} is missing): "
                "apt-get install fonts-noto-color-emoji", allow_module_level=True)

import make_dataset  # noqa: E402
from dataset.scene import is_heldout, make_scene, prompt_concepts  # noqa: E402

from cutecpp.prompt import parse_prompt  # noqa: E402
from cutecpp.vocab import load_vocabulary  # noqa: E402

VOCAB = load_vocabulary()


def _draw(animals, features=(), place=None, light=None, expression=None, size=128, seed=0):
    scene = make_scene(VOCAB, animals, features, place, light, expression, random.Random(seed))
    return make_dataset.render_scene(scene, size, random.Random(seed))


def test_same_index_same_pixels_different_index_different():
    a, la = make_dataset.render(7, size=128)
    b, lb = make_dataset.render(7, size=128)
    c, _ = make_dataset.render(8, size=128)
    assert a.tobytes() == b.tobytes()
    assert la == lb
    assert a.tobytes() != c.tobytes()
    d, _ = make_dataset.render(7, size=128, seed=1)
    assert a.tobytes() != d.tobytes()


def test_size_and_mode():
    for size in (64, 96, 256):
        img, labels = make_dataset.render(3, size=size)
        assert img.size == (size, size) and img.mode == "RGB"
        assert labels["size"] == size
        for box in labels["boxes"]:
            x0, y0, x1, y1 = box["box"]
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size, box


def test_labels_are_complete():
    img, labels = make_dataset.render(11, size=128)
    for key in ("animals", "features", "place", "light", "expression", "captions", "encoder_text", "boxes",
                "members", "background"):
        assert key in labels
    json.dumps(labels, ensure_ascii=False)  # exportable as it is
    members = labels["members"]
    animal_boxes = [b for b in labels["boxes"] if b["kind"] == "animal"]
    assert [b["id"] for b in sorted(animal_boxes, key=lambda b: b["member"])] == members
    assert sorted(members) == sorted(a for a, n in labels["animals"] for _ in range(n))
    worn = {(b["id"], b["member"]) for b in labels["boxes"] if b["kind"] == "item"}
    for item, _ in labels["features"]:
        for m in range(len(members)):
            assert (item, m) in worn  # every animal wears / holds every feature


def test_captions_round_trip_through_the_prompt_rules():
    checked = 0
    for index in range(120):
        for split in ("train", "heldout"):
            scene = make_dataset.scene_for(index, split)
            labels = make_dataset.labels_for(scene, random.Random(index))
            assert labels["captions"]["zh"] and labels["captions"]["en"]
            for lang in ("zh", "en"):
                for text in labels["captions"][lang]:
                    prompt = parse_prompt(text)
                    assert prompt.lang == lang, text
                    assert prompt_concepts(prompt) == scene.concepts(), text
                    assert not prompt.notices, (text, prompt.notices)
                    assert prompt.encoder_text == labels["encoder_text"], text
                    checked += 1
    assert checked >= 1000


def test_heldout_rule_splits_triples():
    assert is_heldout("bear", "hat", "iceberg") == is_heldout("bear", "hat", "iceberg")
    animals = [e.id for e in VOCAB.entries("animal")]
    items = [e.id for e in VOCAB.entries("item")]
    places = [e.id for e in VOCAB.entries("place")]
    rng = random.Random(0)
    sample = [(rng.choice(animals), rng.choice(items), rng.choice(places)) for _ in range(20000)]
    share = sum(is_heldout(*t) for t in sample) / len(sample)
    assert 0.08 < share < 0.12
    for index in range(300):
        train = make_dataset.scene_for(index, "train")
        assert not any(is_heldout(*t) for t in train.triples()), train
    for index in range(100):
        held = make_dataset.scene_for(index, "heldout")
        assert any(is_heldout(*t) for t in held.triples()), held


def test_sampling_covers_the_distribution():
    scenes = [make_dataset.scene_for(i) for i in range(1500)]
    n = len(scenes)
    counts = [sum(s.n_animals == k for s in scenes) / n for k in (1, 2, 3)]
    assert abs(counts[0] - 0.6) < 0.05 and abs(counts[1] - 0.25) < 0.05 and abs(counts[2] - 0.15) < 0.05
    assert all(len(s.features) <= 2 for s in scenes)
    assert 0.78 < sum(s.place is not None for s in scenes) / n < 0.92
    assert 0.14 < sum(s.light is not None for s in scenes) / n < 0.26
    assert 0.24 < sum(s.expression is not None for s in scenes) / n < 0.36
    seen_items = {i for s in scenes for i, _ in s.features}
    assert len(seen_items) > 0.9 * len(VOCAB.entries("item"))


def test_every_vocabulary_glyph_is_in_the_font():
    for e in VOCAB.entries():
        for ch in (e.emoji, *e.also, e.hints.get("overlay", "")):
            if ch:
                g = art.base_glyph(ch)
                # one picture (a ZWJ sequence drawn as one glyph, not its parts side by side)
                assert max(g.size) > 60 and g.width < 140, (e.id, ch, g.size)


@pytest.mark.parametrize("category", ["animal", "item", "place", "light", "expression"])
def test_every_vocabulary_entry_renders(category):
    for k, e in enumerate(VOCAB.entries(category)):
        kw = {"animals": [("bear" if k % 2 else "penguin", 1)]}
        if category == "animal":
            kw["animals"] = [(e.id, 1)]
        elif category == "item":
            kw["features"] = [(e.id, "green" if e.recolour else None)]
        else:
            kw[category] = e.id
        img, boxes, _ = _draw(**kw, seed=k)
        assert img.size == (128, 128)
        kinds = {(b["kind"], b["id"]) for b in boxes}
        if category in ("animal", "item", "place"):
            assert (category, e.id) in kinds, (e.id, kinds)


def _hue_stats(img, box):
    arr = np.asarray(img.crop(box), np.float32) / 255.0
    hsv = np.array([colorsys.rgb_to_hsv(*p) for p in arr.reshape(-1, 3)])
    return hsv


@pytest.mark.parametrize("item", ["hat", "balloon", "tshirt", "boots"])
def test_recolour_moves_the_item_to_the_named_colour(item):
    def item_box(colour):
        img, boxes, _ = _draw([("panda", 1)], [(item, colour)], size=160, seed=3)
        return img, next(b["box"] for b in boxes if b["kind"] == "item")

    for colour in ("red", "orange", "yellow", "green", "blue", "purple", "pink"):
        img, box = item_box(colour)
        hsv = _hue_stats(img, box)
        coloured = hsv[hsv[:, 1] > 0.35]
        assert len(coloured) > 20, colour
        angles = coloured[:, 0] * 2 * np.pi
        mean = np.degrees(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean())) % 360
        target = colorsys.rgb_to_hsv(*(c / 255 for c in art.hex_rgb(VOCAB.get(colour).hints["rgb"])))[0] * 360
        assert abs((mean - target + 180) % 360 - 180) < 25, (item, colour, mean, target)
    light = _hue_stats(*item_box("white"))
    dark = _hue_stats(*item_box("black"))
    assert np.median(dark[:, 2]) < np.median(light[:, 2]) - 0.3  # black is darker than white


def _group_box(boxes, kind="animal"):
    bs = [b["box"] for b in boxes if b["kind"] == kind]
    return min(b[0] for b in bs), min(b[1] for b in bs), max(b[2] for b in bs), max(b[3] for b in bs)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_animals_are_centred_and_large(split):
    size = 80
    for index in range(150):
        img, labels = make_dataset.render(index, split, size=size)
        x0, y0, x1, y1 = _group_box(labels["boxes"], "figure")
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        assert size / 3 <= cx <= 2 * size / 3, (index, labels["encoder_text"], (x0, y0, x1, y1))
        assert size / 3 <= cy <= 2 * size / 3, (index, labels["encoder_text"], (x0, y0, x1, y1))
    for seed in range(5):
        img, boxes, _ = _draw([("bear", 1)], size=200, seed=seed)
        x0, y0, x1, y1 = _group_box(boxes)
        assert 0.5 * 200 <= y1 - y0 <= 0.7 * 200  # one animal: ~55-65 % of the height


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_background_corners_are_clean(split):
    size = 80
    for index in range(150):
        img, labels = make_dataset.render(index, split, size=size)
        arr = np.asarray(img, np.int16)
        top, bottom = np.array(labels["background"]["top"]), np.array(labels["background"]["bottom"])
        if labels["place"] != "sun":
            for x in (1, size - 2):
                assert np.abs(arr[1, x] - top).max() <= 4, (index, labels["encoder_text"], arr[1, x], top)
        if labels["place"] is None:
            for x in (1, size - 2):
                assert np.abs(arr[size - 2, x] - bottom).max() <= 6, (index, labels["encoder_text"])


def test_lights_change_the_background():
    means = {}
    for light in (None, "bright", "warm", "night"):
        img, _, _ = _draw([("cat", 1)], light=light, size=64, seed=5)
        means[light] = np.asarray(img, np.float32)[:8].mean(axis=(0, 1))
    assert means["night"].mean() < 120 < means[None].mean()
    assert means["warm"][2] < means["warm"][0] - 8  # warm: redder than blue at the top


def test_export_is_resumable(tmp_path):
    args = ["export", "-o", str(tmp_path), "--n", "3", "--size", "48"]
    assert make_dataset.main(args) == 0
    first = (tmp_path / "labels.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(first) == 3 and len(list(tmp_path.glob("*.png"))) == 3
    assert make_dataset.main([*args[:4], "5", *args[5:]]) == 0
    lines = (tmp_path / "labels.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["index"] for x in lines] == [0, 1, 2, 3, 4]
    assert lines[:3] == first


def test_sheet(tmp_path):
    out = tmp_path / "sheet.png"
    assert make_dataset.main(["sheet", "-o", str(out), "--n", "4", "--cols", "2", "--cell", "64",
                              "--size", "128"]) == 0
    assert out.stat().st_size > 1000


def test_scene_too_long_for_english_keeps_its_chinese_captions():
    # Found by the autoencoder's training run: this scene's canonical English caption is over the
    # 100-character English limit; it used to raise and stop the run.
    vocab = load_vocabulary()
    scene = make_scene(vocab, [("pufferfish", 1), ("kangaroo", 1), ("duck", 1)], [("hat", "yellow"), ("carrot", None)],
                       "snow_mountain", "night", "fly")
    labels = make_dataset.labels_for(scene, random.Random(0))
    assert labels["captions"]["zh"] and labels["captions"]["en"] == []
    for text in labels["captions"]["zh"]:
        assert prompt_concepts(parse_prompt(text)) == scene.concepts()
