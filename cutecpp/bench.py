"""`cutecpp bench`: the end-to-end benchmark, in a child process so that its load time is cold
(a fresh interpreter) and its peak RSS is its own.

Reported: cold load (process start, import, Pipeline.load) and first picture, warm ms per picture at the model's
default settings (median of `runs`, picture cache off, a new seed each run), the per-stage split,
and the child's peak RSS (VmHWM: text encoder, model, compute buffers, Python).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import CutecppError, InternalError

PROMPTS = ["小熊 穿蓝裤子 冰山上 笑", "两只小猫 戴红帽子 花园里", "小兔子 拿气球 彩虹", "企鹅 围围巾 雪地上"]


def memory_mb(field: str = "VmHWM") -> float | None:
    """A memory reading of this process from /proc/self/status, in MB: "VmHWM" (the peak resident
    memory; not ru_maxrss, which carries a parent's peak across fork+exec) or "VmRSS" (now); None
    where the system has no such file or field (not Linux)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return None


def _peak_rss_mb() -> float:
    peak = memory_mb("VmHWM")
    return float("nan") if peak is None else peak


def child(model: str | None, runs: int, threads: int | None, launched: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    from .pipeline import Pipeline

    pipe = Pipeline.load(model, threads, cache=False)
    t1 = time.perf_counter()
    first = pipe.generate(PROMPTS[0], seed=0, use_cache=False)
    t2 = time.perf_counter()
    cold_total = time.time() - launched  # wall clock since the parent started this process
    warm = [pipe.generate(PROMPTS[(i + 1) % len(PROMPTS)], seed=i + 1, use_cache=False).timings for i in range(runs)]
    name = pipe.model.info["config"].get("name") or ""
    return {
        "model": str(pipe.model.info["path"]), "model_id": pipe.model_id,
        "random_weights": "random" in (name + pipe.model_id).lower(),
        "threads": pipe.context.threads,
        "settings": {"steps": first.steps, "sampler": first.sampler, "cfg": first.cfg, "size": first.size,
                     "candidates": first.candidates},
        "cold_load_ms": (t1 - t0) * 1000, "cold_first_picture_ms": (t2 - t1) * 1000,
        "cold_total_ms": cold_total * 1000,
        "warm_ms": {k: statistics.median(w[k] for w in warm) for k in ("text", "denoise", "decode", "total")},
        "warm_ms_all": [round(w["total"], 1) for w in warm],
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_bench(model: str | None, runs: int = 5, threads: int | None = None) -> dict[str, Any]:
    # The child runs from a neutral directory, so `-m cutecpp.bench` imports the installed package
    # and never a source checkout that happens to be the current directory; paths become absolute.
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if env.get("CUTECPP_TEXT_ENCODER"):
        env["CUTECPP_TEXT_ENCODER"] = str(Path(env["CUTECPP_TEXT_ENCODER"]).resolve())
    model = str(Path(model).resolve()) if model is not None else None
    opts = {"model": model, "runs": runs, "threads": threads, "launched": time.time()}
    args = [sys.executable, "-m", "cutecpp.bench", json.dumps(opts)]
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise InternalError(f"benchmark process failed: {last}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise CutecppError(result["error"])
    return result


def _main() -> None:
    opts = json.loads(sys.argv[1])
    try:
        print(json.dumps(child(opts["model"], opts["runs"], opts["threads"], opts["launched"])))
    except CutecppError as exc:
        print(json.dumps({"error": str(exc)}))


if __name__ == "__main__":
    _main()
