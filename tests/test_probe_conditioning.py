"""tools/probe_conditioning.py: the word swaps it makes and the flow error it measures in a box."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import probe_conditioning as probe  # noqa: E402
import train_unet  # noqa: E402


def test_swap_word_replaces_only_that_word_with_another_choice():
    rng = np.random.default_rng(0)
    words = ["小熊", "穿", "蓝", "裤子", "冰山上"]
    for _ in range(20):
        got = probe.swap_word(words, "裤子", ["裤子", "帽子", "雨靴"], rng)
        assert got[:3] == words[:3] and got[4] == words[4] and got[3] in ("帽子", "雨靴")
    assert probe.swap_word(words, "气球", ["气球", "帽子"], rng) is None


def test_box_errors_is_the_training_loss_inside_the_box(monkeypatch):
    """The flow target and noising of train_step (x_s = (1 - s) x0 + s noise, target noise - x0), averaged
    over channels and the box's pixels; the prompt reaches the error through the UNet."""
    cm = train_unet.cute_mini
    monkeypatch.setattr(cm, "UNET", {**cm.UNET, "block_out_channels": (32, 32, 32)})
    torch.manual_seed(0)
    unet, align = (m.eval() for m in train_unet.make_models())
    side = cm.LATENT_SIZE
    gen = torch.Generator().manual_seed(1)
    x0, noise = (torch.randn(1, cm.LATENT_CHANNELS, side, side, generator=gen) for _ in range(2))
    states = np.random.default_rng(2).standard_normal((3, cm.TEXT_HIDDEN)).astype(np.float32)
    box = np.zeros((side, side), bool)
    box[4:9, 10:20] = True
    full = np.ones((side, side), bool)
    got = probe.box_errors(unet, align, x0, noise, 0.6, states, {"box": box, "full": full, "none": ~full})
    assert set(got) == {"box", "full"}  # an empty box has no error
    with torch.no_grad():
        ctx = align(torch.from_numpy(states)[None], torch.ones(1, 3, dtype=torch.bool))
        pred = unet(0.4 * x0 + 0.6 * noise, torch.tensor([600.0]), encoder_hidden_states=ctx).sample
    err = (pred - (noise - x0)).pow(2)
    assert np.isclose(got["full"], float(err.mean()), rtol=1e-5)
    assert np.isclose(got["box"], float(err[0, :, 4:9, 10:20].mean()), rtol=1e-5)
    # another prompt (not the same tokens reordered: attention without positions would not see that)
    other_states = np.random.default_rng(3).standard_normal((3, cm.TEXT_HIDDEN)).astype(np.float32)
    other = probe.box_errors(unet, align, x0, noise, 0.6, other_states, {"box": box})
    assert abs(other["box"] - got["box"]) > 1e-4 * got["box"]


def test_probe_cases_change_one_word_each(tmp_path, monkeypatch):
    """On a tiny prepared cache of real training pictures: the item-swapped prompt differs from the
    picture's own in the item word only, the animal-swapped one in the animal word; the animal box
    leaves the item's pixels out."""
    from make_dataset import labels

    from cutecpp.vocab import load_vocabulary

    cm = train_unet.cute_mini
    monkeypatch.setattr(train_unet, "TRAIN_DIR", tmp_path)
    n, side = 12, cm.LATENT_SIZE
    texts = np.array([labels(i, split="train")["encoder_text"] for i in range(n)])
    (tmp_path / "latents").mkdir()
    (tmp_path / "text_states").mkdir()
    np.savez(tmp_path / "latents" / "shard-00000.npz", texts=texts, items=np.zeros((n, side, side), np.uint8),
             latents=np.random.default_rng(0).standard_normal((n, cm.LATENT_CHANNELS, side, side)).astype(np.float16))
    for t in set(texts):
        np.save(train_unet._state_path(str(t)), np.ones((2, cm.TEXT_HIDDEN), np.float16))
    encoded = []

    def encode(words):
        encoded.append(words)
        return np.full((len(words), cm.TEXT_HIDDEN), len(encoded), np.float32)

    cases = probe.probe_cases(train_unet.Data(), 3, encode)
    assert len(cases) == 3 and len(encoded) == 6
    vocab = load_vocabulary()
    for case, item_words, animal_words in zip(cases, encoded[0::2], encoded[1::2], strict=True):
        words = str(texts[case["index"]]).split()
        for changed, category in ((item_words, "item"), (animal_words, "animal")):
            diff = [(a, b) for a, b in zip(words, changed, strict=True) if a != b]
            assert len(changed) == len(words) and len(diff) == 1
            assert all(vocab.lookup(w).category == category for w in diff[0])
        assert case["item"].any() and not (case["item"] & case["animal"]).any()
        assert set(case["states"]) == set(probe.VARIANTS)
        assert not case["states"]["no prompt"].any()


def _one_picture_cache(tmp_path, monkeypatch) -> None:
    """A training cache of one prepared picture in tmp_path: what `Data()` needs for the held-out probe,
    which draws its own pictures."""
    cm = train_unet.cute_mini
    monkeypatch.setattr(train_unet, "TRAIN_DIR", tmp_path)
    side = cm.LATENT_SIZE
    (tmp_path / "latents").mkdir()
    np.savez(tmp_path / "latents" / "shard-00000.npz", texts=np.array(["小熊 冰山上"]),
             items=np.zeros((1, side, side), np.uint8),
             latents=np.random.default_rng(0).standard_normal((1, cm.LATENT_CHANNELS, side, side)).astype(np.float16))


def test_heldout_cases_are_heldout_renders_with_their_own_prompt(tmp_path, monkeypatch):
    """--heldout: the pictures are the held-out split's renders (never in the prepared training shards),
    their latent is what `to_latent` makes of the render, their true prompt is encoded from its caption."""
    from make_dataset import labels, render

    cm = train_unet.cute_mini
    side = cm.LATENT_SIZE
    _one_picture_cache(tmp_path, monkeypatch)
    seen = []

    def to_latent(image):
        seen.append(np.asarray(image))
        return np.full((cm.LATENT_CHANNELS, side, side), len(seen), np.float16)

    def encode(words):
        return np.full((len(words), cm.TEXT_HIDDEN), 7.0, np.float32)

    cases = probe.probe_cases(train_unet.Data(), 2, encode, to_latent=to_latent)
    assert len(cases) == len(seen) == 2
    for k, case in enumerate(cases):
        lab = labels(case["index"], split="heldout")
        assert lab["features"] and len(case["states"]["true"]) == len(lab["encoder_text"].split())
        assert (case["states"]["true"] == 7.0).all()
        assert case["x0"].dtype == np.float32 and (case["x0"] == k + 1).all()
        assert np.array_equal(seen[k], np.asarray(render(case["index"], split="heldout", size=cm.IMAGE_SIZE)[0]))


def test_heldout_cases_end_when_no_render_qualifies(tmp_path, monkeypatch):
    """A vocabulary whose held-out renders never ask for an item gives no cases after a bounded number of
    renders, instead of drawing forever."""
    import make_dataset

    _one_picture_cache(tmp_path, monkeypatch)
    drawn = []

    def render(i, split, size):
        drawn.append(i)
        return None, {"encoder_text": "小熊 冰山上", "features": []}

    monkeypatch.setattr(make_dataset, "render", render)
    cases = probe.probe_cases(train_unet.Data(), 3, lambda w: None, to_latent=lambda image: None)
    assert cases == [] and len(drawn) == 3 * probe.HELDOUT_TRIES
