#!/usr/bin/env python3
"""Time one UNet training step (train_unet.train_step and the EMA) in a few set-ups, in one process.

    python tools/bench_train_step.py [--widths 64 128 256] [--batch 32] [--steps 5] [--threads 2]

Random latents and text states of the training run's shapes (tools/train_unet.py); no training
cache needed. Prints ms per step and samples per second for each variant, and the ratio to the first
(bf16 autocast, contiguous tensors, the EMA updated tensor by tensor: train_unet.py before step 10,750;
it now runs the "foreach EMA" variant).
Stop other heavy jobs first (`pkill -STOP -f "train_unet.py train"`, then `-CONT`).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cute_mini  # noqa: E402
from train_unet import make_models, train_step, update_ema  # noqa: E402

VARIANTS = {  # name: (bf16, channels_last, foreach EMA)
    "bf16": (True, False, False),
    "bf16, foreach EMA": (True, False, True),  # what train_unet.py does
    "bf16, channels_last": (True, True, False),
    "bf16, both": (True, True, True),
    "fp32": (False, False, False),
}


def time_variant(config: dict, batch: int, steps: int, bf16: bool, channels_last: bool, foreach: bool) -> float:
    import torch

    torch.manual_seed(0)
    unet, align = make_models(config)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    unet = unet.to(memory_format=fmt)
    ema = [copy.deepcopy(unet).eval(), copy.deepcopy(align).eval()]
    params = list(unet.parameters()) + list(align.parameters())
    ema_params = list(ema[0].parameters()) + list(ema[1].parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    c, n = cute_mini.LATENT_CHANNELS, cute_mini.LATENT_SIZE
    x0 = torch.randn(batch, c, n, n).to(memory_format=fmt)
    noise = torch.randn(batch, c, n, n).to(memory_format=fmt)
    states = torch.randn(batch, 12, cute_mini.TEXT_HIDDEN)
    mask = torch.ones(batch, 12, dtype=torch.bool)
    weight = torch.ones(batch, 1, n, n)  # plain MSE (--item-weight 1)
    times = []
    for k in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        train_step(unet, align, opt, params, x0, noise, torch.rand(batch), states, mask, weight, bf16)
        if foreach:
            update_ema(ema_params, params, 0.999)
        else:
            with torch.no_grad():
                for pe, pl in zip(ema_params, params, strict=True):
                    pe.lerp_(pl, 1e-3)
        if k >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs=3, default=(64, 128, 256), help="block_out_channels")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (median)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    config = {**cute_mini.UNET, "block_out_channels": tuple(args.widths)}
    print(f"UNet {tuple(args.widths)}, batch {args.batch}, {args.threads} threads, median of {args.steps} steps")
    base = None
    for name in args.variants:
        sec = time_variant(config, args.batch, args.steps, *VARIANTS[name])
        base = base or sec
        print(f"{name:22s} {sec * 1000:8.0f} ms/step  {args.batch / sec:6.1f} samples/s  x{base / sec:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
