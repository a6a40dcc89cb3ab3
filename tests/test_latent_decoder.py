"""tools/latent_decoder.py: the tiny decoder with a width per stage. With equal widths it is diffusers'
DecoderTiny; widened, it first computes what the narrow one did; an AutoencoderTiny folder carries it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import latent_decoder  # noqa: E402
import latent_encoder  # noqa: E402


def _decoder_tiny(seed: int = 0):
    """A diffusers DecoderTiny: 4 latent channels, three 8-wide stages (x4), weights far from zero."""
    from diffusers.models.autoencoders.vae import DecoderTiny

    torch.manual_seed(seed)
    dec = DecoderTiny(4, 3, (1, 2, 1), (8, 8, 8), 2, "relu", "nearest")
    with torch.no_grad():
        for p in dec.parameters():
            p.normal_(0, 0.3)
    return dec.eval()


def _latents(seed: int = 1) -> torch.Tensor:
    return 2 * torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(seed))


def test_uniform_latent_decoder_is_decoder_tiny():
    """Same module tree and parameter names as DecoderTiny: its weights load as they are, same output."""
    ref = _decoder_tiny()
    dec = latent_decoder.LatentDecoder((8, 8, 8), (1, 2, 1), latent_channels=4).eval()
    dec.load_state_dict(ref.state_dict())  # strict: every name and shape the same
    with torch.no_grad():
        assert torch.equal(dec(_latents()), ref(_latents()))


def test_widened_decoder_computes_what_the_narrow_one_did():
    ref = _decoder_tiny()
    wide = latent_decoder.widen_from(ref, (24, 16, 8), seed=3).eval()
    assert wide.config == {"channels": [24, 16, 8], "blocks": [1, 2, 1], "latent_channels": 4, "out_channels": 3,
                           "upsampling": 2}
    assert sum(p.numel() for p in wide.parameters()) > 2 * sum(p.numel() for p in ref.parameters())
    with torch.no_grad():
        want = ref(_latents())
        got = wide(_latents())
    assert got.shape == want.shape == (2, 3, 20, 24)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    # ... and the new channels are live: the zero weights that read them get a gradient
    wide.train()
    wide(_latents()).square().mean().backward()
    first_block = wide.layers[2].conv[0]
    assert first_block.weight.grad[:8, 8:].abs().max() > 0


def test_widen_refuses_what_it_cannot_keep():
    ref = _decoder_tiny()
    with pytest.raises(ValueError, match="3 stages, not 2"):
        latent_decoder.widen_from(ref, (16, 8))
    with pytest.raises(ValueError, match="cannot widen"):
        latent_decoder.widen_from(ref, (16, 4, 8))  # narrower than the decoder at the second stage


def test_an_autoencoder_folder_carries_the_widths(tmp_path):
    """save_pretrained writes the widths into config.json; load_autoencoder builds that decoder again."""
    from diffusers import AutoencoderTiny

    ae = AutoencoderTiny(latent_channels=4, decoder_block_out_channels=(8, 8, 8), num_decoder_blocks=(1, 2, 1),
                         encoder_block_out_channels=(8, 8, 8), num_encoder_blocks=(1, 1, 1))
    latent_decoder.swap_into(ae, latent_decoder.widen_from(_decoder_tiny(), (24, 16, 8), seed=3))
    ae.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["decoder_block_out_channels"] == config["block_out_channels"] == [24, 16, 8]
    back = latent_encoder.load_autoencoder(tmp_path)
    assert isinstance(back.decoder, latent_decoder.LatentDecoder)
    assert back.decoder.config == ae.decoder.config
    with torch.no_grad():
        assert torch.equal(back.decoder(_latents()), ae.eval().decoder(_latents()))
