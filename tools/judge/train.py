"""Train the judge on training-split renders (resumable).

Step k trains on pictures k*batch .. (k+1)*batch - 1 of the train split, so a resumed run continues
with fresh pictures and never repeats one. State in --dir (default ~/.cache/cutecpp/train/judge/):
`latest.pt` (weights, their EMA, optimizer, step, config, vocabulary ids, precision, training time),
`log.csv` (losses per --log-every steps) and `eval.csv` (a quick held-out check per --eval-every).

Loss: binary cross-entropy on the dense class map (targets from the boxes) and on its spatial maximum
(animals and items present, from the labels), cross-entropy on the colour map at item cells, and on
the global heads (place, light, expression, count). AdamW, warm-up then cosine decay to 5 % at
--steps (a run continued to more steps stretches the rest of the schedule), EMA weights for judging.
`--init JUDGE` starts a new run from another judge's EMA weights (the frozen `tools/judge/judge.pt`
when the training checkpoint is gone) at its step, with a fresh optimizer, its own warm-up and decay.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import infer
from .data import loader
from .labels import DENSE_CLASSES, DENSE_LAYOUT
from .model import WIDTHS, build, prepare

DEFAULT_SIZE = 128
LOG_FIELDS = ["step", "loss", "dense", "present", "colour", "place", "light", "expression", "count", "lr",
              "images_per_s", "elapsed_s"]


def losses(out: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    dense = out["dense"].float()
    n, _, g, _ = dense.shape
    cls = dense[:, :DENSE_CLASSES]
    parts = {"dense": F.binary_cross_entropy_with_logits(cls, t["dense"], reduction="sum") / (n * g * g)}
    a0, a1 = DENSE_LAYOUT["animal"]
    i0, i1 = DENSE_LAYOUT["item"]
    present = cls[:, a0:i1].amax((2, 3))
    target = torch.cat([t["animals"], t["items"]], 1)
    assert present.shape == target.shape and i0 == a1
    parts["present"] = F.binary_cross_entropy_with_logits(present, target, reduction="sum") / n
    c0, c1 = DENSE_LAYOUT["colour"]
    colour = dense[:, c0:c1].permute(0, 2, 3, 1).reshape(-1, c1 - c0)
    ct = t["colour"].reshape(-1)
    parts["colour"] = F.cross_entropy(colour, ct, ignore_index=-1) if (ct >= 0).any() else colour.new_zeros(())
    for head in ("place", "light", "expression", "count"):
        parts[head] = F.cross_entropy(out[head].float(), t[head])
    return parts


def _step_time(model, opt, x, t, bf16: bool, device) -> float:
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    loss = sum(losses(out, t).values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_precision(config: dict, batch: int, device: torch.device, steps: int = 3) -> tuple[bool, dict]:
    """Time a few training steps in fp32 and under bf16 autocast on real renders; True if bf16 is faster."""
    x_u8, t, _ = next(iter(loader("train", config["size"], 10**9, batch, batch, 0)))
    x = prepare(x_u8, device)
    t = {k: v.to(device) for k, v in t.items()}
    times = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        model = build(config).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        _step_time(model, opt, x, t, bf16, device)  # warm-up
        times[name] = min(_step_time(model, opt, x, t, bf16, device) for _ in range(steps))
    return times["bf16"] < times["fp32"], times


def lr_at(step: int, steps: int, base: float, warmup: int = 300) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, steps - warmup))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _drop_rows_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = lines[:1] + [ln for ln in lines[1:] if ln.split(",", 1)[0].isdigit() and int(ln.split(",", 1)[0]) <= step]
    if len(keep) != len(lines):
        path.write_text("".join(keep))


def train(args) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out_dir = Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / "latest.pt"
    config = {"size": args.size or DEFAULT_SIZE, "widths": list(WIDTHS), "neck": 128}
    state = None
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if args.size and state["config"]["size"] != args.size:
            raise SystemExit(f"{ckpt} was trained at --size {state['config']['size']}, not {args.size}; "
                             "use another --dir for a new judge")
        if state.get("vocab") != infer.vocab_signature():
            raise SystemExit(f"{ckpt} was trained on another vocabulary; use another --dir")
        config = state["config"]
    init = None
    if state is not None and args.init:
        print(f"--init {args.init} not used: resuming {ckpt}", file=sys.stderr)
    if state is None and args.init:  # a new run from another judge's (EMA) weights, e.g. the frozen one
        init = torch.load(infer.checkpoint_file(args.init), map_location="cpu", weights_only=True)
        if init.get("vocab") != infer.vocab_signature():
            raise SystemExit(f"{args.init} was trained on another vocabulary")
        if args.size and init["config"]["size"] != args.size:
            raise SystemExit(f"{args.init} judges at --size {init['config']['size']}, not {args.size}")
        config = init["config"]
    model = build(config).to(device)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim == 1 or name.endswith(".bias") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    ema = copy.deepcopy(model).eval()
    step, elapsed0, start = 0, 0.0, 0
    precision = args.precision
    if init is not None:
        model.load_state_dict(init["ema"])  # float16 in a frozen judge: copied into the float32 weights
        ema.load_state_dict(model.state_dict())
        # Its step, so that the pictures continue after those it saw; the learning rate warms up again
        # and decays over this run's own steps (`start`).
        step = start = int(init["step"])
        elapsed0 = float(init.get("elapsed_s", 0.0))
        print(f"new run from the weights of {args.init} (its step {step})", file=sys.stderr)
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, elapsed0 = int(state["step"]), float(state.get("elapsed_s", 0.0))
        start = int(state.get("start_step", 0))
        if precision == "auto":
            precision = state.get("precision", "auto")
        print(f"resumed {ckpt} at step {step} ({elapsed0 / 60:.1f} min trained)", file=sys.stderr)
    if state is None and init is None and args.steps == 0:  # a judge with initial weights (wiring tests)
        precision = "fp32" if precision == "auto" else precision
        _save(ckpt, {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": 0,
                     "config": config, "vocab": infer.vocab_signature(), "precision": precision, "elapsed_s": 0.0})
        print(f"{ckpt}: initial weights (step 0)", file=sys.stderr)
        return
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        else:
            faster, times = measure_precision(config, args.batch, device)
            precision = "bf16" if faster else "fp32"
            print("precision: " + ", ".join(f"{k} {v:.2f} s/step" for k, v in times.items())
                  + f" at batch {args.batch}, size {config['size']} -> {precision}", file=sys.stderr)
    bf16 = precision == "bf16"
    if step >= args.steps:
        print(f"already at step {step} (--steps {args.steps})", file=sys.stderr)
        return

    def snapshot() -> dict:
        return {"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                "config": config, "vocab": infer.vocab_signature(), "precision": precision,
                "elapsed_s": elapsed0 + (time.time() - started), "start_step": start}

    for name in ("log.csv", "eval.csv"):
        _drop_rows_after(out_dir / name, step)  # logged by a run that stopped before its next checkpoint
    new_log = not (out_dir / "log.csv").exists()
    data = loader("train", config["size"], step * args.batch, (args.steps - step) * args.batch, args.batch,
                  args.workers, seed=args.seed)
    started = last_save = last_log = time.time()
    seen = 0
    model.train()
    with open(out_dir / "log.csv", "a", newline="") as log:
        writer = csv.writer(log)
        if new_log:
            writer.writerow(LOG_FIELDS)
        for images, t, _ in data:
            x = prepare(images, device)
            t = {k: v.to(device, non_blocking=True) for k, v in t.items()}
            lr = lr_at(step - start, args.steps - start, args.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(x)
            parts = losses(out, t)
            loss = sum(parts.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            seen += len(images)
            with torch.no_grad():
                d = min(args.ema, (1 + step) / (10 + step))
                for pe, pl in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.lerp_(pl, 1 - d)
                for be, bl in zip(ema.buffers(), model.buffers(), strict=True):
                    be.copy_(bl)
            if step % args.log_every == 0 or step == args.steps:
                now = time.time()
                rate = seen / max(1e-9, now - last_log)
                seen, last_log = 0, now
                row = {"step": step, "loss": f"{loss.item():.4f}", "lr": f"{lr:.2e}",
                       "images_per_s": f"{rate:.1f}", "elapsed_s": f"{elapsed0 + now - started:.0f}"}
                row.update({k: f"{v.item():.4f}" for k, v in parts.items()})
                writer.writerow([row[k] for k in LOG_FIELDS])
                log.flush()
                print(f"step {step}/{args.steps}  loss {loss.item():.3f}  "
                      + " ".join(f"{k} {v.item():.3f}" for k, v in parts.items())
                      + f"  {rate:.0f} img/s  {(elapsed0 + now - started) / 60:.1f} min", file=sys.stderr)
            if step % args.save_every == 0 or step == args.steps or time.time() - last_save > 600:
                _save(ckpt, snapshot())
                last_save = time.time()
            if args.eval_every and (step % args.eval_every == 0 or step == args.steps):
                judge = infer.LoadedJudge(ema, config["size"], step, device, ckpt)
                _quick_eval(out_dir, judge, args)
    print(f"{ckpt}: step {step}", file=sys.stderr)


def _quick_eval(out_dir: Path, judge: infer.LoadedJudge, args) -> None:
    """Held-out accuracy of the EMA weights on the first --eval-n pictures (eval.csv)."""
    from .validate import FIELDS, evaluate

    res = evaluate(judge, n=args.eval_n, workers=args.workers, probes=0)
    path = out_dir / "eval.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["step", "n", *FIELDS])
        w.writerow([judge.step, args.eval_n, *(f"{res['heads'][k]:.4f}" for k in FIELDS)])
    print(f"eval at step {judge.step} on {args.eval_n} held-out: "
          + " ".join(f"{k} {res['heads'][k]:.3f}" for k in FIELDS), file=sys.stderr)
