#!/usr/bin/env python3
"""A school day in one process: many pictures through cutecpp.Pipeline, watching memory and time.

    python tools/soak.py --n 300 [--model M] [--threads 2] [--cache DIR] [--every 25]

Draws --n pictures with the product's own path (prompt rules, the llama.cpp text encoder, the
UNet, the decoder, the picture as an image), each from a random prompt (an animal, an item with
its verb, a place, from the shipped vocabulary; seeded, so a rerun asks the same) and its own seed,
as a classroom kiosk would over a day. Every --every pictures it prints the process's resident memory
(VmRSS) and the median time of the last ones; at the end, how much the peak of resident memory
rose from the first half of the pictures after --warm to the second (per 100 pictures: a leak
shows there, the few MB it moves from picture to picture do not), and the time's median and 95th
percentile (not a benchmark: `cutecpp bench` is). With
--cache DIR the pictures also go through the SQLite picture cache there (every seed is new, so
each is a miss and a write). Exits 1 when a picture failed or memory grew by more than
--max-growth-mb per 100 pictures.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path


def rss_mb() -> float:
    """This process's resident memory now (Linux: /proc/self/status VmRSS)."""
    from cutecpp.bench import memory_mb

    now = memory_mb("VmRSS")
    if now is None:
        raise RuntimeError("no VmRSS in /proc/self/status")
    return now


def prompts(seed: int):
    """Endless drawable-looking prompts: an animal, an item with its verb, a place."""
    from cutecpp.vocab import load_vocabulary

    vocab = load_vocabulary()
    animals, items, places = (vocab.entries(c) for c in ("animal", "item", "place"))
    rng = random.Random(seed)
    while True:
        item = rng.choice(items)
        yield " ".join([rng.choice(animals).zh_word, vocab.canonical_verb(item).zh_word + item.zh_word,
                        rng.choice(places).zh_word])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="pictures to draw (default %(default)s)")
    parser.add_argument("--model", default=None, help="a bundle (default: the shipped model)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="also write every picture to this picture cache")
    parser.add_argument("--every", type=int, default=25, help="print a line every N pictures")
    parser.add_argument("--warm", type=int, default=10, help="memory is watched from this picture on")
    parser.add_argument("--max-growth-mb", type=float, default=2.0, help="per 100 pictures (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="of the prompts and the pictures' seeds")
    args = parser.parse_args()
    if args.n <= args.warm:
        parser.error(f"--n must be larger than --warm ({args.warm})")

    import cutecpp

    cache = args.cache / "pictures.sqlite3" if args.cache else False
    pipe = cutecpp.Pipeline.load(args.model, threads=args.threads, cache=cache)
    print(f"soak: {args.n} pictures, model {pipe.model_id}, threads {pipe.context.threads}, "
          f"cache {cache or 'off'}; resident memory after loading {rss_mb():.1f} MB", flush=True)
    source = prompts(args.seed)
    times: list[float] = []
    resident: list[float] = []  # after each picture drawn from --warm on
    failures = refused = 0
    for i in range(1, args.n + 1):
        prompt = next(source)
        t0 = time.perf_counter()
        try:
            pipe.generate(prompt, seed=args.seed * 1_000_003 + i)
        except cutecpp.PromptError:
            refused += 1  # the rules' answer to this prompt, not a failure: draw another
            continue
        except cutecpp.CutecppError as e:
            failures += 1
            print(f"picture {i} ({prompt}): {e}", file=sys.stderr)
            continue
        times.append((time.perf_counter() - t0) * 1000)
        if i >= args.warm:
            resident.append(rss_mb())
        if i % args.every == 0:
            recent = statistics.median(times[-args.every:])
            print(f"{i:5d} pictures  resident {rss_mb():7.1f} MB  median of the last {args.every}: {recent:6.0f} ms",
                  flush=True)
    if len(resident) < 4:
        print(f"soak: too few pictures drawn ({len(times)}, {failures} failed) to measure memory", file=sys.stderr)
        return 1
    # Resident memory moves by several MB from picture to picture, up and down (prompts of other
    # lengths plan other buffers, the allocator keeps or returns pages), so compare the peaks of the
    # two halves: a leak raises the second one, that movement does not.
    half = len(resident) // 2
    first, second = max(resident[:half]), max(resident[half:])
    growth = (second - first) / (len(resident) - half) * 100
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    print(f"soak: {len(times)} drawn, {refused} prompts refused by the rules, {failures} failed; resident memory "
          f"peaked at {first:.1f} MB in the first half after picture {args.warm}, {second:.1f} MB in the second: "
          f"{growth:+.2f} MB per 100 pictures; ms per picture median {statistics.median(times):.0f}, "
          f"95th percentile {p95:.0f}")
    return 1 if failures or growth > args.max_growth_mb else 0


if __name__ == "__main__":
    sys.exit(main())
