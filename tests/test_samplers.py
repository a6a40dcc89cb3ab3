"""Samplers, schedules and the counter-based RNG against diffusers 0.42.1 (no downloads).

- RNG: a numpy Philox4x32-10 checked against Random123's known-answer vectors is the reference
  for cutecpp_rng_normal (Box-Muller recomputed with libm in float64); pinned bit patterns catch
  any change of the sequence; splits, streams and statistics.
- Schedules: sigmas, timesteps, input scaling and the initial sigma of every sampler equal
  diffusers' within float32 rounding (REL_TOL; measured <= 1.2e-7: diffusers' torch float32
  sqrt/log/exp are not correctly rounded, cutecpp's are), timesteps exactly.
- One step: each update equals diffusers' `step()` on the same model output and sample. The
  noise of euler_a and lcm is fed to diffusers by replacing the `randn_tensor` its scheduler
  module calls with one returning cutecpp's noise for that step.
- The whole loop: ctx.sample() on a tiny random UNet against a diffusers-style loop (the SD
  pipeline's: [uncond, cond] batch, guidance, scheduler.step) with the same UNet and noise.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bundles import SAMPLING_CONFIGS, UNET_CONFIGS, make_unet, micro_contexts, with_sampling
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    LCMScheduler,
)
from diffusers.schedulers import scheduling_euler_ancestral_discrete, scheduling_lcm

import cutecpp
from cutecpp.convert import SCHEDULER_CLASSES, ConvertError, convert, scheduler_config_to_sampling
from cutecpp.sampling import sampler_step, schedule

ROOT = Path(__file__).resolve().parent.parent
REL_TOL = 1e-6      # schedules and single steps: float32 rounding
LOOP_TOL = 1e-4     # whole loops, x the output's scale (the UNet's own f32 parity bound)
DISCRETE = ["euler_a", "euler", "dpmpp_2m_karras", "lcm"]
STEPS = [1, 2, 15, 20]
CASES = [(c, s) for c in ("sd", "linear", "trailing_v") for s in DISCRETE] + [("flow1", "flow_euler"),
                                                                            ("flow3", "flow_euler")]


# --- the RNG ----------------------------------------------------------------------------------------

MASK = 0xFFFFFFFF


def philox(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of each row of counters [n, 4] (uint32), in numpy (Random123's algorithm)."""
    c = counters.astype(np.uint64)
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & MASK, (k1 + 0xBB67AE85) & MASK
        p0 = np.uint64(0xD2511F53) * c[:, 0]
        p1 = np.uint64(0xCD9E8D57) * c[:, 2]
        c = np.stack([(p1 >> np.uint64(32)) ^ c[:, 1] ^ np.uint64(k0), p1 & np.uint64(MASK),
                      (p0 >> np.uint64(32)) ^ c[:, 3] ^ np.uint64(k1), p0 & np.uint64(MASK)], axis=1)
    return c.astype(np.uint32)


def reference_normals(seed: int, stream: int, n: int) -> np.ndarray:
    """rng.h's layout: block b = counter (b, stream), key seed; (w0, w1), (w2, w3) Box-Muller pairs."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    counters = np.stack([blocks & np.uint64(MASK), blocks >> np.uint64(32),
                         np.full_like(blocks, stream & MASK), np.full_like(blocks, stream >> 32)], axis=1)
    w = philox(counters, (seed & MASK, seed >> 32)).astype(np.float64)
    radius = np.sqrt(-2.0 * np.log((w[:, 0::2] + 0.5) * 2.0**-32))
    angle = 2.0 * np.pi * w[:, 1::2] * 2.0**-32
    z = np.stack([radius[:, 0] * np.cos(angle[:, 0]), radius[:, 0] * np.sin(angle[:, 0]),
                  radius[:, 1] * np.cos(angle[:, 1]), radius[:, 1] * np.sin(angle[:, 1])], axis=1)
    return z.reshape(-1)[:n].astype(np.float32)


# Random123 tests/kat_vectors, the three "philox4x32 10" lines (DEShawResearch/random123 @ 9545ff6):
# counter[4], key[2] -> result[4].
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK,) * 4, (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert tuple(philox(np.array([counter], np.uint32), key)[0]) == expected


@pytest.mark.parametrize("seed, stream", [(0, 0), (42, 0), (42, 1), (2**64 - 1, 2**40 + 3), (123456789, 17)])
def test_rng_normal_is_philox_box_muller(seed, stream):
    got = cutecpp.rng_normal(seed, 4099, stream=stream)
    ref = reference_normals(seed, stream, 4099)
    # The core's portable log/sin/cos differ from libm's by an ulp of float64 at most, which
    # moves the float32 result only when it lies on a rounding boundary.
    assert np.abs(got - ref).max() <= 1e-6 * max(1.0, float(np.abs(ref).max()))
    assert np.mean(got == ref) > 0.999


def test_rng_normal_pinned_bits():
    """The sequence is part of the format of every picture's seed: it must never change."""
    assert [hex(v) for v in cutecpp.rng_normal(42, 8).view(np.uint32)] == [
        "0xbf785e5c", "0x3e46ace8", "0xbf9e28d2", "0x3ff6433b", "0xbd95e030", "0x3e0e7a0f", "0xbf8da733", "0x3ea742fd"]
    tail = cutecpp.rng_normal(2**64 - 1, 4, stream=7, offset=2**40)
    assert [hex(v) for v in tail.view(np.uint32)] == ["0x3f1b30ca", "0xbea2538f", "0xbf45e91f", "0x3eb6106c"]


