"""The latent verifier in the core (cutecpp_verify) against PyTorch, best of several seeds in cutecpp_sample, and
the bundle keys that turn it on, on tiny random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundles import make_verifier, micro_contexts, tools_module, with_sampling, with_verifier
from gguf import GGUFValueType

import cutecpp
from cutecpp.convert import copy_with_sampling
from cutecpp.errors import InvalidArgumentError

LABELS = ["animal:bear", "animal:cat", "item:hat", "item:boots", "place:garden", "place:iceberg"]
STEPS = 6


def seed_of(seed: int, k: int) -> int:
    return (seed + (k << 32)) % 2**64


@pytest.fixture(scope="module")
def net():
    return make_verifier(LABELS)


@pytest.fixture(scope="module")
def best_of_model(micro, net, tmp_path_factory) -> cutecpp.Model:
    """The micro UNet with the verifier, sampled best of 3 at the first step whose sigma is at most 0.5."""
    b = with_verifier(with_sampling(micro, "flow3", candidates=3, verify_sigma=0.5), net, LABELS)
    return cutecpp.Model.load(b.write(tmp_path_factory.mktemp("verifier") / "best3.gguf"))


def test_core_verifier_matches_pytorch(best_of_model, net):
    """Logits of the core and of tools/verifier.py's network for the same weights, latents and sigmas."""
    ctx = cutecpp.Context(best_of_model, threads=2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 8, 16)).astype(np.float32)
    sigmas = np.array([0.0, 0.45, 0.9], np.float32)
    got = ctx.verify(x, sigmas)
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.from_numpy(sigmas)).numpy()
    assert got.shape == (3, len(LABELS))
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < 1e-5, err  # measured 3e-7
    # one latent alone and a scalar sigma; another sigma is another answer
    assert np.allclose(ctx.verify(x[1], 0.45), got[1], atol=1e-6)
    assert np.abs(ctx.verify(x[1], 0.0) - got[1]).max() > 1e-2
    ctx.set_trace(True)
    ctx.verify(x, sigmas)
    assert np.allclose(ctx.trace("verifier.logits").reshape(3, -1), got, atol=1e-6)


def candidate_scores(ctx, cond, uncond, labels: list[int], seed: int, n: int) -> list[float]:
    """Each candidate's log-probability of the labels at the check step, from the tools' step loop (which
    draws what the core draws, bit for bit: tests/test_guidance_schedule.py) and cutecpp_verify."""
    guidance_schedule = tools_module("guidance_schedule")
    sigmas = cutecpp.sampling.schedule(ctx.model, "flow_euler", STEPS)["sigmas"]
    check = next(i for i in range(STEPS + 1) if sigmas[i] <= np.float32(0.5))
    scores = []
    for k in range(n):
        seen: dict[int, np.ndarray] = {}

        def keep(i, x, out, seen=seen):
            seen.setdefault(i, x.copy())

        final = guidance_schedule.sample(ctx, cond, uncond, seed=seed_of(seed, k), steps=STEPS, latent_size=8,
                                         trace=keep)
        x = seen.get(check, final)
        logits = ctx.verify(x, sigmas[check]).astype(np.float64)
        scores.append(float(-np.logaddexp(0.0, -logits[labels]).sum()))
    return scores


def test_best_of_keeps_the_candidate_the_verifier_prefers(best_of_model):
    """cutecpp_sample with candidates keeps the seed whose latent at the check step scores best on the asked
    labels, and returns exactly that seed's latents; over several prompts and label sets, more than one
    candidate wins (so the choice is not a constant)."""
    ctx = cutecpp.Context(best_of_model, threads=2)
    winners = set()
    for seed, labels in [(1, [0, 2, 4]), (1, [1, 3, 5]), (2, [0]), (3, [5, 2]), (4, [1, 4]), (5, [3])]:
        cond, uncond = micro_contexts(seed=seed)
        latents = ctx.sample(cond, uncond, seed=seed, steps=STEPS, latent_size=8, verify_labels=labels)
        chosen = ctx.last_candidate
        scores = candidate_scores(ctx, cond, uncond, labels, seed, 3)
        assert chosen == int(np.argmax(scores)), (seed, labels, scores)
        alone = ctx.sample(cond, uncond, seed=seed_of(seed, chosen), steps=STEPS, latent_size=8, candidates=1)
        assert np.array_equal(latents, alone) and ctx.last_candidate == 0
        winners.add(chosen)
    assert len(winners) > 1


