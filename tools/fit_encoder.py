#!/usr/bin/env python3
"""Give a shipped bundle's tiny decoder its encoder back, so that its UNet can be trained further when
the training cache (and with it the autoencoder that made the latents) is gone.

    python tools/fit_encoder.py train [--steps 3000]   # fit an encoder to the bundle's frozen decoder
    python tools/fit_encoder.py check                  # reconstruction and cycle error, held out
    python tools/fit_encoder.py export                 # -> tools/weights/cute-mini-encoder.safetensors
    python tools/fit_encoder.py assemble               # committed encoder + bundle decoder -> the
                                                       # autoencoder folder train_unet.py prepares with
    python tools/fit_encoder.py assemble --run -o DIR  # the same with the run's newest encoder, to score its
                                                       # ceiling: eval_quality.py score --renders
                                                       # --through-autoencoder DIR

A bundle stores only the decoder. `train` learns an encoder E for that fixed decoder D with two losses:
- reconstruction on rendered pictures (random 256-pixel crops): L1 + image-gradient L1 of D(E(x)) - x,
  the losses the autoencoder was trained with, the pixels of item boxes weighing --item-weight times
  (an item is a few percent of a picture and what the autoencoder loses most);
- cycle on pictures the bundle's own model drew: for latents z its UNet sampled, E(D(z)) should be z
  (L1 per channel, in units of the channel's standard deviation). This ties E to the latent space the
  UNet already knows, so that training can continue from the bundle's UNet instead of starting over.
  The pairs are drawn first by cutecpp itself (`pairs.npz`, ~0.6 s each here) and kept.

E is a `latent_encoder.LatentEncoder` (training-only, so it can be far wider than the decoder: width per
stage `--channels`, blocks `--blocks`). A new run starts from the committed encoder, widened to that
shape so that it computes exactly what the committed one does (`latent_encoder.widen_from`).

`assemble` writes an AutoencoderTiny folder (scaling_factor 1, shift_factor 0: raw latents) with the
encoder beside it as `latent_encoder.safetensors` (`latent_encoder.load_autoencoder` reads both) and, if
absent, `latents/channel_stats.json` holding the bundle's per-channel statistics, so that prepared
latents are normalised exactly as the shipped UNet expects: `train_unet.py train --init BUNDLE` then
resumes the shipped weights. State: ~/.cache/cutecpp/train/encoder-fit/ (CUTECPP_TRAIN_DIR moves it).
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
import latent_decoder  # noqa: E402
import latent_encoder  # noqa: E402
from bundle_weights import component_config, read_state_dict  # noqa: E402

TRAIN_DIR = cute_mini.TRAIN_DIR
REPO = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO / "cutecpp" / "data" / "cute-mini.gguf"
ENCODER_FILE = REPO / "tools" / "weights" / "cute-mini-encoder.safetensors"
OUT = TRAIN_DIR / "encoder-fit"
# The shape of encoders saved before LatentEncoder (diffusers' EncoderTiny as cute_mini builds it).
UNIFORM_SHAPE = dict(channels=cute_mini.TINY_AUTOENCODER["encoder_block_out_channels"],
                     blocks=cute_mini.TINY_AUTOENCODER["num_encoder_blocks"])


def raw_latent_stats(bundle: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the decoder's raw latents: the UNet's latent z is raw = z * std + mean."""
    cfg = component_config(bundle, "tiny_decoder")
    scale, shift = float(cfg["scaling_factor"]), float(cfg["shift_factor"])
    c = int(cfg["latent_channels"])
    mean = np.asarray(cfg.get("latents_mean", [0.0] * c), np.float32)
    std = np.asarray(cfg.get("latents_std", [1.0] * c), np.float32)
    return mean + shift, std / scale


