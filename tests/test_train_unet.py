"""tools/train_unet.py's latent normalisation: the per-channel statistics it measures once, and the
decoder folder its export converts, which must undo exactly that normalisation in cutecpp's decoder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundles import make_tiny

import cutecpp
from cutecpp.convert import convert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import cute_mini  # noqa: E402
import train_unet  # noqa: E402

MEAN = np.array([0.5, -2.0, 0.0, 1.0], np.float32)
STD = np.array([0.25, 1.5, 1.0, 0.5], np.float32)


def latents_with_known_stats(n: int = 64) -> np.ndarray:
    z = np.random.default_rng(0).standard_normal((n, 4, 8, 8)).astype(np.float32)
    z = (z - z.mean(axis=(0, 2, 3), keepdims=True)) / z.std(axis=(0, 2, 3), keepdims=True)
    return (z * STD[None, :, None, None] + MEAN[None, :, None, None]).astype(np.float16)


def test_channel_stats_measured_once_then_fixed(tmp_path, monkeypatch):
    monkeypatch.setattr(train_unet, "TRAIN_DIR", tmp_path)
    (tmp_path / "latents").mkdir()
    z = latents_with_known_stats()
    stats = train_unet.load_channel_stats(z)
    assert stats["mean"] == pytest.approx(MEAN, abs=2e-3) and stats["std"] == pytest.approx(STD, rel=2e-3)
    assert stats["measured_on"] == 64
    # More data later does not move them: a resumed UNet keeps the space it learned.
    assert train_unet.load_channel_stats(z[:8] * 3) == stats
    assert json.loads((tmp_path / "latents" / "channel_stats.json").read_text()) == stats
    with pytest.raises(SystemExit, match="does not fit latents with 16 channels"):
        train_unet.load_channel_stats(np.zeros((2, 16, 4, 4), np.float16))


def test_exported_decoder_undoes_the_normalisation(tmp_path):
    """normalised latents -> the bundle's tiny decoder == the autoencoder's decoder on its raw latents."""
    ae = make_tiny("taesd")
    scale, shift = 4.5, -0.01
    ae.register_to_config(scaling_factor=scale, shift_factor=shift)
    ae.save_pretrained(tmp_path / "ae")
    stats = {"mean": MEAN.tolist(), "std": STD.tolist(), "measured_on": 64}
    folder = train_unet.decoder_folder(tmp_path / "ae", stats, tmp_path / "decoder")
    path = convert(tmp_path / "d.gguf", "f32", "d", tiny_decoder=folder).path
    normalised = np.random.default_rng(1).standard_normal((1, 4, 3, 5)).astype(np.float32)
    prepared = normalised * STD[None, :, None, None] + MEAN[None, :, None, None]  # what prepare stored
    raw = prepared / scale + shift                                                  # the encoder's output
    with torch.no_grad():
        ref = ae.decoder(torch.from_numpy(raw)).numpy()
    got = cutecpp.Context(cutecpp.Model.load(path), threads=1).tiny_decode(normalised)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
    # A UNet from before the statistics ships the autoencoder folder unchanged.
    assert train_unet.decoder_folder(tmp_path / "ae", None, tmp_path / "unused") == tmp_path / "ae"


def test_item_mask_covers_the_latent_pixels_under_item_boxes():
    boxes = [{"kind": "animal", "id": "bear", "box": [100, 100, 400, 400]},
             {"kind": "item", "id": "hat", "box": [160, 40, 200, 70]},      # latent x 10..12.5, y 2.5..4.4
             {"kind": "item", "id": "balloon", "box": [0, 0, 16, 16]}]      # exactly latent pixel (0, 0)
    mask = train_unet.item_mask(boxes, 512)
    assert mask.shape == (32, 32) and mask.dtype == np.uint8
    want = np.zeros((32, 32), np.uint8)
    want[2:5, 10:13] = 1
    want[0, 0] = 1
    assert np.array_equal(mask, want)
    assert not train_unet.item_mask([boxes[0]], 512).any()  # animals are not items


def _tiny_cache(tmp_path, monkeypatch) -> list[str]:
    """A prepared training cache of two pictures in tmp_path, a UNet 32 channels wide at every level;
    the argv of a `train` on it (steps to be added)."""
    cm = train_unet.cute_mini
    monkeypatch.setattr(train_unet, "TRAIN_DIR", tmp_path)
    monkeypatch.setattr(cm, "UNET", {**cm.UNET, "block_out_channels": (32, 32, 32)})
    side, rng = cm.LATENT_SIZE, np.random.default_rng(0)
    texts = np.array(["小熊 冰山上", "小猫 戴红帽子"])
    (tmp_path / "latents").mkdir()
    (tmp_path / "text_states").mkdir()
    np.savez(tmp_path / "latents" / "shard-00000.npz",
             latents=rng.standard_normal((2, cm.LATENT_CHANNELS, side, side)).astype(np.float16), texts=texts,
             items=np.ones((2, side, side), np.uint8))
    for k, t in enumerate(texts):
        np.save(train_unet._state_path(str(t)), rng.standard_normal((3 + k, cm.TEXT_HIDDEN)).astype(np.float16))
    return ["train_unet.py", "train", "--batch", "2", "--threads", "1", "--lr", "1e-2", "--log-every", "1"]


def test_train_steps_save_resume_and_keep_the_ema(tmp_path, monkeypatch):
    """Two steps of `train` on a tiny prepared cache: the checkpoint records the step and config, its EMA
    is the decayed mean of the initial and trained weights, and a second call resumes from it."""
    argv = _tiny_cache(tmp_path, monkeypatch)

    torch.manual_seed(0)
    init = train_unet.make_models()[0].state_dict()
    torch.manual_seed(0)  # the same initial weights inside train
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "1", "--item-weight", "3"])
    assert train_unet.main() == 0
    st = torch.load(train_unet.run_checkpoint(), weights_only=True)
    assert st["step"] == 1 and st["unet_config"]["block_out_channels"] == (32, 32, 32)
    assert st["settings"] == {"item_weight": 3.0, "train_shift": 3.0, "lr": 1e-2}
    decay = 2 / 11  # min(ema, (1 + step) / (10 + step)) after step 1
    name = "conv_in.weight"
    live, ema = st["unet"][name], st["ema_unet"][name]
    assert not torch.equal(live, init[name])
    torch.testing.assert_close(ema, decay * init[name] + (1 - decay) * live)

    shifts = []
    sample = train_unet.sample_sigmas
    monkeypatch.setattr(train_unet, "sample_sigmas", lambda g, n, shift: shifts.append(shift) or sample(g, n, shift))
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "2", "--train-shift", "1.5"])
    assert train_unet.main() == 0
    assert shifts == [1.5]  # the run's own noise-level shift, not the bundle's flow_shift (3)
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "4", "--train-shift", "0"])
    with pytest.raises(SystemExit, match="--train-shift must be above 0"):
        train_unet.main()
    st2 = torch.load(train_unet.run_checkpoint(), weights_only=True)
    assert st2["step"] == 2 and not torch.equal(st2["unet"][name], live)
    assert st2["settings"] == {"item_weight": 3.0, "train_shift": 1.5, "lr": 1e-2}  # weight kept, not given
    weights = []
    step = train_unet.train_step
    monkeypatch.setattr(train_unet, "train_step",
                        lambda *a, **kw: weights.append(float(a[-2].max())) or step(*a, **kw))
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "3"])  # resumed with neither flag: the run's own
    assert train_unet.main() == 0
    assert shifts == [1.5, 1.5] and weights == [3.0]
    rows = [line.split(",") for line in (tmp_path / "unet" / "log.csv").read_text().splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert all(np.isfinite(float(r[1])) and float(r[1]) > 0 for r in rows)  # plain MSE, then the weighted loss


def test_a_deeper_run_starts_from_its_init_and_its_bundle_reads_back(tmp_path, monkeypatch):
    """train --init X --transformer-layers 1,2,2: a new run whose UNet has a second transformer block in
    each attention of its lower levels and X's other weights; its bundle reads back with that depth
    (bundle_models, what --init from a bundle uses)."""
    from bundle_weights import component_config

    argv = _tiny_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "1"])
    assert train_unet.main() == 0
    first = tmp_path / "first.pt"
    train_unet.run_checkpoint().rename(first)
    init = torch.load(first, weights_only=True)
    deeper = [*argv, "--steps", "1", "--lr", "0", "--init", str(first), "--transformer-layers", "1,2,2"]
    monkeypatch.setattr(sys, "argv", deeper)
    assert train_unet.main() == 0
    st = torch.load(train_unet.run_checkpoint(), weights_only=True)
    assert tuple(st["unet_config"]["transformer_layers_per_block"]) == (1, 2, 2)
    added = {k for k in st["unet"] if k not in init["unet"]}
    assert "mid_block.attentions.0.transformer_blocks.1.attn2.to_k.weight" in added
    assert all(".transformer_blocks.1." in k for k in added)
    assert all(torch.equal(st["unet"][k], v) for k, v in init["unet"].items())  # lr 0: the init's weights
    with pytest.raises(SystemExit, match="start a new run"):  # a grown run does not resume with a new shape
        train_unet.main()
    monkeypatch.setattr(sys, "argv", [*argv, "--init", str(first), "--transformer-layers", "1,1"])
    train_unet.run_checkpoint().unlink()
    with pytest.raises(SystemExit, match="one whole number of transformer blocks per level"):
        train_unet.main()

    unet, align = train_unet.make_models(st["unet_config"])
    unet.load_state_dict(st["ema_unet"])
    align.load_state_dict(st["ema_align"])
    unet.save_pretrained(tmp_path / "u")
    align.save_pretrained(tmp_path / "a")
    bundle = convert(tmp_path / "b.gguf", "f32", "m", unet=tmp_path / "u", alignment=tmp_path / "a").path
    assert component_config(bundle, "unet")["transformer_layers_per_block"] == [1, 2, 2]
    config, back, _ = train_unet.bundle_models(bundle)
    assert config["transformer_layers_per_block"] == (1, 2, 2)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in unet.state_dict().items())


@pytest.mark.parametrize("shift", [1.0, 1.5, 3.0])
def test_noise_levels_are_logit_normal_shifted(shift):
    """Half of the training's noise levels lie below the shifted median shift/(1 + shift): 0.5 unshifted,
    0.75 at the bundle's shift 3; all inside (0, 1)."""
    s = train_unet.sample_sigmas(torch.Generator().manual_seed(0), 100_000, shift)
    assert float(s.min()) > 0 and float(s.max()) < 1
    assert abs(float(s.median()) - shift / (1 + shift)) < 0.01


