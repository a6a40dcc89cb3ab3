#!/usr/bin/env python3
"""Sampling weights for `train_unet.py train --sample-weights` from scored pictures: animals a model misses
more often than the rest are drawn more often in training.

    python tools/animal_weights.py RUN.jsonl [RUN2.jsonl ...] -o weights.json [--cap 4]

RUN.jsonl are `eval_quality.py score --jsonl` files (one line a prompt). An animal's miss rate is shrunk
toward the overall one by --prior pretend prompts (a few prompts per animal are noisy); its weight is that
rate over the overall rate, at least 1 and at most --cap. Judge the trained model on other prompts than
those the weights came from (`score --start N` past them): animals that were merely unlucky on these
would look improved on them anyway.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from judge.compare import load_rows


def weights(rows: list[dict], cap: float, prior: float) -> tuple[dict[str, float], dict[str, tuple[int, int]]]:
    """({animal: weight} for those above 1, {animal: (asked, missed)}) from scored prompts."""
    asked, missed = Counter(), Counter()
    for row in rows:
        for animal in row["asked"]["animals"]:
            asked[animal] += 1
            missed[animal] += not row["check"]["animal"]
    total = sum(asked.values())
    if not total or not sum(missed.values()):
        raise SystemExit("no animal asked or none missed: nothing to weight")
    overall = sum(missed.values()) / total
    out = {}
    for animal, n in asked.items():
        rate = (missed[animal] + prior * overall) / (n + prior)
        w = min(cap, rate / overall)
        if w > 1:
            out[animal] = round(w, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1])), {a: (asked[a], missed[a]) for a in asked}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="eval_quality.py score --jsonl files")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--cap", type=float, default=4.0, help="largest weight (default 4)")
    p.add_argument("--prior", type=float, default=5.0, help="pretend prompts at the overall miss rate (default 5)")
    args = p.parse_args(argv)
    if not args.cap >= 1 or not args.prior >= 0:
        p.error("--cap must be at least 1 and --prior at least 0")
    rows = []
    for path in args.runs:
        try:
            rows += load_rows([path])
        except (OSError, ValueError) as e:
            p.error(f"{path}: {e}")
    try:
        w, counts = weights(rows, args.cap, args.prior)
    except (KeyError, TypeError) as e:
        p.error(f"not eval_quality.py score output (missing {e})")
    args.output.write_text(json.dumps(w, indent=1) + "\n", encoding="utf-8")
    for animal, weight in w.items():
        n, m = counts[animal]
        print(f"{animal:14s} missed {m:3d} of {n:3d}  weight {weight:g}", file=sys.stderr)
    print(f"{len(w)} of {len(counts)} animals weighted; wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
