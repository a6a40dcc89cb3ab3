"""cutecpp's own kernels against ggml's ops, on one bundle's UNet, in one process.

    python tools/bench_fused.py [--model FILE] [--batch 2] [--runs 20] [--threads 2] [--json]

Two contexts on the same model: one built with cutecpp's kernels (the default:
fused GroupNorm/LayerNorm/GEGLU, attention, linear and 1x1 conv ops), one
with CUTECPP_FUSED=0 (ggml's group_norm, mul_mat, flash attention, im2col ...).
The convolutions are the same in both (direct_conv.h, and winograd.h, whose
products run in gemm.h where its kernels are f32 / f16: they are made per model).
Their evaluations alternate, so a slow phase of the machine falls on both;
prints the median ms of each, the speed-up, and the largest difference between
their outputs (relative to the output's scale). Default model: the shipped one,
at its latent size, batch 2 (a guided step), 12 context tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

import cutecpp
from cutecpp.info import default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="bundle with a unet (default: the shipped model)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=12)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    path = args.model or default_model_path()
    if path is None:
        raise SystemExit("bench_fused: no model shipped in this installation; pass --model FILE")
    path = str(path)
    model = cutecpp.Model.load(path)
    unet = model.info["config"]["components"]["unet"]
    side = unet["sample_size"]
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((args.batch, unet["in_channels"], side, side)).astype(np.float32)
    timesteps = np.full(args.batch, 500.0, np.float32)
    context = rng.standard_normal((args.batch, args.tokens, unet["cross_attention_dim"])).astype(np.float32)

    contexts, outputs = {}, {}
    before = os.environ.get("CUTECPP_FUSED")
    for name, fused in (("cutecpp kernels", "1"), ("ggml ops", "0")):
        os.environ["CUTECPP_FUSED"] = fused  # read when the context plans its graph: the first call
        contexts[name] = cutecpp.Context(model, threads=args.threads)
        outputs[name] = contexts[name].unet(sample, timesteps, context)
    if before is None:
        os.environ.pop("CUTECPP_FUSED")
    else:
        os.environ["CUTECPP_FUSED"] = before
    times = {name: [] for name in contexts}
    for _ in range(args.runs):
        for name, ctx in contexts.items():
            start = time.perf_counter()
            ctx.unet(sample, timesteps, context)
            times[name].append((time.perf_counter() - start) * 1000.0)

    ms = {n: statistics.median(t) for n, t in times.items()}
    ours, ggml = ms.values()
    a, b = outputs.values()
    report = {
        "model": path, "batch": args.batch, "side": side, "threads": args.threads, "runs": args.runs,
        "ms": {n: round(m, 2) for n, m in ms.items()},
        "speedup": ggml / ours,
        "max_rel_difference": float(np.abs(a - b).max() / np.abs(b).max()),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{path}: batch {args.batch}, {side}x{side} latent, {args.threads} threads, median of {args.runs}")
    for name, ms in report["ms"].items():
        print(f"  {name:16} {ms:9.2f} ms")
    print(f"  speed-up {report['speedup']:.2f}x; outputs differ by {report['max_rel_difference']:.1e} of their scale")


if __name__ == "__main__":
    main()
