"""Score a model with another guidance scale at low or high noise: an experiment, not a cutecpp feature.

    python tools/guidance_schedule.py --below 0.5 --low-cfg 1 score --model M.gguf --n 400 --jsonl F
    python tools/eval_quality.py compare --old F0 --new F

runs `tools/eval_quality.py` with the arguments after the options, where every denoising step whose
noise level (the schedule's sigma at that step) is below --below is guided at --low-cfg, and every one
above --above at --high-cfg, instead of the model's scale (1: unguided, one UNet evaluation of batch 1
instead of two). The loop is built
from the core's own pieces (cutecpp.sampling.rng_normal, schedule and sampler_step, Context.unet), so
where the scale does not change it draws exactly what cutecpp_sample draws, bit for bit
(tests/test_guidance_schedule.py). Samplers that add noise or keep a history (euler_a, lcm,
dpmpp_2m_karras) are refused. What it measured on cute-mini 0.12: docs/cute-mini-history.md, section 22.
The core has one such rule as a bundle setting (cutecpp.sampling.guidance_max_sigma: unguided above a
sigma), equal to --above S --high-cfg 1 bit for bit (tests/test_guidance_schedule.py); without --above,
a bundle's own guidance_max_sigma is the --above (cute-mini 0.13: 0.85), so the tool's defaults draw what
the core draws.

A contrast term can be added at the steps whose sigma is at most --contrast-max-sigma: the output gains
--contrast-scale x (the model's prediction for the prompt - another prediction), where the other one is
    --weak-model B      bundle B's, with its own alignment of the same words: autoguidance (Karras et al.
                        2024, guiding with a weaker model of the same task); B needs the same latents and
                        text encoder (an older cute-mini);
    --without-items     the same model's for the prompt's words less each accessory's verb, colour and
                        item (`小熊 穿 蓝 裤子 冰山上 笑` -> `小熊 冰山上 笑`): item guidance; a prompt
                        without accessories gets no term.
One more UNet evaluation of batch 1 at each such step. What they measured on cute-mini 0.13: section 25.

--from-render S is a diagnostic, not a way to draw: each picture starts from its prompt's own dataset render,
encoded by the training encoder and noised to the first step whose sigma is at most S, and the model draws the
rest. The judge's figures against S say at which noise levels the model loses what a right picture holds
(cute-mini 0.13: section 26).
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import numpy as np

import cutecpp
import cutecpp.model
from cutecpp import sampling
from cutecpp.prompt import Prompt, parse_prompt
from cutecpp.vocab import Vocabulary

ROOT = Path(__file__).resolve().parent.parent
PLAIN_SAMPLERS = ("flow_euler", "euler")  # one model output per step, no noise, no state
FEATURE_CATEGORIES = ("verb", "colour", "item")  # the words an accessory puts in the encoder text


def sample(ctx: cutecpp.model.Context, cond: np.ndarray, uncond: np.ndarray | None, *, seed: int,
           steps: int | None = None, sampler: str | None = None, cfg: float | None = None,
           latent_size: int | tuple[int, int] | None = None, below: float = 0.0, low_cfg: float = 1.0,
           above: float | None = None, high_cfg: float = 1.0,
           contrast: tuple[cutecpp.model.Context, np.ndarray] | None = None, contrast_scale: float = 1.0,
           contrast_max_sigma: float = np.inf, start: tuple[np.ndarray, float] | None = None,
           unet=None, trace=None) -> np.ndarray:
    """Context.sample's latents [C, h, w] with `low_cfg` in place of cfg at the steps whose sigma < `below`
    and `high_cfg` at those whose sigma > `above` (None: the bundle's guidance_max_sigma, if any).
    `contrast` = (context, its cond): at the steps whose sigma <= `contrast_max_sigma` the output gains
    `contrast_scale` x (ctx's prediction for `cond` - that context's prediction for its cond).
    `start` = (latent [C, h, w], S), flow_euler only: skip the steps whose sigma is above S and start the
    others from the latent noised to the first one's sigma, (1 - sigma) latent + sigma noise (S at or
    above the first sigma: exactly the usual start; below every sigma but 0: the latent itself).
    `unet(latents [B, C, h, w], timesteps [B], contexts [B, T, D])`: another network in place of ctx's
    UNet (tools/layout_score.py's); ctx still gives the bundle's schedule and the contrast's default.
    `trace(i, x, out)`, if given, sees each step i's sample before the step and the (guided) output."""
    model = ctx.model
    unet_fn = unet or ctx.unet
    defaults = model.sampling
    sampler = sampler or defaults["default_sampler"]
    if sampler not in PLAIN_SAMPLERS:
        raise ValueError(f"sampler {sampler}: only {', '.join(PLAIN_SAMPLERS)} (no noise, no history)")
    steps = defaults["default_steps"] if steps is None else steps
    cfg = defaults["default_cfg"] if cfg is None else cfg
    if above is None:  # compared as the core compares it: with the float32 the bundle stores
        above = np.float32(defaults.get("guidance_max_sigma", np.inf))
    unet = model.info["config"]["components"]["unet"]
    size = latent_size or unet["sample_size"]
    h, w = size if isinstance(size, tuple) else (size, size)
    plan = sampling.schedule(model, sampler, steps)
    x = sampling.rng_normal(seed, unet["in_channels"] * h * w).reshape(unet["in_channels"], h, w)
    x = x * np.float32(plan["init_noise_sigma"])
    if uncond is not None and uncond.shape != cond.shape:
        raise ValueError(f"uncond {uncond.shape} and cond {cond.shape}: one batch of two needs one shape "
                         "(the Pipeline repeats 'no prompt' to the prompt's length)")
    both = None if uncond is None else np.stack([uncond, cond])
    first = 0
    if start is not None:
        if sampler != "flow_euler":
            raise ValueError(f"sampler {sampler}: a start latent needs flow_euler (noised as the flow noises)")
        latent, start_sigma = start
        if latent.shape != x.shape:
            raise ValueError(f"start latent {latent.shape}, but the sample is {x.shape}")
        first = next((i for i in range(steps) if plan["sigmas"][i] <= start_sigma), steps)
        s = np.float32(plan["sigmas"][first])
        x = (np.float32(1) - s) * latent.astype(np.float32) + s * x
    for i in range(first, steps):
        sigma = plan["sigmas"][i]
        scale = low_cfg if sigma < below else high_cfg if sigma > above else cfg
        t = np.float32(plan["timesteps"][i])
        latent = x / np.float32(plan["input_divisors"][i]) if sampler == "euler" else x
        if scale != 1.0:
            if both is None:
                raise ValueError(f"guidance scale {scale} at step {i} needs the unconditional context")
            pred = unet_fn(np.stack([latent, latent]), np.array([t, t]), both)
            conditional = pred[1]
            out = pred[0] + np.float32(scale) * (pred[1] - pred[0])
        else:
            out = conditional = unet_fn(latent[None], np.array([t]), cond[None])[0]
        if contrast is not None and contrast_scale != 0.0 and sigma <= contrast_max_sigma:
            other_ctx, other_cond = contrast
            other = other_ctx.unet(latent[None], np.array([t]), other_cond[None])[0]
            out = out + np.float32(contrast_scale) * (conditional - other)
        if trace is not None:
            trace(i, x, out)
        x = sampling.sampler_step(model, sampler, steps, i, out, x)
    return x


def one_seed(ctx: cutecpp.model.Context, candidates: int | None) -> None:
    """The tools' loops draw one seed: refuse best of several (a bundle's cutecpp.sampling.candidates or the
    caller's), whose choice only the core makes."""
    n = ctx.model.sampling.get("candidates", 1) if candidates is None else candidates
    if n != 1:
        raise SystemExit(f"{n} candidates: this tool draws one seed per picture (copy the bundle with "
                         "tools/set_sampling.py --set candidates=1)")


def item_free_words(prompt: Prompt, vocab: Vocabulary) -> list[str]:
    """The prompt's encoder words less those of its accessories: the verbs, colours and items (words of no
    other concept)."""
    return [w for w in prompt.encoder_text.split() if vocab.lookup(w).category not in FEATURE_CATEGORIES]


def contrast_for(pipe: cutecpp.Pipeline, text: str, *, weak: cutecpp.model.Context | None = None,
                 without_items: bool = False) -> tuple[cutecpp.model.Context, np.ndarray] | None:
    """The other side of the contrast term for one prompt: (weak model, its alignment of the same words),
    or (the pipeline's model, its alignment of the words less the items; None for a prompt without items)."""
    if weak is None and not without_items:
        raise ValueError("contrast_for needs a weak model's context or without_items")
    prompt = parse_prompt(text, rules=pipe.rules, vocab=pipe.vocab)
    if without_items:
        if not prompt.features:
            return None
        return pipe.context, pipe.context.align(pipe.encoder.encode(item_free_words(prompt, pipe.vocab)))
    return weak, weak.align(pipe.encoder.encode(prompt.encoder_text.split()))


class DatasetIndex:
    """Each scored prompt's dataset picture: `install` makes eval_quality's prompt lists (judge.score's
    dataset_prompts) note (index, split) of each prompt they list, and `render` draws that picture."""

    def __init__(self) -> None:
        self.index: dict[str, tuple[int, str]] = {}  # prompt -> (dataset index, split), as scoring listed them

    def listed(self, prompts: list[dict], split: str) -> list[dict]:
        for p in prompts:
            self.index.setdefault(p["prompt"], (p["index"], split))
        return prompts

    def install(self) -> None:
        import judge.score

        listed = judge.score.dataset_prompts
        judge.score.dataset_prompts = lambda *a, **kw: self.listed(
            listed(*a, **kw), kw.get("split", a[5] if len(a) > 5 else "heldout"))

    def render(self, prompt: str, size: int):
        """(PIL image, labels) of the prompt's dataset picture at `size` pixels."""
        from make_dataset import render

        index, split = self.index[prompt]
        return render(index, split, size)


class RenderStarts(DatasetIndex):
    """--from-render's start latents: each scored prompt's own dataset render as the UNet's latent [C, h, w],
    the training encoder's (`train_unet.py prepare`'s encode_latents, so the latents the UNet trained on),
    normalised per channel by the bundle's decoder statistics (`fit_encoder.raw_latent_stats`)."""

    def __init__(self, autoencoder: str | Path) -> None:
        from latent_encoder import load_autoencoder

        super().__init__()
        self.ae = load_autoencoder(str(autoencoder)).requires_grad_(False)
        self.stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def latent(self, prompt: str, bundle: str | Path) -> np.ndarray:
        import cute_mini
        from fit_encoder import raw_latent_stats
        from train_unet import encode_latents

        image, _ = self.render(prompt, cute_mini.IMAGE_SIZE)
        z = encode_latents(self.ae, [np.asarray(image, np.float32).transpose(2, 0, 1) / 127.5 - 1.0])[0]
        config = self.ae.config  # encode_latents applies the autoencoder's scaling; the statistics are raw
        raw = z.astype(np.float32) / np.float32(config.scaling_factor) + np.float32(config.shift_factor)
        if str(bundle) not in self.stats:  # the UNet's latent z is raw = z * std + mean
            self.stats[str(bundle)] = tuple(v[:, None, None] for v in raw_latent_stats(bundle))
        mean, std = self.stats[str(bundle)]
        return (raw - mean) / std


def main(argv: list[str] | None = None) -> None:
    usage = ("%(prog)s [--below S --low-cfg G] [--above S --high-cfg G] [--weak-model B | --without-items] "
             "[--contrast-scale A --contrast-max-sigma S] [--from-render S [--autoencoder DIR]] "
             "eval_quality.py's arguments ...")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], usage=usage)
    parser.add_argument("--below", type=float, default=0.0, help="steps with sigma below this ...")
    parser.add_argument("--low-cfg", type=float, default=1.0, help="... are guided at this scale (1: unguided)")
    parser.add_argument("--above", type=float, help="steps with sigma above this (default: the bundle's "
                        "guidance_max_sigma, else none) ...")
    parser.add_argument("--high-cfg", type=float, default=1.0, help="... are guided at this scale (1: unguided)")
    other = parser.add_mutually_exclusive_group()
    other.add_argument("--weak-model", metavar="BUNDLE", help="contrast with this bundle's prediction for the same "
                       "words (autoguidance)")
    other.add_argument("--without-items", action="store_true", help="contrast with the model's prediction for the "
                       "words less the accessories (item guidance)")
    parser.add_argument("--contrast-scale", type=float, default=1.0, help="the contrast term's scale")
    parser.add_argument("--contrast-max-sigma", type=float, default=np.inf, help="only at the steps whose sigma is at "
                        "most this (default: every step)")
    parser.add_argument("--from-render", type=float, metavar="S", help="start each picture from its prompt's dataset "
                        "render, encoded and noised to the first step whose sigma is at most S (a diagnostic: what the "
                        "model keeps of a right picture from that noise level on; flow_euler)")
    parser.add_argument("--autoencoder", default=None, help="with --from-render: the training autoencoder folder, "
                        "whose encoder made the latents the model's UNet trained on (default: the training cache's "
                        "autoencoder-export)")
    args, rest = parser.parse_known_args(argv)
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        weak_model = cutecpp.model.Model.load(args.weak_model) if args.weak_model else None
    except cutecpp.CutecppError as exc:
        parser.error(f"--weak-model: {exc}")
    current: dict = {}
    original_generate = cutecpp.Pipeline.generate
    starts = None
    if args.from_render is not None:
        import cute_mini

        folder = args.autoencoder or cute_mini.TRAIN_DIR / "autoencoder-export"
        try:
            starts = RenderStarts(folder)
        except (OSError, ValueError) as exc:
            parser.error(f"--from-render: the training autoencoder {folder}: {exc}")
        starts.install()

    def generate(pipe, prompt, *more, **kw):
        current.update(pipe=pipe, prompt=prompt)
        return original_generate(pipe, prompt, *more, **kw)

    def patched(ctx, cond, uncond=None, *, seed, steps=None, sampler=None, cfg=None, latent_size=None,
                progress=None, candidates=None, verify_labels=(), verify_sigma=None):
        one_seed(ctx, candidates)
        contrast = None
        if weak_model is not None and "weak" not in current:  # threaded as the model's own context
            current["weak"] = cutecpp.model.Context(weak_model, threads=ctx.threads)
        if weak_model is not None or args.without_items:
            contrast = contrast_for(current["pipe"], current["prompt"], weak=current.get("weak"),
                                    without_items=args.without_items)
        start = None
        if starts is not None:
            start = (starts.latent(current["prompt"], ctx.model.info["path"]), args.from_render)
        return sample(ctx, cond, uncond, seed=seed, steps=steps, sampler=sampler, cfg=cfg, latent_size=latent_size,
                      below=args.below, low_cfg=args.low_cfg, above=args.above, high_cfg=args.high_cfg,
                      contrast=contrast, contrast_scale=args.contrast_scale,
                      contrast_max_sigma=args.contrast_max_sigma, start=start)

    cutecpp.Pipeline.generate = generate
    cutecpp.model.Context.sample = patched
    sys.argv = ["eval_quality.py", *rest]
    runpy.run_path(str(ROOT / "tools" / "eval_quality.py"), run_name="__main__")


if __name__ == "__main__":
    main()
