#!/usr/bin/env python3
"""Measure picture quality with an attribute judge: a small CNN trained on the dataset's renders reads
generated pictures back into animals, count, items, place, mood and light (docs/eval.md).

    python tools/eval_quality.py train [--steps 30000] [--batch 32] [--device cpu|cuda] [--size 128]
    python tools/eval_quality.py validate [--n 2000] [--json]      # the judge on held-out renders
    python tools/eval_quality.py score [--model M.gguf] [--n 64] [--sheet docs/eval-sheet.png] [--json]
    python tools/eval_quality.py score --renders [--n 64]         # the ceiling: the prompts' own renders
    python tools/eval_quality.py score --renders --through-autoencoder DIR  # ... through the autoencoder
    python tools/eval_quality.py freeze                             # the trained judge -> tools/judge/judge.pt
    python tools/eval_quality.py compare --old A.jsonl [..] --new B.jsonl [..]  # two score runs, paired

State (checkpoint, logs, validation.json) lives in ~/.cache/cutecpp/train/judge/ (--dir / --judge;
CUTECPP_TRAIN_DIR moves ~/.cache/cutecpp/train). Training resumes from latest.pt there. Without that
checkpoint, validate and score use the committed frozen judge, tools/judge/judge.pt (its EMA weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from judge import infer  # noqa: E402

JUDGE_HELP = "checkpoint or its directory (default: the one in training, else tools/judge/judge.pt)"


def _train(args) -> int:
    from judge.train import train

    train(args)
    return 0


def _validate(args) -> int:
    import torch
    from judge.validate import evaluate, save, table

    torch.set_num_threads(args.threads)
    judge = infer.load(args.judge, device=args.device)
    res = evaluate(judge, n=args.n, start=args.start, workers=args.workers, batch=args.batch, probes=args.probes,
                   render_size=args.render_size, split=args.split)
    path = save(res, judge)
    print(json.dumps(res, indent=1, default=str) if args.json else table(res))
    print(f"written {path}", file=sys.stderr)
    return 0


def _score(args) -> int:
    import torch
    from judge.score import run

    torch.set_num_threads(args.threads)
    report = run(args)
    if args.json:
        print(json.dumps(report["summary"], indent=1, ensure_ascii=False))
    return 0


def _freeze(args) -> int:
    out = infer.freeze(args.judge, args.output)
    judge = infer.load(out)
    print(f"written {out} ({out.stat().st_size / 1e6:.1f} MB): judge step {judge.step}")
    return 0


def _compare(args) -> int:
    from judge import compare

    try:
        old, new = compare.load_rows(args.old), compare.load_rows(args.new)
        result = compare.compare(old, new)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"old: {compare.models(old)} ({len(old)} pictures)   new: {compare.models(new)}")
        print(compare.table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train (or continue training) the judge on rendered pictures")
    t.add_argument("--steps", type=int, default=30_000, help="train until this step")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--size", type=int, default=None, help="input size, a multiple of 32 (new judges: 128)")
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: time a few steps of each on this machine and take the faster")
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--ema", type=float, default=0.999)
    t.add_argument("--threads", type=int, default=1, help="torch threads (leave the other core to other jobs)")
    t.add_argument("--workers", type=int, default=1, help="DataLoader workers rendering pictures")
    t.add_argument("--seed", type=int, default=0, help="dataset seed")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--save-every", type=int, default=500)
    t.add_argument("--eval-every", type=int, default=2000, help="quick held-out check (eval.csv); 0 = never")
    t.add_argument("--eval-n", type=int, default=256)
    t.add_argument("--dir", default=str(infer.DEFAULT_DIR))
    t.add_argument("--init", default=None, metavar="JUDGE",
                   help="with no checkpoint in --dir: start from this judge's weights (e.g. tools/judge/judge.pt)")

    v = sub.add_parser("validate", help="the judge's accuracy on held-out renders, and the known confusions")
    v.add_argument("--judge", default=None, help=JUDGE_HELP)
    v.add_argument("--n", type=int, default=2000, help="held-out pictures")
    v.add_argument("--start", type=int, default=0)
    v.add_argument("--split", choices=("heldout", "train"), default="heldout",
                   help="train: training-split pictures (use a --start past the pictures trained on); held-out "
                   "pictures show one kind of animal, train ones also mixed kinds")
    v.add_argument("--render-size", type=int, default=None,
                   help="draw the pictures at this size and shrink them to the judge's input, as score does "
                   "with generated pictures (default: drawn at the input size)")
    v.add_argument("--probes", type=int, default=24, help="pictures per confusion probe (0: none)")
    v.add_argument("--batch", type=int, default=64)
    v.add_argument("--workers", type=int, default=1)
    v.add_argument("--threads", type=int, default=1)
    v.add_argument("--device", default="cpu")
    v.add_argument("--json", action="store_true")

    s = sub.add_parser("score", help="generate pictures for held-out prompts and judge them")
    s.add_argument("--model", default=None, help="bundle (default: the shipped model)")
    s.add_argument("--renders", action="store_true",
                   help="score each prompt's own held-out render instead of a model's picture (the ceiling)")
    s.add_argument("--through-autoencoder", metavar="DIR", default=None,
                   help="with --renders: each render encoded and decoded by this diffusers AutoencoderTiny "
                   "(e.g. ~/.cache/cutecpp/train/autoencoder-export): the ceiling the autoencoder leaves a model")
    s.add_argument("--fit-latents", type=int, default=0, metavar="STEPS",
                   help="with --through-autoencoder: optimise each latent against the frozen decoder for STEPS "
                   "steps first (the decoder's own ceiling; ~0.2 s a step at 512 px)")
    s.add_argument("--text-encoder", default=None, help="a built text-encoder GGUF (default: the model's own)")
    s.add_argument("--judge", default=None, help=JUDGE_HELP)
    s.add_argument("--n", type=int, default=64, help="held-out prompts")
    s.add_argument("--start", type=int, default=0, help="first held-out picture whose caption is a prompt")
    s.add_argument("--split", choices=("heldout", "train"), default="heldout",
                   help="train: prompts of training pictures (combinations the model saw; prepare renders train "
                   "pictures 0 .. --n - 1), to tell what it has not learned from what it does not generalise")
    s.add_argument("--prompts", choices=("caption", "encoder_text"), default="caption",
                   help="each held-out picture's first caption, or its encoder text (canonical words)")
    s.add_argument("--lang", choices=("zh", "en"), default="zh", help="caption language")
    s.add_argument("--seed", type=int, default=0, help="prompt k is drawn with seed + k")
    s.add_argument("--steps", type=int, default=None)
    s.add_argument("--sampler", default=None)
    s.add_argument("--cfg", type=float, default=None)
    s.add_argument("--size", type=int, default=None, help="picture size (default: the model's)")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--device", default="cpu", help="for the judge")
    s.add_argument("--jsonl", default=None, help="per-prompt results (default: score-*.jsonl in the training cache)")
    s.add_argument("--sheet", default=None, help="a contact sheet of the first 64 pictures, e.g. docs/eval-sheet.png")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")

    f = sub.add_parser("freeze", help="a trained judge's EMA weights (float16) -> tools/judge/judge.pt, to commit")
    f.add_argument("--judge", default=None, help="checkpoint or its directory (default: the trained one)")
    f.add_argument("-o", "--output", default=str(infer.FROZEN))

    c = sub.add_parser("compare", help="two score runs over the same prompts and seeds, paired (sign test)")
    c.add_argument("--old", nargs="+", required=True, help="score-*.jsonl files of the reference model")
    c.add_argument("--new", nargs="+", required=True, help="score-*.jsonl files of the candidate")
    c.add_argument("--json", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "through_autoencoder", None) and not args.renders:
        parser.error("--through-autoencoder needs --renders")
    if getattr(args, "fit_latents", 0) and not args.through_autoencoder:
        parser.error("--fit-latents needs --through-autoencoder")
    renders = {"train": lambda: args.steps > 0, "validate": lambda: True, "score": lambda: args.renders,
               "freeze": lambda: False, "compare": lambda: False}
    if renders[args.command]():
        from dataset import art

        if not art.font_available():
            print(f"error: {art.FONT_PATH} not found ({art.INSTALL_HINT})", file=sys.stderr)
            return 1
    return {"train": _train, "validate": _validate, "score": _score, "freeze": _freeze,
            "compare": _compare}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