def test_rng_normal_any_split_gives_the_same_numbers():
    full = cutecpp.rng_normal(7, 1001, stream=3)
    parts = [cutecpp.rng_normal(7, n, stream=3, offset=o) for o, n in ((0, 1), (1, 6), (7, 994))]
    assert np.array_equal(np.concatenate(parts), full)
    assert np.array_equal(cutecpp.rng_normal(7, 10, stream=3, offset=5), full[5:15])
    assert cutecpp.rng_normal(7, 0).shape == (0,)


def test_rng_normal_streams_and_seeds_differ():
    a = cutecpp.rng_normal(1, 1000)
    for other in (cutecpp.rng_normal(2, 1000), cutecpp.rng_normal(1, 1000, stream=1)):
        assert np.mean(a == other) < 0.01
        assert abs(float(np.corrcoef(a, other)[0, 1])) < 0.1


def test_rng_normal_statistics():
    z = cutecpp.rng_normal(2024, 1_000_000).astype(np.float64)
    assert abs(z.mean()) < 5e-3
    assert abs(z.std() - 1.0) < 5e-3
    assert abs(np.mean(z**3)) < 2e-2 and abs(np.mean(z**4) - 3.0) < 5e-2  # symmetric, normal tails
    assert abs(np.mean(np.abs(z) < 1.0) - 0.682689) < 2e-3


def test_rng_normal_bad_arguments():
    with pytest.raises(cutecpp.InvalidArgumentError, match="seed"):
        cutecpp.rng_normal(-1, 4)
    with pytest.raises(cutecpp.InvalidArgumentError, match="n must be"):
        cutecpp.rng_normal(1, -4)
    with pytest.raises(cutecpp.InvalidArgumentError, match="exceeds 2\\^64"):
        cutecpp.rng_normal(1, 8, offset=2**64 - 4)


# --- models with a sampling section -------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(micro, tmp_path_factory) -> dict[str, cutecpp.Model]:
    """SAMPLING_CONFIGS name -> the micro UNet bundle with that training schedule."""
    folder = tmp_path_factory.mktemp("sampling")
    return {name: cutecpp.Model.load(with_sampling(micro, name).write(folder / f"{name}.gguf"))
            for name in SAMPLING_CONFIGS}


def reference_scheduler(config: dict, sampler: str):
    """The diffusers scheduler each cutecpp sampler follows, on the bundle's training schedule."""
    if sampler == "flow_euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=config["num_train_timesteps"],
                                               shift=config["flow_shift"])
    common = dict(num_train_timesteps=config["num_train_timesteps"], beta_start=config["beta_start"],
                  beta_end=config["beta_end"], beta_schedule=config["beta_schedule"],
                  prediction_type=config["prediction"], timestep_spacing=config["timestep_spacing"],
                  steps_offset=config["steps_offset"])
    if sampler == "euler_a":
        return EulerAncestralDiscreteScheduler(**common)
    if sampler == "euler":
        return EulerDiscreteScheduler(**common)
    if sampler == "dpmpp_2m_karras":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           use_karras_sigmas=True)
    return LCMScheduler(**common)


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got.astype(np.float64) - ref) / np.maximum(np.abs(ref), 1e-30), initial=0.0))


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("config, sampler", CASES)
def test_schedule_matches_diffusers(models, config, sampler, steps):
    ours = schedule(models[config], sampler, steps)
    ref = reference_scheduler(SAMPLING_CONFIGS[config], sampler)
    ref.set_timesteps(steps)
    ref_timesteps = ref.timesteps.numpy().astype(np.float64)
    assert np.array_equal(ours["timesteps"], ref_timesteps), f"timesteps {ours['timesteps']} != {ref_timesteps}"
    if sampler != "lcm":  # LCMScheduler has no sigmas
        assert relative_error(ours["sigmas"], ref.sigmas.numpy()) <= REL_TOL
    ones = torch.ones(3)
    for i, t in enumerate(ref.timesteps):
        scaled = ref.scale_model_input(ones, t) if hasattr(ref, "scale_model_input") else ones
        assert relative_error(1.0 / ours["input_divisors"][i:i + 1], scaled.numpy()[:1]) <= REL_TOL
        ref._step_index = None if i + 1 == len(ref.timesteps) else i + 1
    init = float(getattr(ref, "init_noise_sigma", 1.0))
    assert relative_error(np.array([ours["init_noise_sigma"]]), np.array([init])) <= REL_TOL


