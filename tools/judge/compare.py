"""Paired comparison of two models' score runs (the per-prompt score-*.jsonl files `score` writes).

Two runs over the same prompts and seeds judge the same asked things, so each asked thing (a prompt's
animal, place, ... and each asked item) is a pair: found by both, by neither, or by one only. The sign
test on the pairs that differ, z = (gained - lost) / sqrt(gained + lost), sees a change the two totals'
standard errors hide; the two-proportion z of the totals is printed beside it for reference.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .labels import item_slot

ATTRIBUTES = ("animal", "place", "count", "centred", "clean", "expression", "light")


def load_rows(paths: list[str]) -> list[dict]:
    rows = []
    for p in paths:
        with open(Path(p).expanduser(), encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def _key(row: dict) -> tuple:
    return (row["index"], row["prompt"], row["seed"])


def outcomes(row: dict) -> dict[str, bool]:
    """Each asked thing of one judged picture -> whether the judge found it (None checks left out)."""
    out = {a: row["check"][a] for a in ATTRIBUTES if row["check"].get(a) is not None}
    out.update({f"item:{i}": ok for i, ok in row["check"]["items"].items()})
    return out


def _two_proportion_z(a: int, b: int, n: int) -> float:
    p = (a + b) / (2 * n)
    se = math.sqrt(2 * p * (1 - p) / n) if 0 < p < 1 else 0.0
    return (b - a) / n / se if se else 0.0


def compare(old: list[dict], new: list[dict]) -> dict:
    """Per attribute (items pooled as "accessory", and by slot as "accessory:hand", ...): asked, found by
    old / new, gained, lost, both z."""
    old_by, new_by = {_key(r): r for r in old}, {_key(r): r for r in new}
    if len(old_by) != len(old) or len(new_by) != len(new):
        raise ValueError("a run has the same picture (index, prompt, seed) twice")
    if set(old_by) != set(new_by):
        unpaired = len(set(old_by) ^ set(new_by))
        raise ValueError(f"the runs are over different pictures (index, prompt, seed): {unpaired} unpaired")
    stats: dict[str, dict] = {}
    for k in sorted(old_by):
        a, b = outcomes(old_by[k]), outcomes(new_by[k])
        if set(a) != set(b):
            raise ValueError(f"the runs asked different things for {k[1]!r}")
        for thing, was in a.items():
            now = b[thing]
            keys = [thing]
            if thing.startswith("item:"):
                keys = ["accessory", "accessory:" + item_slot(thing[5:])]
            for key in keys:
                s = stats.setdefault(key, {"asked": 0, "old": 0, "new": 0, "gained": 0, "lost": 0})
                s["asked"] += 1
                s["old"] += was
                s["new"] += now
                s["gained"] += now and not was
                s["lost"] += was and not now
    for s in stats.values():
        d = s["gained"] + s["lost"]
        s["sign_z"] = (s["gained"] - s["lost"]) / math.sqrt(d) if d else 0.0
        s["z"] = _two_proportion_z(s["old"], s["new"], s["asked"])
    slots = sorted((k for k in stats if k.startswith("accessory:")), key=lambda k: -stats[k]["asked"])
    order = ["animal", "accessory", *slots, *ATTRIBUTES[1:]]
    return {k: stats[k] for k in order if k in stats}


def models(rows: list[dict]) -> str:
    return ", ".join(sorted({str(r["settings"].get("model")) for r in rows}))


def table(result: dict, old_name: str = "old", new_name: str = "new") -> str:
    lines = [f"{'attribute':11s} {'asked':>5s} {old_name:>14s} {new_name:>14s} {'gained':>6s} {'lost':>5s} "
             f"{'sign z':>6s} {'z':>5s}"]
    def pct(n, asked):
        return f"{n:4d} ({100 * n / asked:5.1f}%)"

    for k, s in result.items():
        name = "  " + k.split(":")[1] if k.startswith("accessory:") else k
        lines.append(f"{name:11s} {s['asked']:5d} {pct(s['old'], s['asked']):>14s} {pct(s['new'], s['asked']):>14s} "
                     f"{s['gained']:6d} "
                     f"{s['lost']:5d} {s['sign_z']:6.2f} {s['z']:5.2f}")
    return "\n".join(lines)