def test_encode_latents_is_the_scaled_encoder_output():
    """What prepare stores: (encoder(x) - shift_factor) * scaling_factor, as float16 (bf16 inside)."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    ae = AutoencoderTiny(**{**train_unet.cute_mini.TINY_AUTOENCODER, "scaling_factor": 2.0, "shift_factor": 0.5})
    ae.eval()
    images = [np.random.default_rng(k).uniform(-1, 1, (3, 64, 64)).astype(np.float32) for k in range(17)]
    got = train_unet.encode_latents(ae, images)
    with torch.no_grad():
        want = (ae.encoder(torch.from_numpy(np.stack(images))) - 0.5) * 2.0
    assert got.dtype == np.float16 and got.shape == tuple(want.shape)  # 17: two chunks of up to 16
    assert np.abs(got.astype(np.float32) - want.numpy()).max() < 0.05 * float(want.abs().max())


def test_export_id_defaults_to_the_one_after_the_shipped_bundle(tmp_path):
    ae = make_tiny("taesd")
    ae.save_pretrained(tmp_path / "ae")
    bundle = convert(tmp_path / "b.gguf", "f32", "cute-mini-0.9", tiny_decoder=tmp_path / "ae").path
    assert cute_mini.next_ship_id(bundle) == "cute-mini-0.10"
    with pytest.raises(SystemExit, match="pass --model-id"):
        cute_mini.next_ship_id(tmp_path / "missing.gguf")
    assert cute_mini.next_model_id("cute-mini-1.19") == "cute-mini-1.20"
    for bad in ("cute-mini", "cute-mini-0.x"):
        with pytest.raises(ValueError, match="does not end in a dotted number"):
            cute_mini.next_model_id(bad)


def _assembled(tmp_path, monkeypatch) -> Path:
    """fit_encoder.py assemble's folder: the committed encoder and the shipped bundle's decoder."""
    import fit_encoder

    monkeypatch.setattr(fit_encoder, "TRAIN_DIR", tmp_path / "train")
    folder = tmp_path / "ae"
    fit_encoder.assemble(type("Args", (), {"bundle": fit_encoder.DEFAULT_BUNDLE, "output": folder, "run": False})())
    return folder


def _perturb_decoder(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "diffusion_pytorch_model.safetensors"
    weights = load_file(str(path))
    key = next(k for k in weights if k.startswith("decoder.") and k.endswith("weight"))
    weights[key] = weights[key] + 0.01
    save_file(weights, str(path))


def test_latents_belong_to_the_encoder_alone(tmp_path, monkeypatch):
    """A decoder fine-tune (tools/fit_decoder.py) keeps the prepared latents valid; another encoder does not."""
    from safetensors.torch import load_file, save_file

    folder = _assembled(tmp_path, monkeypatch)
    before = train_unet._autoencoder_id(folder)
    _perturb_decoder(folder)
    assert train_unet._autoencoder_id(folder) == before
    enc = folder / "latent_encoder.safetensors"
    weights = load_file(str(enc))
    weights = {k: v + 0.01 if i == 0 else v for i, (k, v) in enumerate(weights.items())}
    save_file(weights, str(enc))
    assert train_unet._autoencoder_id(folder) != before
    # A joint autoencoder folder (no LatentEncoder beside it): its weights, encoder included, are the id.
    enc.unlink()
    joint = train_unet._autoencoder_id(folder)
    _perturb_decoder(folder)
    assert train_unet._autoencoder_id(folder) != joint


def test_export_notes_a_decoder_that_is_not_the_shipped_one(tmp_path, monkeypatch, capsys):
    folder = _assembled(tmp_path, monkeypatch)
    train_unet._warn_if_not_the_shipped_decoder(folder)
    assert "is not the one in" not in capsys.readouterr().err
    _perturb_decoder(folder)
    train_unet._warn_if_not_the_shipped_decoder(folder)
    assert "fit_encoder.py assemble" in capsys.readouterr().err


def test_a_new_run_from_the_shipped_bundle_starts_from_its_weights():
    """train --init cutecpp/data/cute-mini.gguf: live and EMA weights both the bundle's, its UNet's shape."""
    from gguf import GGUFReader

    from cutecpp.bundle import tensor_name

    bundle = cute_mini.tree_bundle()
    config, states = train_unet.init_weights(bundle, "cpu")
    assert states.keys() == {"unet", "align", "ema_unet", "ema_align"}
    # every weight is the bundle's tensor, read here straight from the file (f16 widens exactly)
    tensors = {t.name: np.asarray(t.data) for t in GGUFReader(bundle).tensors}
    for live, component in (("unet", "unet"), ("align", "alignment")):
        for key, value in states[live].items():
            stored = tensors[tensor_name(component, key)].astype(np.float32).reshape(-1)
            assert np.array_equal(value.numpy().reshape(-1), stored), key
    for live, ema in (("unet", "ema_unet"), ("align", "ema_align")):
        assert all(torch.equal(states[ema][k], states[live][k]) for k in states[live])
    unet, align = train_unet.make_models(config)
    unet.load_state_dict(states["unet"])  # strict: the config describes the bundle's UNet
    align.load_state_dict(states["align"])


def test_sample_weights_draw_the_weighted_animals_more_often(tmp_path, monkeypatch):
    """--sample-weights: a picture weighs the largest weight of the animals its text names, the batches
    follow those probabilities, the checkpoint records the weights and a resumed run keeps them."""
    argv = _tiny_cache(tmp_path, monkeypatch)  # pictures: a bear, a cat
    data = train_unet.Data()
    assert data.picture_weights({"cat": 3.0}) == pytest.approx([0.25, 0.75])
    assert data.picture_weights({"bear": 2.0, "cat": 0.5}) == pytest.approx([0.8, 0.2])
    with pytest.raises(SystemExit, match="not animals of the vocabulary: hat"):
        data.picture_weights({"hat": 2.0})
    x0, *_ = data.batch(np.random.default_rng(0), 64, np.array([0.0, 1.0]))
    assert all(np.array_equal(x, data.latents[1].astype(np.float32)) for x in x0)  # only the cat drawn
    drawn = [np.array_equal(x, data.latents[1].astype(np.float32))
             for x in data.batch(np.random.default_rng(1), 4000, data.picture_weights({"cat": 3.0}))[0]]
    assert np.mean(drawn) == pytest.approx(0.75, abs=0.03)

    weights = tmp_path / "w.json"
    weights.write_text('{"cat": 3}')
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "1", "--sample-weights", str(weights)])
    assert train_unet.main() == 0
    assert torch.load(train_unet.run_checkpoint(), weights_only=True)["sample_weights"] == {"cat": 3.0}
    seen = []
    batch = train_unet.Data.batch
    monkeypatch.setattr(train_unet.Data, "batch", lambda self, rng, n, p=None: seen.append(p) or batch(self, rng, n, p))
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "2"])  # resumed without the flag: the run's own
    assert train_unet.main() == 0
    assert seen[0] == pytest.approx([0.25, 0.75])
    assert torch.load(train_unet.run_checkpoint(), weights_only=True)["sample_weights"] == {"cat": 3.0}

    for text, why in (("{", "w.json: Expecting"), ('{"cat": 0}', "weight > 0"), ('["cat"]', "weight > 0"),
                      ('{"cat": true}', "weight > 0")):
        weights.write_text(text)
        monkeypatch.setattr(sys, "argv", [*argv, "--steps", "3", "--sample-weights", str(weights)])
        with pytest.raises(SystemExit, match=why):
            train_unet.main()
    weights.write_text("{}")  # uniform again
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "3", "--sample-weights", str(weights)])
    assert train_unet.main() == 0
    assert seen[-1] is None
    assert torch.load(train_unet.run_checkpoint(), weights_only=True)["sample_weights"] == {}


def test_sample_weights_need_an_animal_in_every_picture(tmp_path, monkeypatch):
    _tiny_cache(tmp_path, monkeypatch)
    data = train_unet.Data()
    data.texts = np.array(["小熊 冰山上", "冰山上"])
    with pytest.raises(SystemExit, match="picture 1's text '冰山上' names no animal"):
        data.picture_weights({"bear": 2.0})


def test_a_layout_run_reads_the_prepared_masks(tmp_path, monkeypatch):
    """train --init X --layout: a new run whose UNet reads the animal, item and place masks beside the
    latent through conv_in weights that start at zero (lr 0 keeps them so), fed each batch's own masks;
    refused on shards prepared without the masks, on resuming with the flag, and by export."""
    cm = train_unet.cute_mini
    argv = _tiny_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "1"])
    assert train_unet.main() == 0
    first = tmp_path / "first.pt"
    train_unet.run_checkpoint().rename(first)
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "1", "--lr", "0", "--init", str(first), "--layout"])
    with pytest.raises(SystemExit, match="prepared without them"):
        train_unet.main()

    shard = tmp_path / "latents" / "shard-00000.npz"
    side = cm.LATENT_SIZE
    animals, places = np.zeros((2, side, side), np.uint8), np.zeros((2, side, side), np.uint8)
    animals[0, 8:20, 8:20], animals[1, 2:30, 10:22], places[0, 28:] = 1, 1, 1
    np.savez(shard, **dict(np.load(shard)), animals=animals, places=places)
    seen = []
    step = train_unet.train_step
    monkeypatch.setattr(train_unet, "train_step", lambda *a, **kw: seen.append(kw["layout"]) or step(*a, **kw))
    assert train_unet.main() == 0
    st, init = torch.load(train_unet.run_checkpoint(), weights_only=True), torch.load(first, weights_only=True)
    assert st["unet_config"]["in_channels"] == cm.LATENT_CHANNELS + 3
    w = st["unet"]["conv_in.weight"]
    assert torch.equal(w[:, : cm.LATENT_CHANNELS], init["unet"]["conv_in.weight"])
    assert not w[:, cm.LATENT_CHANNELS :].any()
    items = np.load(shard)["items"]
    pictures = [np.stack([animals[k], items[k], places[k]]).astype(np.float32) for k in range(2)]
    assert seen[0].shape == (2, 3, side, side)
    assert all(any(np.array_equal(m.numpy(), p) for p in pictures) for m in seen[0])

    with pytest.raises(SystemExit, match="start a new run"):  # a layout run does not resume with the flag
        train_unet.main()
    monkeypatch.setattr(sys, "argv", ["train_unet.py", "export", "-o", str(tmp_path / "x.gguf")])
    with pytest.raises(SystemExit, match="reads layout masks"):
        train_unet.main()
