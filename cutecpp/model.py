"""A loaded, validated model bundle (docs/bundle-format.md)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._binding import check, ffi, lib, text
from .errors import InvalidArgumentError
from .sampling import Progress, run_with_progress, sample_params, set_best_of


class Model:
    """An immutable bundle loaded by the C core; safe to share between threads."""

    def __init__(self, handle) -> None:
        self._handle = handle

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True) -> Model:
        """Loads and validates the bundle at `path`; raises a CutecppError naming the problem."""
        params = lib.cutecpp_model_default_params()
        params.use_mmap = mmap
        out = ffi.new("struct cutecpp_model **")
        check(lib.cutecpp_model_load(os.fsencode(path), params, out))
        return cls(ffi.gc(out[0], lib.cutecpp_model_free))

    @functools.cached_property
    def info(self) -> dict[str, Any]:
        """Config, tensor count, parameters, bytes per dtype and file size (the model is immutable)."""
        return json.loads(text(lib.cutecpp_model_info_json(self._handle)))

    @property
    def sampling(self) -> dict[str, Any] | None:
        """The training schedule and sampling defaults (cutecpp.sampling.*), or None if the bundle has none."""
        return self.info["config"].get("sampling")


class Context:
    """Per-generation compute state (threads, planned graphs). Use from one thread at a time."""

    def __init__(self, model: Model, threads: int | None = None) -> None:
        params = lib.cutecpp_context_default_params()
        params.n_threads = threads or 0
        out = ffi.new("struct cutecpp_context **")
        check(lib.cutecpp_context_init(model._handle, params, out))
        self._model = model  # keeps the model alive while the context exists
        self._handle = ffi.gc(out[0], lib.cutecpp_context_free)
        self.last_candidate = 0  # the candidate k the last sample() kept (seed + k * 2^32)

    @property
    def model(self) -> Model:
        """The model this context evaluates."""
        return self._model

    @property
    def threads(self) -> int:
        return int(lib.cutecpp_context_n_threads(self._handle))

    def unet(self, sample: np.ndarray, timesteps: np.ndarray, context: np.ndarray) -> np.ndarray:
        """One UNet evaluation: sample [n, C, H, W], timesteps [n], context [n, T, D] -> [n, C_out, H, W]."""
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        timesteps = np.ascontiguousarray(np.broadcast_to(timesteps, (sample.shape[0],)), dtype=np.float32)
        context = np.ascontiguousarray(context, dtype=np.float32)
        if sample.ndim != 4 or context.ndim != 3 or context.shape[0] != sample.shape[0]:
            raise ValueError(f"expected sample [n, C, H, W] and context [n, T, D], got {sample.shape}, {context.shape}")
        unet = self._component("unet")
        if sample.shape[1] != unet["in_channels"] or context.shape[2] != unet["cross_attention_dim"]:
            raise ValueError(
                f"the unet takes {unet['in_channels']} latent channels and context width "
                f"{unet['cross_attention_dim']}, got {sample.shape[1]} and {context.shape[2]}"
            )
        n, _, h, w = sample.shape
        out = np.empty((n, unet["out_channels"], h, w), dtype=np.float32)
        check(
            lib.cutecpp_unet_eval(
                self._handle,
                ffi.from_buffer("float[]", sample),
                n, h, w,
                ffi.from_buffer("float[]", timesteps),
                ffi.from_buffer("float[]", context),
                context.shape[1],
                ffi.from_buffer("float[]", out, require_writable=True),
            )
        )
        return out

    def align(self, states: np.ndarray) -> np.ndarray:
        """Alignment module: text-encoder states [T, in_dim] or [n, T, in_dim] -> UNet context [.., T, ctx_dim].

        The result has the rank of `states`; [n, T, ctx_dim] is `unet()`'s context. Every token
        is attended to: give each prompt its own row, without padding.
        """
        align = self._component("alignment")
        states = np.asarray(states)
        if not np.issubdtype(states.dtype, np.floating):
            raise ValueError(f"expected floating-point states, got {states.dtype}")
        if states.ndim not in (2, 3) or states.shape[-1] != align["in_dim"]:
            raise ValueError(f"expected states [T, {align['in_dim']}] or [n, T, {align['in_dim']}], "
                             f"got {states.shape}")
        batch = np.ascontiguousarray(states[None] if states.ndim == 2 else states, dtype=np.float32)
        n, tokens, _ = batch.shape
        out = np.empty((n, tokens, align["ctx_dim"]), dtype=np.float32)
        check(lib.cutecpp_align(self._handle, ffi.from_buffer("float[]", batch), n, tokens,
                                ffi.from_buffer("float[]", out, require_writable=True)))
        return out if states.ndim == 3 else out[0]

    def sample(self, cond: np.ndarray, uncond: np.ndarray | None = None, *, seed: int, steps: int | None = None,
               sampler: str | None = None, cfg: float | None = None,
               latent_size: int | tuple[int, int] | None = None, progress: Progress | None = None,
               candidates: int | None = None, verify_labels: Sequence[int] = (),
               verify_sigma: float | None = None) -> np.ndarray:
        """Text to latents: the whole denoising loop (cutecpp_sample in cutecpp.h) -> [C, h, w].

        cond, uncond: UNet contexts [T, cross_attention_dim] (or [1, T, D]); uncond may be None
        when the guidance scale is 1. None for steps, sampler ("euler_a", "euler",
        "dpmpp_2m_karras", "lcm", "flow_euler"), cfg and latent_size (an int or (height, width),
        latent pixels) means the bundle's default (Model.sampling; the UNet's sample_size). Where the
        bundle has a guidance_max_sigma, the steps whose sigma is above it use cond alone, whatever cfg.
        progress(step, steps) runs after each step: returning False raises CancelledError, an
        exception it raises stops the run and propagates; the context stays usable either way.
        The same arguments give the same bits, for any thread count.

        candidates (None: the bundle's cutecpp.sampling.candidates, else 1): best of that many seeds,
        seed + k * 2^32 for k = 0, 1, ... (mod 2^64): each runs to the first step whose sigma is at most
        verify_sigma (None: the bundle's), the verifier scores them there on `verify_labels` (indices into
        its labels: the prompt's animals, items and place) and the best one finishes. `last_candidate` is
        then the chosen k: the latents are exactly those of seed + k * 2^32 with one candidate.
        """
        unet = self._component("unet")
        width = unet["cross_attention_dim"]
        states = [self._context_states(name, x, width) for name, x in (("cond", cond), ("uncond", uncond))]
        params = sample_params(seed=seed, steps=steps, sampler=sampler, cfg=cfg, latent_size=latent_size)
        labels = np.ascontiguousarray(np.asarray(verify_labels, dtype=np.int64).reshape(-1), dtype=np.int32)
        if len(labels) and (labels.min() < 0 or labels.max() >= 2**31 - 1):
            raise InvalidArgumentError(f"verify_labels must be label indices, got {list(verify_labels)!r}")
        c_labels = ffi.from_buffer("int32_t[]", labels) if len(labels) else ffi.NULL
        chosen = ffi.new("int32_t *", 0)
        set_best_of(params, candidates, verify_sigma, c_labels, len(labels), chosen)
        h = unet["sample_size"] if params.latent_height == -1 else params.latent_height
        w = unet["sample_size"] if params.latent_width == -1 else params.latent_width
        # A size the core refuses gets a placeholder buffer: the refusal, not a huge allocation.
        shape = (unet["in_channels"], h, w) if 1 <= h <= 1024 and 1 <= w <= 1024 else (1,)
        out = np.empty(shape, dtype=np.float32)
        (c_cond, n_cond), (c_uncond, n_uncond) = states
        run_with_progress(params, progress, lambda: lib.cutecpp_sample(
            self._handle, c_cond, n_cond, c_uncond, n_uncond, params,
            ffi.from_buffer("float[]", out, require_writable=True)))
        self.last_candidate = int(chosen[0])
        return out

    def verify(self, latents: np.ndarray, sigmas) -> np.ndarray:
        """The verifier's logits [n, labels] for latents [n, C, h, w] (or [C, h, w]: [labels]) in the UNet's
        space at noise levels `sigmas` (one number, or [n]); the labels are
        Model.info["config"]["components"]["verifier"]["labels"]."""
        ver = self._component("verifier")
        latents = np.asarray(latents)
        if not np.issubdtype(latents.dtype, np.floating):
            raise ValueError(f"expected floating-point latents, got {latents.dtype}")
        if latents.ndim not in (3, 4) or latents.shape[-3] != ver["in_channels"]:
            raise ValueError(f"expected latents [{ver['in_channels']}, h, w] or [n, {ver['in_channels']}, h, w], "
                             f"got {latents.shape}")
        batch = np.ascontiguousarray(latents[None] if latents.ndim == 3 else latents, dtype=np.float32)
        n, _, h, w = batch.shape
        sig = np.ascontiguousarray(np.broadcast_to(np.asarray(sigmas, dtype=np.float32), (n,)))
        out = np.empty((n, len(ver["labels"])), dtype=np.float32)
        check(lib.cutecpp_verify(self._handle, ffi.from_buffer("float[]", batch), ffi.from_buffer("float[]", sig),
                                 n, h, w, ffi.from_buffer("float[]", out, require_writable=True)))
        return out if latents.ndim == 4 else out[0]

    @staticmethod
    def _context_states(name: str, states: np.ndarray | None, width: int):
        """(C pointer, token count) of one UNet context, checked against the UNet's context width."""
        if states is None:
            return ffi.NULL, 0
        states = np.asarray(states)
        if not np.issubdtype(states.dtype, np.floating):
            raise ValueError(f"expected floating-point {name}, got {states.dtype}")
        if states.ndim == 3 and states.shape[0] == 1:
            states = states[0]
        if states.ndim != 2 or states.shape[1] != width or states.shape[0] < 1:
            raise ValueError(f"expected {name} [T, {width}] (the UNet's context width), got {states.shape}")
        states = np.ascontiguousarray(states, dtype=np.float32)
        return ffi.from_buffer("float[]", states), states.shape[0]

    def set_trace(self, enable: bool) -> None:
        """Keep every block's output of the next evaluations (parity tests, debugging)."""
        check(lib.cutecpp_context_set_trace(self._handle, enable))

    def trace(self, name: str) -> np.ndarray:
        """A block output of the last traced evaluation, e.g. "unet.down_blocks.1", as [n, C, H, W].

        Token sequences ("alignment.blocks.0") come as [1, n, T, C].
        """
        shape = ffi.new("int64_t[4]")
        count = ffi.new("size_t *")
        key = name.encode()
        check(lib.cutecpp_context_trace_get(self._handle, key, ffi.NULL, 0, shape, count))
        out = np.empty(tuple(shape), dtype=np.float32)
        check(lib.cutecpp_context_trace_get(self._handle, key, ffi.from_buffer("float[]", out, require_writable=True),
                                            out.size, shape, count))
        return out

    def tiny_decode(self, latents: np.ndarray) -> np.ndarray:
        """Tiny (TAESD-style) decoder: latents [n, C, h, w] as the UNet produced them -> image [n, 3, h*f, w*f].

        The decoder first undoes the latent scaling (latents / scaling_factor + shift_factor, or with
        per-channel latents_mean/latents_std: docs/bundle-format.md); the image is in [-1, 1].
        f = upsampling_scaling_factor ** (stages - 1), 16 for cute-mini.
        """
        dec = self._component("tiny_decoder")
        factor = dec["upsampling_scaling_factor"] ** (len(dec["block_out_channels"]) - 1)
        return self._decode(lib.cutecpp_tiny_decode, dec, factor, latents)

    def vae_decode(self, latents: np.ndarray) -> np.ndarray:
        """SD VAE (AutoencoderKL) decoder: latents [n, C, h, w] as the UNet produced them -> image [n, 3, 8h, 8w].

        The decoder first undoes the latent scaling as diffusers pipelines do before vae.decode
        (docs/bundle-format.md); the image is about [-1, 1], not clamped. The factor 8 is
        2 ** (levels - 1) in general.
        """
        dec = self._component("vae_decoder")
        return self._decode(lib.cutecpp_vae_decode, dec, 2 ** (len(dec["block_out_channels"]) - 1), latents)

    def tiny_encode(self, images: np.ndarray) -> np.ndarray:
        """Tiny (TAESD-style) encoder: images [n, 3, H, W] in [-1, 1] -> latents [n, C, H/f, W/f].

        The latents are in the UNet's latent space, the one tiny_decode takes: the encoder's output
        with the bundle's latent scaling applied ((x - shift_factor) * scaling_factor, or with
        per-channel latents_mean/latents_std: docs/bundle-format.md). f = 2 ** (stages - 1), 8 for
        TAESD; H and W must be multiples of it.
        """
        enc = self._component("tiny_encoder")
        return self._encode(lib.cutecpp_tiny_encode, enc, 2 ** (len(enc["block_out_channels"]) - 1), images)

    def vae_encode(self, images: np.ndarray) -> np.ndarray:
        """SD VAE (AutoencoderKL) encoder: images [n, 3, H, W] in [-1, 1] -> latents [n, C, H/8, W/8].

        The latents are the posterior's mean (diffusers' latent_dist.mode(), not a sample), scaled
        into the UNet's latent space as for tiny_encode: what vae_decode takes. The factor 8 is
        2 ** (levels - 1) in general; H and W must be multiples of it.
        """
        enc = self._component("vae_encoder")
        return self._encode(lib.cutecpp_vae_encode, enc, 2 ** (len(enc["block_out_channels"]) - 1), images)

    def _component(self, name: str) -> dict:
        component = self._model.info["config"]["components"].get(name)
        if component is None:
            raise ValueError(f"the model has no {name}")
        return component

    def _encode(self, c_encode, enc: dict, factor: int, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1] != enc["in_channels"]:
            raise ValueError(f"expected images [n, {enc['in_channels']}, H, W], got {images.shape}")
        n, _, h, w = images.shape
        # A size the core refuses (naming it) gets a placeholder buffer, not a wrong-sized one.
        shape = (n, enc["latent_channels"], h // factor, w // factor) if h % factor == 0 == w % factor else (1,)
        out = np.empty(shape, dtype=np.float32)
        check(c_encode(self._handle, ffi.from_buffer("float[]", images), n, h, w,
                       ffi.from_buffer("float[]", out, require_writable=True)))
        return out

    def _decode(self, c_decode, dec: dict, factor: int, latents: np.ndarray) -> np.ndarray:
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        if latents.ndim != 4 or latents.shape[1] != dec["latent_channels"]:
            raise ValueError(f"expected latents [n, {dec['latent_channels']}, h, w], got {latents.shape}")
        n, _, h, w = latents.shape
        out = np.empty((n, dec["out_channels"], h * factor, w * factor), dtype=np.float32)
        check(c_decode(self._handle, ffi.from_buffer("float[]", latents), n, h, w,
                       ffi.from_buffer("float[]", out, require_writable=True)))
        return out
