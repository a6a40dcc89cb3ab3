"""UNet speed and memory: cutecpp against diffusers/PyTorch on the same random weights.

    python tools/bench_unet.py [--json] [--shapes cute-mini,sd15] [--dtypes f32,f16,q8_0]
                               [--threads 2] [--runs 5] [--rounds 3] [--sdcpp SD_CLI]

Each engine and variant runs in its own subprocess (so peak RSS is its own),
with the same thread count, batch 1, fixed inputs, --rounds times in turn
(benchlib.py); the figure is the median of all its timed evaluations (--runs
per round, each after one warm-up). Ratios are PyTorch fp32 time /
cutecpp time and cutecpp RSS / PyTorch fp32 RSS, all from this one run: the
machines are noisy, so compare only figures printed together. --sdcpp adds
stable-diffusion.cpp on the same SD 1.5 weights (tools/sdcpp.py).

Weights are built once with a fixed seed and cached in ~/.cache/cutecpp/bench
(diffusers folder plus one bundle per dtype). Needs the test extra (torch,
diffusers); nothing is downloaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import benchlib
from benchlib import measure

from cutecpp.convert import WEIGHTS_FILE

CACHE = Path(os.environ.get("CUTECPP_BENCH_DIR", Path.home() / ".cache" / "cutecpp" / "bench"))
SDCPP_ENV = "CUTECPP_BENCH_SDCPP"  # the sd-cli path, for the sdcpp children

# name -> (diffusers UNet2DConditionModel config, latent side, context tokens)
SHAPES = {
    # DESIGN.md's default-model orientation: ~17M parameters, 16x32x32 latent, 12 tokens.
    "cute-mini": (
        dict(sample_size=32, in_channels=16, out_channels=16, block_out_channels=(64, 128, 256),
             layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
             up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
             cross_attention_dim=256, norm_num_groups=32, attention_head_dim=(2, 4, 8)),
        32, 12,
    ),
    # Stable Diffusion 1.5's UNet: 64x64x4 latent, 77x768 context.
    "sd15": (
        dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
             layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
             down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
        64, 77,
    ),
}

# cute-mini with cross-attention at its 32x32 level too (tools/add_attention.py, train --attention-level 0)
SHAPES["cute-mini-attn32"] = ({**SHAPES["cute-mini"][0], "down_block_types": ("CrossAttnDownBlock2D",) * 3,
                               "up_block_types": ("CrossAttnUpBlock2D",) * 3}, *SHAPES["cute-mini"][1:])


def inputs(shape: str):
    import numpy as np

    config, side, tokens = SHAPES[shape]
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((1, config["in_channels"], side, side)).astype(np.float32)
    context = rng.standard_normal((1, tokens, config["cross_attention_dim"])).astype(np.float32)
    return sample, np.array([500.0], np.float32), context


def prepare(shape: str, dtypes: list[str]) -> None:
    """The diffusers folder and one bundle per dtype, made once."""
    folder = CACHE / shape / "unet"
    if not (folder / WEIGHTS_FILE).exists():
        import torch
        from diffusers import UNet2DConditionModel

        print(f"[bench] building random {shape} weights in {folder}", file=sys.stderr)
        torch.manual_seed(0)
        UNet2DConditionModel(**SHAPES[shape][0]).save_pretrained(folder)
    from cutecpp.convert import convert_unet

    for dtype in dtypes:
        bundle = CACHE / shape / f"{dtype}.gguf"
        if not bundle.exists():
            print(f"[bench] converting {shape} to {dtype}", file=sys.stderr)
            convert_unet(folder, bundle, dtype, model_id=f"bench-{shape}-{dtype}")


def child(engine: str, shape: str, variant: str, threads: int, runs: int) -> dict:
    sample, timesteps, context = inputs(shape)
    if engine == "torch":
        import torch
        from diffusers import UNet2DConditionModel

        torch.set_num_threads(threads)
        unet = UNet2DConditionModel.from_pretrained(CACHE / shape / "unet").eval()
        x, t, c = (torch.from_numpy(a) for a in (sample, timesteps, context))
        if variant == "channels_last":
            unet = unet.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)

        def run():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
                unet(x, t, c)
    elif engine == "sdcpp":
        import sdcpp

        return sdcpp.run(os.environ[SDCPP_ENV], CACHE / shape / "sdcpp", variant, SHAPES[shape][1], threads, runs)
    else:
        import cutecpp

        ctx = cutecpp.Context(cutecpp.Model.load(CACHE / shape / f"{variant}.gguf"), threads=threads)

        def run():
            ctx.unet(sample, timesteps, context)

    return measure(engine, variant, run, runs)


def sdcpp_option(parser):
    parser.add_argument("--sdcpp", metavar="SD_CLI", help="also time stable-diffusion.cpp's sd-cli (sd15 only; "
                        "built outside this repo, tools/sdcpp.py)")
    parser.add_argument("--sdcpp-dtypes", default="f16,q8_0")

    def variants(shape, args):
        if not args.sdcpp or shape != "sd15" or args.child:
            return []
        os.environ[SDCPP_ENV] = str(Path(args.sdcpp).resolve())
        import sdcpp

        sdcpp.prepare(CACHE / shape / "sdcpp", CACHE / shape / "unet")
        return [("sdcpp", d) for d in args.sdcpp_dtypes.split(",")]
    return variants


if __name__ == "__main__":
    benchlib.main(__file__, __doc__, "shapes", "cute-mini,sd15", "f32,f16,q8_0", 5, prepare, child,
                  lambda shape, a: f"{shape} (batch 1, {a.threads} threads, median of {a.runs} x {a.rounds} rounds)",
                  sdcpp_option)
