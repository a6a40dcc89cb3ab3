"""Best of several seeds, picked by a latent verifier: an experiment, not yet a cutecpp feature.

    python tools/best_of.py record -o T.npz score --n 400 --seed S --jsonl F --judge tools/judge/judge.pt

runs `tools/eval_quality.py` with the arguments after `-o T.npz`, drawing each picture through
tools/guidance_schedule.py's loop (the core's pieces; the same pictures as Context.sample, bit for bit) and
keeping, for every prompt, the sample at each step and the denoised estimate there (x - sigma * output,
flow_euler), as float16, in T.npz. Two such runs with other seeds hold two candidates per prompt;

    python tools/best_of.py pick --verifier V.pt --runs T0.npz T1.npz --jsonl F0 F1 --step K

lets the verifier (tools/train_verifier.py) choose one candidate per prompt from what it sees at step K
and prints what the judge found in the chosen pictures (the runs' JSONL records: the picture a candidate
becomes is the one its run drew, since the sampler adds no noise), beside each seed alone and an oracle
that always picks the better one.
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
sys.path.insert(0, str(ROOT / "tools"))

import guidance_schedule  # noqa: E402
from judge.compare import load_rows, outcomes  # noqa: E402


def record(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="best_of.py record")
    parser.add_argument("-o", "--output", required=True, help="the trajectories (.npz)")
    args, rest = parser.parse_known_args(argv)
    prompts: list[str] = []
    xs: list[np.ndarray] = []
    x0s: list[np.ndarray] = []
    finals: list[np.ndarray] = []
    sigmas: list[float] = []
    original_generate = cutecpp.Pipeline.generate

    def generate(pipe, prompt, *more, **kw):
        prompts.append(prompt)
        return original_generate(pipe, prompt, *more, **kw)

    def patched(ctx, cond, uncond=None, *, seed, steps=None, sampler=None, cfg=None, latent_size=None,
                progress=None, candidates=None, verify_labels=(), verify_sigma=None):
        guidance_schedule.one_seed(ctx, candidates)
        plan = cutecpp.sampling.schedule(ctx.model, sampler or ctx.model.sampling["default_sampler"],
                                         steps or ctx.model.sampling["default_steps"])
        seen_x, seen_x0 = [], []

        def trace(i, x, out):
            s = np.float32(plan["sigmas"][i])
            seen_x.append(x.astype(np.float16))
            seen_x0.append((x - s * out).astype(np.float16))

        x = guidance_schedule.sample(ctx, cond, uncond, seed=seed, steps=steps, sampler=sampler, cfg=cfg,
                                     latent_size=latent_size, trace=trace)
        if not sigmas:
            sigmas.extend(float(v) for v in plan["sigmas"][: len(seen_x)])
        xs.append(np.stack(seen_x))
        x0s.append(np.stack(seen_x0))
        finals.append(x.astype(np.float16))
        return x

    cutecpp.Pipeline.generate = generate
    cutecpp.model.Context.sample = patched
    sys.argv = ["eval_quality.py", *rest]
    try:
        runpy.run_path(str(ROOT / "tools" / "eval_quality.py"), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    np.savez(args.output, prompts=np.array(prompts), sigmas=np.array(sigmas, np.float32), x=np.stack(xs),
             x0=np.stack(x0s), final=np.stack(finals))
    print(f"{len(prompts)} trajectories -> {args.output}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("record", "pick"):
        raise SystemExit("usage: best_of.py record|pick ... (see the module's docstring)")
    if argv[0] == "record":
        record(argv[1:])
    else:
        pick(argv[1:])


def asked(record: dict) -> dict[str, bool]:
    """The judge's outcome for the prompt's animal, place and each item ("item:hat") in one record."""
    return {k: v for k, v in outcomes(record).items() if k in ("animal", "place") or k.startswith("item:")}


def kind(thing: str) -> str:
    return "items" if thing.startswith("item:") else thing


def tally(records: list[dict]) -> dict:
    """The judge's figures over one record per prompt: animal, items (found, asked), place, all right."""
    rows = [asked(r) for r in records]
    items = [v for a in rows for k, v in a.items() if kind(k) == "items"]
    return dict(n=len(rows), animal=sum(a["animal"] for a in rows), items=sum(items), asked=len(items),
                place=sum(a["place"] for a in rows), all_right=sum(all(a.values()) for a in rows))


