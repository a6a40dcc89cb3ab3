"""cute-mini's tiny decoder with a width per stage: wide where the picture is small, narrow at full size.

diffusers' `DecoderTiny` keeps one width through all its stages (0.42 builds mismatched layers for a
list that changes), so a wider decoder costs most at 512x512, where the picture is already drawn, and
least at 32x32 and 64x64, where the latents' 16 numbers per 16x16 pixels must be unpacked into
accessories. `LatentDecoder` is the same network with the same parameter names (conv and ReLU, then per
stage: `AutoencoderTinyBlock`s, an Upsample, a conv; tanh(x/3)*3 before, [0, 1] -> [-1, 1] after), the
conv closing stage s mapping its width to stage s+1's (the last one to the picture's channels). With
equal widths it is `DecoderTiny`: its weights load as they are. The C++ tiny decoder runs either
(`cutecpp.tiny_decoder.block_out_channels` may change from stage to stage).

`widen_from(decoder, channels)` builds one that computes exactly what a narrower decoder computes (the
old weights in the first channels; the new channels start from a fresh init and are read by nothing
yet: zero weights), as `latent_encoder.widen_from` does for the encoder.

An AutoencoderTiny folder stays the one place a decoder lives (the converter reads it as it is): its
config.json names the widths per stage (`swap_into` writes them), which diffusers cannot build, so
`autoencoder_from_config` builds the AutoencoderTiny with the right decoder before its weights are read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from latent_encoder import copy_conv
from torch import nn


class LatentDecoder(nn.Module):
    def __init__(self, channels: Sequence[int] = (16,) * 5, blocks: Sequence[int] = (1,) * 5,
                 latent_channels: int = 16, out_channels: int = 3, upsampling: int = 2) -> None:
        from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock

        super().__init__()
        if len(channels) != len(blocks):
            raise ValueError(f"channels {tuple(channels)} and blocks {tuple(blocks)} differ in length")
        self.config = {"channels": [int(c) for c in channels], "blocks": [int(b) for b in blocks],
                       "latent_channels": int(latent_channels), "out_channels": int(out_channels),
                       "upsampling": int(upsampling)}
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, channels[0], kernel_size=3, padding=1), nn.ReLU()]
        for s, (c, n) in enumerate(zip(channels, blocks, strict=True)):
            last = s + 1 == len(channels)
            layers += [AutoencoderTinyBlock(c, c, "relu") for _ in range(n)]
            if not last:
                layers.append(nn.Upsample(scale_factor=upsampling, mode="nearest"))
            layers.append(nn.Conv2d(c, out_channels if last else channels[s + 1], kernel_size=3, padding=1,
                                    bias=last))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.tanh(x / 3) * 3).mul(2).sub(1)  # as DecoderTiny.forward


def from_autoencoder_config(config: dict) -> LatentDecoder:
    """The decoder an AutoencoderTiny config.json (or a bundle's tiny_decoder config, which names the
    same settings `block_out_channels`/`num_blocks`) describes."""
    channels = config.get("decoder_block_out_channels", config.get("block_out_channels"))
    blocks = config.get("num_decoder_blocks", config.get("num_blocks"))
    return LatentDecoder(channels, blocks, config["latent_channels"], config.get("out_channels", 3),
                         config.get("upsampling_scaling_factor", 2))


@torch.no_grad()
def widen_from(old: nn.Module, channels: Sequence[int], seed: int = 0) -> LatentDecoder:
    """A LatentDecoder at least as wide as `old` (a DecoderTiny or LatentDecoder) at every stage, with
    the same blocks, computing what `old` computes (new weights drawn with `seed`, the global random
    state left alone)."""
    from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock

    convs = [m for m in old.layers if isinstance(m, nn.Conv2d)]
    blocks = [0]  # per stage: after the first conv and its ReLU, each further conv closes a stage
    for m in list(old.layers)[2:]:
        if isinstance(m, nn.Conv2d):
            blocks.append(0)
        elif isinstance(m, AutoencoderTinyBlock):
            blocks[-1] += 1
    blocks = blocks[:-1]
    if len(channels) != len(blocks):
        raise ValueError(f"the decoder has {len(blocks)} stages, not {len(channels)}")
    upsample = next((m for m in old.layers if isinstance(m, nn.Upsample)), None)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        new = LatentDecoder(channels, blocks, convs[0].in_channels, convs[-1].out_channels,
                            int(upsample.scale_factor) if upsample is not None else 2)
    for new_layer, old_layer in zip(new.layers, old.layers, strict=True):
        if isinstance(new_layer, nn.Conv2d):
            copy_conv(new_layer, old_layer)
        elif isinstance(new_layer, AutoencoderTinyBlock):
            for c_new, c_old in zip((m for m in new_layer.conv if isinstance(m, nn.Conv2d)),
                                    (m for m in old_layer.conv if isinstance(m, nn.Conv2d)), strict=True):
                copy_conv(c_new, c_old)
    return new


def swap_into(ae, decoder: LatentDecoder):
    """`ae` (a diffusers AutoencoderTiny) with `decoder` in place and its config saying so."""
    ae.decoder = decoder
    channels = decoder.config["channels"]  # AutoencoderTiny keeps a copy as block_out_channels
    ae.register_to_config(decoder_block_out_channels=channels, block_out_channels=channels,
                          num_decoder_blocks=decoder.config["blocks"])
    return ae


def autoencoder_from_config(config: dict):
    """An AutoencoderTiny (random weights) for an AutoencoderTiny config.json whose decoder widths may
    change from stage to stage (diffusers builds the decoder for one width; this puts the right one in)."""
    from diffusers import AutoencoderTiny

    channels = config["decoder_block_out_channels"]
    # block_out_channels is AutoencoderTiny's own copy of the decoder widths, not an argument: swap_into
    # writes it again (passing it makes diffusers warn that it is ignored)
    given = {k: v for k, v in config.items() if k != "block_out_channels"}
    ae = AutoencoderTiny.from_config({**given, "decoder_block_out_channels": [channels[0]] * len(channels)})
    return swap_into(ae, from_autoencoder_config(config))
