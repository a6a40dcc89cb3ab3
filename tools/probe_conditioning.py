#!/usr/bin/env python3
"""How much does a trained UNet use each word of its prompt? A training-loss probe, no judge involved.

    python tools/probe_conditioning.py [--checkpoint ~/.cache/cutecpp/train/w9500.pt] [--n 256] [--heldout]

For training pictures that ask for an item, the flow-matching error (the training loss: plain squared
error of the predicted noise - x0, normalised latents) is measured inside the latent pixels of the
picture's item boxes and inside those of its animal boxes (item pixels left out) at fixed noise levels
and fixed noise, with the picture's own prompt and with three changed ones:

- `item swapped`: the first asked item's word replaced by another item's (the item box still covers
  every item of the picture: where a second, different item is asked, it dilutes the change);
- `animal swapped`: the first animal's word replaced by another animal's;
- `no prompt`: the empty condition (what classifier-free guidance subtracts).

If a model uses its item words, the error in the item box rises when the item word is swapped, about
as much as the error in the animal box rises when the animal word is swapped. The figure printed is
each error relative to the true prompt's, per noise level. The text states of changed prompts come
from the same text encoder (and word-by-word tokenisation) as `prepare`'s.

`--heldout` probes renders of the held-out combinations instead (never trained on; encoded by the
autoencoder that made the latents, as `prepare` does): where the true prompt's error there is well
above its error on training pictures, the UNet has learnt its pictures more than how to compose them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cute_mini  # noqa: E402
import train_unet  # noqa: E402

LEVELS = (0.2, 0.4, 0.6, 0.8)
VARIANTS = ("true", "item swapped", "animal swapped", "no prompt")
HELDOUT_TRIES = 50  # held-out renders drawn per picture asked for, at most


def swap_word(words: list[str], old: str, choices: list[str], rng: np.random.Generator) -> list[str] | None:
    """`words` with `old` replaced by one of `choices` (not `old`); None if `old` is not a word there."""
    if old not in words:
        return None
    new = str(rng.choice([c for c in choices if c != old]))
    return [new if w == old else w for w in words]


def probe_cases(data: train_unet.Data, n: int, encode, seed: int = 0, to_latent=None) -> list[dict]:
    """Up to n pictures with an item and an animal whose words appear in their encoder text, with the
    text states of the four prompts: the prepared training pictures, or with `to_latent` (a rendered
    picture -> its normalised latent) held-out renders, never trained on."""
    from make_dataset import render

    from cutecpp.vocab import load_vocabulary

    vocab = load_vocabulary()
    items = [e.zh_word for e in vocab.entries("item")]
    animals = [e.zh_word for e in vocab.entries("animal")]
    rng = np.random.default_rng(seed)
    split = "train" if to_latent is None else "heldout"
    cases = []
    # held-out renders are drawn on demand; most ask for an item, so 50 tries a picture is ample, and a
    # vocabulary whose held-out renders never qualify ends the loop instead of spinning
    for i in range(len(data.texts)) if to_latent is None else range(HELDOUT_TRIES * n):
        if len(cases) == n:
            break
        image, lab = render(i, split=split, size=cute_mini.IMAGE_SIZE)  # the boxes come with the drawing
        if (to_latent is None and lab["encoder_text"] != str(data.texts[i])) or not lab["features"]:
            continue  # a shard from other renders (or no item asked)
        words = lab["encoder_text"].split()
        item = vocab.get(lab["features"][0][0])
        if item.category != "item":
            continue
        item_swapped = swap_word(words, item.zh_word, items, rng)
        animal_swapped = swap_word(words, vocab.get(lab["animals"][0][0]).zh_word, animals, rng)
        item_box, animal_box = (train_unet.item_mask(lab["boxes"], lab["size"], k).astype(bool)
                                for k in ("item", "animal"))
        if item_swapped is None or animal_swapped is None or not item_box.any():
            continue
        if to_latent is None:
            x0, true = data.latents[i], data.state(str(data.texts[i]))
        else:
            x0, true = to_latent(image), encode(words)
        cases.append({"index": i, "x0": x0.astype(np.float32), "states": {
            "true": true.astype(np.float32),
            "item swapped": encode(item_swapped), "animal swapped": encode(animal_swapped),
            "no prompt": np.zeros((1, cute_mini.TEXT_HIDDEN), np.float32)},
            "item": item_box, "animal": animal_box & ~item_box})
    return cases


def box_errors(unet, align, x0, noise, s: float, states: np.ndarray, boxes: dict[str, np.ndarray]) -> dict:
    """Mean squared flow error inside each box for one picture at noise level s."""
    import torch

    xs = (1 - s) * x0 + s * noise
    ctx_in = torch.from_numpy(states)[None]
    mask = torch.ones(1, len(states), dtype=torch.bool)
    with torch.no_grad():
        pred = unet(xs, torch.tensor([s * 1000.0]), encoder_hidden_states=align(ctx_in, mask),
                    encoder_attention_mask=mask).sample
    err = (pred - (noise - x0)).pow(2).mean(dim=1)[0].numpy()  # [32, 32], mean over channels
    return {k: float(err[m].mean()) for k, m in boxes.items() if m.any()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=train_unet.run_checkpoint(), help="a train_unet checkpoint")
    p.add_argument("--n", type=int, default=256, help="pictures probed")
    p.add_argument("--heldout", action="store_true",
                   help="probe held-out renders (never trained on) instead of training pictures: the true prompt's "
                   "error against the training pictures' shows how far the UNet generalises")
    p.add_argument("--autoencoder", default=str(train_unet.TRAIN_DIR / "autoencoder-export"),
                   help="with --heldout: the autoencoder that made the prepared latents")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    import torch

    from cutecpp.encoder_build import ensure_text_encoder
    from cutecpp.text_encoder import TextEncoder
    from cutecpp.vocab import load_vocabulary

    torch.set_num_threads(args.threads)
    st = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    unet, align = train_unet.make_models(st.get("unet_config"))
    unet.load_state_dict(st["ema_unet"])
    align.load_state_dict(st["ema_align"])
    unet.eval()
    align.eval()
    data = train_unet.Data()
    if st.get("latent_stats") != data.stats:
        raise SystemExit(f"{args.checkpoint} was trained on other latents than {train_unet.TRAIN_DIR / 'latents'}")
    encoder = TextEncoder(ensure_text_encoder(cute_mini.TEXT_ENCODER_LAYERS, load_vocabulary().encoder_words()),
                          threads=args.threads)
    to_latent = None
    if args.heldout:  # encoded as prepare does, normalised as Data does
        from latent_encoder import load_autoencoder

        train_unet._check_autoencoder(args.autoencoder)
        ae = load_autoencoder(args.autoencoder)

        def to_latent(image):
            picture = np.asarray(image, np.float32).transpose(2, 0, 1) / 127.5 - 1.0
            return data.normalise(train_unet.encode_latents(ae, [picture]))[0]

    # float16 round trip: prepare stores the states as float16
    cases = probe_cases(data, args.n, lambda w: encoder.encode(w).astype(np.float16).astype(np.float32),
                        to_latent=to_latent)
    if not cases:
        raise SystemExit(f"no {'held-out renders' if args.heldout else 'prepared training pictures'} ask for an "
                         "item with its animal and item words in the prompt: nothing to probe")
    gen = torch.Generator().manual_seed(0)
    sums = {(s, v, k): [] for s in LEVELS for v in VARIANTS for k in ("item", "animal")}
    for n, case in enumerate(cases):
        x0 = torch.from_numpy(case["x0"])[None]
        for s in LEVELS:
            noise = torch.randn(x0.shape, generator=gen)
            for v in VARIANTS:
                for k, e in box_errors(unet, align, x0, noise, s, case["states"][v],
                                       {"item": case["item"], "animal": case["animal"]}).items():
                    sums[(s, v, k)].append(e)
        if (n + 1) % 32 == 0:
            print(f"probed {n + 1}/{len(cases)}", file=sys.stderr)
    kind = "held-out renders" if args.heldout else "training pictures"
    result = {"checkpoint": str(args.checkpoint), "step": int(st["step"]), "pictures": len(cases), "kind": kind,
              "levels": {}}
    for s in LEVELS:
        result["levels"][str(s)] = {k: {v: round(float(np.mean(sums[(s, v, k)])), 5) for v in VARIANTS}
                                    for k in ("item", "animal")}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.checkpoint} (step {result['step']}), {len(cases)} {kind}; flow error in a box, "
          "and relative to the true prompt's")
    print(f"{'noise':>6} {'box':>7} " + " ".join(f"{v:>22}" for v in VARIANTS))
    for s in LEVELS:
        for k in ("item", "animal"):
            row = result["levels"][str(s)][k]
            cells = [f"{row[v]:.4f} (x{row[v] / row['true']:.2f})" for v in VARIANTS]
            print(f"{s:>6} {k:>7} " + " ".join(f"{c:>22}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
