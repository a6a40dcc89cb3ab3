"""Score a picture model: held-out prompts -> cutecpp.Pipeline -> judge + layout measures -> report.

The prompts are the captions (or encoder texts) of held-out pictures: animal x item x place
combinations the model never saw together in training. What each prompt asks is what
`cutecpp.prompt.parse_prompt` reads from it; what each picture shows is what the judge reads back.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import infer
from .labels import VOCAB, concepts, item_slot
from .layout import EXPECTED_STRAYS, measure

TARGETS = {"animal": 0.95, "accessory": 0.90, "place": 0.90}
SEED_SYSTEM = {"bow": 0.92, "boots": 0.86, "balloon": 0.61, "centred": 0.95}  # the system cute-mini replaces
FAIL_ORDER = ("animal", "count", "place", "centred", "clean")


# --- prompts ---------------------------------------------------------------------------------------

def english_gloss(asked: dict) -> str:
    """A plain English description of the concepts (for a sheet when a picture has no English caption)."""
    words = []
    for a in asked["animal_counts"]:
        n = a[1]
        words.append((f"{n} " if n > 1 else "") + VOCAB.get(a[0]).en_word)
    text = " and ".join(words)
    feats = [((VOCAB.get(c).en_word + " ") if c else "") + VOCAB.get(i).en_word for i, c in asked["features"]]
    if feats:
        text += " with " + " and ".join(feats)
    if asked["place"]:
        text += ", " + VOCAB.get(asked["place"]).en_word
    for k in ("light", "expression"):
        if asked[k]:
            text += ", " + VOCAB.get(asked[k]).en_word
    return text


def dataset_prompts(n: int, start: int = 0, source: str = "caption", lang: str = "zh", seed: int = 0,
                    split: str = "heldout") -> list[dict]:
    """Prompts from the dataset's pictures start .. start + n - 1 of `split` (their concepts; nothing is
    drawn): held-out ones by default; "train" gives combinations the model has seen (a diagnostic that
    tells what the model has not learned at all from what it does not generalise)."""
    import make_dataset

    from cutecpp.prompt import parse_prompt

    out = []
    for index in range(start, start + n):
        labels = make_dataset.labels(index, split, seed)
        caps = labels["captions"]
        prompt = labels["encoder_text"] if source == "encoder_text" else (caps.get(lang) or caps["zh"])[0]
        p = parse_prompt(prompt)
        asked = concepts({"animals": p.animals, "features": p.features, "place": p.place, "light": p.light,
                          "expression": p.expression})
        asked.update(animal_counts=[list(a) for a in p.animals], features=[list(f) for f in p.features])
        english = caps["en"][0] if caps.get("en") else english_gloss(asked)
        out.append({"index": index, "prompt": prompt, "english": english, "asked": asked})
    return out


# --- judging one picture ---------------------------------------------------------------------------

def check(asked: dict, judged: dict, lay: dict) -> dict:
    """Every attribute of one picture: True / False, or None where the prompt does not ask for it."""
    items = {i: i in judged["items"] for i in asked["items"]}
    colours = {i: judged["colours"].get(i) == c for i, c in asked["colours"].items() if items.get(i)}
    res = {
        "animal": all(a in judged["animals"] for a in asked["animals"]),
        "count": judged["count"] == asked["count"],
        "items": items,
        "accessory": (sum(items.values()) / len(items)) if items else None,
        "colours": colours,
        "place": (judged["place"] == asked["place"]) if asked["place"] else None,
        "expression": (judged["expression"] == asked["expression"]) if asked["expression"] else None,
        "light": (judged["light"] == asked["light"]) if asked["light"] else None,
        "centred": lay["centred"],
        "clean": None if asked["place"] in EXPECTED_STRAYS else lay["clean"],
    }
    failed = ["animal"] if not res["animal"] else []
    failed += [i for i, ok in items.items() if not ok]
    failed += [f"{c} {i}" for i, c in asked["colours"].items() if colours.get(i) is False]
    failed += [k for k in FAIL_ORDER[1:] if res[k] is False]
    res["failed"] = failed
    return res


def summarise(rows: list[dict]) -> dict:
    def rate(key):
        vals = [r["check"][key] for r in rows if r["check"][key] is not None]
        return {"value": float(np.mean(vals)) if vals else None, "n": len(vals)}

    per_item: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        for i, ok in r["check"]["items"].items():
            per_item[i].append(ok)
    asked_items = sum(len(v) for v in per_item.values())
    colour_vals = [ok for r in rows for ok in r["check"]["colours"].values()]
    out = {
        "animal": rate("animal"),
        "accessory": {"value": (sum(sum(v) for v in per_item.values()) / asked_items) if asked_items else None,
                      "n": asked_items},
        "place": rate("place"),
        "count": rate("count"),
        "centred": rate("centred"),
        "clean": rate("clean"),
        "expression": rate("expression"),
        "light": rate("light"),
        "colour": {"value": float(np.mean(colour_vals)) if colour_vals else None, "n": len(colour_vals)},
    }
    items = {i: {"value": float(np.mean(v)), "n": len(v)} for i, v in sorted(per_item.items())}
    return {"metrics": out, "items": items, "slots": by_slot(per_item), "targets": TARGETS,
            "seed_system": SEED_SYSTEM, "pictures": len(rows)}


def by_slot(per_item: dict[str, list[bool]]) -> dict:
    """Asked items pooled by where they go (hand, head, feet, ride, ...: the vocabulary's slot), which
    separates what is hard to draw (small things held in a hand) from what is not (a train to ride)."""
    pooled: dict[str, list[bool]] = defaultdict(list)
    for i, found in per_item.items():
        pooled[item_slot(i)] += found
    return {s: {"value": float(np.mean(v)), "n": len(v)} for s, v in sorted(pooled.items(), key=lambda x: -len(x[1]))}


def table(summary: dict) -> str:
    m = summary["metrics"]
    lines = [f"{'attribute':12s} {'measured':>9s} {'over':>5s}   target / seed system"]

    def fmt(v):
        return "      -  " if v is None else f"{v * 100:8.1f}%"

    notes = {"animal": ">= 95 %", "accessory": ">= 90 %", "place": ">= 90 %", "centred": "seed 95 %",
             "colour": "(asked colours of detected items)", "clean": "(places that scatter things excluded)"}
    for k in ("animal", "accessory", "place", "count", "centred", "clean", "expression", "light", "colour"):
        target = TARGETS.get(k)
        mark = ""
        if target is not None and m[k]["value"] is not None:
            mark = "  ok" if m[k]["value"] >= target else "  BELOW TARGET"
        lines.append(f"{k:12s} {fmt(m[k]['value'])} {m[k]['n']:5d}   {notes.get(k, '')}{mark}")
    items = summary["items"]
    show = [i for i in ("bow", "boots", "balloon") if i in items]
    worst = sorted((i for i in items if i not in show), key=lambda i: (items[i]["value"], -items[i]["n"]))[:8]
    if items:
        lines.append("")
        lines.append("accessory by item: " + ", ".join(
            f"{i} {items[i]['value'] * 100:.0f}% of {items[i]['n']}"
            + (f" (seed {SEED_SYSTEM[i] * 100:.0f}%)" if i in SEED_SYSTEM else "") for i in show + worst))
        lines.append("accessory by slot: " + ", ".join(
            f"{s} {v['value'] * 100:.0f}% of {v['n']}" for s, v in summary["slots"].items()))
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------------

def validation_status(judge: infer.LoadedJudge) -> dict:
    path = infer.validation_path(judge.path)
    try:
        v = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"validated": False, "why": f"no {path.name} next to the judge: run `eval_quality.py validate`"}
    if int(v.get("judge", {}).get("step", -1)) != judge.step:
        return {"validated": False, "why": f"{path.name} is for step {v.get('judge', {}).get('step')}, "
                                          f"the judge is at step {judge.step}: validate again"}
    return {"validated": bool(v.get("fit")), "why": "" if v.get("fit") else "below the bar on held-out renders",
            "heads": v.get("heads")}


def score(pipe, judge: infer.LoadedJudge, prompts: list[dict], *, seed: int = 0, steps=None, sampler=None,
          cfg=None, size=None, jsonl: Path | None = None, keep: int = 0, progress: bool = True):
    """Generate, judge and measure every prompt; returns (rows, the first `keep` pictures)."""
    rows, pictures = [], []
    f = jsonl.open("w", encoding="utf-8") if jsonl else None
    started = time.time()
    try:
        for k, p in enumerate(prompts):
            res = pipe.generate(p["prompt"], seed=seed + k, steps=steps, sampler=sampler, cfg=cfg, size=size,
                                use_cache=False)
            judged = judge.judge([res.image])[0]
            lay = measure(res.image).as_dict()
            row = {**p, "seed": seed + k, "settings": {k2: v for k2, v in res.meta.items() if k2 != "prompt"},
                   "ms": round(res.timings.get("total", 0.0)), "judged": judged, "layout": lay,
                   "check": check(p["asked"], judged, lay)}
            rows.append(row)
            if k < keep:
                pictures.append(res.image)
            if f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
            if progress:
                el = time.time() - started
                print(f"\r{k + 1}/{len(prompts)} pictures ({el / (k + 1):.1f} s each)", end="", file=sys.stderr)
    finally:
        if f:
            f.close()
        if progress and prompts:
            print(file=sys.stderr)
    return rows, pictures


class Renders:
    """Stands in for a Pipeline: each prompt's own held-out render, drawn at the requested size. Scoring
    it gives the ceiling that the judge and the layout measures allow a perfect model."""

    model_id = "dataset-renders"

    def __init__(self, prompts: list[dict], split: str = "heldout", autoencoder: str | None = None,
                 fit_steps: int = 0) -> None:
        self.index = {p["prompt"]: p["index"] for p in prompts}
        self.split = split
        self.autoencoder, self.fit_steps = None, fit_steps
        if autoencoder:  # each render encoded to a latent and decoded again: the autoencoder's ceiling
            from latent_encoder import load_autoencoder

            self.autoencoder = load_autoencoder(autoencoder).requires_grad_(False)
            self.model_id = "dataset-renders-autoencoded" + (f"-fit{fit_steps}" if fit_steps else "")

    def generate(self, prompt: str, seed: int = 0, size: int | None = None, **_):
        from types import SimpleNamespace

        from make_dataset import render

        t = time.perf_counter()
        size = size or 512
        image, _ = render(self.index[prompt], self.split, size)
        if self.autoencoder is not None:
            image = round_trip(self.autoencoder, image, self.fit_steps)
        meta = {"prompt": prompt, "seed": seed, "size": size, "model": self.model_id}
        return SimpleNamespace(image=image, meta=meta, timings={"total": (time.perf_counter() - t) * 1000})


def round_trip(ae, image, fit_steps: int = 0):
    """A picture through an AutoencoderTiny's encoder and decoder: the best a UNet on its latents can draw.
    fit_steps > 0: the latent is then optimised against the frozen decoder (Adam on the L1 error) for that
    many steps: a lower bound on what this decoder can draw at all, whatever the encoder."""
    import numpy as np
    import torch

    from cutecpp.image import to_image

    x = torch.from_numpy(np.asarray(image.convert("RGB"), np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0)
    with torch.no_grad():
        z = ae.encode(x).latents
    if fit_steps:
        z = z.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.05)
        for _ in range(fit_steps):
            opt.zero_grad()
            (ae.decode(z).sample - x).abs().mean().backward()
            opt.step()
    with torch.no_grad():
        y = ae.decode(z).sample[0]
    return to_image(y.numpy())  # as the product turns its decoder's output into a picture


def run_tag(args) -> str:
    """The per-prompt file's name part: the prompt count and every setting that differs from the default,
    so that runs with another --start, --cfg or --split do not overwrite one another."""
    parts = [] if args.split == "heldout" else [args.split]
    defaults = {"start": 0, "prompts": "caption", "lang": "zh", "seed": 0,
                "steps": None, "sampler": None, "cfg": None, "size": None}
    parts += [f"{k}{getattr(args, k)}" for k, d in defaults.items() if getattr(args, k) != d]
    return "".join(f"-{x}" for x in parts) + f"-{args.n}"


def run(args) -> dict:
    """`eval_quality.py score`."""
    from cutecpp.pipeline import Pipeline

    judge = infer.load(args.judge, device=args.device)
    status = validation_status(judge)
    if not status["validated"]:
        print(f"warning: the judge is not validated ({status['why']}); its figures are not to be trusted",
              file=sys.stderr)
    prompts = dataset_prompts(args.n, args.start, args.prompts, args.lang, split=args.split)
    if args.renders:
        pipe = Renders(prompts, args.split, args.through_autoencoder, args.fit_latents)
        model_path = "dataset renders (tools/make_dataset.py)" + (
            f" through the autoencoder {args.through_autoencoder}" if args.through_autoencoder else "")
    else:
        import cute_mini

        cute_mini.warn_if_installed_model_is_stale(args.model)
        pipe = Pipeline.load(args.model, threads=args.threads, text_encoder=args.text_encoder, cache=False)
        model_path = str(pipe.model.info["path"])
    # By default in the training cache, never next to the committed judge (inside the repository).
    jsonl = Path(args.jsonl) if args.jsonl else infer.DEFAULT_DIR / f"score-{pipe.model_id}{run_tag(args)}.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    rows, pictures = score(pipe, judge, prompts, seed=args.seed, steps=args.steps, sampler=args.sampler,
                           cfg=args.cfg, size=args.size, jsonl=jsonl, keep=64 if args.sheet else 0)
    summary = summarise(rows)
    summary.update(model=pipe.model_id, model_path=model_path, jsonl=str(jsonl),
                   judge={"path": str(judge.path), "step": judge.step, **status},
                   prompts={"source": args.prompts, "lang": args.lang, "start": args.start, "n": args.n,
                            "split": args.split},
                   # The run's settings; each row keeps its own prompt, understanding and seed.
                   settings={k: v for k, v in (rows[0]["settings"] if rows else {}).items()
                             if k not in ("understood", "seed")})
    if args.sheet:
        from .sheet import contact_sheet

        out = contact_sheet(rows[: len(pictures)], pictures, Path(args.sheet))
        summary["sheet"] = str(out)
        print(f"{out}: {len(pictures)} pictures", file=sys.stderr)
    if not args.json:
        which = "held-out" if args.split == "heldout" else "training"
        print(f"{pipe.model_id} on {len(rows)} {which} prompts ({args.prompts}, {args.lang}); judge step "
              f"{judge.step}{'' if status['validated'] else ' (NOT VALIDATED)'}; per prompt: {jsonl}")
        print(table(summary))
    return {"summary": summary, "rows": rows}
