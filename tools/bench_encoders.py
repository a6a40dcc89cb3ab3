"""Encoder speed and memory at 512x512: cutecpp against diffusers/PyTorch, same random weights.

    python tools/bench_encoders.py [--json] [--encoders cute-mini,taesd,sd-vae] [--threads 2]
                                   [--runs 3] [--rounds 3]

  cute-mini  the product's autoencoder (TINY_AUTOENCODER in tools/cute_mini.py), its encoder:
             AutoencoderTiny 512x512 -> 16x32x32, 16 channels, one block per stage
  taesd      AutoencoderTiny with diffusers' defaults (TAESD): 512x512 -> 4x64x64
  sd-vae     AutoencoderKL with Stable Diffusion's config: 512x512 -> 4x64x64 (the posterior's mean)

The sibling of tools/bench_decoders.py, same method (tools/benchlib.py: a child process per
engine and variant, in turn for --rounds rounds, median after a warm-up, ratios against
PyTorch fp32 from the same run, peak RSS per child). PyTorch runs `encode()`
(AutoencoderKL: `.latent_dist.mode()`), cutecpp `tiny_encode` / `vae_encode`, which also
apply the latent scaling (one multiply per latent value). Weights are cached in
~/.cache/cutecpp/bench/encoders; the bundles hold both halves (converted with encoders=True).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import benchlib
from benchlib import measure
from cute_mini import TINY_AUTOENCODER

CACHE = Path(os.environ.get("CUTECPP_BENCH_DIR", Path.home() / ".cache" / "cutecpp" / "bench")) / "encoders"
SIDE = 512

# name -> (diffusers class, config, cutecpp component)
ENCODERS = {
    "cute-mini": ("AutoencoderTiny", TINY_AUTOENCODER, "tiny_encoder"),
    "taesd": ("AutoencoderTiny", dict(), "tiny_encoder"),
    "sd-vae": ("AutoencoderKL", dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                     down_block_types=("DownEncoderBlock2D",) * 4,
                                     up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
                                     norm_num_groups=32, sample_size=512), "vae_encoder"),
}


def image():
    import numpy as np

    return np.random.default_rng(0).uniform(-1, 1, (1, 3, SIDE, SIDE)).astype(np.float32)


def prepare(name: str, dtypes: list[str]) -> None:
    cls, config, component = ENCODERS[name]
    folder = CACHE / name / "vae"
    if not (folder / "diffusion_pytorch_model.safetensors").exists():
        import diffusers
        import torch

        print(f"[bench] building random {name} weights in {folder}", file=sys.stderr)
        torch.manual_seed(0)
        getattr(diffusers, cls)(**config).save_pretrained(folder)
    from cutecpp.convert import convert

    for dtype in dtypes:
        bundle = CACHE / name / f"{dtype}.gguf"
        if not bundle.exists():
            print(f"[bench] converting {name} to {dtype}", file=sys.stderr)
            folders = {"tiny_decoder": folder} if component == "tiny_encoder" else {"vae": folder}
            convert(bundle, dtype, model_id=f"bench-{name}-{dtype}", encoders=True, **folders)


def child(engine: str, name: str, variant: str, threads: int, runs: int) -> dict:
    cls, _, component = ENCODERS[name]
    x = image()
    if engine == "torch":
        import diffusers
        import torch

        torch.set_num_threads(threads)
        vae = getattr(diffusers, cls).from_pretrained(CACHE / name / "vae").eval()
        t = torch.from_numpy(x)
        if variant == "channels_last":
            vae = vae.to(memory_format=torch.channels_last)
            t = t.to(memory_format=torch.channels_last)

        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
                out = vae.encode(t)
                return out.latents if cls == "AutoencoderTiny" else out.latent_dist.mode()
    else:
        import cutecpp

        ctx = cutecpp.Context(cutecpp.Model.load(CACHE / name / f"{variant}.gguf"), threads=threads)
        encode = ctx.tiny_encode if component == "tiny_encoder" else ctx.vae_encode

        def run():
            encode(x)

    return measure(engine, variant, run, runs)


if __name__ == "__main__":
    benchlib.main(__file__, __doc__, "encoders", ",".join(ENCODERS), "f32,f16", 3, prepare, child,
                  lambda name, a: f"{name} encoder from {SIDE}x{SIDE} (batch 1, {a.threads} threads, "
                                  f"median of {a.runs} x {a.rounds} rounds)")
