"""Train the latent verifier (tools/verifier.py) on the prepared training latents.

    python tools/train_verifier.py train --steps 3000      # resumes from the run's latest.pt
    python tools/train_verifier.py validate                # its accuracy on held-out latents, by noise level
    python tools/train_verifier.py export -o DIR           # its EMA weights as a folder the converter reads

It reads tools/train_unet.py's prepared latents (`prepare`; normalised per channel as the UNet sees
them) and their encoder texts, whose words are the exact labels; the last --holdout pictures are never
trained on and `validate` measures there. Each step noises a batch as the flow does, at sigmas drawn
uniformly from 0 .. --max-sigma, and flips half of it left to right; --pos-weight weighs the labels that are
there (few among the 218) more than those that are not. Checkpoints (weights, EMA, optimizer)
go to ~/.cache/cutecpp/train/verifier/.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cute_mini  # noqa: E402
import verifier  # noqa: E402

RUN_DIR = cute_mini.TRAIN_DIR / "verifier"
CHECK_SIGMAS = (0.0, 0.34, 0.45, 0.55, 0.69, 0.84)  # cute-mini 0.13's sigmas after steps 15, 12, 11, 10, 8, 5


def load_data(holdout: int):
    from train_unet import Data

    from cutecpp.vocab import load_vocabulary

    data = Data()
    vocab = load_vocabulary()
    names = verifier.label_names(vocab)
    y = np.stack([verifier.labels_of(str(t).split(), names, vocab) for t in data.texts])
    x = data.latents
    if not 0 < holdout < len(x):
        raise SystemExit(f"--holdout {holdout}: needs 1 .. {len(x) - 1} of the {len(x)} prepared pictures")
    return (x[:-holdout], y[:-holdout]), (x[-holdout:], y[-holdout:]), names


def noised(x: torch.Tensor, sigma: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=gen)
    s = sigma[:, None, None, None]
    return (1 - s) * x + s * noise


def train(args) -> None:
    torch.set_num_threads(args.threads)
    (x, y), _, names = load_data(args.holdout)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    model = verifier.Verifier(len(names), in_channels=x.shape[1])
    ema = verifier.Verifier(len(names), in_channels=x.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step = 0
    latest = RUN_DIR / "latest.pt"
    if latest.exists():
        ckpt = torch.load(latest, map_location="cpu", weights_only=False)
        if ckpt["names"] != names:
            raise SystemExit(f"{latest} was trained on other labels (the vocabulary changed): move it away")
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["opt"])
        step = ckpt["step"]
        print(f"resumed at step {step}", file=sys.stderr)
    else:
        ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    pos_weight = torch.full((len(names),), float(args.pos_weight))
    rng = np.random.default_rng(args.seed + step)
    gen = torch.Generator().manual_seed(args.seed + step)
    log = (RUN_DIR / "log.csv").open("a", newline="")
    writer = csv.writer(log)
    started, losses = time.time(), []
    while step < args.steps:
        idx = rng.integers(0, len(x), args.batch)
        xb = torch.from_numpy(x[idx].astype(np.float32))
        flip = torch.from_numpy(rng.random(args.batch) < 0.5)
        xb[flip] = xb[flip].flip(-1)
        sigma = torch.from_numpy(rng.uniform(0, args.max_sigma, args.batch).astype(np.float32))
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(noised(xb, sigma, gen), sigma)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), torch.from_numpy(y[idx]),
                                                                    pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - args.ema)
        step += 1
        losses.append(loss.item())
        if step % args.log_every == 0:
            mean = float(np.mean(losses))
            writer.writerow([step, f"{mean:.5f}", f"{lr:.2e}", f"{time.time() - started:.0f}"])
            log.flush()
            print(f"step {step} loss {mean:.4f} ({(time.time() - started) / 60:.1f} min)", file=sys.stderr)
            losses = []
        if step % args.save_every == 0 or step == args.steps:
            ckpt = dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step,
                        names=names, config=model.config)
            torch.save(ckpt, RUN_DIR / "latest.tmp")
            (RUN_DIR / "latest.tmp").replace(latest)


@torch.no_grad()
def evaluate(model, x: np.ndarray, y: np.ndarray, names: list[str], sigmas=CHECK_SIGMAS, seed: int = 0) -> dict:
    """Per sigma: the share of pictures whose animal (one of theirs) is the verifier's first animal, of asked
    items it finds (p > 0.5), of items it finds that are not there among those found, and of places first."""
    kinds = np.array([n.split(":")[0] for n in names])
    out = {}
    for sigma in sigmas:
        gen = torch.Generator().manual_seed(seed)
        logits = []
        for k in range(0, len(x), 256):
            xb = torch.from_numpy(x[k : k + 256].astype(np.float32))
            s = torch.full((len(xb),), float(sigma))
            logits.append(model(noised(xb, s, gen), s).numpy())
        logits = np.concatenate(logits)
        res = {}
        for kind in ("animal", "place"):
            cols = np.flatnonzero(kinds == kind)
            has = y[:, cols].sum(1) > 0
            first = cols[logits[:, cols].argmax(1)]
            res[kind] = float(y[np.arange(len(y)), first][has].mean())
        cols = np.flatnonzero(kinds == "item")
        found, there = logits[:, cols] > 0, y[:, cols] > 0
        res["item_recall"] = float(found[there].mean())
        res["item_false"] = float((found & ~there).sum() / max(found.sum(), 1))
        out[f"{sigma:.2f}"] = {k: round(v, 4) for k, v in res.items()}
    return out


def validate(args) -> None:
    torch.set_num_threads(args.threads)
    _, (x, y), names = load_data(args.holdout)
    model, trained_names = verifier.load(args.checkpoint or RUN_DIR / "latest.pt")
    if trained_names != names:
        raise SystemExit("the checkpoint was trained on other labels (the vocabulary changed)")
    res = evaluate(model, x, y, names)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"held-out latents: {len(x)}")
    print("sigma  animal  item recall  items found not there  place")
    for s, r in res.items():
        print(f"{s:>5}  {r['animal']:6.1%}  {r['item_recall']:11.1%}  {r['item_false']:21.1%}  {r['place']:5.1%}")


def export_folder(model: verifier.Verifier, names: list[str], out: Path) -> None:
    """A converter folder (cutecpp.convert's `verifier`): config.json and the weights in float32 safetensors."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "Verifier", "in_channels": model.config["in_channels"], "labels": names,
              "block_out_channels": model.config["widths"], "num_blocks": model.config["num_blocks"],
              "act_fn": "relu"}
    (out / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()},
              str(out / "diffusion_pytorch_model.safetensors"))


