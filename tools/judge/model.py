"""The judge network: a small residual CNN (channels_last) with a stride-8 class map and global heads.

    input  [n, 3, S, S] in [-1, 1] (S = 128 by default; any multiple of 32 works)
    dense  [n, D, S/8, S/8]: one logit per class and cell for animals, items, moods and places, and 13
           colour logits for whatever item the cell shows (labels.DENSE_LAYOUT)
    global place (38), light (4), expression (13), count (3) logits from pooled features

Animals and items present are the spatial maximum of their dense channels, so the same logits serve
"is it there" (trained on the picture's label) and "where" (trained on its boxes); the boxes make
learning small things (a bow, a medal) much faster than picture-level labels alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .labels import DENSE_CHANNELS, GLOBAL_SIZES


def conv_bn(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class Block(nn.Module):
    """A basic residual block (two 3x3 convolutions)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = conv_bn(c, c)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b(self.a(x)))


WIDTHS = (24, 32, 48, 96, 160, 256)  # stem, /2, /4, /8, /16, /32


class Judge(nn.Module):
    def __init__(self, widths: tuple[int, ...] = WIDTHS, neck: int = 128) -> None:
        super().__init__()
        w0, w1, w2, w3, w4, w5 = widths
        self.stem = nn.Sequential(conv_bn(3, w0, 2), conv_bn(w0, w1))  # /2
        self.s2 = nn.Sequential(conv_bn(w1, w2, 2), Block(w2))  # /4
        self.s3 = nn.Sequential(conv_bn(w2, w3, 2), Block(w3), Block(w3))  # /8
        self.s4 = nn.Sequential(conv_bn(w3, w4, 2), Block(w4), Block(w4))  # /16
        self.s5 = nn.Sequential(conv_bn(w4, w5, 2), Block(w5))  # /32
        self.lat3, self.lat4, self.lat5 = nn.Conv2d(w3, neck, 1), nn.Conv2d(w4, neck, 1), nn.Conv2d(w5, neck, 1)
        self.fuse = conv_bn(neck, neck)
        self.dense = nn.Conv2d(neck, DENSE_CHANNELS, 1)
        self.mlp = nn.Sequential(nn.Linear(2 * w5 + neck, 256), nn.ReLU(True), nn.Dropout(0.1))
        self.heads = nn.ModuleDict({k: nn.Linear(256, n) for k, n in GLOBAL_SIZES.items()})
        nn.init.constant_(self.dense.bias, -4.0)  # most cells show nothing: start near p = 0.02

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c3 = self.s3(self.s2(self.stem(x)))
        c4 = self.s4(c3)
        c5 = self.s5(c4)
        size = c3.shape[-2:]
        p = self.lat3(c3) + F.interpolate(self.lat4(c4), size=size, mode="nearest") \
            + F.interpolate(self.lat5(c5), size=size, mode="nearest")
        p = self.fuse(p)
        pooled = torch.cat([c5.mean((2, 3)), c5.amax((2, 3)), p.amax((2, 3))], 1)
        h = self.mlp(pooled)
        out = {k: head(h) for k, head in self.heads.items()}
        out["dense"] = self.dense(p)
        return out


def prepare(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [n, 3, S, S] -> float in [-1, 1], channels_last, on `device`."""
    x = images.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last)


def build(config: dict | None = None) -> Judge:
    config = config or {}
    return Judge(tuple(config.get("widths", WIDTHS)), int(config.get("neck", 128))).to(
        memory_format=torch.channels_last)
