"""tools/latent_encoder.py (the training encoder that widens as it downsamples) and the item-weighted
reconstruction losses tools/fit_encoder.py trains it with."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import latent_encoder  # noqa: E402
from train_autoencoder import image_losses, render_batch  # noqa: E402


def _tiny_encoder_tiny(seed: int = 0):
    """A diffusers EncoderTiny, 8 wide, three stages (x4), with weights far from zero."""
    from diffusers.models.autoencoders.vae import EncoderTiny

    torch.manual_seed(seed)
    enc = EncoderTiny(3, 4, (1, 1, 1), (8, 8, 8), "relu")
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.3)
    return enc.eval()


def _tiny_encoder_tiny_two_blocks():
    from diffusers.models.autoencoders.vae import EncoderTiny

    return EncoderTiny(3, 4, (2, 1, 1), (8, 8, 8), "relu")


def test_uniform_latent_encoder_is_encoder_tiny():
    """Same module tree and names as diffusers' EncoderTiny: its weights load as they are, same output."""
    ref = _tiny_encoder_tiny()
    enc = latent_encoder.LatentEncoder((8, 8, 8), (1, 1, 1), latent_channels=4).eval()
    enc.load_state_dict(ref.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(enc(x), ref(x), rtol=0, atol=0)


def test_widen_from_computes_what_the_narrow_encoder_computes():
    ref = _tiny_encoder_tiny()
    wide = latent_encoder.widen_from(ref, (8, 16, 32), (1, 2, 3)).eval()
    assert wide.config["channels"] == [8, 16, 32] and wide.config["blocks"] == [1, 2, 3]
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in ref.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out, expected = wide(x), ref(x)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # and the new channels are alive: a gradient reaches the weights that read them
    wide.train()
    wide(x).square().mean().backward()
    assert wide.layers[-1].weight.grad[:, 8:].abs().sum() > 0


def test_widen_from_refuses_a_narrower_shape():
    ref = _tiny_encoder_tiny()
    with pytest.raises(ValueError, match="cannot widen"):
        latent_encoder.widen_from(ref, (8, 4, 8), (1, 1, 1))
    with pytest.raises(ValueError, match="stages"):
        latent_encoder.widen_from(ref, (8, 8), (1, 1))
    with pytest.raises(ValueError, match="remove blocks"):
        latent_encoder.widen_from(_tiny_encoder_tiny_two_blocks(), (8, 8, 8), (1, 1, 1))


def test_save_load_round_trip_and_plain_encoder_tiny_files(tmp_path):
    from safetensors.torch import save_file

    wide = latent_encoder.widen_from(_tiny_encoder_tiny(), (8, 16, 16), (1, 1, 2))
    latent_encoder.save(wide, tmp_path / "e.safetensors", {"step": "7"})
    back = latent_encoder.load(tmp_path / "e.safetensors")
    assert back.config == wide.config
    for key, value in wide.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    # a plain EncoderTiny's file has no shape in it: refused unless a default shape is given
    save_file(_tiny_encoder_tiny().state_dict(), str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a LatentEncoder file"):
        latent_encoder.load(tmp_path / "plain.safetensors")
    plain = latent_encoder.load(tmp_path / "plain.safetensors",
                                default={"channels": (8, 8, 8), "blocks": (1, 1, 1), "latent_channels": 4})
    assert plain.config["channels"] == [8, 8, 8]


def test_weighted_image_losses():
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    plain = image_losses(y, x)
    ones = image_losses(y, x, torch.ones(2, 1, 8, 8))
    for a, b in zip(plain, ones, strict=True):
        torch.testing.assert_close(a, b)
    # error only inside a box: weighting the box raises the loss towards the box's own error
    y2 = x.clone()
    y2[:, :, 2:4, 2:4] += 1.0
    w = torch.ones(2, 1, 8, 8)
    w[:, :, 2:4, 2:4] = 8
    assert image_losses(y2, x, w)[0] > 4 * image_losses(y2, x)[0]
    assert image_losses(y2, x)[0] == pytest.approx(4 / 64)


@pytest.mark.skipif(not Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf").exists(),
                    reason="needs Debian's fonts-noto-color-emoji")
def test_render_batch_item_masks_cover_the_item_boxes():
    from make_dataset import render

    pictures, masks = render_batch(0, 4, 128, 128, items=True)
    assert pictures.shape == (4, 3, 128, 128) and masks.shape == (4, 1, 128, 128)
    assert torch.equal(torch.from_numpy(pictures), torch.from_numpy(render_batch(0, 4, 128, 128)))
    for i in range(4):
        boxes = [b["box"] for b in render(i, split="train", size=128)[1]["boxes"] if b["kind"] == "item"]
        area = masks[i, 0].sum()
        if boxes:
            x0, y0, x1, y1 = (int(round(v)) for v in boxes[0])
            assert masks[i, 0, (y0 + y1) // 2, (x0 + x1) // 2] == 1
            assert 0 < area < 128 * 128
        else:
            assert area == 0
    assert masks.sum() > 0
