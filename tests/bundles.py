"""Tiny model bundles for tests, written with the `gguf` package.

The tensors come from real random-weight diffusers models built here (no
downloads), so a bundle the loader accepts proves the C++ tensor inventory
matches diffusers. Keys and tensors are plain dicts that tests corrupt before
writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFValueType, GGUFWriter

from cutecpp.bundle import FORMAT_VERSION, tensor_name

# Small diffusers UNet2DConditionModel configs covering the supported family.
UNET_CONFIGS: dict[str, dict[str, Any]] = {
    # The smallest: base of the corruption corpus.
    "micro": dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, norm_num_groups=4, attention_head_dim=2,
    ),
    # SD 1.x layout: mid block, conv projections, two layers per block.
    "sd1": dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=8, attention_head_dim=(2, 4),
    ),
    # BK-SDM-style: no mid block, three levels.
    "bk_nomid": dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(16, 32, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type=None, cross_attention_dim=24, norm_num_groups=8, attention_head_dim=4,
    ),
    # cute-mini-like: 16-channel latent, linear projections.
    "latent16": dict(
        sample_size=8, in_channels=16, out_channels=16, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=24, norm_num_groups=8, attention_head_dim=2, use_linear_projection=True,
    ),
}


@dataclass
class Bundle:
    """What goes into one bundle file, before writing."""

    kv: dict[str, tuple[GGUFValueType, Any, GGUFValueType | None]] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    architecture: str = "cutecpp"

    def set(self, key: str, vtype: GGUFValueType, value: Any, sub_type: GGUFValueType | None = None) -> None:
        self.kv[key] = (vtype, value, sub_type)

    def write(self, path: Path) -> Path:
        writer = GGUFWriter(str(path), self.architecture)
        for key, (vtype, value, sub_type) in self.kv.items():
            writer.add_key_value(key, value, vtype, sub_type=sub_type)
        for name, array in self.tensors.items():
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path


def make_unet(name: str, seed: int = 0):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**UNET_CONFIGS[name]).eval()


def unet_keys(config) -> dict[str, tuple[GGUFValueType, Any, GGUFValueType | None]]:
    """The cutecpp.unet.* keys for a diffusers UNet config (what the converter writes)."""
    levels = len(config.block_out_channels)
    heads = config.num_attention_heads or config.attention_head_dim
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * levels
    tlayers = config.transformer_layers_per_block
    tlayers = tlayers if isinstance(tlayers, int) else max(tlayers)
    U32, STR, BOOL, ARR = GGUFValueType.UINT32, GGUFValueType.STRING, GGUFValueType.BOOL, GGUFValueType.ARRAY
    p = "cutecpp.unet."
    return {
        p + "in_channels": (U32, config.in_channels, None),
        p + "out_channels": (U32, config.out_channels, None),
        p + "block_out_channels": (ARR, list(config.block_out_channels), U32),
        p + "down_block_types": (ARR, list(config.down_block_types), STR),
        p + "up_block_types": (ARR, list(config.up_block_types), STR),
        p + "layers_per_block": (U32, config.layers_per_block, None),
        p + "mid_block_type": (STR, config.mid_block_type or "none", None),
        p + "num_attention_heads": (ARR, heads, U32),
        p + "cross_attention_dim": (U32, config.cross_attention_dim, None),
        p + "norm_num_groups": (U32, config.norm_num_groups, None),
        p + "norm_eps": (GGUFValueType.FLOAT32, config.norm_eps, None),
        p + "use_linear_projection": (BOOL, bool(config.use_linear_projection), None),
        p + "flip_sin_to_cos": (BOOL, bool(config.flip_sin_to_cos), None),
        p + "freq_shift": (U32, config.freq_shift, None),
        p + "transformer_layers_per_block": (U32, tlayers, None),
        p + "sample_size": (U32, config.sample_size, None),
    }


def unet_bundle(name: str = "micro", seed: int = 0, f16: bool = False) -> Bundle:
    """A valid bundle holding the diffusers UNet `name` (f16: 2-D+ tensors as float16)."""
    unet = make_unet(name, seed)
    b = Bundle()
    b.set("general.name", GGUFValueType.STRING, f"test {name}")
    b.set("general.license", GGUFValueType.STRING, "MIT")
    b.set("cutecpp.format_version", GGUFValueType.UINT32, FORMAT_VERSION)
    b.set("cutecpp.model_id", GGUFValueType.STRING, f"test-{name}-{seed}")
    b.set("cutecpp.components", GGUFValueType.ARRAY, ["unet"], GGUFValueType.STRING)
    b.kv.update(unet_keys(unet.config))
    for key, tensor in unet.state_dict().items():
        array = tensor.detach().numpy().astype(np.float32)
        if f16 and array.ndim > 1:
            array = array.astype(np.float16)
        b.tensors[tensor_name("unet", key)] = array
    return b
