"""tools/fit_decoder.py: the decoder is fine-tuned against the frozen committed encoder, and the export is
the bundle it started from with only the decoder's weights replaced (the UNet, the alignment and the
decoder's latent statistics come back unchanged)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bundle_weights  # noqa: E402
import fit_decoder  # noqa: E402
from gguf import GGUFReader  # noqa: E402

BUNDLE = fit_decoder.fit_encoder.DEFAULT_BUNDLE
FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")


def _tensors(path: Path, prefix: str) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in GGUFReader(path).tensors if t.name.startswith(prefix)}


def _shipped_decoder():
    ae = fit_decoder.fit_encoder.make_autoencoder(BUNDLE)
    return ae.decoder


def test_export_replaces_only_the_decoder(tmp_path, monkeypatch):
    decoder = _shipped_decoder()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in decoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = {k: v.clone() for k, v in decoder.state_dict().items()}
    monkeypatch.setattr(fit_decoder, "OUT", tmp_path / "fit")
    (tmp_path / "fit").mkdir()
    torch.save({"decoder": state, "opt": {}, "step": 7, "bundle_sha256": fit_decoder._sha256(BUNDLE)},
               tmp_path / "fit" / "latest.pt")
    out = tmp_path / "new.gguf"
    fit_decoder.export(SimpleNamespace(bundle=BUNDLE, output=out, dtype="f16", model_id="cute-mini-test"))

    for prefix in ("unet.", "alignment."):
        old, new = _tensors(BUNDLE, prefix), _tensors(out, prefix)
        assert old and old.keys() == new.keys()
        assert all(np.array_equal(old[k], new[k]) for k in old), prefix
    got = bundle_weights.read_state_dict(out, "tiny_decoder", _shipped_decoder(), "decoder.")
    shipped = bundle_weights.read_state_dict(BUNDLE, "tiny_decoder", _shipped_decoder(), "decoder.")
    for key, value in state.items():
        assert torch.allclose(got[key], value, rtol=1e-3, atol=1e-4), key
    assert any(not torch.equal(got[k], shipped[k]) for k in got)  # the decoder did change
    old_cfg, new_cfg = (bundle_weights.component_config(b, "tiny_decoder") for b in (BUNDLE, out))
    for key in ("latents_mean", "latents_std", "scaling_factor", "shift_factor", "latent_channels"):
        assert new_cfg[key] == pytest.approx(old_cfg[key]), key
    assert bundle_weights.header_value(out, "cutecpp.model_id") == "cute-mini-test"
    source = bundle_weights.header_value(BUNDLE, "cutecpp.model_id")
    name = bundle_weights.header_value(out, "general.name")
    assert name == f"cute-mini ({source}'s UNet, decoder fine-tuned 7 steps)"


def test_export_refuses_a_run_of_another_bundle(tmp_path, monkeypatch):
    monkeypatch.setattr(fit_decoder, "OUT", tmp_path)
    torch.save({"decoder": {}, "opt": {}, "step": 1, "bundle_sha256": "0" * 64}, tmp_path / "latest.pt")
    with pytest.raises(SystemExit, match="another bundle"):
        fit_decoder.export(SimpleNamespace(bundle=BUNDLE, output=tmp_path / "x.gguf", dtype="f16", model_id="x"))
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.skipif(not FONT.exists(), reason="needs Debian's fonts-noto-color-emoji")
def test_train_moves_the_decoder_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(fit_decoder, "OUT", tmp_path)
    args = SimpleNamespace(bundle=BUNDLE, steps=2, encoder=None, item_weight=4.0, batch=2, crop=64, lr=1e-3,
                           threads=1, bf16=False, seed=0, log_every=1, save_every=1, widen=None)
    fit_decoder.train(args)
    st = fit_decoder._run_state()
    assert st["step"] == 2 and st["bundle_sha256"] == fit_decoder._sha256(BUNDLE)
    shipped = _shipped_decoder().state_dict()
    assert any(not torch.equal(st["decoder"][k], shipped[k]) for k in shipped)
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert len(log) == 2 and all(np.isfinite(float(row.split(",")[1])) for row in log)
    args.steps = 3
    fit_decoder.train(args)
    assert fit_decoder._run_state()["step"] == 3
    # a run belongs to the bundle it started from
    other = tmp_path / "other.gguf"
    other.write_bytes(BUNDLE.read_bytes() + b"\0")
    with pytest.raises(SystemExit, match="another bundle"):
        fit_decoder.train(SimpleNamespace(**{**vars(args), "bundle": other, "steps": 4}))


@pytest.mark.skipif(not FONT.exists(), reason="needs Debian's fonts-noto-color-emoji")
def test_a_widened_run_exports_a_decoder_the_core_runs(tmp_path, monkeypatch):
    """--widen: the run's decoder is wider at its first stages; the export's C++ decoder draws what it draws."""
    from latent_decoder import LatentDecoder

    import cutecpp

    monkeypatch.setattr(fit_decoder, "OUT", tmp_path / "fit")
    shipped = bundle_weights.component_config(BUNDLE, "tiny_decoder")["block_out_channels"]
    widths = tuple(c + 8 if s < 2 else c for s, c in enumerate(shipped))  # its first two stages 8 wider
    args = SimpleNamespace(bundle=BUNDLE, steps=1, encoder=None, item_weight=4.0, batch=2, crop=64, lr=1e-3,
                           threads=1, bf16=False, seed=0, log_every=1, save_every=1, widen=widths)
    fit_decoder.train(args)
    st = fit_decoder._run_state()
    assert st["decoder_config"]["channels"] == list(widths)
    with pytest.raises(SystemExit, match="applies to a new run"):
        fit_decoder.train(SimpleNamespace(**{**vars(args), "steps": 2, "widen": tuple(c + 8 for c in widths)}))

    out = tmp_path / "wide.gguf"
    fit_decoder.export(SimpleNamespace(bundle=BUNDLE, output=out, dtype="f16", model_id="cute-mini-wide"))
    assert bundle_weights.component_config(out, "tiny_decoder")["block_out_channels"] == list(widths)
    decoder = LatentDecoder(**st["decoder_config"]).eval()
    decoder.load_state_dict(st["decoder"])
    mean, std = fit_decoder.fit_encoder.raw_latent_stats(BUNDLE)
    z = np.random.default_rng(0).standard_normal((1, 16, 4, 4)).astype(np.float32)
    with torch.no_grad():
        want = decoder(torch.from_numpy(z * std[:, None, None] + mean[:, None, None])).numpy()
    got = cutecpp.Context(cutecpp.Model.load(out), threads=2).tiny_decode(z)
    assert got.shape == want.shape == (1, 3, 64, 64)
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()  # f16 weights
