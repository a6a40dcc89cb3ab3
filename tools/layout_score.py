"""Score a training run's UNet in PyTorch, with or without layout masks: an experiment, not a cutecpp feature.

    python tools/layout_score.py --checkpoint ~/.cache/cutecpp/train/unet/latest.pt \\
        score --model cutecpp/data/cute-mini.gguf --n 400 --judge tools/judge/judge.pt --jsonl F
    python tools/eval_quality.py compare --old F0 --new F

runs `tools/eval_quality.py` with the arguments after the options, where each picture's latents come from
the checkpoint's EMA UNet and alignment in PyTorch (float32) instead of the bundle's networks in the core.
Everything else is the bundle's (`--model`, whose decoder and latent statistics must be those the run
trained on): its schedule, sampler, steps, guidance and guidance_max_sigma, its noise for the seed, its
text encoder and decoder; the loop is tools/guidance_schedule.py's `sample`, which draws what the core
draws. A UNet trained with `train_unet.py train --layout` (tools/layout_unet.py) gets each prompt's
layout masks from the prompt's own dataset render (`--layout render`: the boxes of the animals,
accessories and place where the dataset put them, as prepare stored them for training) or from the
render of another training picture of the same kind (`--layout other`: as many animals, accessories that
go where the prompt's go, the same place; what a planner picking from a library of the dataset's layouts
would give). Either is a diagnostic: a product has no render, so a layout
UNet needs a layout planner before it can draw (docs/cute-mini-history.md, section 27).
Prompts without their dataset index (`--prompts FILE`) are refused for a layout UNet. The summary and
the JSONL name the bundle's model id, not the checkpoint: keep the files apart by their names.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

import numpy as np

import cutecpp
import cutecpp.model

ROOT = Path(__file__).resolve().parent.parent


class TorchNetworks:
    """A checkpoint's EMA UNet and alignment, called as Context.unet and Context.align are."""

    def __init__(self, checkpoint: Path, threads: int) -> None:
        import torch
        from layout_unet import reads_layout
        from train_unet import make_models

        torch.set_num_threads(threads)
        st = torch.load(checkpoint, map_location="cpu", weights_only=True)
        self.unet_module, self.align_module = make_models(st.get("unet_config"))
        self.unet_module.load_state_dict(st["ema_unet"])
        self.align_module.load_state_dict(st["ema_align"])
        self.unet_module.eval()
        self.align_module.eval()
        self.layout = reads_layout(self.unet_module.config)
        self.step = int(st["step"])

    def align(self, states: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.align_module(torch.from_numpy(np.asarray(states, np.float32))).numpy()

    def unet(self, latents: np.ndarray, timesteps: np.ndarray, contexts: np.ndarray,
             masks: np.ndarray | None = None) -> np.ndarray:
        import torch
        from layout_unet import unet_input

        x = torch.from_numpy(np.asarray(latents, np.float32))
        if self.layout:
            if masks is None:
                raise ValueError("this UNet reads layout masks: give them")
            x = unet_input(x, torch.from_numpy(masks).expand(len(x), *masks.shape))
        with torch.no_grad():
            t = torch.from_numpy(np.asarray(timesteps, np.float32))
            contexts = torch.from_numpy(np.asarray(contexts, np.float32))
            return self.unet_module(x, t, encoder_hidden_states=contexts).sample.numpy()


class OtherLayouts:
    """--layout other: for a picture, the boxes of another one of the training split with the same layout
    kind (`kind`: its number of animals, where its accessories go and its place), the first such from index
    0 on that no scored prompt has taken yet: what a planner that keeps a library of the dataset's layouts
    and picks one of the prompt's kind would give. A kind not among the first `limit` training pictures
    takes one with the same animals and accessories at another place (counted in `other_place`)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.next, self.limit, self.other_place = 0, limit, 0
        self.spare: dict[tuple, list[int]] = {}
        self.used: list[int] = []  # the training pictures whose layouts were given, in order

    @staticmethod
    def kind(labels: dict) -> tuple:
        from judge.labels import item_slot

        return len(labels["members"]), tuple(sorted(item_slot(f[0]) for f in labels["features"])), labels["place"]

    def boxes(self, labels: dict, size: int) -> list[dict]:
        from make_dataset import labels as labels_of
        from make_dataset import render

        want = self.kind(labels)
        while not self.spare.get(want) and self.next < self.limit:
            self.spare.setdefault(self.kind(labels_of(self.next, "train")), []).append(self.next)
            self.next += 1
        if not self.spare.get(want):
            near = [k for k, v in self.spare.items() if k[:2] == want[:2] and v]
            if not near:
                raise SystemExit(f"no training picture with {want[0]} animals and accessories {want[1]} among the "
                                 f"first {self.limit}")
            want = near[0]
            self.other_place += 1
        self.used.append(self.spare[want].pop(0))
        _, other = render(self.used[-1], "train", size)
        return other["boxes"]


def main(argv: list[str] | None = None) -> None:
    import cute_mini
    from guidance_schedule import DatasetIndex, one_seed, sample
    from layout_unet import layout_masks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="%(prog)s [--checkpoint F] [--layout render|other] eval_quality.py's "
                                     "arguments ...")
    parser.add_argument("--checkpoint", type=Path, default=cute_mini.TRAIN_DIR / "unet" / "latest.pt",
                        help="the training checkpoint (default: the run's newest)")
    parser.add_argument("--layout", choices=("render", "other"), default="render",
                        help="for a layout UNet: each prompt's own render's boxes, or another picture's of its kind")
    parser.add_argument("--torch-threads", type=int, default=2)
    args, rest = parser.parse_known_args(argv)
    try:
        nets = TorchNetworks(args.checkpoint, args.torch_threads)
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        parser.error(f"--checkpoint {args.checkpoint}: {exc}")
    masks_from = {"render": "each prompt's own render", "other": "another picture of its kind"}[args.layout]
    print(f"{args.checkpoint}: step {nets.step}, layout masks {'from ' + masks_from if nets.layout else 'none'}",
          file=sys.stderr)
    index = DatasetIndex()
    index.install()
    others = OtherLayouts()
    current: dict = {}
    original_generate = cutecpp.Pipeline.generate

    def generate(pipe, prompt, *more, **kw):
        current.update(prompt=prompt)
        return original_generate(pipe, prompt, *more, **kw)

    def patched(ctx, cond, uncond=None, *, seed, steps=None, sampler=None, cfg=None, latent_size=None,
                progress=None, candidates=None, verify_labels=(), verify_sigma=None):
        one_seed(ctx, candidates)
        prompt = current["prompt"]
        masks = None
        if nets.layout:
            if prompt not in index.index:
                raise SystemExit(f"{prompt!r} is no dataset picture's prompt: a layout UNet needs its render")
            _, labels = index.render(prompt, cute_mini.IMAGE_SIZE)
            boxes = labels["boxes"] if args.layout == "render" else others.boxes(labels, cute_mini.IMAGE_SIZE)
            masks = layout_masks(boxes, cute_mini.IMAGE_SIZE)
        return sample(ctx, cond, uncond, seed=seed, steps=steps, sampler=sampler, cfg=cfg, latent_size=latent_size,
                      unet=lambda x, t, c: nets.unet(x, t, c, masks))

    cutecpp.Pipeline.generate = generate
    cutecpp.model.Context.align = lambda ctx, states: nets.align(states)  # the pipeline's cond and uncond
    cutecpp.model.Context.sample = patched
    sys.argv = ["eval_quality.py", *rest]
    try:
        runpy.run_path(str(ROOT / "tools" / "eval_quality.py"), run_name="__main__")
    finally:
        if others.other_place:
            print(f"--layout other: {others.other_place} pictures took a layout of another place (none of "
                  f"theirs among the first {others.limit} training pictures)", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tools"))
    main()