def noise_for(seed: int, step: int, shape) -> np.ndarray:
    return cutecpp.rng_normal(seed, math.prod(shape), stream=1 + step).reshape(shape)


@pytest.fixture
def diffusers_noise(monkeypatch):
    """Makes diffusers' euler_a and lcm steps add cutecpp's noise of stream 1 + step_index (seed 11)."""
    current = {}

    def randn_tensor(shape, generator=None, device=None, dtype=None, **_):
        return torch.from_numpy(noise_for(11, current["scheduler"].step_index, tuple(shape))).to(dtype)

    for module in (scheduling_euler_ancestral_discrete, scheduling_lcm):
        monkeypatch.setattr(module, "randn_tensor", randn_tensor)
    return current


@pytest.mark.parametrize("steps", [2, 15, 20])
@pytest.mark.parametrize("config, sampler", CASES)
def test_each_step_matches_diffusers(models, diffusers_noise, config, sampler, steps):
    ref = reference_scheduler(SAMPLING_CONFIGS[config], sampler)
    ref.set_timesteps(steps)
    diffusers_noise["scheduler"] = ref
    rng = np.random.default_rng(steps)
    shape = (1, 4, 8, 8)
    sample = (rng.standard_normal(shape) * float(getattr(ref, "init_noise_sigma", 1.0))).astype(np.float32)
    state = np.zeros(shape, np.float32)
    worst = 0.0
    for i, t in enumerate(ref.timesteps):
        model_output = rng.standard_normal(shape).astype(np.float32)
        if hasattr(ref, "scale_model_input"):
            ref.scale_model_input(torch.from_numpy(sample), t)  # sets the step index as a pipeline does
        expected = ref.step(torch.from_numpy(model_output), t, torch.from_numpy(sample)).prev_sample.numpy()
        noise = noise_for(11, i, shape) if sampler in ("euler_a", "lcm") else None
        got = sampler_step(models[config], sampler, steps, i, model_output, sample, noise=noise, state=state)
        err = float(np.abs(got - expected).max()) / float(np.abs(expected).max())
        worst = max(worst, err)
        assert err <= REL_TOL, f"step {i}: relative error {err:.2e}"
        sample = expected  # both continue from diffusers' latent: each step is compared on its own
    print(f"{config} {sampler} {steps} steps: worst step error {worst:.2e}")


# --- the whole loop ------------------------------------------------------------------------------------


def diffusers_loop(config: str, sampler: str, steps: int, cfg: float, cond: np.ndarray, uncond: np.ndarray,
                   seed: int, side: int, current: dict) -> np.ndarray:
    """StableDiffusionPipeline's denoising loop with the micro UNet and cutecpp's noise."""
    unet = make_unet("micro")
    scheduler = reference_scheduler(SAMPLING_CONFIGS[config], sampler)
    scheduler.set_timesteps(steps)
    current["scheduler"] = scheduler
    shape = (1, UNET_CONFIGS["micro"]["in_channels"], side, side)
    latents = torch.from_numpy(cutecpp.rng_normal(seed, math.prod(shape)).reshape(shape))
    latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)
    guided = cfg != 1.0
    cond_t, uncond_t = torch.from_numpy(cond)[None], torch.from_numpy(uncond)[None]
    with torch.no_grad():
        for t in scheduler.timesteps:
            scale = getattr(scheduler, "scale_model_input", lambda x, _t: x)
            if guided and cond.shape == uncond.shape:
                inp = scale(torch.cat([latents] * 2), t)
                eps_uncond, eps_cond = unet(inp, t, encoder_hidden_states=torch.cat([uncond_t, cond_t])).sample.chunk(2)
            else:
                inp = scale(latents, t)
                eps_cond = unet(inp, t, encoder_hidden_states=cond_t).sample
                eps_uncond = unet(inp, t, encoder_hidden_states=uncond_t).sample if guided else None
            eps = eps_uncond + cfg * (eps_cond - eps_uncond) if guided else eps_cond
            latents = scheduler.step(eps, t, latents).prev_sample
    return latents[0].numpy()