def make_autoencoder(bundle: Path, encoder=None):
    """An AutoencoderTiny with the bundle's decoder (frozen; its width per stage as the bundle has it) and
    `encoder` (default: a fresh EncoderTiny)."""
    from diffusers import AutoencoderTiny

    ae = latent_decoder.swap_into(AutoencoderTiny(**cute_mini.TINY_AUTOENCODER),
                                  latent_decoder.from_autoencoder_config(component_config(bundle, "tiny_decoder")))
    ae.decoder.load_state_dict(read_state_dict(bundle, "tiny_decoder", ae.decoder, "decoder."))
    ae.decoder.requires_grad_(False)
    if encoder is not None:
        ae.encoder = encoder
    return ae


def committed_encoder(path: Path | None = None) -> latent_encoder.LatentEncoder:
    """The committed encoder (ENCODER_FILE). Files written before LatentEncoder hold a plain EncoderTiny's
    weights, which a LatentEncoder of the same uniform shape takes as they are."""
    return latent_encoder.load(path or ENCODER_FILE, default=UNIFORM_SHAPE)


def _run_state() -> dict:
    """The fit run's newest checkpoint."""
    import torch

    return torch.load(OUT / "latest.pt", map_location="cpu", weights_only=True)


def _encoder_from_checkpoint(st: dict) -> latent_encoder.LatentEncoder:
    enc = latent_encoder.LatentEncoder(**st.get("encoder_config", UNIFORM_SHAPE))  # older runs: EncoderTiny
    enc.load_state_dict(st["encoder"])
    return enc


# --- pairs -----------------------------------------------------------------------------------


def draw_pairs(bundle: Path, n: int, threads: int, path: Path | None = None,
               first: int = 20_000_000) -> tuple[np.ndarray, np.ndarray]:
    """n (picture uint8 [n, 512, 512, 3], raw latent float32 [n, C, h, w]) the bundle's model drew for
    the prompts of training pictures first, first + 1, ... (seed i for the i-th); kept in `path`
    (default OUT/pairs.npz) and extended when more are asked for."""
    from make_dataset import labels

    import cutecpp
    from cutecpp.image import to_image

    path = path or OUT / "pairs.npz"
    pictures, latents = np.zeros((0, 512, 512, 3), np.uint8), np.zeros((0,), np.float32)
    if path.exists():
        with np.load(path) as f:
            pictures, latents = f["pictures"], f["latents"]
    if len(pictures) >= n:
        return pictures[:n], latents[:n]
    mean, std = raw_latent_stats(bundle)
    pipe = cutecpp.Pipeline.load(bundle, threads=threads, cache=False)
    ctx = pipe.context
    nothing = ctx.align(np.zeros((1, pipe.encoder.hidden_size), np.float32))
    pics, zs = list(pictures), list(latents)
    started = time.time()
    for i in range(len(pics), n):
        cond = ctx.align(pipe.encoder.encode(labels(first + i)["encoder_text"].split()))
        z = ctx.sample(cond, np.repeat(nothing, len(cond), axis=0), seed=i)
        pics.append(np.asarray(to_image(pipe._decode(z[None])), np.uint8))
        zs.append(z * std[:, None, None] + mean[:, None, None])
        if (i + 1) % 64 == 0 or i + 1 == n:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, pictures=np.stack(pics), latents=np.stack(zs).astype(np.float32))
            os.replace(tmp, path)
            print(f"pairs {i + 1}/{n} ({(time.time() - started) / 60:.1f} min)", file=sys.stderr)
    return np.stack(pics), np.stack(zs).astype(np.float32)


# --- train -----------------------------------------------------------------------------------


