"""stable-diffusion.cpp on bench_unet.py's random SD 1.5 UNet, for the side-by-side row.

    python tools/bench_unet.py --shapes sd15 --sdcpp /path/to/sd-cli

stable-diffusion.cpp is not part of cutecpp: build its public source outside this
repository (docs/benchmarks.md says how it was built here) and pass its `sd-cli`.
It loads a diffusers folder, so it gets the very UNet weights PyTorch and cutecpp
run (a symlink), a random CLIP-L text encoder (it needs one to start) and a random
TAESD to decode with (instead of the VAE, whose decode would cost far more than the
sampling). Per UNet evaluation: Euler with cfg-scale 1 runs one evaluation per step;
sd-cli prints each step's seconds (10 ms resolution); the first step (graph
planning) is the warm-up. Peak RSS is the sd-cli process's own (wait4).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

_STEP = re.compile(r"\|\s*(\d+)/(\d+) - ([\d.]+)(s/it|it/s)")


def _random_clip_l(path: Path) -> None:
    """A CLIP ViT-L/14 text encoder (SD 1.x's) with random weights, transformers' names, f16."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    width, hidden = 768, 3072

    def randn(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    def norm(prefix):
        return {prefix + ".weight": np.ones(width, np.float16), prefix + ".bias": np.zeros(width, np.float16)}

    t = {"text_model.embeddings.token_embedding.weight": randn(49408, width),
         "text_model.embeddings.position_embedding.weight": randn(77, width),
         **norm("text_model.final_layer_norm")}
    for i in range(12):
        p = f"text_model.encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[p + f"self_attn.{name}.weight"] = randn(width, width)
            t[p + f"self_attn.{name}.bias"] = np.zeros(width, np.float16)
        t.update(norm(p + "layer_norm1"))
        t.update(norm(p + "layer_norm2"))
        t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"] = randn(hidden, width), np.zeros(hidden, np.float16)
        t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"] = randn(width, hidden), np.zeros(width, np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(t, str(path))


def prepare(folder: Path, unet: Path) -> None:
    """folder/unet -> the bench UNet, folder/text_encoder (random CLIP-L), folder/taesd.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "unet"
    if not link.exists():
        link.symlink_to(unet.resolve(), target_is_directory=True)
    clip = folder / "text_encoder" / "model.safetensors"
    if not clip.exists():
        print(f"[bench] random CLIP-L text encoder for stable-diffusion.cpp in {clip}", file=sys.stderr)
        _random_clip_l(clip)
    taesd = folder / "taesd.safetensors"
    if not taesd.exists():
        import torch
        from diffusers import AutoencoderTiny
        from safetensors.torch import save_file

        torch.manual_seed(0)
        save_file(AutoencoderTiny().state_dict(), str(taesd))


def run(binary: str, folder: Path, dtype: str, side: int, threads: int, runs: int) -> dict:
    """One sd-cli generation of runs + 1 Euler steps; the row benchlib.measure would give."""
    cmd = [binary, "-m", str(folder), "--taesd", str(folder / "taesd.safetensors"), "-p", "a cat",
           "--steps", str(runs + 1), "--cfg-scale", "1", "--sampling-method", "euler",
           "-W", str(8 * side), "-H", str(8 * side), "-t", str(threads), "--type", dtype, "-s", "42",
           "-o", str(folder / f"out-{dtype}.png")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"sd-cli failed ({code}): {' '.join(cmd)}\n{log[-3000:]}")
    steps: dict[int, float] = {}
    for m in _STEP.finditer(log.replace("\r", "\n")):
        value = float(m.group(3))
        steps[int(m.group(1))] = 1000.0 * (value if m.group(4) == "s/it" else 1.0 / value)
    times = [steps[k] for k in sorted(steps) if k > 1]
    if len(times) != runs:
        raise SystemExit(f"sd-cli printed {len(steps)} step times for {runs + 1} steps:\n{log[-3000:]}")
    return {"engine": "sdcpp", "variant": dtype, "ms": statistics.median(times), "ms_all": times,
            "peak_rss_mb": usage.ru_maxrss / 1024.0}