def test_progress_counts_every_candidates_steps(best_of_model):
    ctx = cutecpp.Context(best_of_model, threads=1)
    cond, uncond = micro_contexts()
    sigmas = cutecpp.sampling.schedule(best_of_model, "flow_euler", STEPS)["sigmas"]
    check = next(i for i in range(STEPS + 1) if sigmas[i] <= np.float32(0.5))
    seen = []
    ctx.sample(cond, uncond, seed=1, steps=STEPS, latent_size=8, verify_labels=[0], candidates=2,
               progress=lambda i, n: seen.append((i, n)))
    total = 2 * check + STEPS - check
    assert seen == [(i, total) for i in range(1, total + 1)]
    # verify_sigma at 0 checks the final latents: every candidate runs every step
    ctx.sample(cond, uncond, seed=1, steps=STEPS, latent_size=8, verify_labels=[0], candidates=2, verify_sigma=0.0,
               progress=lambda i, n: seen.append((i, n)))
    assert seen[-1] == (2 * STEPS, 2 * STEPS)


def test_sampling_refusals(best_of_model, micro, tmp_path):
    ctx = cutecpp.Context(best_of_model, threads=1)
    cond, uncond = micro_contexts()
    kw = dict(seed=1, steps=STEPS, latent_size=8)
    with pytest.raises(InvalidArgumentError, match="verify_labels"):
        ctx.sample(cond, uncond, **kw)  # the bundle's 3 candidates need the asked labels
    with pytest.raises(InvalidArgumentError, match="not one of the verifier's 0 to 5"):
        ctx.sample(cond, uncond, verify_labels=[6], **kw)
    with pytest.raises(InvalidArgumentError, match="candidates must be 1..16"):
        ctx.sample(cond, uncond, verify_labels=[0], candidates=17, **kw)
    with pytest.raises(InvalidArgumentError, match="verify_sigma must be a number"):
        ctx.sample(cond, uncond, verify_labels=[0], verify_sigma=-1.0, **kw)
    with pytest.raises(InvalidArgumentError, match="multiples of 4"):
        ctx.sample(cond, uncond, verify_labels=[0], seed=1, steps=STEPS, latent_size=(8, 6))
    plain = cutecpp.Context(cutecpp.Model.load(with_sampling(micro, "flow3").write(tmp_path / "plain.gguf")), threads=1)
    with pytest.raises(InvalidArgumentError, match="need a verifier"):
        plain.sample(cond, uncond, verify_labels=[0], candidates=2, **kw)
    with pytest.raises(ValueError, match="no verifier"):
        plain.verify(np.zeros((4, 8, 8), np.float32), 0.0)
    with pytest.raises(ValueError, match=r"expected latents \[4, h, w\]"):
        ctx.verify(np.zeros((3, 8, 8), np.float32), 0.0)
    with pytest.raises(InvalidArgumentError, match="sigmas must be finite"):
        ctx.verify(np.zeros((4, 8, 8), np.float32), np.nan)


