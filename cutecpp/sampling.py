"""Samplers, the counter-based noise and the progress callback into the C core.

Sampler names ("euler_a", "euler", "dpmpp_2m_karras", "lcm", "flow_euler") come from the core
itself (cutecpp_sampler_name), so this list cannot drift from it. `Context.sample` in model.py
runs the denoising loop; this module holds what it shares with tools and tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ._binding import check, ffi, lib, text
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from .model import Model

Progress = Callable[[int, int], Any]
"""progress(step, steps) after each step (step counts from 1); returning False cancels."""


def _sampler_ids() -> dict[str, int]:
    ids: dict[str, int] = {}
    while (name := lib.cutecpp_sampler_name(len(ids))) != ffi.NULL:
        ids[text(name)] = len(ids)
    return ids


SAMPLERS: dict[str, int] = _sampler_ids()
"""Sampler name -> the core's enum value, in the core's order."""


def sampler_id(name: str | None) -> int:
    """The core's value for a sampler name; None means the bundle's default (-1)."""
    if name is None:
        return -1
    if name not in SAMPLERS:
        raise InvalidArgumentError(f"unknown sampler {name!r} (supported: {', '.join(SAMPLERS)})")
    return SAMPLERS[name]


def _u64(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < 2**64:
        raise InvalidArgumentError(f"{name} must be an integer in [0, 2^64), got {value!r}")
    return int(value)


def rng_normal(seed: int, n: int, stream: int = 0, offset: int = 0) -> np.ndarray:
    """Standard normal float32 numbers offset .. offset + n - 1 of the (seed, stream) sequence.

    Philox4x32-10 + Box-Muller in the core: the same bits on every machine. Stream 0 is a
    sample's initial latent (flattened [C, h, w]); stream 1 + i the noise euler_a and lcm add
    at step i.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InvalidArgumentError(f"n must be a non-negative integer, got {n!r}")
    out = np.empty(int(n), dtype=np.float32)
    check(lib.cutecpp_rng_normal(_u64("seed", seed), _u64("stream", stream), _u64("offset", offset), int(n),
                                 ffi.from_buffer("float[]", out, require_writable=True)))
    return out


class _Callback:
    """One run's Python progress function, and the exception it raised, if any."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.error: BaseException | None = None


@ffi.def_extern()
def _cutecpp_progress(step: int, n_steps: int, user_data) -> bool:
    callback: _Callback = ffi.from_handle(user_data)
    try:
        return callback.progress(step, n_steps) is not False
    except BaseException as exc:  # re-raised by run_with_progress once the C call returns
        callback.error = exc
        return False


def run_with_progress(params, progress: Progress | None, call: Callable[[], int]) -> None:
    """Runs `call()` (a C call taking `params`) with `progress` as its callback, then checks its status.

    An exception raised inside `progress` stops the run and is re-raised here, after the C call
    has returned (never swallowed); a plain False raises CancelledError.
    """
    if progress is None:
        check(call())
        return
    callback = _Callback(progress)
    handle = ffi.new_handle(callback)  # kept alive by this frame for the whole call
    params.progress = lib._cutecpp_progress
    params.progress_user_data = handle
    status = call()
    if callback.error is not None:
        raise callback.error
    check(status)


def sample_params(*, seed: int, steps: int | None, sampler: str | None, cfg: float | None,
                  latent_size: int | tuple[int, int] | None):
    """A cutecpp_sample_params with Python's None meaning the bundle's default."""
    params = lib.cutecpp_sample_default_params()
    params.seed = _u64("seed", seed)
    params.sampler = sampler_id(sampler)
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not -2**31 <= steps < 2**31:
            raise InvalidArgumentError(f"steps must be an integer, got {steps!r}")
        params.steps = int(steps)
    if cfg is not None:
        if isinstance(cfg, bool) or not isinstance(cfg, (int, float, np.floating, np.integer)) or math.isnan(cfg):
            raise InvalidArgumentError(f"cfg must be a number, got {cfg!r}")
        params.cfg_scale = float(cfg)
    if latent_size is not None:
        sides = (latent_size, latent_size) if isinstance(latent_size, (int, np.integer)) else latent_size
        if not (isinstance(sides, (tuple, list)) and len(sides) == 2
                and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < 2**31
                        for v in sides)):
            raise InvalidArgumentError(f"latent_size must be an int or (height, width) of ints, got {latent_size!r}")
        params.latent_height, params.latent_width = int(sides[0]), int(sides[1])
    return params


MAX_CANDIDATES = 16  # as the core's kMaxCandidates


def check_candidates(candidates: Any) -> int:
    """A candidates count (1..MAX_CANDIDATES) as an int; InvalidArgumentError otherwise."""
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)) \
            or not 1 <= candidates <= MAX_CANDIDATES:
        raise InvalidArgumentError(f"candidates must be 1..{MAX_CANDIDATES}, got {candidates!r}")
    return int(candidates)


def set_best_of(params, candidates: int | None, verify_sigma: float | None, labels, n_labels: int, chosen) -> None:
    """Fills a cutecpp_sample_params' best-of fields (None: the bundle's); `labels`, `chosen` stay the caller's."""
    if candidates is not None:
        params.candidates = check_candidates(candidates)
    if verify_sigma is not None:
        if isinstance(verify_sigma, bool) or not isinstance(verify_sigma, (int, float, np.floating, np.integer)) \
                or not (math.isfinite(verify_sigma) and verify_sigma >= 0):
            raise InvalidArgumentError(f"verify_sigma must be a number >= 0, got {verify_sigma!r}")
        params.verify_sigma = float(verify_sigma)
    params.verify_labels = labels
    params.n_verify_labels = n_labels
    params.out_candidate = chosen


