"""How well the judge reads held-out renders, and the known confusions probed one by one.

`evaluate` judges pictures 0 .. n-1 of split="heldout" (animal x item x place triples the judge never
saw in training, drawn at its input size, no augmentation) and compares with their exact labels.
`probes` draws scenes made for the confusions the dataset's author flagged (docs/dataset.md, "Known
weak spots"): one glyph shared by an item and a place, the teddy that looks like a bear, and colours
that are nearly the same once shaded.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from .data import loader, to_input
from .infer import LoadedJudge, validation_path
from .labels import ANIMALS, ITEMS, PLACES, VOCAB, concepts, decode

FIELDS = ["animal_top1", "animal_set", "count", "item_recall", "item_precision", "item_set", "colour", "place",
          "expression", "light"]
LABELS = {
    "animal_top1": "animal top-1 (pictures of one kind)",
    "animal_set": "animal exact set",
    "count": "count (1-3)",
    "item_recall": "item recall",
    "item_precision": "item precision",
    "item_set": "item exact set",
    "colour": "colour of a detected item (named colours)",
    "place": "place (37 + none)",
    "expression": "expression (12 + none)",
    "light": "light (3 + none)",
}
BAR = 0.95  # a head below this on held-out renders is not fit to judge (docs/eval.md)
MIN_PICTURES = 2000  # fewer held-out renders give no verdict: a quick check must not pass a judge
JUDGING_HEADS = ("animal_top1", "animal_set", "item_recall", "item_precision", "place", "count")


def compare(truth: dict, judged: dict) -> dict:
    """Per-picture agreement (truth from labels.concepts, judged from labels.decode)."""
    t_items, j_items = set(truth["items"]), set(judged["items"])
    colours = [(i, c, judged["colours"].get(i)) for i, c in truth["colours"].items() if i in j_items]
    return {
        "one_animal": len(truth["animals"]) == 1,
        "animal_top1": judged["animal_top"] == truth["animals"][0],
        "animal_set": set(judged["animals"]) == set(truth["animals"]),
        "count": judged["count"] == truth["count"],
        "item_tp": len(t_items & j_items), "item_fn": len(t_items - j_items), "item_fp": len(j_items - t_items),
        "item_set": t_items == j_items,
        "colour_ok": sum(c == j for _, c, j in colours), "colour_n": len(colours),
        "colour_errors": [(c, j) for _, c, j in colours if c != j],
        "place": judged["place"] == truth["place"],
        "expression": judged["expression"] == truth["expression"],
        "light": judged["light"] == truth["light"],
        "missed": sorted(t_items - j_items), "extra": sorted(j_items - t_items),
    }


def summarise(rows: list[tuple[dict, dict, dict]]) -> dict:
    """Head accuracies and the most frequent mistakes from (truth, judged, compare) rows."""
    n = len(rows)
    one = [c for _, _, c in rows if c["one_animal"]]
    tp = sum(c["item_tp"] for _, _, c in rows)
    fn = sum(c["item_fn"] for _, _, c in rows)
    fp = sum(c["item_fp"] for _, _, c in rows)
    col_n = sum(c["colour_n"] for _, _, c in rows)
    heads = {
        "animal_top1": float(np.mean([c["animal_top1"] for c in one])) if one else float("nan"),
        "animal_set": float(np.mean([c["animal_set"] for _, _, c in rows])),
        "count": float(np.mean([c["count"] for _, _, c in rows])),
        "item_recall": tp / max(1, tp + fn), "item_precision": tp / max(1, tp + fp),
        "item_set": float(np.mean([c["item_set"] for _, _, c in rows])),
        "colour": sum(c["colour_ok"] for _, _, c in rows) / max(1, col_n),
        "place": float(np.mean([c["place"] for _, _, c in rows])),
        "expression": float(np.mean([c["expression"] for _, _, c in rows])),
        "light": float(np.mean([c["light"] for _, _, c in rows])),
    }
    counts = {"pictures": n, "one_animal": len(one), "items": tp + fn, "detected_items": tp + fp,
              "coloured_items": col_n}
    mistakes = {
        "animal": Counter(f"{t['animals'][0]}->{j['animal_top']}" for t, j, c in rows
                          if c["one_animal"] and not c["animal_top1"]).most_common(8),
        "item_missed": Counter(i for _, _, c in rows for i in c["missed"]).most_common(8),
        "item_extra": Counter(i for _, _, c in rows for i in c["extra"]).most_common(8),
        "place": Counter(f"{t['place']}->{j['place']}" for t, j, c in rows if not c["place"]).most_common(8),
        "colour": Counter(f"{a}->{b}" for _, _, c in rows for a, b in c["colour_errors"]).most_common(8),
        "expression": Counter(f"{t['expression']}->{j['expression']}" for t, j, c in rows
                              if not c["expression"]).most_common(6),
        "count": Counter(f"{t['count']}->{j['count']}" for t, j, c in rows if not c["count"]).most_common(4),
    }
    return {"heads": heads, "counts": counts, "mistakes": mistakes}


def evaluate(judge: LoadedJudge, n: int = 2000, start: int = 0, workers: int = 1, batch: int = 64,
             probes: int = 24, seed: int = 0, render_size: int | None = None, split: str = "heldout") -> dict:
    """Judge held-out pictures start .. start + n - 1 (and `probes` scenes per probe direction), drawn at
    `render_size` (default: the judge's input size) and shrunk to the judge's input as `score` does."""
    rows = []
    for images, _, infos in loader(split, judge.size, start, n, batch, workers, seed=seed, train=False,
                                   render_size=render_size):
        for out, info in zip(judge.outputs(images), infos, strict=True):
            truth = concepts(info)
            judged = decode(out)
            rows.append((truth, judged, compare(truth, judged)))
    res = summarise(rows)
    res.update(judge={"path": str(judge.path), "step": judge.step, "size": judge.size,
                      "trained_min": round(judge.elapsed_s / 60, 1)}, split=split, start=start,
               render_size=render_size or judge.size)
    if probes:
        res["probes"] = run_probes(judge, probes, seed)
    res["fit"] = fit(res)
    return res


def fit(res: dict) -> bool:
    """The verdict: every judging head at the bar, on enough held-out renders for it to mean something."""
    return res["counts"]["pictures"] >= MIN_PICTURES and all(res["heads"][k] >= BAR for k in JUDGING_HEADS)


# --- probes --------------------------------------------------------------------------------------

def _probe_scenes(k: int, seed: int):
    """(name, question, [(scene, wrong(judged) -> bool)]) for every probe direction."""
    from make_dataset import make_scene

    rng = random.Random(f"cutecpp-judge/probes/{seed}")
    recolour = [e.id for e in VOCAB.entries("item") if e.recolour and e.id != "gift"]

    def scene(animals=None, items=(), place=None, no_animals=(), no_items=(), no_places=()):
        if animals is None:
            animals = [(rng.choice([a for a in ANIMALS if a not in no_animals]), rng.choice((1, 1, 2)))]
        feats = list(items)
        if len(feats) < 2 and rng.random() < 0.4:
            taken = {f[0] for f in feats} | set(no_items)
            slots = {VOCAB.get(f[0]).slot for f in feats}
            extra = [i for i in ITEMS if i not in taken and VOCAB.get(i).slot not in slots | {"hand", "ride"}]
            feats.append((rng.choice(extra), None))
        if place is None and rng.random() < 0.8:
            place = rng.choice([p for p in PLACES if p not in no_places])
        return make_scene(VOCAB, animals, feats, place, None, None, rng)

    probes = []

    def shared(item, place):
        probes.append((f"{item} item on {place}", f"{item} seen where only the {place} place is",
                       [(scene(place=place, no_items=(item,)), lambda j, i=item: i in j["items"]) for _ in range(k)]))
        probes.append((f"{place} place with {item}", f"{place} place seen for a held {item}",
                       [(scene(items=[(item, None)], no_places=(place,)), lambda j, p=place: j["place"] == p)
                        for _ in range(k)]))

    shared("flower", "garden")
    shared("maple_leaf", "autumn")
    shared("mushroom", "mushroom_house")
    shared("mushroom", "mushroom")
    for a, b in (("stars", "space"), ("space", "stars"), ("spring", "garden"), ("garden", "spring")):
        probes.append((f"{b} place for {a}", f"{a} pictures judged {b}",
                       [(scene(place=a), lambda j, p=b: j["place"] == p) for _ in range(k)]))
    probes.append(("bear for a teddy", "a teddy held by another animal read as a bear",
                   [(scene(items=[("teddy", None)], no_animals=("bear", "polar_bear", "panda", "koala")),
                     lambda j: "bear" in j["animals"]) for _ in range(k)]))
    probes.append(("teddy on a bear", "a bear without a teddy read as holding one",
                   [(scene(animals=[("bear", 1)], no_items=("teddy",)), lambda j: "teddy" in j["items"])
                    for _ in range(k)]))
    for a, b in (("gold", "yellow"), ("yellow", "gold"), ("silver", "grey"), ("grey", "silver")):
        cases = []
        for _ in range(k):
            item = rng.choice(recolour)
            cases.append((scene(items=[(item, a)]), lambda j, i=item, c=b: j["colours"].get(i) == c))
        probes.append((f"{a} read as {b}", f"a {a} item judged {b}", cases))
    return probes


def run_probes(judge: LoadedJudge, k: int = 24, seed: int = 0) -> list[dict]:
    from make_dataset import render_scene

    out = []
    for name, question, cases in _probe_scenes(k, seed):
        pics = [render_scene(s, judge.size, random.Random(i))[0] for i, (s, _) in enumerate(cases)]
        x = torch.from_numpy(np.stack([to_input(p, judge.size) for p in pics]))
        judged = [decode(o) for o in judge.outputs(x)]
        wrong = sum(bool(check(j)) for (_, check), j in zip(cases, judged, strict=True))
        out.append({"probe": name, "question": question, "n": len(cases), "confused": wrong / len(cases)})
    return out


# --- report --------------------------------------------------------------------------------------

def table(res: dict) -> str:
    j, c = res["judge"], res["counts"]
    lines = [f"judge {j['path']} (step {j['step']}, input {j['size']} px, {j['trained_min']} min trained) on "
             f"{c['pictures']} {res['split']} renders from index {res['start']} (drawn at {res['render_size']} px)",
             "", f"{'head':44s} {'accuracy':>9s}  {'over':>6s}"]
    over = {"animal_top1": c["one_animal"], "item_recall": c["items"], "item_precision": c["detected_items"],
            "colour": c["coloured_items"]}
    for k in FIELDS:
        lines.append(f"{LABELS[k]:44s} {res['heads'][k] * 100:8.1f}%  {over.get(k, c['pictures']):6d}")
    lines.append("")
    for k, v in res["mistakes"].items():
        if v:
            lines.append(f"most frequent {k} mistakes: " + ", ".join(f"{m} ({n})" for m, n in v))
    if res.get("probes"):
        lines += ["", f"{'known confusion (probe)':44s} {'rate':>9s}  {'over':>6s}"]
        for p in res["probes"]:
            lines.append(f"{p['question']:44s} {p['confused'] * 100:8.1f}%  {p['n']:6d}")
    bar = f"every one of {', '.join(JUDGING_HEADS)} >= {BAR:.0%} on at least {MIN_PICTURES:,} renders is the bar"
    lines += ["", ("fit to judge: yes" if res["fit"] else "NOT fit to judge") + f" ({bar})"]
    return "\n".join(lines)


def save(res: dict, judge: LoadedJudge) -> Path:
    """validation.json next to the checkpoint (held-out runs; `score` reads it to say whether the judge was
    validated), validation-train.json for runs on the train split (infer.validation_path)."""
    path = validation_path(judge.path, res["split"])
    path.write_text(json.dumps(res, indent=1, default=str) + "\n", encoding="utf-8")
    return path
