"""The quality judge (tools/eval_quality.py, tools/judge/): layout measures on hand-made pictures, the
label encoding of every vocabulary id, a tiny judge trained, resumed and validated end to end, and
`score` wired to a tiny random-weight bundle. None of it needs a trained judge or checks accuracy."""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from bundles import pipeline_bundle, tiny_text_encoder
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import eval_quality  # noqa: E402
from dataset import art  # noqa: E402
from judge import labels as L  # noqa: E402
from judge.layout import measure  # noqa: E402

from cutecpp.vocab import load_vocabulary  # noqa: E402

needs_font = pytest.mark.skipif(
    not art.font_available(), reason=f"the dataset is drawn from Noto Color Emoji ({art.FONT_PATH} is missing): "
    "apt-get install fonts-noto-color-emoji")

SIZE = 64  # the tiny judge's input


# --- layout measures -----------------------------------------------------------------------------

def _gradient(size=256, top=(250, 215, 225), bottom=(215, 225, 250)) -> Image.Image:
    t = np.linspace(0, 1, size)[:, None, None]
    arr = np.asarray(top, float) * (1 - t) + np.asarray(bottom, float) * t
    return Image.fromarray(np.repeat(arr, size, axis=1).round().astype(np.uint8), "RGB")


def _disc(img: Image.Image, cx: float, cy: float, r: float, fill=(200, 120, 40)) -> Image.Image:
    s = img.width
    ImageDraw.Draw(img).ellipse(((cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s), fill=fill)
    return img


def test_centred_disc_on_a_gradient_is_centred_and_clean():
    m = measure(_disc(_gradient(), 0.5, 0.5, 0.25))
    assert m.subject and m.centred and m.clean
    assert abs(m.centre[0] - 0.5) < 0.02 and abs(m.centre[1] - 0.5) < 0.02
    assert m.stray_blobs == 0 and 0.15 < m.foreground < 0.25
    # ground bands span the width: they are background, not foreground
    img = _disc(_gradient(), 0.5, 0.5, 0.25)
    ImageDraw.Draw(img).rectangle((0, 210, 255, 255), fill=(120, 200, 90))
    m = measure(img)
    assert m.centred and m.clean and m.foreground < 0.25


def test_off_centre_disc_is_not_centred():
    m = measure(_disc(_gradient(), 0.2, 0.5, 0.15))
    assert m.subject and not m.centred and m.clean
    assert m.centre[0] < 1 / 3
    assert not measure(_disc(_gradient(), 0.5, 0.85, 0.12)).centred  # too low


def test_an_extra_blob_is_not_clean():
    img = _disc(_disc(_gradient(), 0.45, 0.5, 0.25), 0.88, 0.12, 0.07, fill=(60, 90, 200))
    m = measure(img)
    assert m.centred and not m.clean and m.stray_blobs == 1 and m.stray_area > 0.01
    # a small speck is allowed, and something touching the subject is part of it
    assert measure(_disc(_disc(_gradient(), 0.45, 0.5, 0.25), 0.88, 0.12, 0.02)).clean
    assert measure(_disc(_disc(_gradient(), 0.45, 0.5, 0.25), 0.72, 0.5, 0.07)).clean


def test_no_subject_in_an_empty_or_noise_picture():
    assert not measure(_gradient()).subject
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    m = measure(Image.fromarray(noise, "RGB"))
    assert not m.subject and not m.centred and not m.clean


# --- labels --------------------------------------------------------------------------------------

def _fake_outputs(t: L.Targets) -> dict[str, np.ndarray]:
    """The outputs a perfect judge would give for these targets."""
    g = t.dense.shape[-1]
    dense = np.full((L.DENSE_CHANNELS, g, g), -10.0, np.float32)
    dense[: L.DENSE_CLASSES] = np.where(t.dense > 0, 10.0, -10.0)
    c0 = L.DENSE_LAYOUT["colour"][0]
    for (r, c), k in np.ndenumerate(t.colour):
        if k >= 0:
            dense[c0 + k, r, c] = 10.0
    out = {"dense": dense}
    for head, n in L.GLOBAL_SIZES.items():
        out[head] = np.where(np.arange(n) == getattr(t, head), 10.0, -10.0).astype(np.float32)
    return out


def _labels(animals, features, place=None, light=None, expression=None, size=256, rng=None):
    """A labels dict as render gives it, with made-up boxes: animals side by side, their items beside."""
    rng = rng or random.Random(0)
    members = [a for a, n in animals for _ in range(n)]
    boxes = []
    w = size // (len(members) + 1)
    for m, a in enumerate(members):
        x = w // 2 + m * w
        boxes.append({"kind": "animal", "id": a, "box": [x, 80, x + w - 10, 200], "member": m})
        for k, (item, _) in enumerate(features):
            y = 40 + 30 * k + rng.randint(0, 10)
            boxes.append({"kind": "item", "id": item, "box": [x + 5, y, x + 25, y + 20], "member": m})
        if expression:
            boxes.append({"kind": "expression", "id": expression, "box": [x, 60, x + 12, 72], "member": m})
    if place:
        boxes.append({"kind": "place", "id": place, "box": [0, 200, size, size]})
    return {"animals": [list(a) for a in animals], "features": [list(f) for f in features], "place": place,
            "light": light, "expression": expression, "members": members, "boxes": boxes, "size": size}


def test_label_encoding_round_trips_every_vocabulary_id():
    vocab = load_vocabulary()
    colours = L.COLOURS
    places = [None, *L.PLACES]
    lights = [None, *L.LIGHTS]
    expressions = [None, *L.EXPRESSIONS]
    seen = {k: set() for k in ("animal", "item", "place", "light", "expression", "colour", "count")}
    for k, item in enumerate(L.ITEMS):
        colour = colours[k % len(colours)] if vocab.get(item).recolour else None
        animal = L.ANIMALS[k % len(L.ANIMALS)]
        other = L.ANIMALS[(k * 7 + 3) % len(L.ANIMALS)]
        animals = [(animal, 1 + k % 3)] if k % 4 else [(animal, 1), (other, 1)] if other != animal else [(animal, 2)]
        features = [(item, colour)]
        second = L.ITEMS[(k + 50) % len(L.ITEMS)]
        if k % 2 and vocab.get(second).slot != vocab.get(item).slot:
            features.append((second, None))
        lab = _labels(animals, features, places[k % len(places)], lights[k % len(lights)],
                      expressions[k % len(expressions)])
        for flip in (False, True):
            t = L.encode(lab, SIZE, flip=flip)
            assert t.dense.shape == (L.DENSE_CLASSES, SIZE // 8, SIZE // 8) and t.colour.shape == (8, 8)
            got = L.decode(_fake_outputs(t))
            want = L.concepts(lab)
            assert {k2: got[k2] for k2 in ("animals", "count", "items", "place", "light", "expression")} == \
                {k2: want[k2] for k2 in ("animals", "count", "items", "place", "light", "expression")}, lab
            for i, c in want["colours"].items():
                assert got["colours"][i] == c, (i, c, got["colours"])
            for i in got["items"]:  # items without a colour word show their glyph's own colour, if it has one
                assert got["colours"].get(i) == L.item_colour(i, dict(lab["features"]).get(i)) or \
                    L.item_colour(i, dict(lab["features"]).get(i)) is None
        seen["animal"].update(a for a, _ in animals)
        seen["item"].update(i for i, _ in features)
        seen["colour"].update(c for _, c in features if c)
        seen["place"].add(lab["place"])
        seen["light"].add(lab["light"])
        seen["expression"].add(lab["expression"])
        seen["count"].add(len(lab["members"]))
    # and every animal on its own
    for a in L.ANIMALS:
        lab = _labels([(a, 1)], [])
        got = L.decode(_fake_outputs(L.encode(lab, SIZE)))
        assert got["animals"] == [a] and got["animal_top"] == a and got["items"] == [] and got["count"] == 1
        seen["animal"].add(a)
    assert seen["animal"] == set(L.ANIMALS) and seen["item"] == set(L.ITEMS)
    assert seen["place"] == set(places) and seen["light"] == set(lights) and seen["expression"] == set(expressions)
    assert seen["colour"] == set(colours) and seen["count"] == {1, 2, 3}


def test_small_boxes_still_mark_a_cell_and_flip_mirrors():
    lab = _labels([("cat", 1)], [("bow", "red")])
    lab["boxes"].append({"kind": "item", "id": "medal", "box": [250, 2, 253, 5], "member": 0})
    lab["features"].append(["medal", None])
    t = L.encode(lab, SIZE)
    medal = L.DENSE_LAYOUT["item"][0] + L.ITEMS.index("medal")
    assert t.dense[medal].sum() == 1 and t.dense[medal][0, 7] == 1
    assert L.encode(lab, SIZE, flip=True).dense[medal][0, 0] == 1
    with pytest.raises(ValueError):
        L.encode(lab, 100)


# --- a tiny judge end to end ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    d = tmp_path_factory.mktemp("judge")
    common = ["--size", str(SIZE), "--batch", "4", "--dir", str(d), "--workers", "0", "--precision", "fp32",
              "--log-every", "1"]
    assert eval_quality.main(["train", "--steps", "2", "--save-every", "1", "--eval-every", "0", *common]) == 0
    assert eval_quality.main(["train", "--steps", "3", "--eval-every", "3", "--eval-n", "4", *common]) == 0
    return d


@needs_font
def test_train_saves_resumes_and_validates(tiny_judge, capsys):
    import torch

    st = torch.load(tiny_judge / "latest.pt", map_location="cpu", weights_only=True)
    assert st["step"] == 3 and st["config"]["size"] == SIZE and st["precision"] == "fp32"
    rows = list(csv.DictReader((tiny_judge / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]  # one header, resumed rows appended
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert (tiny_judge / "eval.csv").read_text().splitlines()[0].startswith("step,n,animal_top1")

    capsys.readouterr()
    assert eval_quality.main(["validate", "--judge", str(tiny_judge), "--n", "6", "--batch", "4", "--probes", "1",
                              "--workers", "0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    from judge.validate import FIELDS

    assert set(res["heads"]) == set(FIELDS) and res["counts"]["pictures"] == 6
    assert all(0.0 <= v <= 1.0 for v in res["heads"].values() if v == v)  # nan: no one-animal picture
    assert res["judge"]["step"] == 3 and res["fit"] is False  # 6 renders give no verdict, whatever the heads
    names = {p["probe"] for p in res["probes"]}
    assert {"flower item on garden", "bear for a teddy", "gold read as yellow", "space place for stars"} <= names
    assert json.loads((tiny_judge / "validation.json").read_text())["judge"]["step"] == 3
    assert eval_quality.main(["validate", "--judge", str(tiny_judge), "--n", "4", "--batch", "4", "--probes", "0",
                              "--workers", "0"]) == 0
    assert "animal top-1" in capsys.readouterr().out

    # the ceiling run: each prompt's own render stands in for a model's picture
    assert eval_quality.main(["score", "--renders", "--judge", str(tiny_judge), "--n", "2", "--size", str(SIZE),
                              "--jsonl", str(tiny_judge / "r.jsonl"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "dataset-renders" and summary["pictures"] == 2

    from judge.data import to_input
    from judge.infer import load

    judge = load(tiny_judge)
    pictures = [Image.new("RGB", (100, 100), "white"), Image.new("RGB", (512, 512), "pink")]
    out = judge.judge(pictures)
    assert len(out) == 2 and {"animals", "items", "place", "count", "colours"} <= set(out[0])

    # frozen: the EMA weights alone, in float16, read the same pictures the same way
    assert eval_quality.main(["freeze", "--judge", str(tiny_judge), "-o", str(tiny_judge / "frozen.pt")]) == 0
    frozen = load(tiny_judge / "frozen.pt")
    assert frozen.step == 3
    assert (tiny_judge / "frozen.pt").stat().st_size < (tiny_judge / "latest.pt").stat().st_size / 3
    x = torch.from_numpy(np.stack([to_input(p, SIZE) for p in pictures]))
    for a, b in zip(frozen.outputs(x), judge.outputs(x), strict=True):
        for head in a:  # float16 weights: the logits agree to float16 precision
            assert np.abs(a[head] - b[head]).max() <= 1e-2 * max(1.0, np.abs(b[head]).max()), head
    with pytest.raises(SystemExit, match="frozen judge"):
        load(tiny_judge / "frozen.pt", ema=False)
    # its validation came along (step 3, as validated above), for score's "validated" line
    assert json.loads((tiny_judge / "frozen.validation.json").read_text())["judge"]["step"] == 3

    # a new run from the frozen judge: its weights, its step (the pictures continue), its own schedule
    d = tiny_judge / "from-frozen"
    common = ["--size", str(SIZE), "--batch", "4", "--dir", str(d), "--workers", "0", "--precision", "fp32",
              "--eval-every", "0", "--init", str(tiny_judge / "frozen.pt")]
    assert eval_quality.main(["train", "--steps", "4", "--lr", "0", *common]) == 0
    st = torch.load(d / "latest.pt", map_location="cpu", weights_only=True)
    assert st["step"] == 4 and st["start_step"] == 3
    ema16 = torch.load(tiny_judge / "frozen.pt", map_location="cpu", weights_only=True)["ema"]
    name = next(k for k, v in ema16.items() if v.is_floating_point() and v.ndim == 4)
    assert torch.equal(st["model"][name], ema16[name].float())  # lr 0: still the frozen weights
    assert eval_quality.main(["train", "--steps", "5", "--lr", "1e-3", *common]) == 0  # resumes; --init unused
    st = torch.load(d / "latest.pt", map_location="cpu", weights_only=True)
    assert st["step"] == 5 and st["start_step"] == 3 and not torch.equal(st["model"][name], ema16[name].float())


# --- score on a tiny random bundle ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("score")
    encoder, sha = tiny_text_encoder(tmp, 2)
    return pipeline_bundle("test-eval", sha, layers=2, default_steps=2).write(tmp / "m.gguf"), encoder


def test_score_reports_every_field(tiny_model, tmp_path, capsys):
    model, encoder = tiny_model
    jdir = tmp_path / "judge"  # initial weights: score needs no rendering, so no font either
    assert eval_quality.main(["train", "--steps", "0", "--size", str(SIZE), "--dir", str(jdir)]) == 0
    jsonl, sheet = tmp_path / "s.jsonl", tmp_path / "sheet.png"
    capsys.readouterr()
    assert eval_quality.main(["score", "--model", str(model), "--text-encoder", str(encoder), "--judge", str(jdir),
                              "--n", "2", "--size", str(SIZE), "--jsonl", str(jsonl), "--sheet", str(sheet),
                              "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "not validated" in captured.err
    m = summary["metrics"]
    assert set(m) == {"animal", "accessory", "place", "count", "centred", "clean", "expression", "light", "colour"}
    for k in ("animal", "accessory", "place", "count", "centred"):
        assert m[k]["n"] >= 1 and 0.0 <= m[k]["value"] <= 1.0, k
    assert summary["pictures"] == 2 and summary["targets"] == {"animal": 0.95, "accessory": 0.90, "place": 0.90}
    assert summary["judge"]["validated"] is False and summary["model"] == "test-eval"
    assert set(summary["items"]) and summary["sheet"] == str(sheet) and sheet.stat().st_size > 500
    rows = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert {"index", "prompt", "english", "asked", "seed", "judged", "layout", "check", "settings"} <= set(r)
        assert r["settings"]["size"] == SIZE
        assert {"animal", "count", "items", "accessory", "colours", "place", "expression", "light", "centred", "clean",
                "failed"} == set(r["check"])
        assert {"centred", "clean", "subject", "centre", "box", "foreground", "stray_blobs"} <= set(r["layout"])
    with Image.open(sheet) as img:
        assert img.width == 8 * 192


def test_summary_pools_items_by_slot():
    from judge import score

    def checked(items):
        return {"check": {"animal": True, "place": None, "count": True, "centred": True, "clean": None,
                          "expression": None, "light": None, "colours": {}, "items": items}}

    rows = [checked({"hat": True, "cake": False}), checked({"cake": True, "bow": False}), checked({})]
    summary = score.summarise(rows)
    assert summary["slots"] == {"head": {"value": 0.5, "n": 2}, "hand": {"value": 0.5, "n": 2}}
    assert summary["metrics"]["accessory"] == {"value": 0.5, "n": 4}
    assert "accessory by slot: head 50% of 2, hand 50% of 2" in score.table(summary)


def test_score_split_takes_training_prompts():
    """--split train scores prompts of training pictures (combinations the model saw): the captions of
    make_dataset's train split, not the held-out one's."""
    import make_dataset
    from judge.score import dataset_prompts

    held = dataset_prompts(3, start=5)
    train = dataset_prompts(3, start=5, split="train")
    for k, (h, t) in enumerate(zip(held, train, strict=True)):
        assert h["index"] == t["index"] == 5 + k
        assert h["prompt"] == make_dataset.labels(5 + k, "heldout", 0)["captions"]["zh"][0]
        assert t["prompt"] == make_dataset.labels(5 + k, "train", 0)["captions"]["zh"][0]
    assert [p["prompt"] for p in held] != [p["prompt"] for p in train]


def test_tools_warn_when_the_installed_bundle_is_not_the_working_trees(tmp_path, monkeypatch, capsys):
    """The scoring and README tools load the installed bundle by default: a stale install is said."""
    import cute_mini

    import cutecpp.info

    tree = ROOT / "cutecpp" / "data" / "cute-mini.gguf"
    stale = tmp_path / "cute-mini.gguf"
    stale.write_bytes(tree.read_bytes()[:-1] + b"\x00")  # same size, one byte different
    monkeypatch.setattr(cutecpp.info, "default_model_path", lambda: stale)
    cute_mini.warn_if_installed_model_is_stale(None)
    assert "differs from the working tree" in capsys.readouterr().err
    cute_mini.warn_if_installed_model_is_stale(tree)  # an explicit --model: nothing to say
    assert capsys.readouterr().err == ""
    same = tmp_path / "same.gguf"
    same.write_bytes(tree.read_bytes())
    monkeypatch.setattr(cutecpp.info, "default_model_path", lambda: same)
    cute_mini.warn_if_installed_model_is_stale(None)
    assert capsys.readouterr().err == ""


def test_score_files_of_different_runs_do_not_overwrite_one_another():
    """The default per-prompt file's name carries --n and every non-default setting (--start, --cfg, --split ...)."""
    from judge.score import run_tag

    parser = eval_quality.build_parser()
    def tag(*argv):
        return run_tag(parser.parse_args(["score", *argv]))

    assert tag("--n", "100") == "-100"
    names = {tag("--n", "100", *extra) for extra in
             ((), ("--start", "100"), ("--cfg", "6"), ("--split", "train"), ("--lang", "en"), ("--steps", "8"))}
    assert len(names) == 6
    assert tag("--n", "100", "--start", "100", "--cfg", "6") == "-start100-cfg6.0-100"


def test_renders_through_an_autoencoder(tmp_path):
    """--renders --through-autoencoder: each render goes through the autoencoder's encoder and decoder, the
    same modules that made the training latents (train_unet.prepare) and decode in the bundle."""
    import cute_mini
    import torch
    from diffusers import AutoencoderTiny
    from judge.score import Renders

    torch.manual_seed(0)
    AutoencoderTiny(**cute_mini.TINY_AUTOENCODER).save_pretrained(tmp_path / "ae")
    prompts = [{"prompt": "小熊 冰山上", "index": 3}]
    plain = Renders(prompts).generate("小熊 冰山上", size=64).image
    through = Renders(prompts, autoencoder=str(tmp_path / "ae"))
    image = through.generate("小熊 冰山上", size=64).image
    assert through.model_id == "dataset-renders-autoencoded" and image.size == plain.size == (64, 64)
    x = torch.from_numpy(np.asarray(plain, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0)
    with torch.no_grad():
        y = through.autoencoder.decoder(through.autoencoder.encoder(x))[0].clamp(-1, 1)
    want = ((y + 1) * 127.5).round().permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(image, np.float32) - want).max() <= 1.0
    assert np.abs(np.asarray(image, np.float32) - np.asarray(plain, np.float32)).mean() > 1.0
    fitted = Renders(prompts, autoencoder=str(tmp_path / "ae"), fit_steps=10).generate("小熊 冰山上", size=64).image
    def err(im):
        return np.abs(np.asarray(im, np.float32) - np.asarray(plain, np.float32)).mean()
    assert err(fitted) < err(image)  # latents optimised against the decoder reproduce the render better
    with pytest.raises(SystemExit):
        eval_quality.main(["score", "--through-autoencoder", str(tmp_path / "ae")])  # needs --renders
    with pytest.raises(SystemExit):
        eval_quality.main(["score", "--renders", "--fit-latents", "5"])  # needs --through-autoencoder


def test_validation_verdict_needs_enough_renders():
    """A judge passes only with every judging head at the bar on at least MIN_PICTURES renders: a quick
    `validate --n 64` must not mark it fit (it writes the validation.json that `score` reads)."""
    from judge.validate import BAR, JUDGING_HEADS, MIN_PICTURES, fit

    heads = dict.fromkeys(JUDGING_HEADS, BAR)
    assert fit({"counts": {"pictures": MIN_PICTURES}, "heads": heads})
    assert not fit({"counts": {"pictures": 64}, "heads": heads})
    assert not fit({"counts": {"pictures": MIN_PICTURES}, "heads": dict(heads, item_recall=BAR - 0.001)})


@pytest.fixture()
def restore_pipeline(monkeypatch):
    """The tools below patch Pipeline.generate and Context.sample for the run: put them back afterwards."""
    import cutecpp

    monkeypatch.setattr(cutecpp.Pipeline, "generate", cutecpp.Pipeline.generate)
    monkeypatch.setattr(cutecpp.model.Context, "sample", cutecpp.model.Context.sample)


@pytest.mark.parametrize("tool", ["best_of", "guidance_schedule"])
def test_tools_drawing_loops_run_through_the_pipeline(tool, tiny_model, tmp_path, restore_pipeline, capsys):
    """best_of.py record and guidance_schedule.py (whose loops stand in for Context.sample under the Pipeline)
    score what a plain score does, judged the same; record keeps each prompt's every step."""
    import best_of
    import guidance_schedule

    model, encoder = tiny_model
    jdir = tmp_path / "judge"
    assert eval_quality.main(["train", "--steps", "0", "--size", str(SIZE), "--dir", str(jdir)]) == 0
    score = ["score", "--model", str(model), "--text-encoder", str(encoder), "--judge", str(jdir), "--n", "2",
             "--size", str(SIZE)]
    assert eval_quality.main([*score, "--jsonl", str(tmp_path / "plain.jsonl")]) == 0
    if tool == "best_of":
        best_of.main(["record", "-o", str(tmp_path / "t.npz"), *score, "--jsonl", str(tmp_path / "tool.jsonl")])
        t = np.load(tmp_path / "t.npz")
        assert t["x"].shape == t["x0"].shape == (2, 2, 4, 8, 8) and t["final"].shape == (2, 4, 8, 8)
        assert len(t["sigmas"]) == 2 and list(t["prompts"]) == [
            json.loads(line)["prompt"] for line in (tmp_path / "plain.jsonl").read_text().splitlines()]
    else:
        with pytest.raises(SystemExit) as done:
            guidance_schedule.main([*score, "--jsonl", str(tmp_path / "tool.jsonl")])
        assert done.value.code in (0, None)
    capsys.readouterr()
    plain, drawn = ([json.loads(line) for line in (tmp_path / f).read_text().splitlines()]
                    for f in ("plain.jsonl", "tool.jsonl"))
    assert [r["judged"] for r in drawn] == [r["judged"] for r in plain]


def test_tools_drawing_loops_refuse_best_of(tmp_path, micro):
    """A bundle drawing best of 2 by default: the tools' loops draw one seed, so they say so."""
    import guidance_schedule
    from bundles import make_verifier, with_sampling, with_verifier

    import cutecpp

    names = ["animal:bear", "place:iceberg"]
    b = with_verifier(with_sampling(micro, "flow3", candidates=2, verify_sigma=0.5), make_verifier(names), names)
    ctx = cutecpp.Context(cutecpp.Model.load(b.write(tmp_path / "b.gguf")), threads=1)
    with pytest.raises(SystemExit, match="2 candidates: this tool draws one seed"):
        guidance_schedule.one_seed(ctx, None)
    guidance_schedule.one_seed(ctx, 1)  # asked for one: fine