@pytest.mark.parametrize("change, words", [
    (lambda b: b.kv.pop("cutecpp.components") and b.set("cutecpp.components", GGUFValueType.ARRAY, ["unet"],
                                                        GGUFValueType.STRING), "no verifier component"),
    (lambda b: b.set("cutecpp.verifier.labels", GGUFValueType.ARRAY, ["a", "b", "a", "c", "d", "e"],
                     GGUFValueType.STRING), "lists 'a' twice"),
    (lambda b: b.set("cutecpp.verifier.labels", GGUFValueType.ARRAY, [f"l{i}" for i in range(4097)],
                     GGUFValueType.STRING), "needs 1 to 4096"),
    (lambda b: b.set("cutecpp.verifier.in_channels", GGUFValueType.UINT32, 3), "unet's latents have 4"),
    (lambda b: b.set("cutecpp.sampling.candidates", GGUFValueType.UINT32, 17), r"outside \[1, 16\]"),
    (lambda b: b.set("cutecpp.sampling.verify_sigma", GGUFValueType.FLOAT32, -0.5), "finite number >= 0"),
    (lambda b: b.kv.pop("cutecpp.sampling.verify_sigma"), "verify_sigma"),
])
def test_loader_refuses_bad_verifier_keys(micro, net, tmp_path, change, words):
    b = with_verifier(with_sampling(micro, "flow3", candidates=3, verify_sigma=0.5), net, LABELS)
    change(b)
    with pytest.raises(cutecpp.CutecppError, match=words):
        cutecpp.Model.load(b.write(tmp_path / "bad.gguf"))