LOOPS = [("sd", s, 20, 7.5) for s in DISCRETE] + [("sd", "lcm", 4, 1.0), ("sd", "euler_a", 15, 1.0),
                                                  ("trailing_v", "euler", 15, 7.5), ("flow3", "flow_euler", 20, 5.0),
                                                  ("flow1", "flow_euler", 2, 1.0)]


@pytest.mark.parametrize("config, sampler, steps, cfg", LOOPS)
def test_sample_matches_diffusers_loop(models, diffusers_noise, config, sampler, steps, cfg):
    seed = 11  # diffusers_noise's
    cond, uncond = micro_contexts((5, 5))
    ctx = cutecpp.Context(models[config], threads=2)
    got = ctx.sample(cond, uncond, seed=seed, steps=steps, sampler=sampler, cfg=cfg, latent_size=8)
    ref = diffusers_loop(config, sampler, steps, cfg, cond, uncond, seed, 8, diffusers_noise)
    assert got.shape == ref.shape == (4, 8, 8)
    err, scale = float(np.abs(got - ref).max()), float(np.abs(ref).max())
    print(f"{config} {sampler} {steps} steps cfg {cfg}: max error {err:.2e} (scale {scale:.3f})")
    assert err <= LOOP_TOL * scale


def test_sample_with_different_token_counts(models, diffusers_noise):
    """uncond and cond of different lengths take two UNet calls per step (two planned shapes)."""
    cond, uncond = micro_contexts((7, 1))
    ctx = cutecpp.Context(models["sd"], threads=2)
    got = ctx.sample(cond, uncond, seed=11, steps=8, sampler="dpmpp_2m_karras", cfg=4.0, latent_size=(8, 12))
    unet_ref = diffusers_loop("sd", "dpmpp_2m_karras", 8, 4.0, cond, uncond, 11, 8, diffusers_noise)
    assert got.shape == (4, 8, 12)
    again = ctx.sample(cond, uncond, seed=11, steps=8, sampler="dpmpp_2m_karras", cfg=4.0, latent_size=(8, 12))
    assert np.array_equal(got, again)
    # A square run on the same context (replans) matches diffusers.
    square = ctx.sample(cond, uncond, seed=11, steps=8, sampler="dpmpp_2m_karras", cfg=4.0, latent_size=8)
    assert float(np.abs(square - unet_ref).max()) <= LOOP_TOL * float(np.abs(unet_ref).max())


def test_defaults_come_from_the_bundle(models):
    model = models["sd"]
    assert model.sampling == SAMPLING_CONFIGS["sd"]
    cond, uncond = micro_contexts((3, 3))
    ctx = cutecpp.Context(model, threads=1)
    explicit = ctx.sample(cond, uncond, seed=3, steps=20, sampler="euler_a", cfg=7.5,
                          latent_size=UNET_CONFIGS["micro"]["sample_size"])
    assert np.array_equal(ctx.sample(cond, uncond, seed=3), explicit)
    # Guidance scale 1 evaluates cond only: uncond may be missing and is ignored when given.
    alone = ctx.sample(cond, seed=3, cfg=1.0, steps=3)
    assert np.array_equal(alone, ctx.sample(cond, uncond * 0 + 99, seed=3, cfg=1.0, steps=3))
    assert np.array_equal(ctx.sample(cond[None], seed=3, cfg=1.0, steps=3), alone)  # [1, T, D] accepted


def test_determinism_seeds_and_threads(models):
    cond, uncond = micro_contexts((4, 4))
    model = models["sd"]
    runs = {threads: cutecpp.Context(model, threads=threads) for threads in (1, 2)}
    for sampler in DISCRETE:
        kw = dict(steps=6, sampler=sampler, cfg=3.0)
        one = runs[1].sample(cond, uncond, seed=123, **kw)
        two = runs[2].sample(cond, uncond, seed=123, **kw)
        assert one.tobytes() == two.tobytes(), sampler
        assert runs[2].sample(cond, uncond, seed=123, **kw).tobytes() == one.tobytes()
        other = runs[2].sample(cond, uncond, seed=124, **kw)
        assert np.mean(other == one) < 0.01, sampler
    big = 2**64 - 1
    assert runs[1].sample(cond, seed=big, cfg=1.0, steps=2).tobytes() == runs[2].sample(
        cond, seed=big, cfg=1.0, steps=2).tobytes()


