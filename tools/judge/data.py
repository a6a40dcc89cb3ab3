"""Training and validation pictures for the judge, rendered on the fly (tools/make_dataset.py).

Picture `index` of a split is drawn directly at the judge's input size (the dataset composes at any
size, so a 128 px render is the same picture as the 512 px one). Training pictures are mirrored half
of the time (boxes mirrored with them) and, to look a little more like a diffusion model's output,
sometimes blurred, given pixel noise or a small brightness/contrast change; never a hue change (the
colour head reads hues). Every random choice depends only on the index, so a resumed run sees
exactly the pictures it would have seen.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from make_dataset import render  # tools/ (judge/__init__.py puts it on sys.path)
from PIL import Image, ImageFilter

from .labels import Targets, collate, encode


def to_input(image: Image.Image, size: int) -> np.ndarray:
    """A picture of any size as the judge's input: RGB uint8 [3, size, size] (area-averaged down)."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BOX if image.width > size else Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))


def _rng(split: str, index: int, seed: int) -> np.random.Generator:
    key = hashlib.sha256(f"cutecpp-judge/augment/{seed}/{split}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(key[:8], "big"))


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    arr = None
    if rng.random() < 0.3:
        arr = np.asarray(image, np.float32)
        gain, bias = rng.uniform(0.92, 1.08), rng.uniform(-10, 10)
        arr = (arr - 128.0) * gain + 128.0 + bias
    if rng.random() < 0.3:
        arr = np.asarray(image, np.float32) if arr is None else arr
        arr = arr + rng.normal(0.0, rng.uniform(2.0, 7.0), arr.shape)
    if arr is not None:
        image = Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "RGB")
    return image


class Renders(torch.utils.data.Dataset):
    """Item `index` = picture `index` of `split`, as (uint8 [3, S, S], Targets, concepts). Pictures are
    composed at `render_size` (default: the input size S) and area-averaged down to S."""

    def __init__(self, split: str = "train", size: int = 128, seed: int = 0, train: bool = True,
                 render_size: int | None = None) -> None:
        self.split, self.size, self.seed, self.train = split, size, seed, train
        self.render_size = render_size or size

    def __len__(self) -> int:
        return 2**40

    def __getitem__(self, index: int) -> tuple[np.ndarray, Targets, dict]:
        image, labels = render(int(index), split=self.split, size=self.render_size, seed=self.seed)
        flip = False
        if self.train:
            rng = _rng(self.split, int(index), self.seed)
            flip = bool(rng.random() < 0.5)
            if flip:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            image = augment(image, rng)
        targets = encode(labels, self.size, flip=flip)
        info = {k: labels[k] for k in ("index", "animals", "features", "place", "light", "expression", "members")}
        return to_input(image, self.size), targets, info


def collate_batch(batch):
    images = torch.from_numpy(np.stack([b[0] for b in batch]))
    targets = {k: torch.from_numpy(v) for k, v in collate([b[1] for b in batch]).items()}
    return images, targets, [b[2] for b in batch]


def worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def loader(split: str, size: int, start: int, count: int, batch: int, workers: int, seed: int = 0,
           train: bool = True, render_size: int | None = None) -> torch.utils.data.DataLoader:
    """Pictures start .. start + count - 1 of `split` in order, in batches."""
    return torch.utils.data.DataLoader(
        Renders(split, size, seed, train, render_size), batch_size=batch, sampler=range(start, start + count),
        num_workers=workers, collate_fn=collate_batch, worker_init_fn=worker_init if workers else None,
        prefetch_factor=4 if workers else None, persistent_workers=False)
