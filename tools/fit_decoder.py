#!/usr/bin/env python3
"""Fine-tune a shipped bundle's tiny decoder against the committed training encoder, which stays frozen:
the latent space stays the one the bundle's UNet was trained on, so the UNet ships unchanged and only
the decoder learns to draw more of what the latents hold (above all the accessories: through the
committed encoder and 0.10's decoder the judge found 81 % of the asked items on held-out renders,
against 92 % on the renders themselves; 0.11's decoder is this tool's, docs/cute-mini.md).

    python tools/fit_decoder.py train [--steps 3000]     # fine-tune (or continue) the bundle's decoder
    python tools/fit_decoder.py export -o X.gguf         # the bundle with the run's newest decoder
    python tools/fit_encoder.py assemble --bundle X.gguf -o DIR    # then its ceiling:
    python tools/eval_quality.py score --renders --through-autoencoder DIR --judge tools/judge/judge.pt

Loss: L1 + image-gradient L1 of D(E(x)) - x on random crops of rendered pictures, the pixels of item boxes
weighing --item-weight times (tools/train_autoencoder.py's losses, as tools/fit_encoder.py uses them). The
decoder keeps its architecture, so a picture costs what it did, unless a new run is given `--widen C0,...`
(widths per stage, from the latents' 32x32 up): then it starts as the bundle's decoder widened so that it
computes the same pictures (tools/latent_decoder.py) and trains the new channels too. State:
~/.cache/cutecpp/train/decoder-fit/ (`latest.pt`: decoder, its widths, optimizer, step and the bundle it
started from; `log.csv`); CUTECPP_TRAIN_DIR moves it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cute_mini  # noqa: E402
import fit_encoder  # noqa: E402
import latent_decoder  # noqa: E402
from bundle_weights import component_config, header_value  # noqa: E402

OUT = cute_mini.TRAIN_DIR / "decoder-fit"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _run_state() -> dict:
    import torch

    return torch.load(OUT / "latest.pt", map_location="cpu", weights_only=True)


def _decoder_config(st: dict, bundle: Path) -> dict:
    """The run's LatentDecoder config (runs saved before --widen: the bundle's decoder, as they started)."""
    if "decoder_config" in st:
        return st["decoder_config"]
    return latent_decoder.from_autoencoder_config(component_config(bundle, "tiny_decoder")).config


def train(args) -> None:
    import torch
    from train_autoencoder import Batches, image_losses, optimizer_step, save_checkpoint, warmup_then_decay

    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    ckpt, step, bundle_sha = OUT / "latest.pt", 0, _sha256(args.bundle)
    st = _run_state() if ckpt.exists() else None
    if st is not None and st["bundle_sha256"] != bundle_sha:
        raise SystemExit(f"{ckpt} fine-tunes the decoder of another bundle (sha256 {st['bundle_sha256'][:12]}...) "
                         f"than {args.bundle}: move {OUT} away to start from this one")
    encoder = fit_encoder.committed_encoder(args.encoder).eval().requires_grad_(False)
    if st is not None:
        decoder = latent_decoder.LatentDecoder(**_decoder_config(st, args.bundle))
        decoder.load_state_dict(st["decoder"])
        if args.widen is not None and decoder.config["channels"] != list(args.widen):
            raise SystemExit(f"{ckpt}'s decoder is {decoder.config['channels']} wide: --widen applies to a new run")
    else:
        decoder = fit_encoder.make_autoencoder(args.bundle).decoder
        if args.widen is not None:  # computes what the bundle's decoder does; training then uses the width
            decoder = latent_decoder.widen_from(decoder, args.widen, seed=args.seed)
    decoder.requires_grad_(True).train()
    opt = torch.optim.AdamW(decoder.parameters(), lr=args.lr, weight_decay=0.0)
    if st is not None:
        opt.load_state_dict(st["opt"])
        step = int(st["step"])
        print(f"resumed at step {step}", file=sys.stderr)
    else:
        print(f"new run from the decoder of {args.bundle}, widths {decoder.config['channels']}", file=sys.stderr)
    if step >= args.steps:
        print(f"already at step {step} >= {args.steps}", file=sys.stderr)
        return
    batches = Batches(step * args.batch, args.batch, cute_mini.IMAGE_SIZE, args.crop, args.seed, items=True)
    started, last_save = time.time(), time.time()
    with open(OUT / "log.csv", "a", newline="") as log:
        writer = csv.writer(log)
        while step < args.steps:
            x, items = (torch.as_tensor(a) for a in next(batches))
            for g in opt.param_groups:
                g["lr"] = warmup_then_decay(args.lr, step, args.steps, warmup=100)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                with torch.no_grad():
                    z = encoder(x)
                y = decoder(z)
            l1, edge = image_losses(y.float(), x, 1 + (args.item_weight - 1) * items)
            loss = l1 + edge
            optimizer_step(opt, loss, decoder.parameters())
            step += 1
            if step % args.log_every == 0:
                elapsed = time.time() - started
                writer.writerow([step, f"{loss.item():.5f}", f"{l1.item():.5f}", f"{edge.item():.5f}",
                                 f"{elapsed:.1f}"])
                log.flush()
                print(f"step {step}  l1 {l1.item():.4f}  edge {edge.item():.4f}  {elapsed / 60:.1f} min",
                      file=sys.stderr)
            if step % args.save_every == 0 or step == args.steps or time.time() - last_save > 600:
                save_checkpoint({"decoder": decoder.state_dict(), "decoder_config": decoder.config,
                                 "opt": opt.state_dict(), "step": step, "bundle_sha256": bundle_sha,
                                 "item_weight": args.item_weight}, ckpt)
                last_save = time.time()


def decoder_folder(bundle: Path, decoder: dict, decoder_config: dict, folder: Path) -> Path:
    """An AutoencoderTiny folder as the converter reads it: the bundle's latent statistics (so the UNet's
    latents are read as before) and the given decoder (`LatentDecoder` config and weights)."""
    from diffusers import AutoencoderTiny

    ae = latent_decoder.swap_into(AutoencoderTiny(**cute_mini.TINY_AUTOENCODER),
                                  latent_decoder.LatentDecoder(**decoder_config))
    ae.decoder.load_state_dict(decoder)
    cfg = component_config(bundle, "tiny_decoder")
    ae.register_to_config(**{k: cfg[k] for k in ("scaling_factor", "shift_factor", "latents_mean", "latents_std")
                             if k in cfg})
    ae.save_pretrained(folder)
    return folder


def export(args) -> None:
    """The bundle given (UNet and alignment as they are, read back exactly) with the run's decoder."""
    from train_unet import bundle_models

    from cutecpp.convert import convert
    from cutecpp.encoder_build import QWEN_CODER_05B

    st = _run_state()
    if st["bundle_sha256"] != _sha256(args.bundle):
        raise SystemExit(f"the run in {OUT} fine-tuned the decoder of another bundle than {args.bundle}")
    _, unet, align = bundle_models(args.bundle)
    model_id = args.model_id or cute_mini.next_ship_id()
    with tempfile.TemporaryDirectory() as tmp:
        unet.save_pretrained(Path(tmp, "unet"))
        align.save_pretrained(Path(tmp, "align"))
        decoder = decoder_folder(args.bundle, st["decoder"], _decoder_config(st, args.bundle), Path(tmp, "decoder"))
        summary = convert(args.output, args.dtype, model_id, unet=Path(tmp, "unet"), tiny_decoder=decoder,
                          alignment=Path(tmp, "align"), sampling=cute_mini.SAMPLING,
                          text_encoder={"sha256": QWEN_CODER_05B.sha256, "layers": cute_mini.TEXT_ENCODER_LAYERS},
                          name=f"cute-mini ({header_value(args.bundle, 'cutecpp.model_id')}'s UNet, "
                               f"decoder fine-tuned {st['step']} steps)",
                          license="MIT")
    print(summary.table())
    print(json.dumps({"decoder_step": int(st["step"]), "output": str(args.output), "model_id": model_id}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "export"):
        s = sub.add_parser(name)
        s.add_argument("--bundle", type=Path, default=fit_encoder.DEFAULT_BUNDLE)
        if name == "train":
            s.add_argument("--steps", type=int, default=3000)
            s.add_argument("--encoder", type=Path, default=None,
                           help="the frozen encoder's file (default: the committed one, tools/weights/)")
            s.add_argument("--widen", type=fit_encoder.int_list, default=None, metavar="C0,C1,...",
                           help="a new run's decoder widths per stage (from 32x32 up), at least the bundle's: "
                                "starts computing what the bundle's decoder does (tools/latent_decoder.py)")
            s.add_argument("--item-weight", type=float, default=4.0,
                           help="weight of item-box pixels in the reconstruction loss")
            s.add_argument("--batch", type=int, default=8, help="rendered crops per step")
            s.add_argument("--crop", type=int, default=256)
            s.add_argument("--lr", type=float, default=1e-4)
            s.add_argument("--threads", type=int, default=2)
            s.add_argument("--bf16", action="store_true")
            s.add_argument("--seed", type=int, default=0)
            s.add_argument("--log-every", type=int, default=20)
            s.add_argument("--save-every", type=int, default=250)
        if name == "export":
            s.add_argument("-o", "--output", type=Path, required=True)
            s.add_argument("--dtype", default="f16")
            s.add_argument("--model-id", default=None,
                           help="default: the one after the shipped bundle's (cute-mini-0.10 -> cute-mini-0.11)")
    args = p.parse_args()
    {"train": train, "export": export}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