# --- progress and cancellation ------------------------------------------------------------------------


def test_progress_reports_every_step(models):
    calls = []
    cond, uncond = micro_contexts((3, 3))
    ctx = cutecpp.Context(models["sd"], threads=2)
    out = ctx.sample(cond, uncond, seed=1, steps=5, progress=lambda step, steps: calls.append((step, steps)))
    assert calls == [(i, 5) for i in range(1, 6)]  # returning None does not cancel
    assert np.array_equal(out, ctx.sample(cond, uncond, seed=1, steps=5))


def test_cancel_then_context_still_usable(models):
    calls = []

    def stop_at_3(step, steps):
        calls.append(step)
        return step < 3

    cond, uncond = micro_contexts((3, 3))
    ctx = cutecpp.Context(models["sd"], threads=2)
    with pytest.raises(cutecpp.CancelledError, match="after step 3 of 10"):
        ctx.sample(cond, uncond, seed=1, steps=10, progress=stop_at_3)
    assert calls == [1, 2, 3]
    fresh = cutecpp.Context(models["sd"], threads=2).sample(cond, uncond, seed=1, steps=10)
    assert np.array_equal(ctx.sample(cond, uncond, seed=1, steps=10), fresh)


def test_exception_in_progress_propagates(models):
    class Boom(Exception):
        pass

    def explode(step, steps):
        if step == 2:
            raise Boom("from the callback")
        return True

    cond, uncond = micro_contexts((3, 3))
    ctx = cutecpp.Context(models["sd"], threads=1)
    with pytest.raises(Boom, match="from the callback"):
        ctx.sample(cond, uncond, seed=1, steps=4, progress=explode)
    with pytest.raises(KeyboardInterrupt):  # not only Exception subclasses
        ctx.sample(cond, uncond, seed=1, steps=4, progress=lambda s, n: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert ctx.sample(cond, uncond, seed=1, steps=4).shape == (4, 8, 8)


# --- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(steps=0), cutecpp.InvalidArgumentError, "steps must be 1 to 1000, got 0"),
    (dict(steps=1001), cutecpp.InvalidArgumentError, "steps must be 1 to 1000, got 1001"),
    (dict(sampler="nope"), cutecpp.InvalidArgumentError, "unknown sampler 'nope'"),
    (dict(sampler="flow_euler"), cutecpp.InvalidArgumentError, "flow_euler needs a flow-prediction model"),
    (dict(sampler="lcm", steps=51), cutecpp.InvalidArgumentError, "lcm takes at most 50 steps"),
    (dict(latent_size=0), cutecpp.InvalidArgumentError, "latent height and width must be 1 to 1024"),
    (dict(latent_size=(8, 0)), cutecpp.InvalidArgumentError, "got 8x0"),
    (dict(latent_size=4096), cutecpp.InvalidArgumentError, "got 4096x4096"),
    (dict(latent_size=2**40), cutecpp.InvalidArgumentError, "latent_size must be"),
    (dict(latent_size=7), cutecpp.InvalidArgumentError, "multiples of 2"),
    (dict(latent_size=(8, 8, 8)), cutecpp.InvalidArgumentError, "latent_size must be"),
    (dict(cfg=float("inf")), cutecpp.InvalidArgumentError, "cfg_scale must be 0 to 100"),
    (dict(cfg=-1.0), cutecpp.InvalidArgumentError, "cfg_scale must be 0 to 100"),
    (dict(cfg=float("nan")), cutecpp.InvalidArgumentError, "cfg must be a number"),
    (dict(seed=-1), cutecpp.InvalidArgumentError, "seed must be"),
    (dict(seed=2**64), cutecpp.InvalidArgumentError, "seed must be"),
    (dict(uncond=None), cutecpp.InvalidArgumentError, "needs the unconditional context, but uncond is NULL"),
    (dict(cond=None), cutecpp.InvalidArgumentError, "cond is NULL"),
    (dict(cond=np.zeros((3, 7), np.float32)), ValueError, r"expected cond \[T, 8\]"),
    (dict(uncond=np.zeros((3, 9), np.float32)), ValueError, r"expected uncond \[T, 8\]"),
    (dict(cond=np.zeros((0, 8), np.float32)), ValueError, "expected cond"),
    (dict(cond=np.zeros((1025, 8), np.float32)), cutecpp.InvalidArgumentError, "cond must have 1 to 1024 tokens"),
    (dict(cond=np.zeros((2, 3, 8), np.float32)), ValueError, "expected cond"),
    (dict(cond=np.zeros((3, 8), np.int32)), ValueError, "floating-point"),
])
def test_bad_arguments_refused(models, kwargs, error, words):
    cond, uncond = micro_contexts((3, 3))
    args = dict(cond=cond, uncond=uncond, seed=1, steps=2, cfg=2.0)
    args.update(kwargs)
    ctx = cutecpp.Context(models["sd"], threads=1)
    with pytest.raises(error, match=words):
        ctx.sample(args.pop("cond"), args.pop("uncond"), **args)
    assert ctx.sample(cond, uncond, seed=1, steps=2).shape == (4, 8, 8)  # still usable