def train(args) -> None:
    import torch
    from train_autoencoder import Batches, image_losses, optimizer_step, save_checkpoint, warmup_then_decay

    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    pictures, latents = draw_pairs(args.bundle, args.pairs, args.threads)
    _, std = raw_latent_stats(args.bundle)
    inv_std = torch.from_numpy(1.0 / std)[None, :, None, None]
    ckpt, step, st = OUT / "latest.pt", 0, None
    if ckpt.exists():
        st = _run_state()
        encoder, step = _encoder_from_checkpoint(st), int(st["step"])
        print(f"resumed at step {step} ({encoder.config})", file=sys.stderr)
    else:
        encoder = latent_encoder.widen_from(committed_encoder(), args.channels, args.blocks, seed=args.seed)
        print(f"new run from {ENCODER_FILE.name}, widened to {encoder.config}", file=sys.stderr)
    ae = make_autoencoder(args.bundle, encoder)
    ae.train()
    opt = torch.optim.AdamW(ae.encoder.parameters(), lr=args.lr, weight_decay=0.0)
    if st is not None:
        opt.load_state_dict(st["opt"])
    if step >= args.steps:
        print(f"already at step {step} >= {args.steps}", file=sys.stderr)
        return
    batches = Batches(step * args.batch, args.batch, cute_mini.IMAGE_SIZE, args.crop, args.seed, items=True)
    rng = np.random.default_rng((args.seed, step))
    started, last_save = time.time(), time.time()
    with open(OUT / "log.csv", "a", newline="") as log:
        writer = csv.writer(log)
        while step < args.steps:
            x, items = (torch.as_tensor(a) for a in next(batches))
            pick = rng.integers(0, len(pictures), args.cycle_batch)
            xg = torch.from_numpy(pictures[pick].astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0)
            zg = torch.from_numpy(latents[pick])
            for g in opt.param_groups:
                g["lr"] = warmup_then_decay(args.lr, step, args.steps, warmup=200)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                y = ae.decoder(ae.encoder(x))
                zc = ae.encoder(xg)
            l1, edge = image_losses(y.float(), x, 1 + (args.item_weight - 1) * items)
            cycle = ((zc.float() - zg) * inv_std).abs().mean()
            loss = l1 + edge + args.cycle_weight * cycle
            optimizer_step(opt, loss, ae.encoder.parameters())
            step += 1
            if step % args.log_every == 0:
                elapsed = time.time() - started
                writer.writerow([step, f"{loss.item():.5f}", f"{l1.item():.5f}", f"{edge.item():.5f}",
                                 f"{cycle.item():.5f}", f"{elapsed:.1f}"])
                log.flush()
                print(f"step {step}  l1 {l1.item():.4f}  edge {edge.item():.4f}  cycle {cycle.item():.4f} std  "
                      f"{elapsed / 60:.1f} min", file=sys.stderr)
            if step % args.save_every == 0 or step == args.steps or time.time() - last_save > 600:
                save_checkpoint({"encoder": ae.encoder.state_dict(), "encoder_config": ae.encoder.config,
                                 "opt": opt.state_dict(), "step": step}, ckpt)
                last_save = time.time()


def check(args) -> None:
    """How well the newest encoder fits: reconstruction L1 on renders it never trained on, and the
    cycle error on pictures drawn for other prompts and seeds than the training pairs."""
    import torch
    from train_autoencoder import render_batch

    torch.set_num_threads(args.threads)
    encoder = committed_encoder(args.encoder) if args.encoder else _encoder_from_checkpoint(_run_state())
    ae = make_autoencoder(args.bundle, encoder).eval()
    _, std = raw_latent_stats(args.bundle)
    l1s = []
    with torch.no_grad():
        for start in range(0, args.n, 8):
            x = torch.from_numpy(render_batch(10_000_000 + start, 8, cute_mini.IMAGE_SIZE, cute_mini.IMAGE_SIZE))
            l1s.append(float((ae.decoder(ae.encoder(x)) - x).abs().mean()))
        # other prompts than the training pairs' (which start at 20,000,000)
        pictures, latents = draw_pairs(args.bundle, args.pairs, args.threads, OUT / "check-pairs.npz", 30_000_000)
        x = torch.from_numpy(pictures.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0)
        z = ae.encoder(x).numpy()
    cycle = float(np.abs((z - latents) / std[None, :, None, None]).mean())
    print(json.dumps({"renders": args.n, "reconstruction_l1": round(float(np.mean(l1s)), 4),
                      "pairs": args.pairs, "cycle_l1_in_std": round(cycle, 4)}))


# --- export / assemble -----------------------------------------------------------------------


