"""cute-mini's training encoder: pictures -> the tiny decoder's latents, widening as it downsamples.

The encoder never ships (a bundle holds only the decoder); it makes the UNet's training latents
(`train_unet.py prepare`) and measures the autoencoder's ceiling (`eval_quality.py score --renders
--through-autoencoder`). So it can be much wider than the 16-wide decoder at no cost to the product.
diffusers' `EncoderTiny` keeps one width through all five stages (0.42 fails on a list that changes),
so the width would cost most where it helps least, at full resolution. `LatentEncoder` is the same
network (conv, `AutoencoderTinyBlock`s, a stride-2 conv per stage, a last conv to the latent
channels, input scaled from [-1, 1] to [0, 1]) with a width per stage: narrow at 512 pixels, wide at
64x64 and 32x32, where 16x16 pixels must be packed into 16 numbers.

`widen_from(encoder)` builds one that computes exactly what a narrower encoder (`EncoderTiny` or
`LatentEncoder`) computes: the old weights in the first channels, the new channels read everything
(fresh init) and are read by nothing yet (zero weights), extra blocks start as identities (their
last conv zero; a block's input is already >= 0 after the previous ReLU). Training then only adds.

An autoencoder folder (`fit_encoder.py assemble`) is a diffusers `AutoencoderTiny` folder (its decoder
perhaps with a width per stage: tools/latent_decoder.py); when it also holds `latent_encoder.safetensors`
(the config in its metadata), `load_autoencoder` puts that encoder in place of the folder's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

ENCODER_FILE_NAME = "latent_encoder.safetensors"


class LatentEncoder(nn.Module):
    def __init__(self, channels=(16, 16, 32, 64, 128), blocks=(1, 1, 1, 1, 2), in_channels: int = 3,
                 latent_channels: int = 16) -> None:
        from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock

        super().__init__()
        if len(channels) != len(blocks):
            raise ValueError(f"channels {channels} and blocks {blocks} differ in length")
        self.config = {"channels": [int(c) for c in channels], "blocks": [int(b) for b in blocks],
                       "in_channels": int(in_channels), "latent_channels": int(latent_channels)}
        layers: list[nn.Module] = []
        prev = in_channels
        for i, (c, n) in enumerate(zip(channels, blocks, strict=True)):
            if i == 0:
                layers.append(nn.Conv2d(prev, c, kernel_size=3, padding=1))
            else:
                layers.append(nn.Conv2d(prev, c, kernel_size=3, padding=1, stride=2, bias=False))
            layers += [AutoencoderTinyBlock(c, c, "relu") for _ in range(n)]
            prev = c
        layers.append(nn.Conv2d(prev, latent_channels, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.add(1).div(2))  # as EncoderTiny: pictures in [-1, 1], the network sees [0, 1]


def _stages(layers: nn.Sequential) -> list[tuple[nn.Conv2d, list[nn.Module]]]:
    """(the stage's entry conv, its blocks) per stage; the last conv is left out."""
    stages: list[tuple[nn.Conv2d, list[nn.Module]]] = []
    for layer in list(layers)[:-1]:
        if isinstance(layer, nn.Conv2d):
            stages.append((layer, []))
        else:
            stages[-1][1].append(layer)
    return stages


@torch.no_grad()
def copy_conv(new: nn.Conv2d, old: nn.Conv2d) -> None:
    """Old weights in the first channels; old outputs ignore the new inputs; new outputs keep their init."""
    o, i = old.weight.shape[:2]
    if new.weight.shape[0] < o or new.weight.shape[1] < i or new.weight.shape[2:] != old.weight.shape[2:]:
        raise ValueError(f"cannot widen a conv {tuple(old.weight.shape)} into {tuple(new.weight.shape)}")
    new.weight[:o, :i] = old.weight
    new.weight[:o, i:] = 0
    if old.bias is not None:
        new.bias[:o] = old.bias


@torch.no_grad()
def widen_from(old: nn.Module, channels, blocks, seed: int = 0) -> LatentEncoder:
    """A LatentEncoder at least as wide and deep as `old` per stage, computing what `old` computes
    (the new channels' weights drawn with `seed`, the global random state left alone)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        new = LatentEncoder(channels, blocks, in_channels=old.layers[0].in_channels,
                            latent_channels=old.layers[-1].out_channels)
    old_stages, new_stages = _stages(old.layers), _stages(new.layers)
    if len(old_stages) != len(new_stages):
        raise ValueError(f"the encoder has {len(old_stages)} stages, not {len(new_stages)}")
    for (old_conv, old_blocks), (new_conv, new_blocks) in zip(old_stages, new_stages, strict=True):
        if len(new_blocks) < len(old_blocks):
            raise ValueError("widen_from cannot remove blocks")
        copy_conv(new_conv, old_conv)
        for k, block in enumerate(new_blocks):
            convs = [m for m in block.conv if isinstance(m, nn.Conv2d)]
            if k < len(old_blocks):
                for c_new, c_old in zip(convs, [m for m in old_blocks[k].conv if isinstance(m, nn.Conv2d)],
                                        strict=True):
                    copy_conv(c_new, c_old)
            else:  # an added block: relu(0 + x) = x for the block's input x >= 0
                convs[-1].weight.zero_()
                convs[-1].bias.zero_()
    copy_conv(new.layers[-1], old.layers[-1])  # the same latent channels: every output is an old one
    return new


def save(encoder: LatentEncoder, path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    meta = {"latent_encoder": json.dumps(encoder.config), **(metadata or {})}
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(path), metadata=meta)


def load(path: Path, default: dict | None = None) -> LatentEncoder:
    """A LatentEncoder from its safetensors file (the shape in the file's metadata; `default`, e.g.
    {"channels": ..., "blocks": ...}, for a file without it, such as a diffusers EncoderTiny's weights)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "latent_encoder" not in meta and default is None:
        raise ValueError(f"{path} is not a LatentEncoder file (no 'latent_encoder' metadata)")
    cfg = {"in_channels": 3, "latent_channels": 16, **(json.loads(meta["latent_encoder"])
                                                         if "latent_encoder" in meta else default)}
    enc = LatentEncoder(cfg["channels"], cfg["blocks"], cfg["in_channels"], cfg["latent_channels"])
    enc.load_state_dict(load_file(str(path)))
    return enc


def load_autoencoder(folder: str | Path):
    """A diffusers AutoencoderTiny from an autoencoder folder, with its LatentEncoder when it has one and
    its decoder's width per stage (`latent_decoder.LatentDecoder`) as its config.json gives it."""
    from latent_decoder import autoencoder_from_config
    from safetensors.torch import load_file

    from cutecpp.convert import CONFIG_FILE, WEIGHTS_FILE

    ae = autoencoder_from_config(json.loads(Path(folder, CONFIG_FILE).read_text()))
    ae.load_state_dict(load_file(str(Path(folder, WEIGHTS_FILE))))
    path = Path(folder, ENCODER_FILE_NAME)
    if path.exists():
        ae.encoder = load(path)
    return ae.eval()
