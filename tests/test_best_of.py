"""tools/best_of.py pick: two recorded seeds, the judge's records, a verifier's choice at a step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bundles import make_verifier, tools_module


def record(prompt: str, animal: bool, item: bool, place: bool) -> dict:
    return {"prompt": prompt, "settings": {"understood": "小熊 戴 帽子 冰山上"},
            "check": {"animal": animal, "place": place, "items": {"hat": item}}}


@pytest.fixture()
def runs(tmp_path):
    """Two prompts drawn with two seeds: run 0 right about prompt 0 only, run 1 about prompt 1 only."""
    verifier = tools_module("verifier")
    names = verifier.label_names()
    net = make_verifier(names, in_channels=4)
    ckpt = tmp_path / "v.pt"
    torch.save({"ema": net.state_dict(), "config": net.config, "names": names}, ckpt)
    prompts = np.array(["p0", "p1"])
    rng = np.random.default_rng(0)
    files = []
    for k, right in enumerate([(True, False), (False, True)]):
        np.savez(tmp_path / f"t{k}.npz", prompts=prompts, sigmas=np.array([1.0, 0.6, 0.3], np.float32),
                 x=rng.standard_normal((2, 3, 4, 8, 8)).astype(np.float16),
                 x0=rng.standard_normal((2, 3, 4, 8, 8)).astype(np.float16),
                 final=rng.standard_normal((2, 4, 8, 8)).astype(np.float16))
        (tmp_path / f"r{k}.jsonl").write_text("".join(json.dumps(record(p, r, r, r)) + "\n"
                                                     for p, r in zip(prompts, right, strict=True)))
        files.append((tmp_path / f"t{k}.npz", tmp_path / f"r{k}.jsonl"))
    return ckpt, files, net, names


def test_pick_reports_each_seed_the_oracle_and_the_verifiers_choice(runs, capsys):
    best_of = tools_module("best_of")
    verifier = tools_module("verifier")
    ckpt, files, net, names = runs
    args = ["pick", "--verifier", str(ckpt), "--runs", *(str(t) for t, _ in files),
            "--jsonl", *(str(r) for _, r in files), "--step", "1", "3"]
    best_of.main(args)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("seed run 0") and "animal 1/2  items 1/2 (50.0%)  place 1  all right 1" in lines[0]
    assert "against run 0: animal +0/-0" in lines[0]
    assert "animal +1/-1  items +1/-1  place +1/-1" in lines[1]
    assert lines[2].startswith("oracle") and "animal 2/2  items 2/2 (100.0%)  place 2  all right 2" in lines[2]
    # the choice at step 1 (the noisy sample at sigma 0.6) and at the final latents, as the verifier scores them
    words = ["小熊", "戴", "帽子", "冰山上"]
    for line, (key, step, sigma) in zip(lines[3:], [("x", 1, 0.6), ("final", None, 0.0)], strict=True):
        right = 0
        for k in range(2):
            scores = []
            for t, _ in files:
                lat = np.load(t)[key]
                lat = lat[k, step] if step is not None else lat[k]
                with torch.no_grad():
                    logits = net(torch.from_numpy(lat[None].astype(np.float32)), torch.tensor([sigma]))[0].numpy()
                scores.append(verifier.asked_score(logits, names, words))
            right += int(np.argmax(scores)) == k  # run k is the right one for prompt k
        assert f"animal {right}/2" in line and f"sigma {sigma:.2f}" in line
    with pytest.raises(SystemExit):
        best_of.main([*args[:-2], "4"])  # past the final latents


def test_train_verifier_trains_resumes_validates_and_exports(tmp_path, monkeypatch, capsys):
    """A few steps on a tiny prepared cache (texts are the labels), resumed; validate measures on the held-out
    tail; export writes the converter's folder with the labels."""
    train_unet = tools_module("train_unet")
    train_verifier = tools_module("train_verifier")
    cm = train_unet.cute_mini
    monkeypatch.setattr(train_unet, "TRAIN_DIR", tmp_path)
    monkeypatch.setattr(train_verifier, "RUN_DIR", tmp_path / "verifier")
    (tmp_path / "latents").mkdir()
    rng = np.random.default_rng(0)
    texts = np.array(["小熊 冰山上", "小猫 戴 帽子 花园里"] * 3)
    np.savez(tmp_path / "latents" / "shard-00000.npz", texts=texts,
             latents=rng.standard_normal((6, cm.LATENT_CHANNELS, 8, 8)).astype(np.float16))
    (train, _), (held, held_y), names = train_verifier.load_data(2)
    assert len(train) == 4 and len(held) == 2
    assert [names[k] for k in np.flatnonzero(held_y[1])] == ["animal:cat", "item:hat", "place:garden"]
    common = ["--holdout", "2"]
    train_verifier.main(["train", "--steps", "2", "--batch", "4", "--threads", "1", "--log-every", "1", *common])
    first = torch.load(tmp_path / "verifier" / "latest.pt", weights_only=False)
    assert first["step"] == 2 and first["names"] == names
    train_verifier.main(["train", "--steps", "3", "--batch", "4", "--threads", "1", "--pos-weight", "5", *common])
    again = torch.load(tmp_path / "verifier" / "latest.pt", weights_only=False)
    assert again["step"] == 3
    assert any(not torch.equal(first["model"][k], again["model"][k]) for k in first["model"])
    capsys.readouterr()
    train_verifier.main(["validate", "--json", "--threads", "1", *common])
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {f"{s:.2f}" for s in train_verifier.CHECK_SIGMAS}
    assert set(res["0.00"]) == {"animal", "place", "item_recall", "item_false"}
    train_verifier.main(["export", "-o", str(tmp_path / "out")])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["labels"] == names and config["in_channels"] == cm.LATENT_CHANNELS
    with pytest.raises(SystemExit, match="--holdout 6"):
        train_verifier.load_data(6)
