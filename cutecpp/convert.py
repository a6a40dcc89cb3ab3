"""Converts diffusers model folders into one cutecpp bundle (docs/bundle-format.md).

A UNet2DConditionModel folder becomes the `unet` component, an AutoencoderTiny folder the
`tiny_decoder` and an AutoencoderKL folder the `vae_decoder` (the decoder halves; with
`encoders=True` also their encoder halves, `tiny_encoder` and `vae_encoder`, for img2img); a
folder written by tools/alignment_ref.py's `Alignment.save_pretrained` (the same layout:
config.json + diffusion_pytorch_model.safetensors) becomes the `alignment` component.

Everything the C++ loader would later refuse is refused here first, with the key
or tensor named, and the written file is loaded back with the real loader before
it replaces the output: a bundle this module produces is one cutecpp accepts.
Only numpy and gguf are needed (no torch, no safetensors package), so models can
be converted on the target board itself.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, GGUFWriter, Keys
from gguf.quants import quantize

from .bundle import FORMAT_VERSION, tensor_name
from .errors import CutecppError
from .model import Model

Q = GGMLQuantizationType
U32, STR, BOOL, ARR = GGUFValueType.UINT32, GGUFValueType.STRING, GGUFValueType.BOOL, GGUFValueType.ARRAY
F32 = GGUFValueType.FLOAT32
KeyValues = dict[str, tuple[GGUFValueType, Any, GGUFValueType | None]]

DTYPES = {"f32": Q.F32, "f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


class ConvertError(ValueError):
    """A checkpoint, config or option the converter refuses; the message names the file, key or tensor."""


# --- safetensors, read with numpy alone --------------------------------------------------------

# BF16 has no numpy dtype: it is read as uint16 and widened to float32 below.
SAFETENSORS_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


@dataclass(frozen=True)
class _Entry:
    """One tensor of a safetensors header, checked for internal consistency."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file, in header order.

    F32, F16 and F64 arrays are read-only views of a memory map, so a multi-gigabyte
    checkpoint is not read into memory before conversion; BF16 becomes float32.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise ConvertError(f"{path}: {size} bytes is too short for a safetensors file")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    header_len = int.from_bytes(data[:8].tobytes(), "little")
    if header_len > size - 8:
        raise ConvertError(f"{path}: header length {header_len} exceeds the file ({size} bytes): "
                           "not a safetensors file")
    entries = [_entry(path, name, spec) for name, spec in _header(path, data[8:8 + header_len]).items()
               if name != "__metadata__"]
    body = data[8 + header_len:]
    _check_layout(path, entries, body.size)
    return {e.name: _array(body, e) for e in entries}


def _header(path: Path, raw: np.ndarray) -> dict[str, Any]:
    """The JSON header; anything that is not a JSON object means a corrupt or foreign file."""
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except ValueError as exc:  # JSON or UTF-8 decoding
        raise ConvertError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise ConvertError(f"{path}: corrupt safetensors header (not a JSON object)")
    return header


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(path: Path, name: str, spec: Any) -> _Entry:
    """Checks one header entry: known dtype, sane shape, offsets that span exactly the tensor's bytes."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(spec, dict) or not {"dtype", "shape", "data_offsets"} <= spec.keys():
        raise ConvertError(f"{where}: header entry needs dtype, shape and data_offsets, got {spec!r}")
    dtype, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise ConvertError(f"{where}: dtype {dtype!r} is not supported (only {', '.join(SAFETENSORS_DTYPES)})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ConvertError(f"{where}: bad shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise ConvertError(f"{where}: bad data_offsets {offsets!r}")
    needed = math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != needed:
        raise ConvertError(f"{where}: data_offsets {offsets} hold {offsets[1] - offsets[0]} bytes, "
                           f"but {dtype} {shape} needs {needed}")
    return _Entry(name, dtype, tuple(shape), offsets[0], offsets[1])


def _check_layout(path: Path, entries: list[_Entry], body_size: int) -> None:
    """Tensors must tile the data section exactly: an overlap, a gap or a short file means corruption."""
    end = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != end:
            raise ConvertError(f"{path}: tensor {e.name!r} starts at data offset {e.begin}, expected {end} "
                               "(overlapping or non-contiguous tensors)")
        end = e.end
    if end != body_size:
        raise ConvertError(f"{path}: the tensors cover {end} data bytes but the file holds {body_size} "
                           f"({'truncated' if end > body_size else 'trailing bytes'})")


def _array(body: np.ndarray, e: _Entry) -> np.ndarray:
    raw = body[e.begin:e.end].view(SAFETENSORS_DTYPES[e.dtype]).reshape(e.shape)
    if e.dtype == "BF16":  # bfloat16 is the high half of a float32
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw


# --- the UNet config ---------------------------------------------------------------------------

# UNet2DConditionModel.__init__ defaults in diffusers 0.42 (checked by the tests): a key
# missing from config.json means this value, exactly as in diffusers' from_config.
UNET_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 4, "out_channels": 4, "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "downsample_padding": 1, "mid_block_scale_factor": 1, "dropout": 0.0, "act_fn": "silu",
    "norm_num_groups": 32, "norm_eps": 1e-5, "cross_attention_dim": 1280, "transformer_layers_per_block": 1,
    "reverse_transformer_layers_per_block": None, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "attention_head_dim": 8, "num_attention_heads": None, "dual_cross_attention": False,
    "use_linear_projection": False, "class_embed_type": None, "addition_embed_type": None,
    "addition_time_embed_dim": None, "num_class_embeds": None, "upcast_attention": False,
    "resnet_time_scale_shift": "default", "resnet_skip_time_act": False, "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional", "time_embedding_dim": None, "time_embedding_act_fn": None,
    "timestep_post_act": None, "time_cond_proj_dim": None, "conv_in_kernel": 3, "conv_out_kernel": 3,
    "projection_class_embeddings_input_dim": None, "attention_type": "default", "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None, "cross_attention_norm": None, "addition_embed_type_num_heads": 64,
}
# Settings that do not change the computed network at inference in fp32 (dropout is off; the
# addition-embedding heads exist only with an addition embedding, refused below; upcasting only
# changes the precision of the attention scores), so any value is accepted.
UNET_IGNORED = {"dropout", "addition_embed_type_num_heads", "upcast_attention"}
# Settings written to the bundle, each validated where it is read in unet_keys().
UNET_WRITTEN = {
    "sample_size", "in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types",
    "layers_per_block", "mid_block_type", "attention_head_dim", "num_attention_heads", "cross_attention_dim",
    "norm_num_groups", "norm_eps", "use_linear_projection", "flip_sin_to_cos", "freq_shift",
    "transformer_layers_per_block",
}
# Everything else selects a feature the C++ UNet does not implement unless left at its default.
UNET_FIXED = UNET_DEFAULTS.keys() - UNET_IGNORED - UNET_WRITTEN

DOWN_BLOCKS = {"CrossAttnDownBlock2D", "DownBlock2D"}
UP_BLOCKS = {"CrossAttnUpBlock2D", "UpBlock2D"}
MID_BLOCKS = {"UNetMidBlock2DCrossAttn", None}
MAX_TRANSFORMER_LAYERS = 8  # transformer blocks in one attention, as the C++ loader's kMaxTransformerLayers
MAX_TRANSFORMER_BLOCKS = 128  # transformer blocks in the whole UNet, as the C++ loader's kMaxTransformerBlocks


def _settings(config: dict[str, Any], class_name: str, defaults: dict[str, Any], fixed: set[str],
              also_known: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The full settings of a diffusers config.json of `class_name`, defaults filled in.

    Refuses another class, unknown keys (a key from a newer diffusers may select a feature
    that this converter would otherwise silently drop) and a `fixed` key away from its
    default. `also_known` are keys diffusers writes beyond the constructor's (ignored).
    """
    _check_class(config, class_name)
    unknown = sorted(k for k in config if not k.startswith("_") and k not in defaults and k not in also_known)
    if unknown:
        raise ConvertError(f"unknown {class_name} setting(s) {', '.join(unknown)}")
    settings = {**defaults, **{k: v for k, v in config.items() if not k.startswith("_")}}
    for key in sorted(fixed):
        if _canonical(key, settings[key]) != defaults[key]:
            raise ConvertError(f"{key} = {settings[key]!r} is not supported by cutecpp "
                               f"(only the diffusers default {defaults[key]!r})")
    return settings