def schedule(model: Model, sampler: str, steps: int) -> dict[str, Any]:
    """A sampler's schedule for the bundle's training schedule (cutecpp_sampler_schedule), for tests and tools.

    sigmas [steps + 1], timesteps [steps] (the UNet's input), input_divisors [steps] (the UNet
    sees latent / divisor) and init_noise_sigma.
    """
    sid = sampler_id(sampler)
    n = int(steps) if 1 <= steps <= 1000 else 0  # the core refuses the others
    sigmas = np.empty(n + 1, np.float32)
    timesteps = np.empty(max(n, 1), np.float32)
    divisors = np.empty(max(n, 1), np.float32)
    init = ffi.new("float *")
    check(lib.cutecpp_sampler_schedule(model._handle, sid, int(steps), ffi.from_buffer("float[]", sigmas, True),
                                       ffi.from_buffer("float[]", timesteps, True),
                                       ffi.from_buffer("float[]", divisors, True), init))
    return {"sigmas": sigmas, "timesteps": timesteps[:n], "input_divisors": divisors[:n],
            "init_noise_sigma": float(init[0])}


def sampler_step(model: Model, sampler: str, steps: int, step: int, model_output: np.ndarray, sample: np.ndarray,
                 noise: np.ndarray | None = None, state: np.ndarray | None = None) -> np.ndarray:
    """One update (cutecpp_sampler_step): the latent after step `step` (0-based) of a `steps`-step run.

    noise: standard normals shaped like `sample` (euler_a; lcm but on the last step). state: a
    float32 array shaped like `sample` that dpmpp_2m_karras updates in place across one run's steps.
    """
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    model_output = np.ascontiguousarray(model_output, dtype=np.float32)
    arrays = {"noise": noise, "state": state}
    for name, array in arrays.items():
        if array is not None and (array.shape != sample.shape or array.dtype != np.float32
                                  or not array.flags.c_contiguous):
            raise ValueError(f"{name} must be a C-contiguous float32 array shaped like sample {sample.shape}")
    if model_output.shape != sample.shape:
        raise ValueError(f"model_output {model_output.shape} and sample {sample.shape} differ in shape")
    out = np.empty_like(sample)
    check(lib.cutecpp_sampler_step(
        model._handle, sampler_id(sampler), steps, step, ffi.from_buffer("float[]", model_output),
        ffi.from_buffer("float[]", sample), ffi.NULL if noise is None else ffi.from_buffer("float[]", noise),
        ffi.NULL if state is None else ffi.from_buffer("float[]", state, require_writable=True),
        ffi.from_buffer("float[]", out, require_writable=True), sample.size))
    return out