def test_export_and_copy_with_sampling_add_the_verifier(micro, net, tmp_path):
    """train_verifier's export folder through the converter (copy_with_sampling) is the network it was."""
    train_verifier = tools_module("train_verifier")
    train_verifier.export_folder(net, LABELS, tmp_path / "ver")
    src = with_sampling(micro, "flow3").write(tmp_path / "src.gguf")
    out = tmp_path / "out.gguf"
    copy_with_sampling(src, out, "with-verifier", {"candidates": 2, "verify_sigma": 0.4}, verifier=tmp_path / "ver",
                       dtype="f32")
    model = cutecpp.Model.load(out)
    info = model.info["config"]
    assert info["components"]["verifier"]["labels"] == LABELS and info["model_id"] == "with-verifier"
    assert info["sampling"]["candidates"] == 2 and info["sampling"]["verify_sigma"] == np.float32(0.4)
    x = np.random.default_rng(2).standard_normal((2, 4, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.full((2,), 0.3)).numpy()
    assert np.abs(cutecpp.Context(model, threads=1).verify(x, 0.3) - want).max() < 1e-4 * np.abs(want).max()
    # adding it again replaces it: one verifier component, its tensors once
    again = tmp_path / "again.gguf"
    copy_with_sampling(out, again, "again", {}, verifier=tmp_path / "ver")
    components = cutecpp.Model.load(again).info["config"]["components"]
    assert list(components).count("verifier") == 1


def test_labels_and_scores():
    verifier = tools_module("verifier")
    names = verifier.label_names()
    y = verifier.labels_of(["两只", "小熊", "穿", "蓝", "裤子", "冰山上", "笑"], names)
    assert [names[k] for k in np.flatnonzero(y)] == ["animal:bear", "item:trousers", "place:iceberg"]
    logits = np.full(len(names), -20.0, np.float32)
    words = ["小熊", "穿", "蓝", "裤子", "冰山上"]
    low = verifier.asked_score(logits, names, words)
    logits[names.index("item:trousers")] = 20.0
    assert verifier.asked_score(logits, names, words) > low + 19


@pytest.fixture(scope="module")
def pipeline_paths(tmp_path_factory):
    """A tiny text encoder and a pipeline bundle with a verifier over the vocabulary's labels, best of 2."""
    from bundles import pipeline_bundle, tiny_text_encoder

    folder = tmp_path_factory.mktemp("best-of-pipe")
    encoder, sha = tiny_text_encoder(folder, 2)
    names = tools_module("verifier").label_names()
    b = pipeline_bundle("test-best-of", sha, layers=2, default_steps=4, candidates=2, verify_sigma=0.5)
    plain = pipeline_bundle("test-plain", sha, layers=2, default_steps=4)
    return (with_verifier(b, make_verifier(names), names).write(folder / "best.gguf"),
            plain.write(folder / "plain.gguf"), encoder)


def test_pipeline_best_of_two(pipeline_paths, tmp_path):
    """The bundle's 2 candidates by default: the picture is exactly the chosen seed's (seed + k * 2^32) drawn
    alone, its metadata says which, the cache keeps it apart from the one-seed picture and returns the same
    choice; a prompt's animal, item and place are the labels asked."""
    best, plain, encoder = pipeline_paths
    pipe = cutecpp.Pipeline.load(best, threads=2, text_encoder=encoder, cache=tmp_path / "c.sqlite3")
    prompt = "小熊 穿蓝裤子 冰山上 笑"
    names = pipe.model.info["config"]["components"]["verifier"]["labels"]
    parsed = cutecpp.prompt.parse_prompt(prompt)
    assert [names[k] for k in pipe.verify_labels(parsed)] == ["animal:bear", "item:trousers", "place:iceberg"]
    chosen = set()
    for seed in range(1, 5):
        res = pipe.generate(prompt, seed=seed, size=64)
        assert res.candidates == 2 and res.meta["candidates"] == 2 and res.meta["candidate"] == res.candidate
        alone = pipe.generate(prompt, seed=seed_of(seed, res.candidate), size=64, candidates=1, use_cache=False)
        assert np.array_equal(np.asarray(res.image), np.asarray(alone.image)) and "candidates" not in alone.meta
        again = pipe.generate(prompt, seed=seed, size=64)
        assert again.cached and again.candidate == res.candidate
        chosen.add(res.candidate)
    assert chosen == {0, 1}  # random weights, but the choice is not a constant
    one = pipe.generate(prompt, seed=1, size=64, candidates=1)
    assert not one.cached and one.candidate == 0
    plain_pipe = cutecpp.Pipeline.load(plain, threads=1, text_encoder=encoder, cache=False)
    with pytest.raises(InvalidArgumentError, match="need a verifier"):
        plain_pipe.generate(prompt, seed=1, size=64, candidates=2)
    with pytest.raises(InvalidArgumentError, match="candidates must be 1..16"):
        pipe.generate(prompt, seed=1, size=64, candidates=0)


def test_cli_candidates(pipeline_paths, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from cutecpp.cli import cli

    best, _, encoder = pipeline_paths
    monkeypatch.setenv("CUTECPP_TEXT_ENCODER", str(encoder))
    monkeypatch.setenv("CUTECPP_CACHE", str(tmp_path / "cache"))
    args = ["generate", "小熊 冰山上", "--model", str(best), "--seed", "3", "--size", "64", "--json", "--no-cache"]
    r = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a.png"), "--candidates", "3"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["candidates"] == 3
    r = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b.png"), "--candidates", "1"])
    assert r.exit_code == 0 and "candidates" not in json.loads(r.stdout)[0]
    r = CliRunner().invoke(cli, ["info", "--model", str(best)])
    assert r.exit_code == 0 and "labels: 218: animal:" in r.stdout


@pytest.mark.parametrize("change, words", [
    ({"_class_name": "Alignment"}, "Verifier"),
    ({"extra": 1}, "unknown Verifier setting"),
    ({"labels": None}, "labels"),
    ({"labels": ["a", 2]}, "list of strings"),
    ({"act_fn": "silu"}, "relu only"),
])
def test_converter_refuses_bad_verifier_configs(change, words):
    from cutecpp.convert import ConvertError, verifier_keys

    good = {"_class_name": "Verifier", "in_channels": 4, "labels": ["a", "b"], "block_out_channels": [8, 8],
            "num_blocks": [1, 1], "act_fn": "relu"}
    assert verifier_keys(good)["cutecpp.verifier.labels"][1] == ["a", "b"]
    config = {**good, **change}
    if change.get("labels", 0) is None:
        del config["labels"]
    with pytest.raises(ConvertError, match=words):
        verifier_keys(config)