def test_flow_model_refuses_other_samplers(models):
    cond, _ = micro_contexts((3, 3))
    with pytest.raises(cutecpp.InvalidArgumentError, match="euler needs an epsilon or v_prediction model"):
        cutecpp.Context(models["flow3"], threads=1).sample(cond, seed=1, sampler="euler", cfg=1.0)


def test_bundle_without_sampling_section(micro_path):
    model = cutecpp.Model.load(micro_path)
    assert model.sampling is None and "sampling" not in model.info["config"]
    cond, _ = micro_contexts((3, 3))
    with pytest.raises(cutecpp.InvalidArgumentError, match=r"no sampling section \(cutecpp.sampling.\*\)"):
        cutecpp.Context(model, threads=1).sample(cond, seed=1, cfg=1.0)
    with pytest.raises(cutecpp.InvalidArgumentError, match="no sampling section"):
        schedule(model, "euler", 4)


def test_step_api_refusals(models):
    x = np.zeros((4, 8, 8), np.float32)
    with pytest.raises(cutecpp.InvalidArgumentError, match="euler_a needs noise at step 0"):
        sampler_step(models["sd"], "euler_a", 4, 0, x, x)
    with pytest.raises(cutecpp.InvalidArgumentError, match="dpmpp_2m_karras needs its state"):
        sampler_step(models["sd"], "dpmpp_2m_karras", 4, 0, x, x)
    with pytest.raises(cutecpp.InvalidArgumentError, match="step 4 is outside 0..3"):
        sampler_step(models["sd"], "euler", 4, 4, x, x)
    assert np.array_equal(sampler_step(models["sd"], "lcm", 4, 3, x, x), x)  # lcm's last step adds no noise


# --- the bundle section -------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, error, words", [
    (dict(default_sampler="flow_euler"), cutecpp.UnsupportedError,
     "'cutecpp.sampling.default_sampler': flow_euler needs a flow-prediction model"),
    (dict(default_sampler="euler_b"), cutecpp.UnsupportedError, "unknown sampler 'euler_b'"),
    (dict(prediction="sample"), cutecpp.UnsupportedError, "unsupported value 'sample'"),
    (dict(beta_schedule="squaredcos_cap_v2"), cutecpp.UnsupportedError, "unsupported value 'squaredcos_cap_v2'"),
    (dict(timestep_spacing="even"), cutecpp.UnsupportedError, "unsupported value 'even'"),
    (dict(beta_start=0.0), cutecpp.UnsupportedError, "needs 0 < beta_start <= beta_end < 1"),
    (dict(beta_end=0.0001), cutecpp.UnsupportedError, "needs 0 < beta_start <= beta_end < 1"),
    (dict(num_train_timesteps=1), cutecpp.UnsupportedError, "outside \\[2, 10000\\]"),
    (dict(steps_offset=1000), cutecpp.UnsupportedError, "outside \\[0, 999\\]"),
    (dict(flow_shift=0.0), cutecpp.UnsupportedError, "'cutecpp.sampling.flow_shift': must be in \\(0, 100\\]"),
    (dict(default_steps=0), cutecpp.UnsupportedError, "default_steps'.*outside \\[1, 1000\\]"),
    (dict(default_sampler="lcm", default_steps=60), cutecpp.UnsupportedError, "lcm takes at most 50 steps"),
    (dict(default_cfg=float("nan")), cutecpp.UnsupportedError, "default_cfg': must be in \\[0, 100\\]"),
    (dict(guidance_max_sigma=float("nan")), cutecpp.UnsupportedError, "guidance_max_sigma': must be a finite number"),
    (dict(guidance_max_sigma=float("inf")), cutecpp.UnsupportedError, "guidance_max_sigma': must be a finite number"),
    (dict(guidance_max_sigma=-0.5), cutecpp.UnsupportedError, "guidance_max_sigma': must be a finite number >= 0"),
])
def test_bad_sampling_section_refused(micro, tmp_path, changes, error, words):
    path = with_sampling(micro, "sd", **changes).write(tmp_path / "bad.gguf")
    with pytest.raises(error, match=words):
        cutecpp.Model.load(path)


