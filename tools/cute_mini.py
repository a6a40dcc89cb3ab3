"""The cute-mini architecture: one place for the shapes that training, export, benchmarks and the
random stand-in bundle share (DESIGN.md, "The default model: cute-mini").

512x512 pictures <-> 16x32x32 latents (a tiny autoencoder, x16); a 4.4M-parameter UNet with
cross-attention at its two lower levels; an alignment module from the text encoder's 896-wide
states to a 256-wide context; rectified-flow sampling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Where every training tool keeps its checkpoints, logs and prepared data (CUTECPP_TRAIN_DIR moves it).
TRAIN_DIR = Path(os.environ.get("CUTECPP_TRAIN_DIR", Path.home() / ".cache" / "cutecpp" / "train"))

IMAGE_SIZE = 512
LATENT_CHANNELS = 16
LATENT_SIZE = 32
TEXT_ENCODER_LAYERS = 12  # blocks of Qwen2.5-Coder-0.5B kept (cutecpp.encoder_build)
TEXT_HIDDEN = 896
CONTEXT_DIM = 256

# Widths (32, 64, 128): 4.4M parameters, 43 training samples/s here with bf16 (measured with batch 32 on
# 2 cores), where (64, 128, 256) (16.9M, the DESIGN's orientation) trains at 20/s. A run from scratch
# starts narrow (0.1-0.3 were); the shipped 0.4 is 0.3 widened to (64, 128, 256) with
# `train_unet.py train --init ... --widen 2`, and runs and bundles record their own widths.
UNET: dict[str, Any] = dict(
    sample_size=LATENT_SIZE, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
    block_out_channels=(32, 64, 128), layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=CONTEXT_DIM, norm_num_groups=32, attention_head_dim=(2, 4, 8),
)

# diffusers' AutoencoderTiny: five stages, x2 nearest upsampling between them (x16 in all), one
# block per stage, uniformly 16 wide (diffusers 0.42 fails on a channel list that changes). This is the
# shipped decoder's shape; the latents are made by a wider training-only encoder (tools/latent_encoder.py).
TINY_AUTOENCODER: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS,
    encoder_block_out_channels=(16,) * 5, decoder_block_out_channels=(16,) * 5,
    num_encoder_blocks=(1,) * 5, num_decoder_blocks=(1,) * 5,
    upsampling_scaling_factor=2,
)

ALIGNMENT: dict[str, Any] = dict(in_dim=TEXT_HIDDEN, dim=CONTEXT_DIM, ctx_dim=CONTEXT_DIM, layers=2, heads=4,
                                 ff_mult=4, norm_eps=1e-5)

# Rectified flow (x_t = (1 - t) x0 + t noise, the UNet predicts noise - x0), flow-matching Euler; since
# 0.13 the first 5 of the 15 steps (sigma 1.0 to 0.883) unguided (docs/cute-mini-history.md, section 23).
SAMPLING: dict[str, Any] = dict(
    prediction="flow", num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
    timestep_spacing="linspace", steps_offset=0, flow_shift=3.0, default_sampler="flow_euler",
    default_steps=15, default_cfg=4.0, guidance_max_sigma=0.85,
)


def next_model_id(model_id: str) -> str:
    """The id after `model_id`: its last dotted number plus one ("cute-mini-0.9" -> "cute-mini-0.10")."""
    head, dot, last = model_id.rpartition(".")
    if not dot or not last.isdigit():
        raise ValueError(f"model id {model_id!r} does not end in a dotted number (like cute-mini-0.9)")
    return f"{head}.{int(last) + 1}"


def tree_bundle() -> Path:
    """The working tree's shipped bundle, `cutecpp/data/cute-mini.gguf` (not the installed package's)."""
    from cutecpp.info import DEFAULT_MODEL_FILE

    return Path(__file__).resolve().parents[1] / "cutecpp" / "data" / DEFAULT_MODEL_FILE


def next_ship_id(bundle: str | Path | None = None) -> str:
    """The id a new export gets by default: the one after the working tree's shipped bundle's id."""
    from bundle_weights import header_value

    path = Path(bundle or tree_bundle())
    if not path.is_file():
        raise SystemExit(f"no bundle at {path} to number the new export after: pass --model-id")
    return next_model_id(header_value(path, "cutecpp.model_id"))


def warn_if_installed_model_is_stale(model: str | Path | None) -> None:
    """The tools load the *installed* package's bundle when no --model is given; say so when the working
    tree's `cutecpp/data/cute-mini.gguf` differs from it (a new export not yet `pip install`ed)."""
    import filecmp
    import sys

    from cutecpp.info import default_model_path

    tree = tree_bundle()
    installed = default_model_path()
    if model is not None or installed is None or not tree.is_file() or tree.resolve() == installed.resolve():
        return
    if not filecmp.cmp(tree, installed, shallow=False):
        print(f"warning: using the installed {installed}, which differs from the working tree's {tree}; "
              "reinstall (pip install --no-deps .) or pass --model", file=sys.stderr)
