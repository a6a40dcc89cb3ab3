"""Load a trained judge and read pictures with it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cute_mini import TRAIN_DIR
from PIL import Image

from .data import to_input
from .labels import DENSE_CHANNELS, VOCAB_IDS, decode
from .model import Judge, build, prepare

DEFAULT_DIR = TRAIN_DIR / "judge"
# The judge whose figures the notes and docs/cute-mini.md report: its EMA weights in float16 (7 MB),
# committed so that `eval_quality.py score` reproduces them from a clone (`eval_quality.py freeze`).
FROZEN = Path(__file__).resolve().parent / "judge.pt"


def vocab_signature() -> dict[str, list[str]]:
    """The ids behind every head, stored in checkpoints: a judge trained on another vocabulary is refused."""
    return {k: list(v) for k, v in VOCAB_IDS.items()}


def validation_path(judge_path: Path, split: str = "heldout") -> Path:
    """Where a judge's validation result lives: validation.json beside a training checkpoint
    (latest.pt), <name>.validation.json beside a frozen one; -train for runs on the train split."""
    suffix = "validation.json" if split == "heldout" else "validation-train.json"
    if judge_path.name == "latest.pt":
        return judge_path.parent / suffix
    return judge_path.with_name(f"{judge_path.stem}.{suffix}")


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """A judge file, or the latest.pt in a judge directory."""
    path = Path(path)
    return path / "latest.pt" if path.is_dir() else path


def freeze(source: str | os.PathLike[str] | None, out: str | os.PathLike[str]) -> Path:
    """A training checkpoint's EMA weights as float16, with what load() checks and reports."""
    source = checkpoint_file(source or DEFAULT_DIR)
    st = torch.load(source, map_location="cpu", weights_only=True)
    frozen = {k: st[k] for k in ("config", "vocab", "step", "precision", "elapsed_s") if k in st}
    frozen["ema"] = {k: (v.half() if v.is_floating_point() else v) for k, v in st["ema"].items()}
    out = Path(out)
    tmp = out.with_suffix(".tmp")
    torch.save(frozen, tmp)
    os.replace(tmp, out)
    validation = validation_path(source)
    if validation.exists():  # the frozen judge keeps the held-out validation of its step
        result = json.loads(validation.read_text(encoding="utf-8"))
        if int(result.get("judge", {}).get("step", -1)) == int(st["step"]):
            result["judge"]["path"] = str(out)
            validation_path(out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return out


@dataclass
class LoadedJudge:
    model: Judge
    size: int
    step: int
    device: torch.device
    path: Path
    elapsed_s: float = 0.0

    @torch.no_grad()
    def outputs(self, images: torch.Tensor) -> list[dict[str, np.ndarray]]:
        """uint8 [n, 3, S, S] -> per picture {head: logits (numpy, float32)}."""
        out = self.model(prepare(images, self.device))
        out = {k: v.float().cpu().numpy() for k, v in out.items()}
        return [{k: v[i] for k, v in out.items()} for i in range(len(images))]

    def judge(self, pictures: Sequence[Image.Image], batch: int = 32) -> list[dict]:
        """Judged concepts (labels.decode) for pictures of any size."""
        res: list[dict] = []
        for k in range(0, len(pictures), batch):
            x = torch.from_numpy(np.stack([to_input(p, self.size) for p in pictures[k : k + batch]]))
            res.extend(decode(o) for o in self.outputs(x))
        return res


def default_path() -> Path:
    """The judge in training (~/.cache/cutecpp/train/judge/latest.pt) where there is one, else the frozen one."""
    training = DEFAULT_DIR / "latest.pt"
    return training if training.exists() or not FROZEN.exists() else FROZEN


def load(path: str | os.PathLike[str] | None = None, device: str = "cpu", ema: bool = True) -> LoadedJudge:
    """A judge from a training checkpoint (its EMA weights by default) or a frozen one, in eval mode."""
    path = checkpoint_file(path or default_path())
    if not path.exists():
        raise SystemExit(f"no judge at {path}: train one with `python tools/eval_quality.py train` (docs/eval.md)")
    st = torch.load(path, map_location="cpu", weights_only=True)
    if st.get("vocab") != vocab_signature():
        raise SystemExit(f"{path}: this judge was trained on another vocabulary; train a new one")
    if not ema and "model" not in st:
        raise SystemExit(f"{path} is a frozen judge: it holds only the EMA weights")
    model = build(st["config"])
    model.load_state_dict(st["ema" if ema else "model"])
    assert model.dense.out_channels == DENSE_CHANNELS
    dev = torch.device(device)
    model.to(dev).eval()
    return LoadedJudge(model, int(st["config"]["size"]), int(st["step"]), dev, path, float(st.get("elapsed_s", 0)))