def _check_class(config: dict[str, Any], class_name: str) -> None:
    """A config.json naming another class is another model's folder (a missing name is accepted)."""
    if config.get("_class_name", class_name) != class_name:
        article = "an" if class_name[0] in "AEIOU" else "a"
        raise ConvertError(f"_class_name = {config['_class_name']!r}: expected {article} {class_name} config")


def unet_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The full settings of a diffusers UNet config.json, defaults filled in; refuses what cutecpp lacks."""
    settings = _settings(config, "UNet2DConditionModel", UNET_DEFAULTS, UNET_FIXED)
    _check_blocks(settings)
    return settings


def _canonical(key: str, value: Any) -> Any:
    """Spellings diffusers treats as its default: per-level False lists, and False for 'follow the others'."""
    if key == "only_cross_attention" and isinstance(value, (list, tuple)) and not any(value):
        return False
    if key == "mid_block_only_cross_attention" and value is False:
        return None
    return value


def _check_blocks(s: dict[str, Any]) -> None:
    """The block kinds are written settings with a fixed list of values, one per level."""
    levels = len(_list("block_out_channels", s["block_out_channels"]))
    for key, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        if len(_list(key, s[key])) != levels:
            raise ConvertError(f"{key} has {len(s[key])} entries for {levels} levels (block_out_channels)")
        for block in s[key]:
            if not isinstance(block, str) or block not in allowed:
                raise ConvertError(f"{key}: {block!r} is not supported by cutecpp "
                                   f"(only {' or '.join(sorted(allowed))})")
    if not isinstance(s["mid_block_type"], (str, type(None))) or s["mid_block_type"] not in MID_BLOCKS:
        raise ConvertError(f"mid_block_type = {s['mid_block_type']!r} is not supported by cutecpp "
                           "(only UNetMidBlock2DCrossAttn or null)")


def _transformer_layers(s: dict[str, Any], levels: int) -> list[int]:
    """diffusers' transformer_layers_per_block, one number or one per level, as one per level (the down
    blocks' order; the mid block takes the last, the up blocks the reversed list; a list per layer is not
    supported)."""
    key, value = "transformer_layers_per_block", s["transformer_layers_per_block"]
    per_level = _u32_list(key, value) if isinstance(value, (list, tuple)) else [_u32(key, value)] * levels
    if len(per_level) != levels:
        raise ConvertError(f"{key} = {value!r}: expected one entry per level ({levels})")
    if not all(1 <= n <= MAX_TRANSFORMER_LAYERS for n in per_level):
        raise ConvertError(f"{key} = {value!r}: cutecpp supports 1 to {MAX_TRANSFORMER_LAYERS} blocks per attention")
    return per_level


def _check_transformer_blocks(s: dict[str, Any], layers: int, per_level: list[int]) -> None:
    """The whole UNet's transformer blocks, counted as the C++ loader counts them (its graph has room for
    MAX_TRANSFORMER_BLOCKS): each cross-attention down block's layers, the up blocks' layers + 1 with the
    reversed depths, and the mid block's one attention at the deepest level's depth."""
    blocks = per_level[-1] if s["mid_block_type"] is not None else 0
    for i, (down, up) in enumerate(zip(s["down_block_types"], s["up_block_types"], strict=True)):
        blocks += layers * per_level[i] if down == "CrossAttnDownBlock2D" else 0
        blocks += (layers + 1) * per_level[-1 - i] if up == "CrossAttnUpBlock2D" else 0
    if blocks > MAX_TRANSFORMER_BLOCKS:
        raise ConvertError(f"{blocks} transformer blocks in all: cutecpp supports at most {MAX_TRANSFORMER_BLOCKS}")


def unet_keys(config: dict[str, Any]) -> KeyValues:
    """The cutecpp.unet.* keys for a diffusers UNet2DConditionModel config.json dict."""
    s = unet_settings(config)
    levels = len(_list("block_out_channels", s["block_out_channels"]))
    # diffusers' naming slip: attention_head_dim holds the number of heads when num_attention_heads is null.
    heads_key = "num_attention_heads" if s["num_attention_heads"] is not None else "attention_head_dim"
    heads = s[heads_key] if isinstance(s[heads_key], (list, tuple)) else [s[heads_key]] * levels
    layers = _u32("layers_per_block", _one_value("layers_per_block", s["layers_per_block"]))
    cross_dim = _one_value("cross_attention_dim", s["cross_attention_dim"])
    depth = _transformer_layers(s, levels)
    _check_transformer_blocks(s, layers, depth)
    p = "cutecpp.unet."
    return {
        p + "in_channels": (U32, _u32("in_channels", s["in_channels"]), None),
        p + "out_channels": (U32, _u32("out_channels", s["out_channels"]), None),
        p + "block_out_channels": (ARR, _u32_list("block_out_channels", s["block_out_channels"]), U32),
        p + "down_block_types": (ARR, list(s["down_block_types"]), STR),
        p + "up_block_types": (ARR, list(s["up_block_types"]), STR),
        p + "layers_per_block": (U32, layers, None),
        p + "mid_block_type": (STR, s["mid_block_type"] or "none", None),
        p + "num_attention_heads": (ARR, _u32_list(heads_key, heads), U32),
        p + "cross_attention_dim": (U32, _u32("cross_attention_dim", cross_dim), None),
        p + "norm_num_groups": (U32, _u32("norm_num_groups", s["norm_num_groups"]), None),
        p + "norm_eps": (F32, _number("norm_eps", s["norm_eps"]), None),
        p + "use_linear_projection": (BOOL, _bool("use_linear_projection", s["use_linear_projection"]), None),
        p + "flip_sin_to_cos": (BOOL, _bool("flip_sin_to_cos", s["flip_sin_to_cos"]), None),
        p + "freq_shift": (U32, _u32("freq_shift", s["freq_shift"]), None),
        # One number when every level has the same depth (what bundles before per-level depths had).
        p + "transformer_layers_per_block": (U32, depth[0], None) if len(set(depth)) == 1 else (ARR, depth, U32),
        p + "sample_size": (U32, _u32("sample_size", s["sample_size"]), None),
    }


# --- the decoder configs ------------------------------------------------------------------------

# AutoencoderTiny.__init__ defaults in diffusers 0.42 (checked by the tests).
TINY_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "encoder_block_out_channels": [64, 64, 64, 64],
    "decoder_block_out_channels": [64, 64, 64, 64], "act_fn": "relu", "upsample_fn": "nearest",
    "latent_channels": 4, "upsampling_scaling_factor": 2, "num_encoder_blocks": [1, 3, 3, 3],
    "num_decoder_blocks": [3, 3, 3, 1], "latent_magnitude": 3, "latent_shift": 0.5, "force_upcast": False,
    "scaling_factor": 1.0, "shift_factor": 0.0,
}
# Not AutoencoderTiny settings (from_pretrained warns and ignores them) but accepted in its config:
# AutoencoderKL's per-channel latent statistics, which cute-mini's export writes.
LATENT_STATS: dict[str, Any] = {"latents_mean": None, "latents_std": None}
# AutoencoderTiny registers a copy of decoder_block_out_channels as block_out_channels; the
# encoder's settings, latent_magnitude/latent_shift (only its scale_latents helper) and
# force_upcast (a pipeline precision hint) do not change the decoder, so any value is accepted.
TINY_ALSO_KNOWN = frozenset({"block_out_channels"})
# The C++ decoder implements only the default activation and upsampling.
TINY_FIXED = {"act_fn", "upsample_fn"}

# AutoencoderKL.__init__ defaults in diffusers 0.42 (checked by the tests).
VAE_DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"], "block_out_channels": [64], "layers_per_block": 1, "act_fn": "silu",
    "latent_channels": 4, "norm_num_groups": 32, "sample_size": 32, "scaling_factor": 0.18215,
    "shift_factor": None, "latents_mean": None, "latents_std": None, "force_upcast": True, "use_quant_conv": True,
    "use_post_quant_conv": True, "mid_block_add_attention": True,
}
# Selects what the C++ decoder does not implement unless left at its default: another activation
# and a missing post_quant_conv.
# The encoder's settings (in_channels, down_block_types, use_quant_conv), sample_size (tiling
# only) and force_upcast (a precision hint) do not change the decoder, so any value is accepted.
VAE_FIXED = {"act_fn", "use_post_quant_conv"}
VAE_UP_BLOCK = "UpDecoderBlock2D"


def tiny_decoder_keys(config: dict[str, Any]) -> KeyValues:
    """The cutecpp.tiny_decoder.* keys for a diffusers AutoencoderTiny config.json dict."""
    s = _settings(config, "AutoencoderTiny", {**TINY_DEFAULTS, **LATENT_STATS}, TINY_FIXED, TINY_ALSO_KNOWN)
    channels = _u32_list("decoder_block_out_channels", s["decoder_block_out_channels"])
    blocks = _u32_list("num_decoder_blocks", s["num_decoder_blocks"])
    if len(blocks) != len(channels):
        raise ConvertError(f"num_decoder_blocks = {s['num_decoder_blocks']!r}: needs one entry per "
                           f"decoder_block_out_channels entry ({len(channels)})")
    p = "cutecpp.tiny_decoder."  # the widths may change from stage to stage (tools/latent_decoder.py)
    return {
        p + "latent_channels": (U32, _u32("latent_channels", s["latent_channels"]), None),
        p + "out_channels": (U32, _u32("out_channels", s["out_channels"]), None),
        p + "block_out_channels": (ARR, channels, U32),
        p + "num_blocks": (ARR, blocks, U32),
        p + "upsampling_scaling_factor": (U32, _u32("upsampling_scaling_factor", s["upsampling_scaling_factor"]),
                                          None),
        p + "act_fn": (STR, s["act_fn"], None),
        p + "upsample_fn": (STR, s["upsample_fn"], None),
        **_scaling_keys(p, s),
    }


def _check_vae_blocks(s: dict[str, Any], key: str, only: str, levels: int) -> None:
    """An AutoencoderKL's up_block_types / down_block_types: `only` that block type, one per level."""
    blocks = _list(key, s[key])
    if any(block != only for block in blocks):
        raise ConvertError(f"{key} = {s[key]!r} is not supported by cutecpp (only {only})")
    if len(blocks) != levels:
        raise ConvertError(f"{key} = {s[key]!r}: needs one entry per block_out_channels entry ({levels})")


