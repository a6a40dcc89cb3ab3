"""The cute-mini dataset maker: pictures composed from Noto Color Emoji glyphs, with exact labels and
captions in the prompt grammar (docs/dataset.md).

    python tools/make_dataset.py sheet -o docs/dataset-sheet.png [--n 48] [--split train] [--seed 0]
    python tools/make_dataset.py export -o DIR --n N [--split train|heldout] [--size 512] [--seed 0]
    python tools/make_dataset.py stats [--n 2000] [--split train]

From Python (training re-renders pictures on the fly instead of storing them):

    sys.path.insert(0, "tools"); from make_dataset import render, is_heldout
    image, labels = render(1234, split="train", size=512, seed=0)

`render` depends only on (seed, split, index): every random choice comes from generators seeded from
those three, never from global state. Labels: the concepts (exactly what
`cutecpp.prompt.parse_prompt` returns for each caption), boxes of every animal, item, mood overlay and
place glyph, captions in Chinese and English, and the encoder text the captions share.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataset import art
from dataset.captions import FAILURES, Captioner
from dataset.compose import compose
from dataset.scene import SPLITS, Sampler, Scene, count_heldout, is_heldout, make_scene
from PIL import Image, ImageDraw, ImageFont

from cutecpp.prompt import _tokenize, normalize, parse_prompt
from cutecpp.vocab import Vocabulary, load_vocabulary

__all__ = ["render", "render_scene", "is_heldout", "scene_for", "labels_for", "make_scene", "SPLITS"]

VERSION = 1  # bump when a change alters the pictures or captions drawn for an index


class _Maker:
    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.sampler = Sampler(vocab)
        self.captioner = Captioner(vocab)


_MAKERS: dict[int, _Maker] = {}


def _maker(vocab: Vocabulary | None = None) -> _Maker:
    vocab = vocab or load_vocabulary()
    m = _MAKERS.get(id(vocab))
    if m is None:
        m = _MAKERS[id(vocab)] = _Maker(vocab)
    return m


def _rng(seed: int, split: str, index: int, stream: str) -> random.Random:
    """An independent generator per (seed, split, index) and purpose, so changing how captions are
    written never moves a picture, and the other way round."""
    key = f"cutecpp-dataset/v{VERSION}/{seed}/{split}/{index}/{stream}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def scene_for(index: int, split: str = "train", seed: int = 0, vocab: Vocabulary | None = None) -> Scene:
    """The concepts of picture `index` (cheap: no drawing)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    return _maker(vocab).sampler.sample(_rng(seed, split, index, "scene"), split)


def labels_for(scene: Scene, rng: random.Random, vocab: Vocabulary | None = None) -> dict:
    m = _maker(vocab)
    captions = m.captioner.captions(scene, rng)
    encoder_text = parse_prompt(captions["zh"][0], vocab=m.vocab).encoder_text
    return {**scene.concepts(), "members": list(scene.members), "captions": captions, "encoder_text": encoder_text}


def labels(index: int, split: str = "train", seed: int = 0, vocab: Vocabulary | None = None) -> dict:
    """The labels of picture `index` without drawing it: concepts, captions, encoder text (as render's)."""
    return labels_for(scene_for(index, split, seed, vocab), _rng(seed, split, index, "caption"), vocab)


def render_scene(scene: Scene, size: int = 512, rng: random.Random | None = None,
                 vocab: Vocabulary | None = None) -> tuple[Image.Image, list[dict], dict]:
    """Draw a given scene (for tests and tools): (RGB image, boxes, background colours)."""
    m = _maker(vocab)
    return compose(scene, m.vocab, size, rng or random.Random(0))


def render(index: int, split: str = "train", size: int = 512, seed: int = 0,
           vocab: Vocabulary | None = None) -> tuple[Image.Image, dict]:
    """Picture `index` of `split` as (PIL RGB image of size x size, labels dict)."""
    if size < 32:
        raise ValueError(f"size must be at least 32, not {size}")
    scene = scene_for(index, split, seed, vocab)
    image, boxes, bg = render_scene(scene, size, _rng(seed, split, index, "draw"), vocab)
    labels = labels_for(scene, _rng(seed, split, index, "caption"), vocab)
    labels.update(index=index, split=split, seed=seed, size=size, boxes=boxes, background=bg)
    return image, labels


