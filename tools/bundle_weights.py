"""Read a cutecpp bundle's networks back into PyTorch state dicts: the way to resume training from the
shipped model when the training cache (~/.cache/cutecpp/train) did not come with the machine.

    unet.load_state_dict(read_state_dict(bundle, "unet", unet))
    ae.decoder.load_state_dict(read_state_dict(bundle, "tiny_decoder", ae.decoder, "decoder."))
    config = component_config(bundle, "tiny_decoder")   # {"latents_mean": [...], "scaling_factor": ..., ...}

Each tensor is found under the converter's own name for it (cutecpp.bundle.tensor_name) and returned
in float32 at the module's shape; f16 and quantized tensors are dequantized (gguf.quants), so a bundle
exported with --dtype f16 gives back the f16-rounded weights, which is what the product draws with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cutecpp.bundle import tensor_name


def _reader(bundle: str | Path):
    from gguf import GGUFReader

    return GGUFReader(str(bundle))


def _tensor(t) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return np.asarray(t.data, np.float32)
    return dequantize(t.data, t.tensor_type).astype(np.float32)


def read_state_dict(bundle: str | Path, component: str, module, key_prefix: str = "") -> dict[str, Any]:
    """The state dict of `module` (a torch nn.Module of the component's architecture) filled from the
    bundle's `component` tensors, named `key_prefix + key` in the checkpoint (the tiny decoder: pass
    an AutoencoderTiny's `.decoder` with "decoder."). Every tensor of the module must be there with
    its element count, and every tensor of the component must have a place in the module."""
    import torch

    tensors = {t.name: t for t in _reader(bundle).tensors}
    out = {}
    for key, ref in module.state_dict().items():
        name = tensor_name(component, key_prefix + key)
        if name not in tensors:
            raise KeyError(f"{bundle}: no tensor {name!r} for {component} parameter {key!r}")
        arr = _tensor(tensors[name])
        if arr.size != ref.numel():
            raise ValueError(f"{bundle}: {name} has {arr.size} values, {component} parameter {key!r} "
                             f"has shape {tuple(ref.shape)}")
        out[key] = torch.from_numpy(arr.reshape(tuple(ref.shape)).copy())
    prefix = f"{component}."
    taken = {tensor_name(component, key_prefix + key) for key in out}
    unused = [n for n in tensors if n.startswith(prefix) and n not in taken]
    if unused:
        raise ValueError(f"{bundle}: {len(unused)} {component} tensors the module has no place for, e.g. {unused[0]}")
    return out


def _plain(field) -> Any:
    value = field.contents()
    return value.decode() if isinstance(value, bytes) else value


def component_config(bundle: str | Path, component: str) -> dict[str, Any]:
    """The bundle's `cutecpp.<component>.*` keys as plain Python values."""
    prefix = f"cutecpp.{component}."
    return {key[len(prefix):]: _plain(field) for key, field in _reader(bundle).fields.items()
            if key.startswith(prefix)}


def header_value(bundle: str | Path, key: str) -> Any:
    """One header key of the bundle (e.g. "cutecpp.model_id") as a plain Python value."""
    field = _reader(bundle).fields.get(key)
    if field is None:
        raise ValueError(f"{bundle} has no {key}")
    return _plain(field)