def vae_decoder_keys(config: dict[str, Any]) -> KeyValues:
    """The cutecpp.vae_decoder.* keys for a diffusers AutoencoderKL config.json dict (the decoder half)."""
    s = _settings(config, "AutoencoderKL", VAE_DEFAULTS, VAE_FIXED)
    channels = _u32_list("block_out_channels", s["block_out_channels"])
    _check_vae_blocks(s, "up_block_types", VAE_UP_BLOCK, len(channels))
    p = "cutecpp.vae_decoder."
    return {
        p + "latent_channels": (U32, _u32("latent_channels", s["latent_channels"]), None),
        p + "out_channels": (U32, _u32("out_channels", s["out_channels"]), None),
        p + "block_out_channels": (ARR, channels, U32),
        p + "layers_per_block": (U32, _u32("layers_per_block", s["layers_per_block"]), None),
        p + "norm_num_groups": (U32, _u32("norm_num_groups", s["norm_num_groups"]), None),
        p + "act_fn": (STR, "silu", None),
        p + "mid_block_add_attention": (BOOL, _bool("mid_block_add_attention", s["mid_block_add_attention"]), None),
        **_scaling_keys(p, s),
    }


# The encoder halves (convert(encoders=True)): the C++ encoders implement the default activations.
TINY_ENCODER_FIXED = {"act_fn"}
VAE_ENCODER_FIXED = {"act_fn"}
VAE_DOWN_BLOCK = "DownEncoderBlock2D"


