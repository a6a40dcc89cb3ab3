"""tools/guidance_schedule.py's loop draws what cutecpp_sample draws wherever the scale does not change."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from bundles import micro_contexts, with_sampling

import cutecpp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import guidance_schedule  # noqa: E402


@pytest.fixture(scope="module")
def models(micro, tmp_path_factory) -> dict[str, cutecpp.Model]:
    folder = tmp_path_factory.mktemp("guidance")
    return {name: cutecpp.Model.load(with_sampling(micro, name).write(folder / f"{name}.gguf"))
            for name in ("flow3", "sd")}


@pytest.mark.parametrize("config,sampler", [("flow3", "flow_euler"), ("sd", "euler")])
def test_same_bits_as_the_core(models, config, sampler):
    """Guided everywhere (below 0) as cutecpp_sample at that cfg; unguided everywhere (below or above every
    sigma, at scale 1) as cutecpp_sample at cfg 1; a change of scale part way, late or early, gives neither."""
    ctx = cutecpp.Context(models[config], threads=2)
    cond, uncond = micro_contexts()
    kw = dict(seed=3, steps=6, sampler=sampler, latent_size=8)
    guided = ctx.sample(cond, uncond, cfg=5.0, **kw)
    plain = ctx.sample(cond, None, cfg=1.0, **kw)
    assert np.array_equal(guidance_schedule.sample(ctx, cond, uncond, cfg=5.0, below=0.0, low_cfg=1.0, **kw), guided)
    assert np.array_equal(guidance_schedule.sample(ctx, cond, uncond, cfg=5.0, below=1e9, low_cfg=1.0, **kw), plain)
    assert np.array_equal(guidance_schedule.sample(ctx, cond, uncond, cfg=5.0, above=-1.0, high_cfg=1.0, **kw), plain)
    sigmas = cutecpp.sampling.schedule(models[config], sampler, 6)["sigmas"]
    mixed = guidance_schedule.sample(ctx, cond, uncond, cfg=5.0, below=float(sigmas[3]), low_cfg=1.0, **kw)
    assert not np.allclose(mixed, guided) and not np.allclose(mixed, plain)
    early = guidance_schedule.sample(ctx, cond, uncond, cfg=5.0, above=float(sigmas[3]), high_cfg=1.0, **kw)
    assert not np.allclose(early, guided) and not np.allclose(early, plain) and not np.allclose(early, mixed)


def test_refusals(models):
    ctx = cutecpp.Context(models["sd"], threads=1)
    cond, uncond = micro_contexts()
    with pytest.raises(ValueError, match="sampler euler_a: only flow_euler, euler"):
        guidance_schedule.sample(ctx, cond, uncond, seed=1, steps=4, sampler="euler_a", latent_size=8)
    with pytest.raises(ValueError, match="needs the unconditional context"):
        guidance_schedule.sample(ctx, cond, None, seed=1, steps=4, sampler="euler", cfg=3.0, latent_size=8)
    with pytest.raises(ValueError, match="one batch of two needs one shape"):
        guidance_schedule.sample(ctx, cond, uncond[:2], seed=1, steps=4, sampler="euler", cfg=3.0, latent_size=8)


@pytest.mark.parametrize("config,sampler", [("flow3", "flow_euler"), ("sd", "euler")])
def test_bundle_guidance_max_sigma_is_the_tools_above(models, micro, tmp_path, config, sampler):
    """A bundle with cutecpp.sampling.guidance_max_sigma = S draws, in the core, what the tool draws with
    --above S --high-cfg 1 from the same networks (and with its defaults from that bundle); at 0 (every
    step unguided) what cfg 1 draws, also where cond and uncond differ in length (two UNet calls a step,
    not one batch); above every sigma, what a bundle without the key draws."""
    cond, uncond = micro_contexts()
    kw = dict(seed=3, steps=6, sampler=sampler, latent_size=8)
    sigmas = cutecpp.sampling.schedule(models[config], sampler, 6)["sigmas"]
    plain_ctx = cutecpp.Context(models[config], threads=2)

    def sigma_bundle(value: float) -> cutecpp.Context:
        path = with_sampling(micro, config, guidance_max_sigma=value).write(tmp_path / f"{config}-{value}.gguf")
        model = cutecpp.Model.load(path)
        assert model.sampling["guidance_max_sigma"] == np.float32(value)
        return cutecpp.Context(model, threads=2)

    sigma_ctx = sigma_bundle(float(sigmas[3]))
    early = sigma_ctx.sample(cond, uncond, cfg=5.0, **kw)
    tool = guidance_schedule.sample(plain_ctx, cond, uncond, cfg=5.0, above=float(sigmas[3]), high_cfg=1.0, **kw)
    assert np.array_equal(early, tool)
    # The tool's default --above is the bundle's own setting, so its defaults draw what the core draws.
    assert np.array_equal(guidance_schedule.sample(sigma_ctx, cond, uncond, cfg=5.0, **kw), early)
    guided = plain_ctx.sample(cond, uncond, cfg=5.0, **kw)
    assert not np.allclose(early, guided)
    plain = plain_ctx.sample(cond, None, cfg=1.0, **kw)
    unguided = sigma_bundle(0.0)
    assert np.array_equal(unguided.sample(cond, uncond, cfg=5.0, **kw), plain)
    assert np.array_equal(unguided.sample(cond, uncond[:3], cfg=5.0, **kw), plain)
    assert np.array_equal(sigma_bundle(1e6).sample(cond, uncond, cfg=5.0, **kw), guided)
    assert "guidance_max_sigma" not in models[config].sampling


def test_contrast_term(models):
    """One flow step from sigma 1 to 0 moves x by -v, so the contrast term shows in the result as -scale x
    (prediction for cond - the other context's for its cond) at the start, to float rounding (the guided
    step's prediction comes from a batch of two, the check's from batches of one); below every sigma it is
    never applied (the core's bits); against the same context and cond it adds nothing."""
    model = models["flow3"]
    ctx, other_ctx = cutecpp.Context(model, threads=2), cutecpp.Context(models["sd"], threads=2)
    cond, uncond = micro_contexts()
    other, _ = micro_contexts(seed=9)
    kw = dict(seed=3, steps=1, sampler="flow_euler", latent_size=8, cfg=5.0)
    base = guidance_schedule.sample(ctx, cond, uncond, **kw)
    assert np.array_equal(base, ctx.sample(cond, uncond, **kw))
    term = guidance_schedule.sample(ctx, cond, uncond, contrast=(other_ctx, other), contrast_scale=2.0, **kw)
    plan = cutecpp.sampling.schedule(model, "flow_euler", 1)
    x = cutecpp.sampling.rng_normal(3, 4 * 8 * 8).reshape(4, 8, 8) * np.float32(plan["init_noise_sigma"])
    t = np.array([plan["timesteps"][0]], np.float32)
    v, w = ctx.unet(x[None], t, cond[None])[0], ctx.unet(x[None], t, other[None])[0]
    step = float(plan["sigmas"][1] - plan["sigmas"][0])
    assert step == -1.0 and np.abs(v - w).max() > 0.1
    np.testing.assert_allclose(term, base + step * 2.0 * (v - w), atol=1e-4)
    never = guidance_schedule.sample(ctx, cond, uncond, contrast=(other_ctx, other), contrast_max_sigma=-1.0, **kw)
    assert np.array_equal(never, base)
    kw["steps"] = 6
    same = guidance_schedule.sample(ctx, cond, uncond, contrast=(ctx, cond), contrast_scale=3.0, **kw)
    np.testing.assert_allclose(same, ctx.sample(cond, uncond, **kw), atol=1e-4)


def test_item_free_words():
    vocab = cutecpp.vocab.load_vocabulary()
    cases = {"小熊 穿蓝裤子 冰山上 笑": ["小熊", "冰山上", "笑"],
             "两只小猫 戴红帽子 拿气球 在花园里 笑": ["两只", "小猫", "花园里", "笑"],
             "a little bear with a cake": ["小熊"],
             "小狗 草地上": ["小狗", "草地上"]}
    for text, words in cases.items():
        assert guidance_schedule.item_free_words(cutecpp.prompt.parse_prompt(text, vocab=vocab), vocab) == words


def test_contrast_for_encodes_the_right_words():
    """Item guidance: the pipeline's own context aligns the words less the items, and a prompt without items
    gets no term; autoguidance: the weak context aligns all the prompt's words."""
    class Recorder:
        def __init__(self):
            self.seen = []

        def encode(self, words):
            self.seen.append(list(words))
            return len(self.seen)

        def align(self, states):
            return ("aligned", states)

    pipe = types.SimpleNamespace(rules=None, vocab=cutecpp.vocab.load_vocabulary(), encoder=Recorder(),
                                 context=Recorder())
    weak = Recorder()
    assert guidance_schedule.contrast_for(pipe, "小熊 冰山上", without_items=True) is None
    text = "小熊 穿蓝裤子 冰山上"
    assert guidance_schedule.contrast_for(pipe, text, without_items=True) == (pipe.context, ("aligned", 1))
    assert guidance_schedule.contrast_for(pipe, text, weak=weak) == (weak, ("aligned", 2))
    assert pipe.encoder.seen == [["小熊", "冰山上"], ["小熊", "穿", "蓝", "裤子", "冰山上"]]
    with pytest.raises(ValueError, match="needs a weak model's context or without_items"):
        guidance_schedule.contrast_for(pipe, text)


def test_weak_model_that_does_not_load(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        guidance_schedule.main(["--weak-model", str(tmp_path / "missing.gguf"), "score", "--n", "1"])
    assert stop.value.code == 2
    assert "--weak-model:" in capsys.readouterr().err


def test_start_latent(models):
    """--from-render's start: at or above the first sigma exactly the usual start (the core's bits), below every
    sigma but the last 0 the start latent itself; part way neither; flow_euler only, one shape."""
    ctx = cutecpp.Context(models["flow3"], threads=2)
    cond, uncond = micro_contexts()
    kw = dict(seed=3, steps=6, sampler="flow_euler", latent_size=8, cfg=5.0)
    latent = np.random.default_rng(0).standard_normal((4, 8, 8)).astype(np.float32)
    assert np.array_equal(guidance_schedule.sample(ctx, cond, uncond, start=(latent, 1.0), **kw),
                          ctx.sample(cond, uncond, **kw))
    assert np.array_equal(guidance_schedule.sample(ctx, cond, uncond, start=(latent, 1e-6), **kw), latent)
    sigmas = cutecpp.sampling.schedule(models["flow3"], "flow_euler", 6)["sigmas"]
    part = guidance_schedule.sample(ctx, cond, uncond, start=(latent, float(sigmas[3])), **kw)
    assert not np.allclose(part, latent) and not np.allclose(part, ctx.sample(cond, uncond, **kw))
    with pytest.raises(ValueError, match="a start latent needs flow_euler"):
        guidance_schedule.sample(cutecpp.Context(models["sd"], threads=1), cond, uncond, start=(latent, 0.5),
                                 **{**kw, "sampler": "euler"})
    with pytest.raises(ValueError, match=r"start latent \(4, 4, 4\)"):
        guidance_schedule.sample(ctx, cond, uncond, start=(latent[:, :4, :4], 0.5), **kw)


def test_render_starts_maps_each_scored_prompt_to_its_render(monkeypatch):
    """The prompts scoring lists are remembered with their index and split: the render each one starts from."""
    monkeypatch.setattr("latent_encoder.load_autoencoder", lambda path: types.SimpleNamespace(
        requires_grad_=lambda flag: "ae"))
    starts = guidance_schedule.RenderStarts("unused")
    listed = [{"prompt": "小熊 冰山上", "index": 7}, {"prompt": "小猫 花园里", "index": 9}]
    assert starts.listed(listed, "heldout") is listed
    starts.listed([{"prompt": "小熊 冰山上", "index": 30}], "train")  # the first listing wins
    assert starts.index == {"小熊 冰山上": (7, "heldout"), "小猫 花园里": (9, "heldout")}


def test_from_render_without_the_training_autoencoder(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        guidance_schedule.main(["--from-render", "0.5", "--autoencoder", str(tmp_path / "missing"),
                                "score", "--n", "1"])
    assert stop.value.code == 2
    assert "--from-render: the training autoencoder" in capsys.readouterr().err


def test_render_starts_latent_is_the_listed_render_normalised_by_the_bundle(monkeypatch):
    """latent(prompt): the render of that prompt's index and split, encoded, then (z - mean) / std per channel with
    the bundle's decoder statistics (as train_unet.py's Data normalises), read once per bundle."""
    import fit_encoder
    import make_dataset
    import train_unet

    ae = types.SimpleNamespace(config=types.SimpleNamespace(scaling_factor=1.0, shift_factor=0.0))
    monkeypatch.setattr("latent_encoder.load_autoencoder", lambda path: types.SimpleNamespace(
        requires_grad_=lambda flag: ae))
    drawn, read = [], []
    monkeypatch.setattr(make_dataset, "render", lambda index, split, size: (
        drawn.append((index, split, size)) or np.zeros((size, size, 3), np.uint8), {}))
    z = np.arange(2 * 3 * 3, dtype=np.float16).reshape(2, 3, 3)
    monkeypatch.setattr(train_unet, "encode_latents", lambda ae, images: z[None])
    monkeypatch.setattr(fit_encoder, "component_config", lambda bundle, component: (
        read.append((bundle, component)) or {"latents_mean": [1.0, -2.0], "latents_std": [2.0, 0.5],
                                             "scaling_factor": 1.0, "shift_factor": 0.0, "latent_channels": 2}))
    starts = guidance_schedule.RenderStarts("unused")
    starts.listed([{"prompt": "小熊 冰山上", "index": 7}], "train")
    for _ in range(2):
        out = starts.latent("小熊 冰山上", "m.gguf")
        expected = (z.astype(np.float32) - np.array([1.0, -2.0])[:, None, None]) / np.array([2.0, 0.5])[:, None, None]
        assert out.dtype == np.float32 and np.array_equal(out, expected.astype(np.float32))
    assert drawn == [(7, "train", 512)] * 2 and read == [("m.gguf", "tiny_decoder")]