def flips(old: list[dict], new: list[dict]) -> str:
    """What `new` gained and lost against `old`, prompt by prompt: animal, items, place (+gained/-lost)."""
    out = {"animal": [0, 0], "items": [0, 0], "place": [0, 0]}
    for a, b in zip(old, new, strict=True):
        now = asked(b)
        for thing, was in asked(a).items():
            out[kind(thing)][0] += (not was) and now[thing]
            out[kind(thing)][1] += was and not now[thing]
    return "  ".join(f"{k} +{g}/-{lost}" for k, (g, lost) in out.items())


def hits(record: dict) -> int:
    return sum(asked(record).values())


def pick(argv: list[str]) -> None:
    import torch
    import verifier

    parser = argparse.ArgumentParser(prog="best_of.py pick")
    parser.add_argument("--verifier", required=True, help="a tools/train_verifier.py checkpoint")
    parser.add_argument("--runs", nargs="+", required=True, help="record's .npz files, one per seed")
    parser.add_argument("--jsonl", nargs="+", required=True, help="their score JSONL files, in the same order")
    parser.add_argument("--step", type=int, nargs="+", default=[11], help="look before this step (0-based; "
                        "the number of steps: at the final latent)")
    parser.add_argument("--input", choices=("x", "x0"), default="x", help="the noisy sample at its sigma, or the "
                        "denoised estimate there as a clean latent")
    args = parser.parse_args(argv)
    if len(args.runs) != len(args.jsonl):
        parser.error("one JSONL file per run")
    model, names = verifier.load(args.verifier)
    runs = [np.load(p) for p in args.runs]
    records = [load_rows([p]) for p in args.jsonl]
    prompts = runs[0]["prompts"]
    for run, recs in zip(runs, records, strict=True):
        if list(run["prompts"]) != list(prompts) or [r["prompt"] for r in recs] != list(prompts):
            parser.error("the runs and JSONL files must hold the same prompts in the same order")
    steps = len(runs[0]["sigmas"])
    if any(not 0 <= step <= steps for step in args.step):
        parser.error(f"--step: 0 to {steps} (the runs have {steps} steps; {steps}: the final latents)")
    # each prompt's asked labels, once for every step and candidate
    masks = [verifier.labels_of(r["settings"]["understood"].split(), names) > 0 for r in records[0]]
    picks = {f"seed run {k}": recs for k, recs in enumerate(records)}
    picks["oracle"] = [max(c, key=hits) for c in zip(*records, strict=True)]
    for step in args.step:
        if step == steps:
            lat = [run["final"] for run in runs]
            sig = 0.0
        else:
            lat = [run[args.input][:, step] for run in runs]
            sig = 0.0 if args.input == "x0" else float(runs[0]["sigmas"][step])
        with torch.no_grad():
            logits = [model(torch.from_numpy(v.astype(np.float32)), torch.full((len(v),), sig)).numpy() for v in lat]
        chosen = []
        for k in range(len(prompts)):
            scores = [verifier.mask_score(lg[k], masks[k]) for lg in logits]
            chosen.append(records[int(np.argmax(scores))][k])
        picks[f"picked at step {step} (sigma {sig:.2f}, {args.input})"] = chosen
    for name, chosen in picks.items():
        r = tally(chosen)
        print(f"{name:40s} animal {r['animal']}/{r['n']}  items {r['items']}/{r['asked']} "
              f"({r['items'] / max(r['asked'], 1):.1%})  place {r['place']}  all right {r['all_right']}  "
              f"against run 0: {flips(records[0], chosen)}")


if __name__ == "__main__":
    main()
