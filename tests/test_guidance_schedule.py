"""tools/guidance_schedule.py's loop draws what cutecpp_sample draws wherever the scale does not change."""

from __future__ import annotations

import sys
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
