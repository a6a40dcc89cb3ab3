"""The alignment module in PyTorch: the reference for cutecpp's C++ graph, and the module to train.

It maps the text encoder's per-token hidden states [T, in_dim] (896 for the Qwen
encoder) to the UNet's cross-attention context [T, ctx_dim]. Pre-norm:

    x = proj_in(norm_in(states))            LayerNorm(in_dim), Linear(in_dim -> dim)
    for each of `layers` blocks:
        x = x + attn(norm1(x))              self-attention, `heads` heads, biased q/k/v/out,
                                            no positional encoding (the states carry position)
        x = x + ff(norm2(x))                Linear(dim -> ff_mult * dim), exact GELU, Linear(-> dim)
    out = proj_out(norm_out(x))             LayerNorm(dim), Linear(dim -> ctx_dim)

The state-dict names are the bundle's tensor names under the prefix `alignment.`
(docs/bundle-format.md). `save_pretrained(folder)` writes config.json and
diffusion_pytorch_model.safetensors, the folder layout `cutecpp.convert` reads
(`tools/convert_diffusers.py --alignment FOLDER`).

torch (and safetensors, for saving) are training and test dependencies only: the
cutecpp package never imports this file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

CLASS_NAME = "Alignment"
CONFIG_KEYS = ("in_dim", "dim", "ctx_dim", "layers", "heads", "ff_mult", "norm_eps")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config with every key present and of the right kind; raises ValueError naming the key."""
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    missing = [k for k in CONFIG_KEYS if k not in config]
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if missing or unknown:
        raise ValueError(f"alignment config: missing {missing}, unknown {unknown}")
    for key in CONFIG_KEYS[:-1]:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "layers" else 1):
            raise ValueError(f"alignment config: {key} = {value!r} must be a positive integer")
    if config["dim"] % config["heads"]:
        raise ValueError(f"alignment config: heads = {config['heads']} does not divide dim = {config['dim']}")
    eps = config["norm_eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ValueError(f"alignment config: norm_eps = {eps!r} must be in (0, 1)")
    return {k: config[k] for k in CONFIG_KEYS}


class SelfAttention(nn.Module):
    """Multi-head self-attention with biased to_q, to_k, to_v and to_out."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B, heads, T, C / heads]
            return y.view(b, t, self.heads, c // self.heads).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        mask = None if keep is None else keep[:, None, None, :]  # [B, 1, 1, T_k]: True attends
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(o.transpose(1, 2).reshape(b, t, c))


class FeedForward(nn.Module):
    """Linear(dim -> ff_mult * dim), exact (erf) GELU, Linear(-> dim)."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, mult * dim)
        self.fc2 = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer encoder layer."""

    def __init__(self, dim: int, heads: int, ff_mult: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.ff = FeedForward(dim, ff_mult)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), keep)
        return x + self.ff(self.norm2(x))


class Alignment(nn.Module):
    """Text-encoder states [B, T, in_dim] -> UNet cross-attention context [B, T, ctx_dim]."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self._config = check_config(config)
        c = self._config
        eps = float(c["norm_eps"])
        self.norm_in = nn.LayerNorm(c["in_dim"], eps=eps)
        self.proj_in = nn.Linear(c["in_dim"], c["dim"])
        self.blocks = nn.ModuleList(Block(c["dim"], c["heads"], c["ff_mult"], eps) for _ in range(c["layers"]))
        self.norm_out = nn.LayerNorm(c["dim"], eps=eps)
        self.proj_out = nn.Linear(c["dim"], c["ctx_dim"])

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """states [B, T, in_dim] (or [T, in_dim]) -> [B, T, ctx_dim] (or [T, ctx_dim]).

        mask: optional key-padding mask [B, T], true (or 1) for real tokens, for batches of
        prompts padded to one length; padded tokens are not attended to (their own outputs are
        meaningless). Every row needs at least one real token. cutecpp runs one prompt per row
        without padding, so it has no mask.
        """
        single = states.dim() == 2
        if single:
            states = states[None]
            mask = None if mask is None else mask[None]
        keep = None if mask is None else mask.to(torch.bool)
        x = self.proj_in(self.norm_in(states))
        for block in self.blocks:
            x = block(x, keep)
        out = self.proj_out(self.norm_out(x))
        return out[0] if single else out

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Writes config.json (with "_class_name": "Alignment") and diffusion_pytorch_model.safetensors."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"_class_name": CLASS_NAME, **self._config}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        state = {k: v.detach().to(torch.float32).contiguous() for k, v in self.state_dict().items()}
        save_file(state, folder / WEIGHTS_FILE)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str]) -> Alignment:
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        if config.get("_class_name", CLASS_NAME) != CLASS_NAME:
            raise ValueError(f"{folder / CONFIG_FILE}: _class_name is {config['_class_name']!r}, not {CLASS_NAME}")
        model = cls(config)
        model.load_state_dict(load_file(folder / WEIGHTS_FILE))
        return model.eval()

