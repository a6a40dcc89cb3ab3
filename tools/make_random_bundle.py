#!/usr/bin/env python3
"""A cute-mini-shaped bundle with random weights: for benchmarks until the trained model ships.

    python tools/make_random_bundle.py -o ~/.cache/cutecpp/cute-mini-random.gguf [--dtype f32]
    cutecpp bench --model ~/.cache/cutecpp/cute-mini-random.gguf

Every component the pipeline needs (UNet, tiny decoder, alignment, sampling, the text encoder's
identity) with the shapes in tools/cute_mini.py; its pictures are noise, its timings are real.
Needs the test extra (torch, diffusers).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cute_mini  # noqa: E402
from alignment_ref import Alignment  # noqa: E402

from cutecpp.convert import DTYPES, convert  # noqa: E402
from cutecpp.encoder_build import QWEN_CODER_05B  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--dtype", choices=list(DTYPES), default="f32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from diffusers import AutoencoderTiny, UNet2DConditionModel

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        unet, tiny, align = Path(tmp, "unet"), Path(tmp, "tiny"), Path(tmp, "align")
        UNet2DConditionModel(**cute_mini.UNET).save_pretrained(unet)
        AutoencoderTiny(**cute_mini.TINY_AUTOENCODER).save_pretrained(tiny)
        Alignment(cute_mini.ALIGNMENT).save_pretrained(align)
        summary = convert(args.output, args.dtype, f"cute-mini-random-{args.seed}", unet=unet, tiny_decoder=tiny,
                          alignment=align, sampling=cute_mini.SAMPLING,
                          text_encoder={"sha256": QWEN_CODER_05B.sha256, "layers": cute_mini.TEXT_ENCODER_LAYERS},
                          name="cute-mini shape, random weights (benchmarks only)", license="MIT")
    print(summary.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
