#!/usr/bin/env python3
"""Train cute-mini's UNet and alignment module (rectified flow) on rendered pictures; export the bundle.

    python tools/train_unet.py prepare --n 20000        # render, encode latents and text states (resumable)
    python tools/train_unet.py train --steps 50000      # train (or continue) to step 50000
    python tools/train_unet.py export -o cutecpp/data/cute-mini.gguf [--dtype f16]

Needs an exported autoencoder (tools/train_autoencoder.py --export DIR; default
~/.cache/cutecpp/train/autoencoder-export). State lives in ~/.cache/cutecpp/train/ (CUTECPP_TRAIN_DIR):

- `latents/shard-NNNNN.npz`: latents already scaled for the UNet (float16 [n, 16, 32, 32]), each
  picture's `encoder_text` (the canonical prompt words: `cutecpp.prompt.parse_prompt(caption)`),
  `items` (uint8 [n, 32, 32]: the latent pixels under an item's box, for `train --item-weight`) and, in
  shards prepared since 2026-12-07, `animals` and `places` alike (with `items`, the masks of `--layout`).
- `latents/autoencoder.json`: the sha256 of the encoder that made them; prepare and export refuse
  another one (the UNet learns that encoder's latent space). Export ships the folder's decoder, and
  says so when it is not the working tree's shipped one (tools/fit_decoder.py fine-tunes that alone).
- `text_states/<sha1 of encoder_text>.npy`: the text encoder's states for it (float16 [T, 896]), made
  once per distinct prompt with the same encoder, layers and word-by-word tokenization as the
  pipeline, so training and drawing condition on identical inputs.
- `latents/channel_stats.json`: each latent channel's mean and standard deviation, measured once
  on the shards there when training first starts and fixed from then on (more shards later do not
  move them). The UNet learns (latent - mean) / std per channel; the bundle's decoder gets the
  inverse (diffusers' `latents_mean`/`latents_std`). With one global scale the channels' standard
  deviations ranged 0.23-1.47 and their means -1.5..+2.1, so the noise drowned the quiet channels
  long before the loud ones.
- `unet/latest.pt` (UNet, alignment, their EMA, optimizer, step, the channel stats) and `unet/log.csv`
  (step, plain MSE, seconds, and the item-weighted loss that was minimised).
  `train --init CKPT` starts a new run from another run's weights (step 0, fresh optimizer);
  `--init cutecpp/data/cute-mini.gguf` from the shipped bundle's (see tools/fit_encoder.py for the
  autoencoder and latent statistics that go with it when the cache is gone). `--init X --widen 2`
  trains a UNet twice as wide that starts out computing what X's did (tools/widen_unet.py);
  `--init X --attention-level 0` one that also reads the prompt at its 32x32 level, likewise starting
  as X (tools/add_attention.py); `--init X --transformer-layers 1,2,2` one with two transformer blocks
  in each attention of its two lower levels, the added ones starting as identity (tools/deepen_unet.py);
  `--init X --layout` one that also reads where the animals, accessories and place are (three masks
  beside the latent, through zero weights at first: tools/layout_unet.py; an experiment that export
  refuses, since the core gives a UNet no masks: tools/layout_score.py scores it).
  The checkpoint records the UNet's config, which export uses.

Training (matching cutecpp's flow_euler sampler and diffusers' FlowMatchEulerDiscreteScheduler):
x_s = (1 - s) x0 + s noise, the UNet gets timestep 1000 s and predicts noise - x0; s is drawn
logit-normal and shifted by the bundle's flow_shift (`--train-shift` another shift: 1 puts more of
the training at low noise, where the last sampler steps draw the detail). The checkpoint records the
run's item weight and train shift (and its last lr, for the record): a resumed run keeps the two
unless given again (older checkpoints lack them: their runs resume at the defaults, weight 1 and the
bundle's shift, and say so).
`--sample-weights FILE` draws pictures of some animals more often (a JSON object of animal id ->
weight; tools/animal_weights.py writes one from scored pictures); the checkpoint records it too.
10 % of captions are dropped to "no prompt": one all-zero encoder state, which is what the
pipeline's classifier-free guidance uses. Batches pad prompts to one length with attention masks;
the pipeline runs each prompt unpadded, which is the same computation.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cute_mini  # noqa: E402

from cutecpp.convert import CONFIG_FILE, WEIGHTS_FILE  # noqa: E402

TRAIN_DIR = cute_mini.TRAIN_DIR
SHARD = 256
DROP_CAPTION = 0.1


def _state_path(text: str) -> Path:
    return TRAIN_DIR / "text_states" / (hashlib.sha1(text.encode()).hexdigest() + ".npy")


def _autoencoder_id(folder: str | Path) -> str:
    """sha256 of what made the latents: the folder's LatentEncoder file when it has one (fit_encoder.py
    assemble; the latents depend on the encoder alone, so a decoder fine-tuned by tools/fit_decoder.py keeps
    them valid), else the autoencoder's weights (train_autoencoder.py's joint export)."""
    from latent_encoder import ENCODER_FILE_NAME

    encoder = Path(folder, ENCODER_FILE_NAME)
    path = encoder if encoder.exists() else Path(folder, WEIGHTS_FILE)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _warn_if_not_the_shipped_decoder(folder: str | Path) -> None:
    """The export ships the folder's decoder. Say so when it is not the working tree's shipped one: after a
    decoder fine-tune (tools/fit_decoder.py) an older folder would quietly take the new decoder back out."""
    import torch
    from fit_encoder import make_autoencoder
    from safetensors.torch import load_file

    shipped = cute_mini.tree_bundle()
    weights = load_file(str(Path(folder, WEIGHTS_FILE)))
    mine = {k.removeprefix("decoder."): v for k, v in weights.items() if k.startswith("decoder.")}
    try:
        theirs = make_autoencoder(shipped).decoder.state_dict()
    except (KeyError, ValueError, OSError):  # another architecture, or no bundle in the tree
        theirs = {}
    if mine.keys() != theirs.keys() or not all(torch.allclose(mine[k].float(), theirs[k], rtol=1e-3, atol=1e-6)
                                               for k in mine):
        print(f"note: the decoder exported from {folder} is not the one in {shipped}; if that one is newer "
              f"(a decoder fine-tune), `python tools/fit_encoder.py assemble -o {folder}` takes it", file=sys.stderr)


def _check_autoencoder(folder: str | Path, *, create: bool = False) -> None:
    """The prepared latents were (or will be) made by this autoencoder; refuse a different one."""
    stamp = TRAIN_DIR / "latents" / "autoencoder.json"
    ae = _autoencoder_id(folder)
    if stamp.exists():
        made_by = json.loads(stamp.read_text())["sha256"]
        if made_by != ae:
            raise SystemExit(f"the latents in {stamp.parent} were made by autoencoder {made_by[:12]}..., but "
                             f"{folder} is {ae[:12]}...: move {stamp.parent} away and prepare again, or pass "
                             "--autoencoder with the one that made them")
    elif create and any(stamp.parent.glob("shard-*.npz")):
        raise SystemExit(f"{stamp.parent} has latents but no {stamp.name}: which autoencoder made them is unknown; "
                         "move the folder away and prepare again")
    elif create:
        stamp.write_text(json.dumps({"sha256": ae, "folder": str(folder)}) + "\n")
    else:
        raise SystemExit(f"{stamp} is missing: run `python tools/train_unet.py prepare` first")


def _save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
        np.save(f, arr)
    os.replace(f.name, path)


# --- prepare ---------------------------------------------------------------------------------


def item_mask(boxes: list[dict], size: int, kind: str = "item") -> np.ndarray:
    """uint8 [32, 32]: 1 on the latent pixels that an item box (hat, boots, balloon ...) touches (or a box
    of another `kind`: "animal", "place")."""
    side = cute_mini.LATENT_SIZE
    mask = np.zeros((side, side), np.uint8)
    for b in boxes:
        if b["kind"] == kind:
            x0, y0, x1, y1 = (v * side / size for v in b["box"])
            mask[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = 1
    return mask


def encode_latents(ae, images: list[np.ndarray]) -> np.ndarray:
    """Pictures [3, H, W] in -1..1 to the latents `prepare` stores: float16, the autoencoder's scaling
    applied, not yet normalised per channel (Data does that)."""
    import torch

    scale, shift = float(ae.config.scaling_factor), float(ae.config.shift_factor)
    latents = []
    # bf16: a shard (render + text states + encoder) took ~0.4 min instead of ~0.6 here; the latents
    # are stored as float16 anyway.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for k in range(0, len(images), 16):
            z = ae.encoder(torch.from_numpy(np.stack(images[k : k + 16]))).float()
            latents.append(((z - shift) * scale).numpy().astype(np.float16))
    return np.concatenate(latents)


def prepare(args) -> None:
    import torch
    from latent_encoder import load_autoencoder
    from make_dataset import render

    from cutecpp.encoder_build import ensure_text_encoder
    from cutecpp.text_encoder import TextEncoder
    from cutecpp.vocab import load_vocabulary

    torch.set_num_threads(args.threads)
    ae = load_autoencoder(args.autoencoder)
    encoder = TextEncoder(ensure_text_encoder(cute_mini.TEXT_ENCODER_LAYERS, load_vocabulary().encoder_words()),
                          threads=args.threads)
    (TRAIN_DIR / "latents").mkdir(parents=True, exist_ok=True)
    (TRAIN_DIR / "text_states").mkdir(parents=True, exist_ok=True)
    _check_autoencoder(args.autoencoder, create=True)
    started = time.time()
    for shard in range(0, args.n, SHARD):
        path = TRAIN_DIR / "latents" / f"shard-{shard // SHARD:05d}.npz"
        if path.exists():
            continue
        images, texts, items, animals, places = [], [], [], [], []
        for i in range(shard, min(shard + SHARD, args.n)):
            image, labels = render(i, split="train", size=cute_mini.IMAGE_SIZE, seed=args.seed)
            images.append(np.asarray(image, np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
            texts.append(labels["encoder_text"])
            items.append(item_mask(labels["boxes"], cute_mini.IMAGE_SIZE))
            animals.append(item_mask(labels["boxes"], cute_mini.IMAGE_SIZE, "animal"))
            places.append(item_mask(labels["boxes"], cute_mini.IMAGE_SIZE, "place"))
            state = _state_path(labels["encoder_text"])
            if not state.exists():
                _save_npy_atomic(state, encoder.encode(labels["encoder_text"].split()).astype(np.float16))
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            np.savez(f, latents=encode_latents(ae, images), texts=np.array(texts), items=np.stack(items),
                     animals=np.stack(animals), places=np.stack(places))
        os.replace(f.name, path)
        done = min(shard + SHARD, args.n)
        print(f"prepared {done}/{args.n} ({(time.time() - started) / 60:.1f} min)", file=sys.stderr)


# --- train -----------------------------------------------------------------------------------


def channel_stats(latents: np.ndarray) -> dict:
    """Per-channel mean and standard deviation of prepared latents [n, C, h, w] (float64 sums)."""
    z = latents.astype(np.float32)
    mean = z.mean(axis=(0, 2, 3), dtype=np.float64)
    std = z.std(axis=(0, 2, 3), dtype=np.float64)
    return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std],
            "measured_on": int(len(latents))}


def load_channel_stats(latents: np.ndarray) -> dict:
    """The fixed stats in latents/channel_stats.json, measured on `latents` the first time."""
    path = TRAIN_DIR / "latents" / "channel_stats.json"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(channel_stats(latents)) + "\n")
        os.replace(tmp, path)
    stats = json.loads(path.read_text())
    if len(stats["mean"]) != latents.shape[1] or min(stats["std"]) <= 0:
        raise SystemExit(f"{path} does not fit latents with {latents.shape[1]} channels: move it away")
    return stats


class Data:
    """All prepared latents in memory (16 KB each as float16), normalised per channel, and their
    text states on demand."""

    def __init__(self) -> None:
        shards = sorted((TRAIN_DIR / "latents").glob("shard-*.npz"))
        if not shards:
            raise SystemExit("no prepared data: run `python tools/train_unet.py prepare` first")
        parts = [np.load(p) for p in shards]
        latents = np.concatenate([p["latents"] for p in parts])
        self.stats = load_channel_stats(latents)
        self.latents = self.normalise(latents)
        self.texts = np.concatenate([p["texts"] for p in parts])
        # shards prepared before the item masks have none: no weighting there
        side = cute_mini.LATENT_SIZE
        self.items = np.concatenate([p["items"] if "items" in p.files else np.zeros((len(p["texts"]), side, side),
                                                                                      np.uint8) for p in parts])
        # the layout masks (animal, item, place boxes) of `train --layout`: shards prepared since 2026-12-07
        self.layout = None
        if all("animals" in p.files for p in parts):
            self.layout = np.stack([np.concatenate([p[key] for p in parts]) for key in ("animals", "items", "places")],
                                   axis=1)
        self.states: dict[str, np.ndarray] = {}

    def picture_weights(self, animal_weights: dict[str, float]) -> np.ndarray:
        """Each picture's sampling probability for `train --sample-weights`: the largest weight of the
        animals its encoder text names (animals not listed weigh 1), normalised to sum 1."""
        from cutecpp.vocab import load_vocabulary

        vocab = load_vocabulary()
        unknown = sorted(set(animal_weights) - {e.id for e in vocab.entries("animal")})
        if unknown:
            raise SystemExit(f"--sample-weights: not animals of the vocabulary: {', '.join(unknown)}")
        w = np.ones(len(self.texts))
        for k, text in enumerate(self.texts):
            named = [e.id for e in map(vocab.lookup, str(text).split()) if e is not None and e.category == "animal"]
            if not named:
                raise SystemExit(f"picture {k}'s text {str(text)!r} names no animal of the vocabulary")
            w[k] = max(animal_weights.get(a, 1.0) for a in named)
        return w / w.sum()

    def normalise(self, latents: np.ndarray) -> np.ndarray:
        """Prepared latents [n, C, h, w] normalised per channel by the run's fixed stats, as float16."""
        mean = np.asarray(self.stats["mean"], np.float32)[None, :, None, None]
        std = np.asarray(self.stats["std"], np.float32)[None, :, None, None]
        return ((latents.astype(np.float32) - mean) / std).astype(np.float16)

    def state(self, text: str) -> np.ndarray:
        if text not in self.states:
            self.states[text] = np.load(_state_path(text))
        return self.states[text]

    def batch(self, rng: np.random.Generator, n: int, p: np.ndarray | None = None):
        """n pictures drawn with replacement: uniformly, or with probabilities p (picture_weights): (latents,
        padded text states, their mask, item masks, layout masks [n, 3, 32, 32] or None without them)."""
        idx = rng.integers(0, len(self.latents), n) if p is None else rng.choice(len(self.latents), n, p=p)
        states = [self.state(str(self.texts[i])) if rng.random() >= DROP_CAPTION
                  else np.zeros((1, cute_mini.TEXT_HIDDEN), np.float16) for i in idx]
        t = max(len(s) for s in states)
        padded = np.zeros((n, t, cute_mini.TEXT_HIDDEN), np.float32)
        mask = np.zeros((n, t), bool)
        for k, s in enumerate(states):
            padded[k, : len(s)] = s
            mask[k, : len(s)] = True
        layout = None if self.layout is None else self.layout[idx].astype(np.float32)
        return self.latents[idx].astype(np.float32), padded, mask, self.items[idx].astype(np.float32), layout