# --- CLI -------------------------------------------------------------------------------------------

def _cjk_font(size: int) -> ImageFont.FreeTypeFont | None:
    """A font that draws Chinese, if one is installed (fc-list :lang=zh)."""
    import subprocess

    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        path = line.split(":")[0].strip()
        if path:
            try:
                return ImageFont.truetype(path, size)
            except OSError:
                continue
    return None


def _wrap(text: str, draw: ImageDraw.ImageDraw, font, width: int, lines: int) -> list[str]:
    """Break a caption into at most `lines` lines that fit `width` px (at spaces, or anywhere in Chinese)."""
    out: list[str] = []
    rest = text
    while rest and len(out) < lines:
        cut = len(rest)
        while cut > 1 and draw.textlength(rest[:cut], font=font) > width:
            cut -= 1
        if cut < len(rest) and " " in rest[:cut] and rest.isascii():
            cut = rest[:cut].rindex(" ")
        out.append(rest[:cut])
        rest = rest[cut:].lstrip()
    if rest:
        last = out[-1]
        while last and draw.textlength(last + "…", font=font) > width:
            last = last[:-1]
        out[-1] = last + "…"
    return out


def _sheet(args: argparse.Namespace) -> None:
    cell, cols = args.cell, args.cols
    rows = (args.n + cols - 1) // cols
    caption_h = 40
    sheet = Image.new("RGB", (cols * cell, rows * (cell + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    zh_font = _cjk_font(15)
    font = zh_font or ImageFont.load_default(13)
    lang = "zh" if zh_font else "en"
    if zh_font is None:
        print("no CJK font installed (fc-list :lang=zh is empty): writing the English captions", file=sys.stderr)
    for k in range(args.n):
        index = args.start + k
        img, labels = render(index, args.split, args.size, args.seed)
        img = img.resize((cell, cell), Image.Resampling.LANCZOS)
        x, y = (k % cols) * cell, (k // cols) * (cell + caption_h)
        sheet.paste(img, (x, y))
        for j, line in enumerate(_wrap(labels["captions"][lang][0], draw, font, cell - 6, 2)):
            draw.text((x + 3, y + cell + 3 + 17 * j), line, fill=(40, 40, 40), font=font)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        sheet = sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    sheet.save(out, optimize=True)
    print(f"{out}: {args.n} pictures, {out.stat().st_size / 1e6:.2f} MB", file=sys.stderr)


def _export(args: argparse.Namespace) -> None:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    labels_path = out / "labels.jsonl"
    done: set[int] = set()
    if labels_path.exists():
        for line in labels_path.read_text(encoding="utf-8").splitlines():
            try:
                done.add(int(json.loads(line)["index"]))
            except (ValueError, KeyError, json.JSONDecodeError):
                continue  # a line cut short by an interrupted run: redone below
    start = time.time()
    made = 0
    with labels_path.open("a", encoding="utf-8") as f:
        for index in range(args.start, args.start + args.n):
            png = out / f"{args.split}-{index:07d}.png"
            if index in done and png.exists():
                continue
            img, labels = render(index, args.split, args.size, args.seed)
            img.save(png, optimize=False, compress_level=3)
            labels["file"] = png.name
            f.write(json.dumps(labels, ensure_ascii=False) + "\n")
            f.flush()
            made += 1
            if made % 50 == 0 or index == args.start + args.n - 1:
                rate = made / max(1e-9, time.time() - start)
                print(f"\r{index + 1 - args.start}/{args.n} pictures ({rate:.1f}/s)", end="", file=sys.stderr)
    print(f"\n{out}: {made} new, {len(done)} already there", file=sys.stderr)


def _stats(args: argparse.Namespace) -> None:
    vocab = load_vocabulary()
    concept = Counter()
    words = Counter()
    n_animals = Counter()
    n_features = Counter()
    extras = Counter()
    colours = Counter()
    t0 = time.time()
    for index in range(args.n):
        scene = scene_for(index, args.split, args.seed)
        caps = labels_for(scene, _rng(args.seed, args.split, index, "caption"))["captions"]
        n_animals[scene.n_animals] += 1
        n_features[len(scene.features)] += 1
        for key in ("place", "light", "expression"):
            extras[key] += getattr(scene, key) is not None
        for a, _ in scene.animals:
            concept[("animal", a)] += 1
        for i, c in scene.features:
            concept[("item", i)] += 1
            if c:
                colours[c] += 1
        for key in ("place", "light", "expression"):
            if getattr(scene, key):
                concept[(key, getattr(scene, key))] += 1
        for text in caps["zh"] + caps["en"]:
            norm = normalize(text)
            for tok in _tokenize(norm, norm, vocab):
                if tok.entry is not None and tok.entry.category != "filler":
                    words[tok.word] += 1
    dt = time.time() - t0
    n = args.n
    held, total = count_heldout(vocab)
    print(f"{n} {args.split} scenes ({dt / n * 1000:.1f} ms each for concepts + captions)")
    print("animals per picture: " + ", ".join(f"{k}: {v / n:.0%}" for k, v in sorted(n_animals.items())))
    print("features per picture: " + ", ".join(f"{k}: {v / n:.0%}" for k, v in sorted(n_features.items())))
    print("with place {place:.0%}, light {light:.0%}, expression {expression:.0%}".format(
        **{k: extras[k] / n for k in ("place", "light", "expression")}))
    print(f"held-out triples: {held} of {total} animal x item x place ({held / total:.1%}); "
          f"train triples {total - held}")
    for cat in ("animal", "item", "place", "light", "expression"):
        entries = vocab.entries(cat)
        seen = {e.id: concept[(cat, e.id)] for e in entries}
        missing = [k for k, v in seen.items() if v == 0]
        low = sorted(seen.items(), key=lambda kv: kv[1])[:3]
        print(f"{cat}: {sum(v > 0 for v in seen.values())}/{len(entries)} appear; rarest "
              + ", ".join(f"{k} {v}" for k, v in low) + (f"; MISSING {', '.join(missing)}" if missing else ""))
    print("colours: " + ", ".join(f"{k} {v}" for k, v in colours.most_common()))
    all_words = {w for e in vocab.entries() if e.category in ("animal", "item", "place", "light", "expression",
                                                              "colour", "count", "verb") for w in (*e.zh, *e.en)}
    used = all_words & set(words)
    print(f"vocabulary words used in captions: {len(used)} of {len(all_words)} (concept words: animals, items, "
          f"places, lights, moods, colours, counts, verbs)")
    print("most frequent: " + ", ".join(f"{w} {c}" for w, c in words.most_common(args.top)))
    print("least frequent: " + ", ".join(f"{w} {c}" for w, c in sorted(words.items(), key=lambda kv: kv[1])[:20]))
    fails = Counter()
    for (lang, reason, _text), c in FAILURES.items():
        fails[(lang, reason)] += c
    print(f"caption variants that did not round-trip (redrawn; see docs/dataset.md): {sum(FAILURES.values())}")
    for (lang, reason), c in fails.most_common(12):
        example = next(t for (la, r, t) in FAILURES if la == lang and r == reason)
        print(f"  {c:5d} {lang} {reason}: e.g. {example!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--split", choices=SPLITS, default="train")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--start", type=int, default=0, help="first index")
    s = sub.add_parser("sheet", parents=[common], help="a contact sheet of renders with their captions")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--n", type=int, default=48)
    s.add_argument("--cols", type=int, default=8)
    s.add_argument("--cell", type=int, default=192, help="thumbnail size in the sheet")
    s.add_argument("--size", type=int, default=512, help="render size before shrinking to the cell")
    e = sub.add_parser("export", parents=[common], help="PNG files + labels.jsonl (resumable)")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--n", type=int, required=True)
    e.add_argument("--size", type=int, default=512)
    st = sub.add_parser("stats", parents=[common], help="word and concept frequencies, held-out triples")
    st.add_argument("--n", type=int, default=2000)
    st.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    if args.command != "stats" and not art.font_available():
        print(f"error: {art.FONT_PATH} not found ({art.INSTALL_HINT})", file=sys.stderr)
        return 1
    {"sheet": _sheet, "export": _export, "stats": _stats}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
