"""Shared by the benchmarks in tools/: timing, peak memory, child processes, reports.

Each engine/variant runs in its own child process (so its peak RSS is its own);
ratios are computed against a reference row measured in the same run.
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
         title: Callable[[str, argparse.Namespace], str]) -> None:
    """The command line shared by the benchmarks: `--<kind> a,b` picks the models
    (`shapes` or `decoders`); each engine and variant runs as `script --child ...`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(f"--{kind}", default=names)
    parser.add_argument("--dtypes", default=dtypes)
    parser.add_argument("--torch-variants", default="fp32,channels_last,bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--child", choices=["torch", "cutecpp"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    selected = getattr(args, kind)

    if args.child:
        print(json.dumps(child(args.child, selected, args.variant, args.threads, args.runs)))
        return

    report = {"threads": args.threads, "runs": args.runs, kind: {}}
    for name in selected.split(","):
        dtype_list = args.dtypes.split(",")
        prepare(name, dtype_list)
        common = [f"--{kind}", name, "--threads", str(args.threads), "--runs", str(args.runs)]
        results = [run_child(script, ["--child", "torch", "--variant", v, *common])
                   for v in args.torch_variants.split(",")]
        results += [run_child(script, ["--child", "cutecpp", "--variant", d, *common]) for d in dtype_list]
        add_ratios(results)
        report[kind][name] = results
        if not args.json:
            print_table(title(name, args), results)
    if args.json:
        print(json.dumps(report, indent=2))
