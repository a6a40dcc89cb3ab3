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

from cutecpp.bundle import tensor_name
from cutecpp.convert import header_keys, unet_keys

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


def unet_bundle(name: str = "micro", seed: int = 0, f16: bool = False) -> Bundle:
    """A valid bundle holding the diffusers UNet `name` (f16: 2-D+ tensors as float16)."""
    unet = make_unet(name, seed)
    b = Bundle()
    b.kv.update(header_keys(f"test-{name}-{seed}", ["unet"], name=f"test {name}", license="MIT"))
    b.kv.update(unet_keys(dict(unet.config)))
    for key, tensor in unet.state_dict().items():
        array = tensor.detach().numpy().astype(np.float32)
        if f16 and array.ndim > 1:
            array = array.astype(np.float16)
        b.tensors[tensor_name("unet", key)] = array
    return b