def tiny_encoder_keys(config: dict[str, Any]) -> KeyValues:
    """The cutecpp.tiny_encoder.* keys for a diffusers AutoencoderTiny config.json dict (the encoder half).

    The latent scaling is the decoder's (the same config's scaling_factor, shift_factor and
    per-channel statistics): the encoder applies its inverse, so that its latents are the UNet's.
    """
    s = _settings(config, "AutoencoderTiny", {**TINY_DEFAULTS, **LATENT_STATS}, TINY_ENCODER_FIXED, TINY_ALSO_KNOWN)
    channels = _u32_list("encoder_block_out_channels", s["encoder_block_out_channels"])
    blocks = _u32_list("num_encoder_blocks", s["num_encoder_blocks"])
    if len(blocks) != len(channels):
        raise ConvertError(f"num_encoder_blocks = {s['num_encoder_blocks']!r}: needs one entry per "
                           f"encoder_block_out_channels entry ({len(channels)})")
    if any(c != channels[0] for c in channels):
        raise ConvertError(f"encoder_block_out_channels = {s['encoder_block_out_channels']!r}: cutecpp (like "
                           "diffusers' EncoderTiny at run time) needs one channel count repeated")
    p = "cutecpp.tiny_encoder."
    return {
        p + "in_channels": (U32, _u32("in_channels", s["in_channels"]), None),
        p + "latent_channels": (U32, _u32("latent_channels", s["latent_channels"]), None),
        p + "block_out_channels": (ARR, channels, U32),
        p + "num_blocks": (ARR, blocks, U32),
        p + "act_fn": (STR, s["act_fn"], None),
        **_scaling_keys(p, s),
    }


def vae_encoder_keys(config: dict[str, Any]) -> KeyValues:
    """The cutecpp.vae_encoder.* keys for a diffusers AutoencoderKL config.json dict (encoder and quant_conv).

    The latent scaling is the decoder's, as for tiny_encoder_keys.
    """
    s = _settings(config, "AutoencoderKL", VAE_DEFAULTS, VAE_ENCODER_FIXED)
    channels = _u32_list("block_out_channels", s["block_out_channels"])
    _check_vae_blocks(s, "down_block_types", VAE_DOWN_BLOCK, len(channels))
    p = "cutecpp.vae_encoder."
    return {
        p + "in_channels": (U32, _u32("in_channels", s["in_channels"]), None),
        p + "latent_channels": (U32, _u32("latent_channels", s["latent_channels"]), None),
        p + "block_out_channels": (ARR, channels, U32),
        p + "layers_per_block": (U32, _u32("layers_per_block", s["layers_per_block"]), None),
        p + "norm_num_groups": (U32, _u32("norm_num_groups", s["norm_num_groups"]), None),
        p + "act_fn": (STR, "silu", None),
        p + "mid_block_add_attention": (BOOL, _bool("mid_block_add_attention", s["mid_block_add_attention"]), None),
        p + "use_quant_conv": (BOOL, _bool("use_quant_conv", s["use_quant_conv"]), None),
        **_scaling_keys(p, s),
    }


def _scaling_keys(p: str, s: dict[str, Any]) -> KeyValues:
    """What the decoder undoes first (docs/bundle-format.md): scaling_factor, shift_factor (null means 0)
    and, when given, latents_mean and latents_std (one number per latent channel, both or neither)."""
    keys: KeyValues = {
        p + "scaling_factor": (F32, _number("scaling_factor", s["scaling_factor"]), None),
        p + "shift_factor": (F32, 0.0 if s["shift_factor"] is None else _number("shift_factor", s["shift_factor"]),
                             None),
    }
    mean, std = s["latents_mean"], s["latents_std"]
    if (mean is None) != (std is None):
        raise ConvertError("latents_mean and latents_std come together: one of them is null")
    if mean is not None:
        channels = _u32("latent_channels", s["latent_channels"])
        for key, values in (("latents_mean", mean), ("latents_std", std)):
            numbers = [_number(key, v) for v in _list(key, values)]
            if len(numbers) != channels:
                raise ConvertError(f"{key} has {len(numbers)} values for {channels} latent channels")
            if key == "latents_std" and min(numbers) <= 0:
                raise ConvertError(f"latents_std = {values!r}: every value must be > 0")
            keys[p + key] = (ARR, numbers, F32)
    return keys


# --- the alignment module ------------------------------------------------------------------------

# tools/alignment_ref.py's Alignment: its config.json holds exactly these settings (it has no
# defaults), all written to the bundle.
ALIGNMENT_CLASS = "Alignment"
ALIGNMENT_SETTINGS = ("in_dim", "dim", "ctx_dim", "layers", "heads", "ff_mult", "norm_eps")


def _exact_settings(config: dict[str, Any], class_name: str, settings: tuple[str, ...]) -> None:
    """A config.json of cutecpp's own classes: that class, exactly these settings (keys with _ aside)."""
    _check_class(config, class_name)
    unknown = sorted(k for k in config if not k.startswith("_") and k not in settings)
    if unknown:
        raise ConvertError(f"unknown {class_name} setting(s) {', '.join(unknown)}")
    missing = [k for k in settings if k not in config]
    if missing:
        raise ConvertError(f"missing {class_name} setting(s) {', '.join(missing)}")


def alignment_keys(config: dict[str, Any]) -> KeyValues:
    """The cutecpp.alignment.* keys for an Alignment config.json dict (tools/alignment_ref.py)."""
    _exact_settings(config, ALIGNMENT_CLASS, ALIGNMENT_SETTINGS)
    p = "cutecpp.alignment."
    keys: KeyValues = {p + k: (U32, _u32(k, config[k]), None) for k in ALIGNMENT_SETTINGS if k != "norm_eps"}
    keys[p + "norm_eps"] = (F32, _number("norm_eps", config["norm_eps"]), None)
    return keys


VERIFIER_CLASS = "Verifier"
VERIFIER_SETTINGS = ("in_channels", "labels", "block_out_channels", "num_blocks", "act_fn")


def verifier_keys(config: dict[str, Any]) -> KeyValues:
    """The cutecpp.verifier.* keys for a Verifier config.json dict (tools/train_verifier.py export): the latent
    channels it reads, its label names and its EncoderTiny's stages (one channel count repeated)."""
    _exact_settings(config, VERIFIER_CLASS, VERIFIER_SETTINGS)
    labels = _list("labels", config["labels"])
    if not all(isinstance(v, str) for v in labels):
        raise ConvertError(f"labels = {config['labels']!r}: expected a list of strings")
    if config["act_fn"] != "relu":
        raise ConvertError(f"act_fn = {config['act_fn']!r}: cutecpp's verifier implements relu only")
    p = "cutecpp.verifier."
    return {
        p + "in_channels": (U32, _u32("in_channels", config["in_channels"]), None),
        p + "labels": (ARR, labels, STR),
        p + "block_out_channels": (ARR, _u32_list("block_out_channels", config["block_out_channels"]), U32),
        p + "num_blocks": (ARR, _u32_list("num_blocks", config["num_blocks"]), U32),
        p + "act_fn": (STR, "relu", None),
    }


