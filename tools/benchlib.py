"""Shared by the benchmarks in tools/: timing, peak memory, child processes, reports.

Each engine/variant runs in its own child process (so its peak RSS is its own);
ratios are computed against a reference row measured in the same run. The
children run in --rounds rounds, every variant once per round, so that the
development VMs' slow and fast phases (minutes long) fall on all of them alike;
a variant's figure is the median of all its timed runs, and ms_rounds keeps
each round's median to show the spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not ru_maxrss: that one carries the
    parent's peak across fork+exec, and the parent may have torch loaded."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(engine: str, variant: str, fn: Callable[[], object], runs: int) -> dict:
    """Median ms of `runs` calls after one warm-up (plans graphs, faults in weights)."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return {"engine": engine, "variant": variant, "ms": statistics.median(times),
            "ms_all": [round(v, 2) for v in times], "peak_rss_mb": peak_rss_mb()}


def run_child(script: str, args: list[str]) -> dict:
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def combine(rounds: list[dict]) -> dict:
    """One variant's rows from several rounds: the median of all timed runs, the peak of the peaks."""
    times = [t for r in rounds for t in r["ms_all"]]
    return {"engine": rounds[0]["engine"], "variant": rounds[0]["variant"], "ms": statistics.median(times),
            "ms_rounds": [round(r["ms"], 2) for r in rounds], "ms_all": times,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds)}


def add_ratios(results: list[dict]) -> None:
    """Speed and memory ratios against PyTorch fp32 and the fastest PyTorch variant."""
    base = next(r for r in results if r["engine"] == "torch" and r["variant"] == "fp32")
    best_torch = min(r["ms"] for r in results if r["engine"] == "torch")
    for r in results:
        r["speedup_vs_torch_fp32"] = base["ms"] / r["ms"]
        r["speedup_vs_best_torch"] = best_torch / r["ms"]
        r["rss_vs_torch_fp32"] = r["peak_rss_mb"] / base["peak_rss_mb"]


def print_table(title: str, results: list[dict]) -> None:
    print(f"\n{title}")
    print(f"  {'engine':8} {'variant':14} {'ms':>10} {'x torch fp32':>13} {'x best torch':>13} "
          f"{'peak RSS MB':>12} {'RSS / torch':>12}")
    for r in results:
        print(f"  {r['engine']:8} {r['variant']:14} {r['ms']:10.1f} {r['speedup_vs_torch_fp32']:13.2f} "
              f"{r['speedup_vs_best_torch']:13.2f} {r['peak_rss_mb']:12.0f} {r['rss_vs_torch_fp32']:12.2f}")


def main(script: str, doc: str, kind: str, names: str, dtypes: str, runs: int,
         prepare: Callable[[str, list[str]], None], child: Callable[[str, str, str, int, int], dict],
         title: Callable[[str, argparse.Namespace], str],
         extra: Callable[[argparse.ArgumentParser], Callable[[str, argparse.Namespace], list]] | None = None,
         ) -> None:
    """The command line shared by the benchmarks: `--<kind> a,b` picks the models
    (`shapes`, `decoders` or `encoders`); each engine and variant runs as `script --child ...`.
    `extra(parser)` may add options and returns `(name, args) -> [(engine, variant), ...]`:
    engines beyond PyTorch and cutecpp for that model (their children get the common arguments
    and the environment, not the extra options)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(f"--{kind}", default=names)
    parser.add_argument("--dtypes", default=dtypes)
    parser.add_argument("--torch-variants", default="fp32,channels_last,bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=runs, help="timed runs per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all variants (interleaved)")
    more = extra(parser) if extra else (lambda name, a: [])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    selected = getattr(args, kind)

    if args.child:
        print(json.dumps(child(args.child, selected, args.variant, args.threads, args.runs)))
        return

    report = {"threads": args.threads, "runs": args.runs, "rounds": args.rounds, kind: {}}
    for name in selected.split(","):
        dtype_list = args.dtypes.split(",")
        prepare(name, dtype_list)
        common = [f"--{kind}", name, "--threads", str(args.threads), "--runs", str(args.runs)]
        variants = [("torch", v) for v in args.torch_variants.split(",")] + [("cutecpp", d) for d in dtype_list]
        variants += more(name, args)
        rounds = [[run_child(script, ["--child", engine, "--variant", v, *common]) for engine, v in variants]
                  for _ in range(max(1, args.rounds))]
        results = [combine([r[i] for r in rounds]) for i in range(len(variants))]
        add_ratios(results)
        report[kind][name] = results
        if not args.json:
            print_table(title(name, args), results)
    if args.json:
        print(json.dumps(report, indent=2))
