#!/usr/bin/env python3
"""Train cute-mini's tiny autoencoder (diffusers AutoencoderTiny, x16, 16 latent channels) on
rendered pictures. CPU by default, CUDA when asked; resumes from the newest checkpoint.

    python tools/train_autoencoder.py --steps 20000            # train (or continue) to step 20000
    python tools/train_autoencoder.py --export OUT_DIR         # newest checkpoint -> diffusers folder
                                                               # with latent shift/scale measured

Pictures come from tools/make_dataset.py's render(), re-rendered on the fly (deterministic from the
index), cropped to --crop pixels: the networks are convolutional, so 256-pixel crops of 512-pixel
pictures train the same weights at a quarter of the cost. Loss: L1 + L1 of image gradients (edges
are what a cartoon is made of) + a small latent penalty that keeps the latents near unit scale.

State lives in ~/.cache/cutecpp/train/autoencoder/ (CUTECPP_TRAIN_DIR moves it): `latest.pt`
(model, optimizer, step), `log.csv` (step, loss, seconds), `preview-<step>.png` (input | output).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cute_mini  # noqa: E402

TRAIN_DIR = cute_mini.TRAIN_DIR


def render_batch(start: int, n: int, size: int, crop: int, split: str = "train", seed: int = 0,
                 items: bool = False):
    """n pictures as float32 [n, 3, crop, crop] in [-1, 1]; crop position from the index. items=True:
    (pictures, float32 [n, 1, crop, crop] masks, 1 inside the pictures' item boxes)."""
    from make_dataset import render

    out = np.empty((n, 3, crop, crop), np.float32)
    masks = np.zeros((n, 1, crop, crop), np.float32) if items else None
    for i in range(n):
        image, labels = render(start + i, split=split, size=size, seed=seed)
        arr = np.asarray(image.convert("RGB"), np.float32) / 127.5 - 1.0
        rng = np.random.default_rng((seed, start + i))
        y, x = (rng.integers(0, size - crop + 1, 2) if crop < size else (0, 0))
        out[i] = arr[y : y + crop, x : x + crop].transpose(2, 0, 1)
        for b in labels["boxes"] if items else ():
            if b["kind"] == "item":
                x0, y0, x1, y1 = (int(round(v)) for v in b["box"])
                masks[i, 0, max(y0 - y, 0) : max(y1 - y, 0), max(x0 - x, 0) : max(x1 - x, 0)] = 1
    return (out, masks) if items else out


class Batches:
    """Rendered batches from a background process, so rendering overlaps training."""

    def __init__(self, first_index: int, batch: int, size: int, crop: int, seed: int, items: bool = False) -> None:
        import torch.utils.data as tud

        class _Stream(tud.IterableDataset):
            def __iter__(self_inner):
                i = first_index
                while True:
                    yield render_batch(i, batch, size, crop, seed=seed, items=items)
                    i += batch

        self.loader = iter(tud.DataLoader(_Stream(), batch_size=None, num_workers=1, prefetch_factor=4))

    def __next__(self):
        return next(self.loader)


def make_model():
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(**cute_mini.TINY_AUTOENCODER)


def image_losses(y, x, weight=None):
    """L1 of the reconstruction y of x, and L1 of their image gradients (a cartoon is made of edges).
    weight (broadcastable to y, e.g. [n, 1, h, w]): a weighted mean per pixel instead, normalised so the
    losses keep the scale of the plain mean."""
    def mean(err, w):
        return err.mean() if w is None else (err * w).mean() / w.mean()

    wy = None if weight is None else weight[..., 1:, :]
    wx = None if weight is None else weight[..., 1:]
    l1 = mean((y - x).abs(), weight)
    edge = (mean(((y[..., 1:, :] - y[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])).abs(), wy)
            + mean(((y[..., 1:] - y[..., :-1]) - (x[..., 1:] - x[..., :-1])).abs(), wx))
    return l1, edge


def warmup_then_decay(lr: float, step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then linear decay to a tenth at `steps`: a fixed budget ends on a
    low learning rate (the fit_encoder/fit_decoder fine-tunes)."""
    return lr * min((step + 1) / warmup, 1.0 - 0.9 * step / steps)


def optimizer_step(opt, loss, params) -> None:
    """One step of every loop here: fresh gradients of `loss`, their norm clipped to 1, the update."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save through a temporary file and a rename: a save cut short leaves the previous checkpoint."""
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def losses(model, x):
    z = model.encoder(x)
    y = model.decoder(z)
    l1, edge = image_losses(y, x)
    latent = z.float().pow(2).mean()
    return l1 + edge + 1e-4 * latent, {"l1": float(l1), "edge": float(edge), "latent_rms": float(latent) ** 0.5}, y


def save_preview(path: Path, x, y) -> None:
    from PIL import Image

    def im(t):
        a = ((t.detach().float().clamp(-1, 1).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)
        return np.concatenate(list(a.transpose(0, 2, 3, 1)[:4]), axis=1)

    Image.fromarray(np.concatenate([im(x), im(y)], axis=0)).save(path)


def train(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = TRAIN_DIR / "autoencoder"
    out.mkdir(parents=True, exist_ok=True)
    model = make_model().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    step = 0
    ckpt = out / "latest.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        print(f"resumed at step {step}", file=sys.stderr)
    if step >= args.steps:
        print(f"already at step {step} >= {args.steps}", file=sys.stderr)
        return
    batches = Batches(step * args.batch, args.batch, cute_mini.IMAGE_SIZE, args.crop, args.seed)
    with open(out / "log.csv", "a", newline="") as log:
        writer = csv.writer(log)
        started, last_save = time.time(), time.time()
        model.train()
        while step < args.steps:
            x = torch.as_tensor(next(batches)).to(device).contiguous(memory_format=torch.channels_last)
            lr = args.lr * min(1.0, (step + 1) / 500)  # warm-up
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                loss, parts, y = losses(model, x)
            optimizer_step(opt, loss, model.parameters())
            step += 1
            if step % args.log_every == 0:
                elapsed = time.time() - started
                writer.writerow([step, f"{float(loss):.5f}", f"{parts['l1']:.5f}", f"{parts['edge']:.5f}",
                                 f"{parts['latent_rms']:.3f}", f"{elapsed:.1f}"])
                log.flush()
                print(f"step {step}  loss {float(loss):.4f}  l1 {parts['l1']:.4f}  edge {parts['edge']:.4f}  "
                      f"z_rms {parts['latent_rms']:.2f}  {elapsed / 60:.1f} min", file=sys.stderr)
            if step % args.save_every == 0 or step == args.steps or time.time() - last_save > 600:
                save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
                last_save = time.time()
                save_preview(out / f"preview-{step:06d}.png", x, y)


def export(args) -> None:
    """The newest weights as a diffusers folder, with latent shift/scale measured on renders so the
    UNet sees unit-variance latents (cutecpp's decoder applies latents / scale + shift)."""
    import torch

    state = torch.load(TRAIN_DIR / "autoencoder" / "latest.pt", map_location="cpu", weights_only=True)
    model = make_model()
    model.load_state_dict(state["model"])
    model.eval()
    zs = []
    with torch.no_grad():
        for start in range(0, args.measure, 8):
            x = torch.from_numpy(render_batch(10_000_000 + start, 8, cute_mini.IMAGE_SIZE, cute_mini.IMAGE_SIZE))
            zs.append(model.encoder(x).numpy())
    z = np.concatenate(zs)
    shift, std = float(z.mean()), float(z.std())
    model.register_to_config(scaling_factor=1.0 / std, shift_factor=shift)
    model.save_pretrained(args.export)
    meta = {"step": int(state["step"]), "latent_mean": shift, "latent_std": std, "measured_on": len(z)}
    (Path(args.export) / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (measure first: it can be slower on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--export", metavar="DIR")
    p.add_argument("--measure", type=int, default=256, help="renders to measure the latent scale on (export)")
    args = p.parse_args()
    if args.export:
        export(args)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