# --- the sampling section ------------------------------------------------------------------------

F64 = GGUFValueType.FLOAT64
# cutecpp.sampling.*: the model's training noise schedule and its sampling defaults (all required),
# and optional settings (absent: as before they existed).
SAMPLING_SETTINGS = ("prediction", "num_train_timesteps", "beta_schedule", "beta_start", "beta_end",
                     "timestep_spacing", "steps_offset", "flow_shift", "default_sampler", "default_steps",
                     "default_cfg")
# guidance_max_sigma: steps with a higher sigma are unguided (absent: none); candidates and verify_sigma
# (together): best of that many seeds, compared by the verifier at that sigma (absent: one seed).
SAMPLING_OPTIONAL = ("guidance_max_sigma", "candidates", "verify_sigma")
SAMPLING_PREFIX = "cutecpp.sampling."
SAMPLING_TYPES = {"prediction": STR, "num_train_timesteps": U32, "beta_schedule": STR, "beta_start": F64,
                  "beta_end": F64, "timestep_spacing": STR, "steps_offset": U32, "flow_shift": F64,
                  "default_sampler": STR, "default_steps": U32, "default_cfg": F32, "guidance_max_sigma": F32,
                  "candidates": U32, "verify_sigma": F32}

# The training-schedule settings of diffusers' discrete-time schedulers, with their __init__
# defaults in diffusers 0.42 (checked by the tests); the spacing default differs per class.
_DISCRETE_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "prediction_type": "epsilon", "steps_offset": 0, "rescale_betas_zero_snr": False,
}
# Scheduler class -> (the sampler it becomes the bundle's default, its training-schedule defaults).
SCHEDULER_CLASSES: dict[str, tuple[str, dict[str, Any]]] = {
    "EulerAncestralDiscreteScheduler": ("euler_a", {**_DISCRETE_DEFAULTS, "timestep_spacing": "linspace"}),
    "EulerDiscreteScheduler": ("euler", {**_DISCRETE_DEFAULTS, "timestep_spacing": "linspace"}),
    "DPMSolverMultistepScheduler": ("dpmpp_2m_karras", {**_DISCRETE_DEFAULTS, "timestep_spacing": "linspace"}),
    "LCMScheduler": ("lcm", {**_DISCRETE_DEFAULTS, "beta_start": 0.00085, "beta_end": 0.012,
                             "beta_schedule": "scaled_linear", "timestep_spacing": "leading"}),
    "DDIMScheduler": ("euler_a", {**_DISCRETE_DEFAULTS, "timestep_spacing": "leading"}),
    "PNDMScheduler": ("euler_a", {**{k: v for k, v in _DISCRETE_DEFAULTS.items() if k != "rescale_betas_zero_snr"},
                                  "timestep_spacing": "leading"}),
    "DDPMScheduler": ("euler_a", {**_DISCRETE_DEFAULTS, "timestep_spacing": "leading"}),
    "FlowMatchEulerDiscreteScheduler": ("flow_euler", {
        "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False, "invert_sigmas": False,
        "shift_terminal": None, "use_karras_sigmas": False, "use_exponential_sigmas": False,
        "use_beta_sigmas": False}),
}
# Settings that would change the noise schedule the model was trained with (not just how one
# scheduler samples it) and that cutecpp does not implement: refused unless at the default.
_SCHEDULE_FIXED = {"trained_betas", "rescale_betas_zero_snr", "use_dynamic_shifting", "invert_sigmas",
                   "shift_terminal", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"}
_PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v_prediction"}
DEFAULT_STEPS = {"lcm": 4}  # else 20
DEFAULT_CFG = {"lcm": 1.0}  # else 7.5
SCHEDULER_CONFIG_FILE = "scheduler_config.json"


def scheduler_config_to_sampling(scheduler_config_json: str | os.PathLike[str] | dict[str, Any], *,
                                 default_sampler: str | None = None, default_steps: int | None = None,
                                 default_cfg: float | None = None) -> dict[str, Any]:
    """The sampling dict for `convert(sampling=...)` from a diffusers scheduler config.

    scheduler_config_json: a scheduler folder (holding scheduler_config.json), the JSON file, or
    its parsed dict. The training schedule (betas, timesteps, prediction type, spacing, offset;
    flow models: the shift) is carried over; the class picks the default sampler (Euler
    ancestral for DDIM, PNDM and DDPM, which cutecpp does not implement), unless
    `default_sampler` is given. Settings of one particular scheduler (solver order, Karras
    sigmas for Euler, ...) are not carried over: cutecpp's samplers are fixed (docs/bundle-format.md).
    """
    config, where = _scheduler_config(scheduler_config_json)
    name = config.get("_class_name")
    if name not in SCHEDULER_CLASSES:
        raise ConvertError(f"{where}_class_name = {name!r}: not a scheduler cutecpp reads "
                           f"(supported: {', '.join(SCHEDULER_CLASSES)})")
    sampler, defaults = SCHEDULER_CLASSES[name]
    settings = {**defaults, **{k: v for k, v in config.items() if k in defaults}}
    for key in sorted(_SCHEDULE_FIXED & defaults.keys()):
        if settings[key] != defaults[key]:
            raise ConvertError(f"{where}{key} = {settings[key]!r} is not supported by cutecpp "
                               f"(only the diffusers default {defaults[key]!r})")
    if name == "FlowMatchEulerDiscreteScheduler":
        sampling = {"prediction": "flow", "num_train_timesteps": settings["num_train_timesteps"],
                    "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                    "timestep_spacing": "linspace", "steps_offset": 0, "flow_shift": settings["shift"]}
    else:
        prediction = settings["prediction_type"]
        if prediction not in _PREDICTIONS:
            raise ConvertError(f"{where}prediction_type = {prediction!r} is not supported by cutecpp "
                               f"(only {' or '.join(_PREDICTIONS)})")
        sampling = {"prediction": _PREDICTIONS[prediction], "flow_shift": 1.0,
                    **{k: settings[k] for k in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end",
                                                "timestep_spacing", "steps_offset")}}
    sampler = sampler if default_sampler is None else default_sampler
    sampling["default_sampler"] = sampler
    sampling["default_steps"] = DEFAULT_STEPS.get(sampler, 20) if default_steps is None else default_steps
    sampling["default_cfg"] = DEFAULT_CFG.get(sampler, 7.5) if default_cfg is None else default_cfg
    return sampling


def _scheduler_config(source: str | os.PathLike[str] | dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The parsed config and a "<file>: " prefix for messages."""
    if isinstance(source, dict):
        return source, ""
    path = Path(source)
    if path.is_dir():
        path = path / SCHEDULER_CONFIG_FILE
    if not path.is_file():
        raise ConvertError(f"{path}: no such file (expected a diffusers scheduler folder or its "
                           f"{SCHEDULER_CONFIG_FILE})")
    config = _read_json_object(path)
    return config, f"{path}: "


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # JSON or UTF-8 decoding
        raise ConvertError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ConvertError(f"{path}: not a JSON object")
    return config


def text_encoder_keys(text_encoder: dict[str, Any]) -> KeyValues:
    """The cutecpp.text_encoder.* keys: {"sha256": source GGUF sha256, "layers": blocks kept}."""
    if set(text_encoder) != {"sha256", "layers"}:
        raise ConvertError(f"text_encoder needs exactly sha256 and layers, got {', '.join(sorted(text_encoder))}")
    sha = text_encoder["sha256"]
    if not isinstance(sha, str):
        raise ConvertError(f"text_encoder sha256 = {sha!r}: expected a string")
    return {"cutecpp.text_encoder.sha256": (STR, sha, None),
            "cutecpp.text_encoder.layers": (U32, _u32("layers", text_encoder["layers"]), None)}


def sampling_keys(sampling: dict[str, Any]) -> KeyValues:
    """The cutecpp.sampling.* keys for a sampling dict holding SAMPLING_SETTINGS and any of
    SAMPLING_OPTIONAL.

    Types are checked here; values (ranges, names, a default sampler that fits the prediction
    type) by the loader, which every converted bundle goes through.
    """
    unknown = sorted(set(sampling) - set(SAMPLING_SETTINGS) - set(SAMPLING_OPTIONAL))
    if unknown:
        raise ConvertError(f"unknown sampling setting(s) {', '.join(unknown)}")
    missing = [k for k in SAMPLING_SETTINGS if k not in sampling]
    if missing:
        raise ConvertError(f"missing sampling setting(s) {', '.join(missing)}")
    keys: KeyValues = {}
    for key in [*SAMPLING_SETTINGS, *(k for k in SAMPLING_OPTIONAL if k in sampling)]:
        vtype, value = SAMPLING_TYPES[key], sampling[key]
        if vtype == STR:
            if not isinstance(value, str):
                raise ConvertError(f"{key} = {value!r}: expected a string")
        elif vtype == U32:
            value = _u32(key, value)
        else:
            value = _number(key, value)
        keys[SAMPLING_PREFIX + key] = (vtype, value, None)
    return keys


# Type checks for the values written: the GGUF writer would fail obscurely (or wrap around) on
# anything else. Ranges are the loader's business, so they are checked in one place only.
def _u32(key: str, value: Any) -> int:
    if not _is_count(value) or value >= 1 << 32:
        raise ConvertError(f"{key} = {value!r}: expected a non-negative integer")
    return value


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConvertError(f"{key} = {value!r}: expected a number")
    return float(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConvertError(f"{key} = {value!r}: expected true or false")
    return value


def _list(key: str, value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConvertError(f"{key} = {value!r}: expected a non-empty list")
    return list(value)


def _u32_list(key: str, value: Any) -> list[int]:
    return [_u32(key, v) for v in _list(key, value)]


def _one_value(key: str, value: Any) -> Any:
    """diffusers allows a per-level list for some settings; cutecpp keeps one value per model."""
    if isinstance(value, (list, tuple)):
        if not value or any(v != value[0] for v in value):
            raise ConvertError(f"{key} = {value!r}: cutecpp supports one value for all levels")
        value = value[0]
    return value


def header_keys(model_id: str, components: list[str], name: str | None = None,
                license: str | None = None) -> KeyValues:
    """The bundle's top-level keys (general.architecture is added by GGUFWriter itself)."""
    keys: KeyValues = {}
    if name is not None:
        keys[Keys.General.NAME] = (STR, name, None)
    if license is not None:
        keys[Keys.General.LICENSE] = (STR, license, None)
    keys["cutecpp.format_version"] = (U32, FORMAT_VERSION, None)
    keys["cutecpp.model_id"] = (STR, model_id, None)
    keys["cutecpp.components"] = (ARR, list(components), STR)
    return keys


# --- dtype policy ------------------------------------------------------------------------------


def output_type(shape: tuple[int, ...], dtype: str) -> GGMLQuantizationType:
    """The bundle dtype of a tensor of `shape` (torch order) when converting with `dtype`.

    The loader wants 1-D tensors (norms, biases) in F32. Quantized blocks run along the
    innermost dimension, so a tensor whose last dimension is not a whole number of
    blocks (3x3 and 1x1 conv kernels) falls back to F16.
    """
    target = DTYPES[dtype]
    if len(shape) < 2:
        return Q.F32
    return target if shape[-1] % GGML_QUANT_SIZES[target][0] == 0 else Q.F16


def describe(qtype: GGMLQuantizationType, dtype: str) -> str:
    """Which tensors `output_type` gives `qtype` when converting with `dtype`, in words for the summary."""
    if qtype == Q.F32 and dtype != "f32":
        return "1-D tensors (norms, biases)"
    if qtype == DTYPES[dtype]:
        return {"f32": "all tensors", "f16": "tensors with 2+ dims"}.get(
            dtype, "tensors with 2+ dims whose last dim is a multiple of 32")
    return "tensors with 2+ dims whose last dim is not a multiple of 32 (conv kernels)"


def _nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


# float16's largest finite value: a weight beyond it would silently become infinity.
F16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class _Planned:
    """One tensor to write: its bundle name and dtype, and where its values come from."""

    name: str
    qtype: GGMLQuantizationType
    array: np.ndarray
    origin: str  # "<file>: tensor '<checkpoint name>'", for messages

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def encode(self) -> np.ndarray:
        """The bytes the bundle stores; refuses values that would not survive the conversion."""
        peak = float(np.abs(self.array).max()) if self.array.size else 0.0
        if not math.isfinite(peak):
            raise ConvertError(f"{self.origin}: holds NaN or infinity")
        if self.qtype == Q.F16 and peak > F16_MAX:
            raise ConvertError(f"{self.origin}: values up to {peak:g} are beyond float16's range; use --dtype f32")
        if self.qtype in (Q.F32, Q.F16):
            return self.array.astype(np.float32 if self.qtype == Q.F32 else np.float16)
        return quantize(self.array.astype(np.float32), self.qtype)


def _plan(component: str, weights: dict[str, np.ndarray], dtype: str, path: Path) -> list[_Planned]:
    plan = []
    for source, array in weights.items():
        try:
            name = tensor_name(component, source)
        except ValueError as exc:
            raise ConvertError(f"{path}: {exc}") from None
        plan.append(_Planned(name, output_type(array.shape, dtype), array, f"{path}: tensor {source!r}"))
    return plan


# --- summary -----------------------------------------------------------------------------------


@dataclass
class DtypeUse:
    """The tensors one bundle dtype got, and the rule that gave it to them."""

    which: str
    tensors: int = 0
    params: int = 0
    bytes: int = 0


@dataclass
class Summary:
    """What a conversion wrote, per bundle dtype (named as `cutecpp info` names them)."""

    path: Path
    file_size: int
    by_dtype: dict[str, DtypeUse] = field(default_factory=dict)

    @property
    def n_tensors(self) -> int:
        return sum(u.tensors for u in self.by_dtype.values())

    @property
    def n_params(self) -> int:
        return sum(u.params for u in self.by_dtype.values())

    def table(self) -> str:
        """A small table for the terminal: tensors, parameters and bytes per dtype, and which tensors."""
        rows = [f"{'dtype':<6} {'tensors':>7} {'parameters':>13} {'bytes':>15}  which"]
        for name, use in self.by_dtype.items():
            rows.append(f"{name:<6} {use.tensors:>7} {use.params:>13,} {use.bytes:>15,}  {use.which}")
        rows.append(f"{'file':<6} {self.n_tensors:>7} {self.n_params:>13,} {self.file_size:>15,}  {self.path}")
        return "\n".join(rows)


def _summarize(out: Path, dtype: str, plan: list[_Planned]) -> Summary:
    summary = Summary(out, out.stat().st_size)
    for t in sorted(plan, key=lambda t: t.qtype):
        use = summary.by_dtype.setdefault(t.qtype.name.lower(), DtypeUse(describe(t.qtype, dtype)))
        use.tensors += 1
        use.params += t.array.size
        use.bytes += _nbytes(t.array.shape, t.qtype)
    return summary


# --- writing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Copied:
    """One tensor copied from another bundle as it is stored there (the same bytes)."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]  # torch order
    raw: np.ndarray

    def encode(self) -> np.ndarray:
        return self.raw


def _write_gguf(path: Path, keys: KeyValues, plan: list[_Planned] | list[_Copied]) -> None:
    """Writes the bundle one tensor at a time, so memory holds one converted tensor, not the model."""
    writer = GGUFWriter(path, "cutecpp")
    try:
        for key, (vtype, value, sub_type) in keys.items():
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
        for t in plan:
            # With raw_dtype and a non-uint8 placeholder dtype, gguf keeps the shape in elements.
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), _nbytes(t.shape, t.qtype),
                                   raw_dtype=t.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in plan:
            writer.write_tensor_data(t.encode())
    finally:
        writer.close()


def _verify(path: Path, out: Path) -> None:
    """Loads the written file with the real loader, so nothing it would refuse is ever left at `out`."""
    try:
        Model.load(path)
    except CutecppError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise ConvertError(f"{out}: the cutecpp loader refuses the converted bundle: {reason}") from None


def _write_verified(out: Path, keys: KeyValues, plan: list[_Planned] | list[_Copied]) -> None:
    """Writes next to `out`, verifies, then renames: a failed conversion leaves `out` as it was.

    Verifying before the rename (rather than after) also keeps a previous good bundle at
    `out` when the new one is refused.
    """
    if not out.parent.is_dir():
        raise ConvertError(f"{out.parent}: no such directory")
    temp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_gguf(temp, keys, plan)
        _verify(temp, out)
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)


# --- the diffusers folders ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    """How one diffusers model folder becomes one bundle component."""

    hint: str                                   # what the folder should be, for messages
    keys: Callable[[dict[str, Any]], KeyValues]  # config.json -> cutecpp.<component>.* keys
    keep: tuple[str, ...]                        # checkpoint name prefixes stored ("" = everything)
    drop: tuple[str, ...] = ()                   # prefixes left out (the other half); others are refused


PARTS = {
    "unet": _Part("expected a diffusers UNet folder such as <model>/unet", unet_keys, ("",)),
    "tiny_decoder": _Part("expected a diffusers AutoencoderTiny folder such as taesd", tiny_decoder_keys,
                          ("decoder.",), ("encoder.",)),
    "vae_decoder": _Part("expected a diffusers AutoencoderKL folder such as <model>/vae", vae_decoder_keys,
                         ("decoder.", "post_quant_conv."), ("encoder.", "quant_conv.")),
    "tiny_encoder": _Part("expected a diffusers AutoencoderTiny folder such as taesd", tiny_encoder_keys,
                          ("encoder.",), ("decoder.",)),
    "vae_encoder": _Part("expected a diffusers AutoencoderKL folder such as <model>/vae", vae_encoder_keys,
                         ("encoder.", "quant_conv."), ("decoder.", "post_quant_conv.")),
    "alignment": _Part("expected an alignment folder written by tools/alignment_ref.py", alignment_keys, ("",)),
    "verifier": _Part("expected a verifier folder written by tools/train_verifier.py export", verifier_keys,
                      ("encoder.",)),
}

# Checkpoints saved before diffusers 0.14 name the VAE's attention layers the old way; diffusers
# renames them on load (ModelMixin._fix_state_dict_keys_on_load), and so does the converter.
_OLD_ATTENTION = ("decoder.mid_block.attentions.0.", "encoder.mid_block.attentions.0.")
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _modern_name(name: str) -> str:
    for prefix in _OLD_ATTENTION:
        if name.startswith(prefix):
            layer, _, param = name[len(prefix):].partition(".")
            if layer in _OLD_ATTENTION_NAMES:
                return f"{prefix}{_OLD_ATTENTION_NAMES[layer]}.{param}"
    return name


def _select(component: str, weights: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """The tensors of `weights` the component stores, under their current diffusers names."""
    part = PARTS[component]
    kept: dict[str, np.ndarray] = {}
    for source, array in weights.items():
        if source.startswith(part.keep):
            name = _modern_name(source) if component in ("vae_decoder", "vae_encoder") else source
            if name in kept:
                raise ConvertError(f"{path}: tensor {source!r} and {name!r} are the same weight under its old "
                                   "and new name")
            kept[name] = array
        elif not source.startswith(part.drop):
            raise ConvertError(f"{path}: unexpected tensor {source!r} ({part.hint})")
    return kept


def _model_files(folder: Path, hint: str) -> tuple[Path, Path]:
    """config.json and the safetensors checkpoint of a diffusers model folder, with advice when absent."""
    if not folder.is_dir():
        raise ConvertError(f"{folder}: no such directory ({hint})")
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config.is_file():
        raise ConvertError(f"{folder}: no {CONFIG_FILE} ({hint})")
    if not weights.is_file():
        if (folder / "diffusion_pytorch_model.bin").is_file():
            raise ConvertError(f"{folder}: only diffusion_pytorch_model.bin found; convert to safetensors first")
        raise ConvertError(f"{folder}: no {WEIGHTS_FILE}")
    return config, weights


def _read_keys(path: Path, keys: Callable[[dict[str, Any]], KeyValues]) -> KeyValues:
    config = _read_json_object(path)
    try:
        return keys(config)
    except ConvertError as exc:
        raise ConvertError(f"{path}: {exc}") from None


def convert(out_path: str | os.PathLike[str], dtype: str, model_id: str, *,
            unet: str | os.PathLike[str] | None = None, tiny_decoder: str | os.PathLike[str] | None = None,
            vae: str | os.PathLike[str] | None = None, alignment: str | os.PathLike[str] | None = None,
            sampling: dict[str, Any] | None = None, text_encoder: dict[str, Any] | None = None,
            name: str | None = None, license: str | None = None, encoders: bool = False,
            verifier: str | os.PathLike[str] | None = None) -> Summary:
    """Converts diffusers model folders into one bundle at `out_path`, one component per folder given.

    unet: a UNet2DConditionModel folder (component `unet`); tiny_decoder: an AutoencoderTiny
    folder (`tiny_decoder`, decoder half only); vae: an AutoencoderKL folder (`vae_decoder`:
    post_quant_conv and the decoder); alignment: a folder written by tools/alignment_ref.py
    (`alignment`); verifier: a folder written by tools/train_verifier.py export (`verifier`). Each
    folder holds config.json and diffusion_pytorch_model.safetensors.
    encoders: also store the autoencoders' encoder halves (`tiny_encoder` from the tiny_decoder
    folder, `vae_encoder` from the vae folder: the encoder and quant_conv), for img2img; their
    latents are in the decoders' latent space (the same scaling, inverted).
    sampling: the cutecpp.sampling.* section (SAMPLING_SETTINGS and any of SAMPLING_OPTIONAL;
    scheduler_config_to_sampling makes one from a diffusers scheduler config). text_encoder:
    {"sha256", "layers"} of the encoder the model was trained with (docs/text-encoder.md). The
    bundle is loaded back before it replaces `out_path`.
    """
    if dtype not in DTYPES:
        raise ConvertError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    folders = {"unet": unet, "tiny_decoder": tiny_decoder, "tiny_encoder": tiny_decoder if encoders else None,
               "vae_decoder": vae, "vae_encoder": vae if encoders else None, "alignment": alignment,
               "verifier": verifier}
    given = {component: Path(folder) for component, folder in folders.items() if folder is not None}
    if not given:
        raise ConvertError("nothing to convert: give a UNet, tiny decoder, VAE or alignment folder (at least one)")
    if encoders and tiny_decoder is None and vae is None:
        raise ConvertError("encoders need an autoencoder: give a tiny decoder (AutoencoderTiny) or VAE folder")
    out = Path(out_path)
    keys = header_keys(model_id, list(given), name, license)
    if sampling is not None:
        keys.update(sampling_keys(sampling))
    if text_encoder is not None:
        keys.update(text_encoder_keys(text_encoder))
    weights: dict[str, Path] = {}
    for component, folder in given.items():  # every config first: a refusal comes before any reading
        config_path, weights[component] = _model_files(folder, PARTS[component].hint)
        keys.update(_read_keys(config_path, PARTS[component].keys))
    plan: list[_Planned] = []
    read: dict[Path, dict[str, np.ndarray]] = {}  # an autoencoder's file serves both its halves
    for component, path in weights.items():
        if path not in read:
            read[path] = read_safetensors(path)
        plan += _plan(component, _select(component, read[path], path), dtype, path)
    _write_verified(out, keys, plan)
    return _summarize(out, dtype, plan)


def convert_unet(folder: str | os.PathLike[str], out_path: str | os.PathLike[str], dtype: str, model_id: str,
                 name: str | None = None, license: str | None = None) -> Summary:
    """Converts a diffusers UNet2DConditionModel folder into a one-component bundle at `out_path`."""
    return convert(out_path, dtype, model_id, unet=folder, name=name, license=license)


def copy_with_sampling(src: str | os.PathLike[str], out_path: str | os.PathLike[str], model_id: str,
                       changes: dict[str, Any], name: str | None = None, *,
                       verifier: str | os.PathLike[str] | None = None, dtype: str = "f16") -> None:
    """Copies bundle `src` to `out_path` with the sampling settings in `changes` (None removes an
    optional one) and a new model id (and general.name, if given); every other key and every
    tensor's bytes as they are. For a new sampling recipe of trained networks (tools/set_sampling.py).
    `verifier`: a verifier folder (tools/train_verifier.py export) that becomes the copy's verifier
    component (replacing one it had), its tensors stored as `dtype`.
    The copy is loaded back before it replaces `out_path`, as a conversion is.
    """
    from gguf import GGUFReader

    src = Path(src)
    Model.load(src)  # a bundle cutecpp reads (its loader's message otherwise), not just any GGUF
    reader = GGUFReader(src)
    keys: KeyValues = {}
    sampling: dict[str, Any] = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key == Keys.General.ARCHITECTURE:  # the writer's own
            continue
        if key.startswith(SAMPLING_PREFIX):
            sampling[key.removeprefix(SAMPLING_PREFIX)] = f.contents()
        else:
            keys[key] = (f.types[0], f.contents(), f.types[-1] if f.types[0] == ARR else None)
    if not sampling:
        raise ConvertError(f"{src}: has no sampling section (cutecpp.sampling.*) to change")
    for key, value in changes.items():
        if value is not None:
            sampling[key] = value
        elif key in SAMPLING_OPTIONAL:
            sampling.pop(key, None)
        else:
            raise ConvertError(f"{key}: only an optional setting ({', '.join(SAMPLING_OPTIONAL)}) can be removed")
    keys["cutecpp.model_id"] = (STR, model_id, None)
    if name is not None:
        keys[Keys.General.NAME] = (STR, name, None)
    keys.update(sampling_keys(sampling))
    plan: list = [_Copied(t.name, GGMLQuantizationType(t.tensor_type), tuple(int(d) for d in reversed(t.shape)),
                          t.data) for t in reader.tensors]
    if verifier is not None:
        if dtype not in DTYPES:
            raise ConvertError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        folder = Path(verifier)
        config_path, weights_path = _model_files(folder, PARTS["verifier"].hint)
        keys = {k: v for k, v in keys.items() if not k.startswith("cutecpp.verifier.")}
        keys.update(_read_keys(config_path, PARTS["verifier"].keys))
        components = [c for c in keys["cutecpp.components"][1] if c != "verifier"]
        keys["cutecpp.components"] = (ARR, [*components, "verifier"], STR)
        plan = [t for t in plan if not t.name.startswith("verifier.")]
        plan += _plan("verifier", _select("verifier", read_safetensors(weights_path), weights_path), dtype,
                      weights_path)
    _write_verified(Path(out_path), keys, plan)
