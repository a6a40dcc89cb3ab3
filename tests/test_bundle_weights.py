"""tools/bundle_weights.py and tools/fit_encoder.py's latent statistics: a converted bundle read back
into PyTorch gives the weights that went in (exactly for f32, within the dtype's rounding otherwise),
so training can resume from a shipped bundle."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundles import make_alignment, make_tiny, make_unet

from cutecpp.convert import convert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bundle_weights  # noqa: E402
import fit_encoder  # noqa: E402
import latent_encoder  # noqa: E402

MEAN = [0.5, -2.0, 0.0, 1.0]
STD = [0.25, 1.5, 1.0, 0.5]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A micro UNet, an alignment module with its context width, and a TAESD-style autoencoder whose
    config carries per-channel statistics, saved as the converter reads them."""
    root = tmp_path_factory.mktemp("models")
    unet = make_unet("micro")
    unet.save_pretrained(root / "unet")
    align = make_alignment({"in_dim": 24, "dim": 16, "ctx_dim": unet.config.cross_attention_dim, "layers": 1,
                            "heads": 2, "ff_mult": 2, "norm_eps": 1e-5})
    align.save_pretrained(root / "align")
    ae = make_tiny("taesd")
    ae.register_to_config(scaling_factor=2.0, shift_factor=0.5, latents_mean=MEAN, latents_std=STD)
    ae.save_pretrained(root / "ae")
    return root, unet, align, ae


def bundle(folders, dtype: str) -> Path:
    root = folders[0]
    out = root / f"{dtype}.gguf"
    if not out.exists():
        convert(out, dtype, f"m-{dtype}", unet=root / "unet", alignment=root / "align", tiny_decoder=root / "ae")
    return out


def max_rel_error(got: dict, want: dict) -> float:
    assert got.keys() == want.keys()
    return max(float((got[k] - want[k]).abs().max() / (want[k].abs().max() + 1e-12)) for k in want)


@pytest.mark.parametrize("dtype, tol", [("f32", 0.0), ("f16", 1e-3), ("q8_0", 1e-2)])
def test_weights_come_back(folders, dtype, tol):
    _, unet, align, ae = folders
    path = bundle(folders, dtype)
    for component, module, prefix in (("unet", unet, ""), ("alignment", align, ""),
                                      ("tiny_decoder", ae.decoder, "decoder.")):
        got = bundle_weights.read_state_dict(path, component, module, prefix)
        err = max_rel_error(got, module.state_dict())
        assert err <= tol, f"{component} {dtype}: {err:.2e}"
    # The weights load into a fresh module of that architecture and compute the same.
    fresh = make_unet("micro", seed=5)
    fresh.load_state_dict(bundle_weights.read_state_dict(path, "unet", fresh))
    x, t, c = torch.randn(1, 4, 8, 8), torch.tensor([10.0]), torch.randn(1, 3, unet.config.cross_attention_dim)
    with torch.no_grad():
        ref, out = unet(x, t, c).sample, fresh(x, t, c).sample
    assert float((out - ref).abs().max()) <= max(tol, 1e-6) * 50 * float(ref.abs().max())


def test_wrong_architecture_is_refused(folders):
    path = bundle(folders, "f32")
    with pytest.raises(KeyError, match="no tensor 'unet.norm_in.weight'"):
        bundle_weights.read_state_dict(path, "unet", folders[2])  # the alignment module is not a UNet
    bigger = make_tiny("taesd")
    bigger.decoder.layers[0] = torch.nn.Conv2d(4, 16, 3, padding=1)
    with pytest.raises(ValueError, match="values"):
        bundle_weights.read_state_dict(path, "tiny_decoder", bigger.decoder, "decoder.")


def test_raw_latent_stats_undo_the_bundle_scaling(folders):
    """The UNet's z is raw = z * latents_std / scale + latents_mean + shift (docs/bundle-format.md)."""
    path = bundle(folders, "f32")
    cfg = bundle_weights.component_config(path, "tiny_decoder")
    assert cfg["latents_mean"] == pytest.approx(MEAN) and cfg["scaling_factor"] == pytest.approx(2.0)
    mean, std = fit_encoder.raw_latent_stats(path)
    assert mean == pytest.approx(np.array(MEAN) + 0.5) and std == pytest.approx(np.array(STD) / 2.0)


def test_assemble_gives_the_shipped_decoder_its_encoder(tmp_path, monkeypatch):
    """fit_encoder.py assemble: the committed encoder (here a random one) and the shipped bundle's decoder
    in one AutoencoderTiny folder with raw latents, and the bundle's statistics for train_unet.py."""
    from diffusers import AutoencoderTiny
    from safetensors.torch import load_file, save_file

    from cutecpp.convert import WEIGHTS_FILE

    bundle_path = fit_encoder.DEFAULT_BUNDLE
    torch.manual_seed(0)
    encoder = AutoencoderTiny(**fit_encoder.cute_mini.TINY_AUTOENCODER).encoder.state_dict()
    monkeypatch.setattr(fit_encoder, "ENCODER_FILE", tmp_path / "encoder.safetensors")
    monkeypatch.setattr(fit_encoder, "TRAIN_DIR", tmp_path / "train")
    save_file(encoder, str(tmp_path / "encoder.safetensors"))
    args = type("Args", (), {"bundle": bundle_path, "output": tmp_path / "ae", "run": False})()
    fit_encoder.assemble(args)

    ae = latent_encoder.load_autoencoder(tmp_path / "ae")
    assert ae.config.scaling_factor == 1.0 and ae.config.shift_factor == 0.0
    # the committed file held a plain EncoderTiny's weights: the folder's encoder is a LatentEncoder of that shape
    assert isinstance(ae.encoder, latent_encoder.LatentEncoder)
    assert ae.encoder.config["channels"] == list(fit_encoder.cute_mini.TINY_AUTOENCODER["encoder_block_out_channels"])
    for key, value in encoder.items():
        assert torch.equal(ae.encoder.state_dict()[key], value)
    # the folder's own EncoderTiny is zero, so nothing computes latents with it by mistake
    own = load_file(str(tmp_path / "ae" / WEIGHTS_FILE))
    assert any(k.startswith("encoder.") for k in own)
    assert all(not v.any() for k, v in own.items() if k.startswith("encoder."))
    shipped = bundle_weights.read_state_dict(bundle_path, "tiny_decoder", ae.decoder, "decoder.")
    for key, value in ae.decoder.state_dict().items():
        assert torch.equal(value, shipped[key])
    stats = json.loads((tmp_path / "train" / "latents" / "channel_stats.json").read_text())
    mean, std = fit_encoder.raw_latent_stats(bundle_path)
    assert stats["mean"] == pytest.approx(mean, abs=1e-6) and stats["std"] == pytest.approx(std, abs=1e-6)