def export(args) -> None:
    model, names = verifier.load(args.checkpoint or RUN_DIR / "latest.pt")
    export_folder(model, names, Path(args.output))
    print(f"verifier ({len(names)} labels) -> {args.output}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=3000, help="train until this step")
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--ema", type=float, default=0.998)
    t.add_argument("--max-sigma", type=float, default=0.9)
    t.add_argument("--pos-weight", type=float, default=1.0, help="weight of the labels present in the loss (rare: "
                   "each item is in ~1 %% of the pictures)")
    t.add_argument("--bf16", action="store_true", help="bf16 autocast")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--save-every", type=int, default=250)
    for p in (t, v := sub.add_parser("validate")):
        p.add_argument("--holdout", type=int, default=512, help="the last N prepared pictures: never trained on")
    v.add_argument("--checkpoint", default=None, help="default: the run's latest.pt")
    v.add_argument("--threads", type=int, default=2)
    v.add_argument("--json", action="store_true")
    e = sub.add_parser("export")
    e.add_argument("-o", "--output", required=True, help="the folder to write")
    e.add_argument("--checkpoint", default=None, help="default: the run's latest.pt")
    args = parser.parse_args(argv)
    {"train": train, "validate": validate, "export": export}[args.cmd](args)


if __name__ == "__main__":
    main()
