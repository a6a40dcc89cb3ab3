#!/usr/bin/env python3
"""The real text encoder: full vs truncated vs truncated+pruned, same prompts, same run.

    python tools/bench_text_encoder.py [--json] [--layers 12] [--threads 2]

Builds the three files from the installed PyPI parts into a temporary directory (timing the
first-use build the runtime does), then measures each in its own child process: file size,
median ms per prompt (prompts are canonical word lists from the shipped vocabulary, encoded the
way the pipeline encodes them) and peak RSS. Ratios are against the full model in this run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import measure, run_child  # noqa: E402


def prompts(n: int = 16, seed: int = 0) -> list[list[str]]:
    """Prompt-like word lists: 4-7 canonical words each."""
    from cutecpp.vocab import load_vocabulary

    words = load_vocabulary().encoder_words()
    rng = random.Random(seed)
    return [rng.sample(words, rng.randint(4, 7)) for _ in range(n)]


def child(path: str, threads: int, runs: int) -> dict:
    from cutecpp.text_encoder import TextEncoder

    start = time.perf_counter()
    enc = TextEncoder(path, threads=threads)
    load_ms = (time.perf_counter() - start) * 1000
    batch = prompts()
    n_tokens = sum(len(enc.tokens_for(p)) for p in batch) / len(batch)

    def run():
        for p in batch:
            enc.encode(p)

    r = measure("llama.cpp", Path(path).name, run, runs)
    r["ms"] /= len(batch)  # per prompt
    r["ms_all"] = [round(v / len(batch), 2) for v in r["ms_all"]]
    r.update(load_ms=load_ms, tokens_per_prompt=n_tokens, file_mb=Path(path).stat().st_size / 1e6)
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.runs)))
        return 0

    from cutecpp import encoder_build as eb
    from cutecpp.vocab import load_vocabulary

    words = load_vocabulary().encoder_words()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        built = eb.ensure_text_encoder(args.layers, words, directory=tmp)
        build_s = time.perf_counter() - t0
        full = Path(tmp) / "full.gguf"
        eb.assemble(full)
        trunc = eb.prune(full, Path(tmp) / "truncated.gguf", args.layers).path
        common = ["--threads", str(args.threads), "--runs", str(args.runs)]
        rows = {name: run_child(__file__, ["--child", str(p), *common])
                for name, p in (("full", full), ("truncated", trunc), ("pruned", built))}
    base = rows["full"]
    for r in rows.values():
        r["speedup_vs_full"] = base["ms"] / r["ms"]
        r["rss_vs_full"] = r["peak_rss_mb"] / base["peak_rss_mb"]
    report = {"threads": args.threads, "layers": args.layers, "vocabulary_words": len(words),
              "first_use_build_s": build_s, "variants": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"text encoder, {args.threads} threads, {len(words)} vocabulary words, "
          f"first-use build (assemble + verify + prune) {build_s:.1f} s")
    print(f"  {'variant':10} {'file MB':>8} {'tokens':>7} {'ms/prompt':>10} {'x full':>7} {'load ms':>8} "
          f"{'peak RSS MB':>12} {'RSS/full':>9}")
    for name, r in rows.items():
        print(f"  {name:10} {r['file_mb']:8.1f} {r['tokens_per_prompt']:7.1f} {r['ms']:10.1f} "
              f"{r['speedup_vs_full']:7.2f} {r['load_ms']:8.0f} {r['peak_rss_mb']:12.0f} {r['rss_vs_full']:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