def test_sampling_section_is_all_or_nothing(micro, tmp_path):
    from gguf import GGUFValueType

    bundle = with_sampling(micro, "sd")
    del bundle.kv["cutecpp.sampling.default_cfg"]
    with pytest.raises(cutecpp.ModelError, match="missing key 'cutecpp.sampling.default_cfg'"):
        cutecpp.Model.load(bundle.write(tmp_path / "missing.gguf"))
    bundle = with_sampling(micro, "sd")
    bundle.set("cutecpp.sampling.eta", GGUFValueType.FLOAT32, 0.0)
    with pytest.raises(cutecpp.ModelError, match="unknown key 'cutecpp.sampling.eta'"):
        cutecpp.Model.load(bundle.write(tmp_path / "unknown.gguf"))
    bundle = with_sampling(micro, "sd")
    bundle.set("cutecpp.sampling.beta_start", GGUFValueType.FLOAT32, 0.00085)
    with pytest.raises(cutecpp.ModelError, match="'cutecpp.sampling.beta_start' must be of type float64"):
        cutecpp.Model.load(bundle.write(tmp_path / "type.gguf"))
    bundle = with_sampling(micro, "sd")
    bundle.set("cutecpp.sampling.guidance_max_sigma", GGUFValueType.FLOAT64, 0.85)
    with pytest.raises(cutecpp.ModelError, match="'cutecpp.sampling.guidance_max_sigma' must be of type float32"):
        cutecpp.Model.load(bundle.write(tmp_path / "type2.gguf"))
    lone = type(micro)(kv=dict(micro.kv), tensors=micro.tensors)
    lone.set("cutecpp.sampling.prediction", GGUFValueType.STRING, "epsilon")
    with pytest.raises(cutecpp.ModelError, match="missing key 'cutecpp.sampling.num_train_timesteps'"):
        cutecpp.Model.load(lone.write(tmp_path / "lone.gguf"))


# --- the converter -----------------------------------------------------------------------------------


def test_scheduler_defaults_are_diffusers_defaults():
    import inspect

    import diffusers

    for name, (_, defaults) in SCHEDULER_CLASSES.items():
        params = inspect.signature(getattr(diffusers, name).__init__).parameters
        for key, value in defaults.items():
            assert params[key].default == value, f"{name}.{key}"


@pytest.mark.parametrize("scheduler, expected", [
    (EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                     timestep_spacing="leading", steps_offset=1),
     dict(SAMPLING_CONFIGS["sd"])),
    (DPMSolverMultistepScheduler(prediction_type="v_prediction", timestep_spacing="trailing"),
     dict(SAMPLING_CONFIGS["linear"], prediction="v_prediction", timestep_spacing="trailing",
          default_sampler="dpmpp_2m_karras")),
    (LCMScheduler(), dict(SAMPLING_CONFIGS["sd"], steps_offset=0, default_sampler="lcm", default_steps=4,
                          default_cfg=1.0)),
    (FlowMatchEulerDiscreteScheduler(shift=3.0),
     dict(SAMPLING_CONFIGS["linear"], prediction="flow", flow_shift=3.0, default_sampler="flow_euler")),
])
def test_scheduler_config_to_sampling(scheduler, expected, tmp_path):
    scheduler.save_config(tmp_path)
    assert scheduler_config_to_sampling(tmp_path) == expected
    assert scheduler_config_to_sampling(tmp_path / "scheduler_config.json") == expected
    assert scheduler_config_to_sampling(dict(scheduler.config, _class_name=type(scheduler).__name__)) == expected


def test_sd_pndm_scheduler_config():
    """SD 1.5's scheduler/scheduler_config.json (a PNDMScheduler), as published."""
    config = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
              "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
              "clip_sample": False}
    assert scheduler_config_to_sampling(config) == SAMPLING_CONFIGS["sd"]
    chosen = dict(default_sampler="dpmpp_2m_karras", default_steps=12, default_cfg=5.0)
    assert scheduler_config_to_sampling(config, **chosen) == dict(SAMPLING_CONFIGS["sd"], **chosen)


@pytest.mark.parametrize("config, words", [
    ({"_class_name": "EulerDiscreteScheduler", "rescale_betas_zero_snr": True},
     "rescale_betas_zero_snr = True is not supported"),
    ({"_class_name": "EulerDiscreteScheduler", "trained_betas": [0.1, 0.2]}, "trained_betas"),
    ({"_class_name": "EulerDiscreteScheduler", "prediction_type": "sample"}, "prediction_type = 'sample'"),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True}, "use_dynamic_shifting"),
    ({"_class_name": "UniPCMultistepScheduler"}, "not a scheduler cutecpp reads"),
    ({"beta_start": 0.1}, "_class_name = None"),
])
def test_scheduler_config_refused(config, words):
    with pytest.raises(ConvertError, match=words):
        scheduler_config_to_sampling(config)