def export(args) -> None:
    """The fitted encoder (float32 safetensors) into the repository, with what it was fitted to."""
    import hashlib

    st = _run_state()
    ENCODER_FILE.parent.mkdir(parents=True, exist_ok=True)
    meta = {"step": str(st["step"]), "decoder_of": Path(args.bundle).name,
            "bundle_sha256": hashlib.sha256(Path(args.bundle).read_bytes()).hexdigest()}
    latent_encoder.save(_encoder_from_checkpoint(st), ENCODER_FILE, meta)
    print(json.dumps({"output": str(ENCODER_FILE), **meta}))


def assemble(args) -> None:
    """An AutoencoderTiny folder: the bundle's decoder, raw latents, and the committed encoder beside them
    (the folder's own EncoderTiny is left at zero: latent_encoder.load_autoencoder replaces it)."""
    import torch

    ae = make_autoencoder(args.bundle)
    with torch.no_grad():
        for p in ae.encoder.parameters():
            p.zero_()
    ae.register_to_config(scaling_factor=1.0, shift_factor=0.0)
    ae.save_pretrained(args.output)
    if args.run:  # the run's newest encoder, e.g. to score its ceiling before exporting it
        st = _run_state()
        encoder, meta = _encoder_from_checkpoint(st), {"step": str(st["step"]), "from": "fit_encoder run"}
    else:
        encoder, meta = committed_encoder(), {"from": ENCODER_FILE.name}
    latent_encoder.save(encoder, Path(args.output, latent_encoder.ENCODER_FILE_NAME), meta)
    mean, std = raw_latent_stats(args.bundle)
    stats = TRAIN_DIR / "latents" / "channel_stats.json"
    if not stats.exists():
        stats.parent.mkdir(parents=True, exist_ok=True)
        stats.write_text(json.dumps({"mean": [round(float(v), 6) for v in mean],
                                     "std": [round(float(v), 6) for v in std],
                                     "measured_on": f"the decoder statistics of {Path(args.bundle).name}"}) + "\n")
    print(json.dumps({"output": str(args.output), "channel_stats": str(stats)}))


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "check", "export", "assemble"):
        s = sub.add_parser(name)
        s.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
        if name == "train":
            s.add_argument("--steps", type=int, default=3000)
            s.add_argument("--channels", type=int_list, default=(16, 16, 32, 64, 128),
                           help="a new run's width per stage (comma-separated)")
            s.add_argument("--blocks", type=int_list, default=(1, 1, 1, 1, 2), help="a new run's blocks per stage")
            s.add_argument("--item-weight", type=float, default=4.0,
                           help="weight of item-box pixels in the reconstruction loss")
            s.add_argument("--pairs", type=int, default=512, help="pictures drawn by the bundle's model")
            s.add_argument("--batch", type=int, default=8, help="rendered crops per step")
            s.add_argument("--cycle-batch", type=int, default=2, help="drawn pictures per step")
            s.add_argument("--cycle-weight", type=float, default=0.5)
            s.add_argument("--crop", type=int, default=256)
            s.add_argument("--lr", type=float, default=1e-3)
            s.add_argument("--threads", type=int, default=2)
            s.add_argument("--bf16", action="store_true")
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--log-every", type=int, default=20)
            s.add_argument("--save-every", type=int, default=250)
        if name == "check":
            s.add_argument("--n", type=int, default=64, help="held-out renders")
            s.add_argument("--pairs", type=int, default=16, help="fresh pictures drawn by the bundle's model")
            s.add_argument("--encoder", type=Path, default=None,
                           help="check this encoder file (e.g. the committed one) instead of the run's newest")
            s.add_argument("--threads", type=int, default=2)
        if name == "assemble":
            s.add_argument("-o", "--output", type=Path, default=TRAIN_DIR / "autoencoder-export")
            s.add_argument("--run", action="store_true",
                           help="the fit run's newest encoder instead of the committed one")
    args = p.parse_args()
    {"train": train, "check": check, "export": export, "assemble": assemble}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
