"""Decoder speed and memory at 512x512: cutecpp against diffusers/PyTorch, same random weights.

    python tools/bench_decoders.py [--json] [--decoders cute-mini,tiny16,taesd,sd-vae] [--threads 2]
                                   [--runs 3] [--rounds 3]

  cute-mini  the product's decoder (TINY_AUTOENCODER in tools/cute_mini.py): AutoencoderTiny
             16x32x32 -> 512x512, 16 channels, one block per stage
  cute-mini-wide  the same wider at its small stages (128, 64, 32, 16, 16 channels from 32x32 up:
             tools/latent_decoder.py; what `fit_decoder.py train --widen` would ship)
  tiny16     AutoencoderTiny decoder 16x32x32 -> 512x512, 32 channels, one block per stage
             (the cute-mini plan in DESIGN.md)
  taesd      AutoencoderTiny with diffusers' defaults (TAESD): 4x64x64 -> 512x512
  sd-vae     AutoencoderKL with Stable Diffusion's config: 4x64x64 -> 512x512

Method as tools/bench_unet.py (child process per engine and variant, in turn
for --rounds rounds, median after a warm-up, ratios against PyTorch fp32 from the same run). Weights are
cached in ~/.cache/cutecpp/bench/decoders (a folder of their own: bench_unet.py's
cute-mini is the UNet).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import benchlib
from benchlib import measure
from cute_mini import LATENT_CHANNELS, LATENT_SIZE, TINY_AUTOENCODER

from cutecpp.convert import WEIGHTS_FILE

CACHE = Path(os.environ.get("CUTECPP_BENCH_DIR", Path.home() / ".cache" / "cutecpp" / "bench")) / "decoders"

# name -> (diffusers class, config, latent channels, latent side, cutecpp component)
DECODERS = {
    "cute-mini": ("AutoencoderTiny", TINY_AUTOENCODER, LATENT_CHANNELS, LATENT_SIZE, "tiny_decoder"),
    "cute-mini-wide": ("AutoencoderTiny", {**TINY_AUTOENCODER, "decoder_block_out_channels": (128, 64, 32, 16, 16)},
                       LATENT_CHANNELS, LATENT_SIZE, "tiny_decoder"),
    "tiny16": ("AutoencoderTiny", dict(latent_channels=16, decoder_block_out_channels=(32,) * 5,
                                       num_decoder_blocks=(1,) * 5, encoder_block_out_channels=(32,) * 5,
                                       num_encoder_blocks=(1,) * 5), 16, 32, "tiny_decoder"),
    "taesd": ("AutoencoderTiny", dict(), 4, 64, "tiny_decoder"),
    "sd-vae": ("AutoencoderKL", dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                     down_block_types=("DownEncoderBlock2D",) * 4,
                                     up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
                                     norm_num_groups=32, sample_size=512), 4, 64, "vae_decoder"),
}


def latents(name: str):
    import numpy as np

    _, _, channels, side, _ = DECODERS[name]
    return np.random.default_rng(0).standard_normal((1, channels, side, side)).astype(np.float32)


def prepare(name: str, dtypes: list[str]) -> None:
    cls, config, _, _, component = DECODERS[name]
    folder = CACHE / name / "vae"
    if not (folder / WEIGHTS_FILE).exists():
        import diffusers
        import torch

        print(f"[bench] building random {name} weights in {folder}", file=sys.stderr)
        torch.manual_seed(0)
        if cls == "AutoencoderTiny":  # its decoder's widths may change from stage to stage
            from latent_decoder import autoencoder_from_config

            autoencoder_from_config(dict(config)).save_pretrained(folder)
        else:
            getattr(diffusers, cls)(**config).save_pretrained(folder)
    from cutecpp.convert import convert

    for dtype in dtypes:
        bundle = CACHE / name / f"{dtype}.gguf"
        if not bundle.exists():
            print(f"[bench] converting {name} to {dtype}", file=sys.stderr)
            folders = {"tiny_decoder": folder} if component == "tiny_decoder" else {"vae": folder}
            convert(bundle, dtype, model_id=f"bench-{name}-{dtype}", **folders)


def child(engine: str, name: str, variant: str, threads: int, runs: int) -> dict:
    cls, _, _, _, component = DECODERS[name]
    z = latents(name)
    if engine == "torch":
        import diffusers
        import torch

        torch.set_num_threads(threads)
        if cls == "AutoencoderTiny":
            from latent_encoder import load_autoencoder

            vae = load_autoencoder(CACHE / name / "vae")
        else:
            vae = getattr(diffusers, cls).from_pretrained(CACHE / name / "vae").eval()
        x = torch.from_numpy(z)
        if variant == "channels_last":
            vae = vae.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)

        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
                vae.decode(x)
    else:
        import cutecpp

        ctx = cutecpp.Context(cutecpp.Model.load(CACHE / name / f"{variant}.gguf"), threads=threads)
        decode = ctx.tiny_decode if component == "tiny_decoder" else ctx.vae_decode
        # cutecpp's vae_decode divides by scaling_factor itself; diffusers' decode
        # does not, a difference of one multiply that does not matter here.

        def run():
            decode(z)

    return measure(engine, variant, run, runs)


if __name__ == "__main__":
    benchlib.main(__file__, __doc__, "decoders", ",".join(DECODERS), "f32,f16", 3, prepare, child,
                  lambda name, a: f"{name} decoder to 512x512 (batch 1, {a.threads} threads, "
                                  f"median of {a.runs} x {a.rounds} rounds)")