def test_convert_writes_sampling(tmp_path):
    make_unet("micro").save_pretrained(tmp_path / "unet")
    sampling = dict(SAMPLING_CONFIGS["flow3"], beta_start=0.000123456789012345)
    convert(tmp_path / "m.gguf", "f32", "test-sampling", unet=tmp_path / "unet", sampling=sampling)
    written = cutecpp.Model.load(tmp_path / "m.gguf").sampling
    assert written == sampling  # float64 values exact; no guidance_max_sigma where none was given
    convert(tmp_path / "g.gguf", "f32", "test-sampling", unet=tmp_path / "unet",
            sampling=dict(sampling, guidance_max_sigma=0.75))
    assert cutecpp.Model.load(tmp_path / "g.gguf").sampling == dict(sampling, guidance_max_sigma=0.75)
    assert all(isinstance(written[k], float) for k in ("beta_start", "beta_end", "flow_shift", "default_cfg"))
    with pytest.raises(ConvertError, match="missing sampling setting"):
        convert(tmp_path / "n.gguf", "f32", "x", unet=tmp_path / "unet", sampling={"prediction": "flow"})
    with pytest.raises(ConvertError, match="unknown sampling setting"):
        convert(tmp_path / "n.gguf", "f32", "x", unet=tmp_path / "unet", sampling=dict(sampling, eta=0.0))
    with pytest.raises(ConvertError, match="loader refuses the converted bundle.*default_sampler"):
        convert(tmp_path / "n.gguf", "f32", "x", unet=tmp_path / "unet",
                sampling=dict(sampling, default_sampler="euler"))
    assert not (tmp_path / "n.gguf").exists()


def test_cli_scheduler_option(tmp_path):
    make_unet("micro").save_pretrained(tmp_path / "unet")
    LCMScheduler().save_config(tmp_path / "scheduler")
    out = tmp_path / "m.gguf"
    run = subprocess.run([sys.executable, "tools/convert_diffusers.py", "--unet", str(tmp_path / "unet"),
                          "--scheduler", str(tmp_path / "scheduler"), "--default-steps", "6", "-o", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    sampling = cutecpp.Model.load(out).sampling
    assert (sampling["default_sampler"], sampling["default_steps"], sampling["beta_schedule"]) == ("lcm", 6,
                                                                                                  "scaled_linear")


def test_c_api_null_arguments(models):
    from cutecpp._binding import check, ffi, lib

    params = lib.cutecpp_sample_default_params()
    assert (params.sampler, params.steps, params.latent_height, params.latent_width) == (-1, -1, -1, -1)
    assert math.isnan(params.cfg_scale) and params.progress == ffi.NULL
    cond = np.zeros((3, 8), np.float32)
    out = np.empty((4, 8, 8), np.float32)
    with pytest.raises(cutecpp.InvalidArgumentError, match="cutecpp_sample: NULL argument"):
        check(lib.cutecpp_sample(ffi.NULL, ffi.from_buffer("float[]", cond), 3, ffi.NULL, 0, params,
                                 ffi.from_buffer("float[]", out, require_writable=True)))
    with pytest.raises(cutecpp.InvalidArgumentError, match="model is NULL"):
        check(lib.cutecpp_sampler_schedule(ffi.NULL, 0, 4, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL))
    with pytest.raises(cutecpp.InvalidArgumentError, match="unknown sampler 9"):
        check(lib.cutecpp_sampler_schedule(models["sd"]._handle, 9, 4, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL))
    with pytest.raises(cutecpp.InvalidArgumentError, match="NULL argument"):
        check(lib.cutecpp_sampler_step(models["sd"]._handle, 1, 4, 0, ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL,
                                       ffi.NULL, 16))
    assert lib.cutecpp_sampler_name(-1) == ffi.NULL and lib.cutecpp_sampler_name(len(cutecpp.SAMPLERS)) == ffi.NULL
    assert ffi.string(lib.cutecpp_status_name(lib.CUTECPP_ERR_CANCELLED)) == b"cancelled"


def test_info_shows_sampling(models):
    from click.testing import CliRunner

    from cutecpp.cli import cli

    path = models["flow3"].info["path"]
    text = CliRunner().invoke(cli, ["info", "--model", path]).output
    assert "sampling:\n  prediction: flow\n" in text and "  flow_shift: 3.0\n" in text