def make_models(unet_config: dict | None = None):
    """The UNet (cute_mini.UNET, or the shape a checkpoint records) and the alignment module."""
    from alignment_ref import Alignment
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**(unet_config or cute_mini.UNET)), Alignment(cute_mini.ALIGNMENT)


def train_step(unet, align, opt, params, x0, noise, s, states, mask, weight, bf16: bool, layout=None):
    """One optimiser step on a batch: rectified flow at noise levels s (the UNet predicts noise - x0), the
    squared error weighted per latent pixel by `weight` and normalised so the loss keeps the scale of
    the plain mean. `layout`: masks the UNet reads beside the noised latent (tools/layout_unet.py).
    Returns (plain mean squared error: what the log shows, comparable across runs and weights; the
    weighted loss)."""
    import torch

    xs = (1 - s[:, None, None, None]) * x0 + s[:, None, None, None] * noise
    if layout is not None:
        from layout_unet import unet_input

        xs = unet_input(xs, layout)
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=bf16):
        ctx = align(states, mask)
        pred = unet(xs, s * 1000, encoder_hidden_states=ctx, encoder_attention_mask=mask).sample
    err = (pred.float() - (noise - x0)).pow(2)
    loss = (err * weight).mean() / weight.mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return err.mean(), loss


def update_ema(ema_params: list, params: list, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * live, in one fused call over all tensors (~10 % of a training
    step faster than tensor by tensor: tools/bench_train_step.py)."""
    import torch

    with torch.no_grad():
        torch._foreach_lerp_(ema_params, params, 1 - decay)


def run_checkpoint() -> Path:
    """The run's checkpoint: train resumes it and writes it, export reads it by default."""
    return TRAIN_DIR / "unet" / "latest.pt"


def bundle_models(path: Path):
    """(the UNet's config, the UNet, the alignment) read back from a bundle: cute_mini.UNET with the
    bundle's widths, blocks and heads, every weight loaded strictly."""
    from bundle_weights import component_config, read_state_dict

    bundle = component_config(path, "unet")
    shape = ("block_out_channels", "down_block_types", "up_block_types", "attention_head_dim",
             "transformer_layers_per_block")
    config = {**cute_mini.UNET, **{k: tuple(v) if isinstance(v, list) else v for k, v in bundle.items() if k in shape}}
    unet, align = make_models(config)
    unet.load_state_dict(read_state_dict(path, "unet", unet))
    align.load_state_dict(read_state_dict(path, "alignment", align))
    return config, unet, align


def init_weights(path: Path, device) -> tuple[dict, dict[str, dict]]:
    """A new run's starting point: (the UNet's config, state dicts for unet/align/ema_unet/ema_align)
    from a checkpoint or a bundle (.gguf: the shipped model when the cache is gone; its EMA weights
    start live and EMA alike: bundle_models)."""
    import torch

    if path.suffix == ".gguf":
        config, unet, align = bundle_models(path)
        states = {"unet": unet.state_dict(), "align": align.state_dict()}
        print(f"new run from the weights of the bundle {path}", file=sys.stderr)
        return config, {**states, "ema_unet": states["unet"], "ema_align": states["align"]}
    st = torch.load(path, map_location=device, weights_only=True)
    print(f"new run from the weights of {path} (its step {int(st['step'])})", file=sys.stderr)
    return st.get("unet_config", cute_mini.UNET), {k: st[k] for k in ("unet", "align", "ema_unet", "ema_align")}


def sample_sigmas(rng_t, n: int, shift: float):
    import torch

    s = torch.sigmoid(torch.randn(n, generator=rng_t))
    return shift * s / (1 + (shift - 1) * s)


def run_settings(args, st: dict | None) -> dict[str, float]:
    """The run's item weight and train shift: as given, else as the resumed checkpoint recorded them,
    else the defaults (weight 1, the bundle's flow_shift). A change on resuming is said, not refused:
    raising the item weight mid-run is how sections 10-11 of the history were trained."""
    stored = (st or {}).get("settings", {})
    defaults = {"item_weight": 1.0, "train_shift": float(cute_mini.SAMPLING["flow_shift"])}
    out = {}
    for key, default in defaults.items():
        given = getattr(args, key)
        out[key] = float(given if given is not None else stored.get(key, default))
        flag = "--" + key.replace("_", "-")
        if given is None and st is not None:
            source = "as the checkpoint's run" if key in stored else "the default: the checkpoint does not record it"
            print(f"{flag} {out[key]:g} ({source})", file=sys.stderr)
        elif key in stored and float(stored[key]) != out[key]:
            print(f"{flag} {out[key]:g}: the checkpoint's run used {float(stored[key]):g}", file=sys.stderr)
    return out


def train(args) -> None:
    import copy

    import torch

    if args.train_shift is not None and not args.train_shift > 0:  # checked before anything is loaded
        raise SystemExit(f"--train-shift must be above 0, not {args.train_shift:g}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ckpt = run_checkpoint()
    out = ckpt.parent
    out.mkdir(parents=True, exist_ok=True)
    data = Data()
    # A new UNet shape: only at a run's start.
    grows = args.widen > 1 or args.attention_level is not None or args.transformer_layers is not None or args.layout
    step = 0
    st, states = None, None
    if ckpt.exists():
        st = torch.load(ckpt, map_location=device, weights_only=True)
        if st.get("latent_stats") != data.stats:
            raise SystemExit(f"{ckpt} was trained on other latent statistics than {TRAIN_DIR / 'latents'}: "
                             "move one of them away")
        if grows:
            raise SystemExit(f"--widen, --attention-level, --transformer-layers and --layout start a new run: {ckpt} "
                             f"exists (move {out} away first)")
        config, states, step = st.get("unet_config", cute_mini.UNET), st, int(st["step"])
        print(f"resumed at step {step}", file=sys.stderr)
    elif args.init:
        config, states = init_weights(args.init, device)
    elif grows:
        raise SystemExit("--widen, --attention-level, --transformer-layers and --layout need --init: the weights to "
                         "start from")
    else:
        config = cute_mini.UNET
    if args.widen > 1:  # Net2Net: a wider UNet that computes (nearly) what the narrow one did
        from widen_unet import widen

        for key in ("unet", "ema_unet"):
            wide, states[key] = widen(dict(config), states[key], args.widen, noise=args.widen_noise)
        print(f"widened {config['block_out_channels']} -> {wide['block_out_channels']}", file=sys.stderr)
        config = wide
    if args.attention_level is not None:  # cross-attention where there was none, starting as identity
        from add_attention import add_attention

        for key in ("unet", "ema_unet"):
            grown, states[key] = add_attention(dict(config), states[key], args.attention_level, seed=args.seed)
        print(f"cross-attention added at level {args.attention_level}: {grown['down_block_types']}", file=sys.stderr)
        config = grown
    if args.transformer_layers is not None:  # more transformer blocks per attention, each starting as identity
        from deepen_unet import deepen

        for key in ("unet", "ema_unet"):
            try:
                deep, states[key] = deepen(dict(config), states[key], args.transformer_layers, seed=args.seed)
            except ValueError as e:
                raise SystemExit(f"--transformer-layers: {e}") from None
        print(f"transformer blocks per level: {deep['transformer_layers_per_block']}", file=sys.stderr)
        config = deep
    if args.layout:  # the layout masks beside the latent, read through zero weights at first
        from layout_unet import add_layout_inputs

        for key in ("unet", "ema_unet"):
            try:
                with_layout, states[key] = add_layout_inputs(dict(config), states[key])
            except ValueError as e:
                raise SystemExit(f"--layout: {e}") from None
        print("the UNet reads the layout masks (animal, item, place) beside its latent", file=sys.stderr)
        config = with_layout
    from layout_unet import reads_layout

    layout = reads_layout(config)
    if layout and data.layout is None:
        raise SystemExit(f"this UNet reads layout masks, but shards in {TRAIN_DIR / 'latents'} were prepared without "
                         "them: prepare them again (move those shards away)")
    settings = run_settings(args, st)
    shift, item_weight = settings["train_shift"], settings["item_weight"]
    animal_weights = run_sample_weights(args, st)
    p = data.picture_weights(animal_weights) if animal_weights else None
    unet, align = make_models(config)
    ema_unet, ema_align = copy.deepcopy(unet).eval(), copy.deepcopy(align).eval()
    weights = {"unet": unet, "align": align, "ema_unet": ema_unet, "ema_align": ema_align}
    if states is not None:
        for key, module in weights.items():
            module.load_state_dict(states[key])
    for module in weights.values():
        module.to(device)
    params = list(unet.parameters()) + list(align.parameters())
    ema_params = list(ema_unet.parameters()) + list(ema_align.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    if st is not None:
        opt.load_state_dict(st["opt"])
    print(f"UNet {tuple(config['block_out_channels'])}: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M "
          "parameters", file=sys.stderr)
    rng = np.random.default_rng((args.seed, step))
    rng_t = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    print(f"noise levels: logit-normal shifted by {shift:g}; item weight {item_weight:g}", file=sys.stderr)
    started, last_save = time.time(), time.time()
    with open(out / "log.csv", "a", newline="") as log:
        writer = csv.writer(log)
        while step < args.steps:
            x0, states, mask, items, masks = data.batch(rng, args.batch, p)
            x0 = torch.from_numpy(x0).to(device)
            states, mask = torch.from_numpy(states).to(device), torch.from_numpy(mask).to(device)
            noise = torch.randn(x0.shape, generator=rng_t).to(device)
            s = sample_sigmas(rng_t, len(x0), shift).to(device)
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, (step + 1) / 1000)
            # Items (a hat is a few latent pixels) count item_weight times per pixel.
            w = 1 + (item_weight - 1) * torch.from_numpy(items).to(device)[:, None]
            masks = torch.from_numpy(masks).to(device) if layout else None
            mse, loss = train_step(unet, align, opt, params, x0, noise, s, states, mask, w, args.bf16, layout=masks)
            step += 1
            update_ema(ema_params, params, min(args.ema, (1 + step) / (10 + step)))
            if step % args.log_every == 0:
                elapsed = time.time() - started
                writer.writerow([step, f"{mse.item():.5f}", f"{elapsed:.1f}", f"{loss.item():.5f}"])
                log.flush()
                print(f"step {step}  loss {mse.item():.4f}  weighted {loss.item():.4f}  {elapsed / 60:.1f} min",
                      file=sys.stderr)
            if step % args.save_every == 0 or step == args.steps or time.time() - last_save > 600:
                tmp = ckpt.with_suffix(".tmp")
                torch.save({**{key: module.state_dict() for key, module in weights.items()},
                            "opt": opt.state_dict(), "step": step, "latent_stats": data.stats,
                            "unet_config": dict(config), "settings": dict(settings, lr=args.lr),
                            "sample_weights": animal_weights}, tmp)
                os.replace(tmp, ckpt)
                last_save = time.time()


# --- export ----------------------------------------------------------------------------------


def decoder_folder(autoencoder: str | Path, stats: dict | None, folder: Path) -> Path:
    """The autoencoder folder as the bundle's decoder should see it: where the UNet learned per-channel
    normalised latents, its config gets their statistics in the autoencoder's raw latent space
    (latents_mean/latents_std, scaling_factor 1, shift_factor 0), so that the decoder computes
    raw = normalised * latents_std + latents_mean = ((normalised * std + mean) / scale) + shift."""
    if stats is None:  # a UNet trained before the per-channel statistics (cute-mini 0.1)
        return Path(autoencoder)
    config = json.loads(Path(autoencoder, CONFIG_FILE).read_text())
    scale, shift = float(config["scaling_factor"]), float(config["shift_factor"])
    folder.mkdir()
    config.update(latents_mean=[m / scale + shift for m in stats["mean"]],
                  latents_std=[s / scale for s in stats["std"]], scaling_factor=1.0, shift_factor=0.0)
    Path(folder, CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(Path(autoencoder, WEIGHTS_FILE), Path(folder, WEIGHTS_FILE))
    return folder


def export(args) -> None:
    import torch
    from layout_unet import reads_layout

    from cutecpp.convert import convert
    from cutecpp.encoder_build import QWEN_CODER_05B

    st = torch.load(args.checkpoint or run_checkpoint(), map_location="cpu", weights_only=True)
    if reads_layout(st.get("unet_config", cute_mini.UNET)):
        raise SystemExit("this UNet reads layout masks, which cutecpp's core does not give it: "
                         "score it with tools/layout_score.py instead")
    _check_autoencoder(args.autoencoder)  # the encoder must be the one whose latents trained the UNet
    _warn_if_not_the_shipped_decoder(args.autoencoder)
    unet, align = make_models(st.get("unet_config"))
    unet.load_state_dict(st["ema_unet"])
    align.load_state_dict(st["ema_align"])
    with tempfile.TemporaryDirectory() as tmp:
        unet.save_pretrained(Path(tmp, "unet"))
        align.save_pretrained(Path(tmp, "align"))
        decoder = decoder_folder(args.autoencoder, st.get("latent_stats"), Path(tmp, "decoder"))
        summary = convert(args.output, args.dtype, args.model_id or cute_mini.next_ship_id(), unet=Path(tmp, "unet"),
                          tiny_decoder=decoder, alignment=Path(tmp, "align"), sampling=cute_mini.SAMPLING,
                          text_encoder={"sha256": QWEN_CODER_05B.sha256, "layers": cute_mini.TEXT_ENCODER_LAYERS},
                          name=f"cute-mini (step {st['step']})", license="MIT")
    print(summary.table())
    print(json.dumps({"step": int(st["step"]), "output": str(args.output)}))


def per_level(text: str) -> tuple[int, ...]:
    """'1,2,2' -> (1, 2, 2): one whole number per UNet level (argparse type)."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers separated by commas, like 1,2,2") from None


def run_sample_weights(args, st: dict | None) -> dict[str, float]:
    """The run's animal sampling weights ({animal id: weight}, empty: every picture alike): the
    --sample-weights file, else what the resumed checkpoint recorded. `tools/animal_weights.py` writes
    such a file from scored pictures."""
    if args.sample_weights is None:
        stored = dict((st or {}).get("sample_weights") or {})
        if stored:
            print(f"--sample-weights: the checkpoint's run's, {len(stored)} animals weighted", file=sys.stderr)
        return stored
    try:
        weights = json.loads(args.sample_weights.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"--sample-weights {args.sample_weights}: {e}") from None
    if not isinstance(weights, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf") for v in weights.values()):
        raise SystemExit(f"--sample-weights {args.sample_weights}: want a JSON object of animal id -> weight > 0")
    print(f"--sample-weights: {len(weights)} animals weighted, up to {max(weights.values(), default=1):g}",
          file=sys.stderr)
    return {str(k): float(v) for k, v in weights.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "train", "export"):
        s = sub.add_parser(name)
        s.add_argument("--autoencoder", default=str(TRAIN_DIR / "autoencoder-export"))
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--seed", type=int, default=0)
        if name == "prepare":
            s.add_argument("--n", type=int, default=20_000)
        if name == "train":
            s.add_argument("--steps", type=int, default=50_000)
            s.add_argument("--batch", type=int, default=32)
            s.add_argument("--lr", type=float, default=3e-4)
            s.add_argument("--ema", type=float, default=0.999)
            s.add_argument("--device", default="cpu")
            s.add_argument("--bf16", action="store_true")
            s.add_argument("--item-weight", type=float, default=None,
                           help="loss weight of latent pixels under an item's box (default: the resumed run's, "
                           "else 1: plain MSE)")
            s.add_argument("--train-shift", type=float, default=None,
                           help="shift of the logit-normal noise levels (default: the resumed run's, else the "
                           "bundle's flow_shift)")
            s.add_argument("--sample-weights", type=Path, default=None, metavar="JSON",
                           help="draw pictures of these animals more often: a JSON object of animal id -> weight "
                           "(a picture weighs its animals' largest; others 1; tools/animal_weights.py writes one; "
                           "default: the resumed run's, else uniform; a file holding {} draws uniformly again)")
            s.add_argument("--log-every", type=int, default=50)
            s.add_argument("--save-every", type=int, default=1000)
            s.add_argument("--init", type=Path, help="start a new run from a checkpoint's or bundle's (.gguf) weights")
            s.add_argument("--widen", type=int, default=1,
                           help="with --init: train a UNet this many times wider, starting from the init weights "
                           "widened so that it computes what they did (tools/widen_unet.py)")
            s.add_argument("--attention-level", type=int, default=None,
                           help="with --init: add cross-attention to this level of the UNet (0 = 32x32), its new "
                           "layers starting as identity (tools/add_attention.py)")
            s.add_argument("--transformer-layers", type=per_level, default=None, metavar="N,N,N",
                           help="with --init: transformer blocks in each level's attentions (diffusers' "
                           "transformer_layers_per_block), the added ones starting as identity (tools/deepen_unet.py)")
            s.add_argument("--layout", action="store_true",
                           help="with --init: a UNet that also reads where the animals, accessories and place are "
                           "(masks beside the latent, read through zero weights at first: tools/layout_unet.py)")
            s.add_argument("--widen-noise", type=float, default=0.01,
                           help="noise on the widened weights, relative to each tensor's spread (parts the copies)")
        if name == "export":
            s.add_argument("-o", "--output", type=Path, required=True)
            s.add_argument("--dtype", default="f16")
            s.add_argument("--model-id", default=None,
                           help="the bundle's id (default: the one after the shipped cutecpp/data bundle's)")
            s.add_argument("--checkpoint", type=Path, default=None,
                           help="the training checkpoint to export (default: the run's newest, unet/latest.pt)")
    args = p.parse_args()
    {"prepare": prepare, "train": train, "export": export}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
