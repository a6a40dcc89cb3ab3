"""The C++ core built for 64-bit ARM (the Raspberry Pi 5: its NEON kernels, ggml's ARM products) and
run under qemu, against diffusers and against this machine's x86-64 build.

tools/cross_aarch64.py builds ggml (from the pinned llama-cpp-python's source, for the Pi 5's
Cortex-A76) and the core with Debian's cross compiler; csrc/tools/run_ops.cpp runs the C API's
computations listed in one job file under qemu-aarch64 and writes each result. Every case runs on
the x86-64 build too (the installed package), whose own parity tests hold it to diffusers:
- the counter-based noise: the same bits (the pictures of a seed must not depend on the machine);
- the UNets of test_unet_parity (f32, f16 weights, q8_0 on ggml's ARM int8 products, and the "odd"
  widths whose vector loops all run their tails) within the x86 tests' bounds of diffusers, and
  the alignment module, the tiny and VAE decoders and encoders within those bounds of the x86 build;
- the shipped cute-mini drawing a whole picture (15 steps, its guidance schedule, the decoder):
  within one 8-bit level of the x86 build's picture in every value.

Skips where the cross compiler or qemu is missing (apt-get install crossbuild-essential-arm64
qemu-user; .ci/run installs them). The first build downloads llama-cpp-python's source from the
package index and takes ~3 minutes; later runs rebuild only what changed (~/.cache/cutecpp/aarch64).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from bundles import full_bundle, make_unet, unet_bundle
from test_unet_parity import F16_TOL, F32_TOL, QUANT_TOL, inputs, reference

import cutecpp
from cutecpp.convert import convert_unet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import cross_aarch64  # noqa: E402

SHIPPED = Path(cutecpp.__file__).parent / "data" / "cute-mini.gguf"
# cute-mini's latents after its 15 steps, relative max error against the x86-64 build's (measured
# 3.7e-4: each step's rounding differs by ~1e-6 and the steps carry it on).
LATENTS_TOL = 1e-3


@dataclass
class Case:
    name: str
    x86: np.ndarray  # what the installed (x86-64) build computes
    out: Path  # where the aarch64 build writes its result
    tol: float  # relative max error allowed against `against`
    against: np.ndarray  # diffusers' result, or the x86 build's
    exact: bool = False


class Jobs:
    """One job file for csrc/tools/run_ops.cpp: arrays become raw float32 files beside it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lines: list[str] = ["threads 2"]
        self.cases: list[Case] = []

    def bundle(self, path: Path) -> None:
        self.lines.append(f"bundle {path}")

    def output(self, name: str, x86: np.ndarray, tol: float) -> Path:
        """A second result of the next job, written where the returned path says."""
        out = self.folder / (name.replace(" ", "-") + ".out.f32")
        self.cases.append(Case(name, x86, out, tol, x86))
        return out

    def add(self, name: str, op: str, x86: np.ndarray, *args, tol: float = 0.0, against: np.ndarray | None = None,
            exact: bool = False) -> None:
        stem = name.replace(" ", "-")  # the job file splits on spaces
        words = []
        for i, arg in enumerate(args):
            if isinstance(arg, np.ndarray):
                path = self.folder / f"{stem}.in{i}.f32"
                np.ascontiguousarray(arg, dtype=np.float32).tofile(path)
                words.append(str(path))
            else:
                words.append(str(arg))
        out = self.folder / f"{stem}.out.f32"
        self.lines.append(" ".join([op, str(out), str(x86.size), *words]))
        self.cases.append(Case(name, x86, out, tol, x86 if against is None else against, exact))

    def run(self, core: Path) -> str:
        path = self.folder / "jobs.txt"
        path.write_text("\n".join(self.lines) + "\n")
        done = subprocess.run(cross_aarch64.qemu_command(core, path), capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"cutecpp-run under qemu exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max()) / max(float(np.abs(ref).max()), 1e-12)


@pytest.fixture(scope="module")
def core() -> Path:
    missing = cross_aarch64.missing_tools()
    if missing:
        pytest.skip(f"no {', '.join(missing)}: apt-get install crossbuild-essential-arm64 qemu-user")
    try:
        return cross_aarch64.build()
    except cross_aarch64.BuildError as e:
        pytest.fail(f"the aarch64 build failed: {e}")


def unet_cases(jobs: Jobs, folder: Path) -> None:
    for name, dtype, tol in [("micro", "f32", F32_TOL), ("odd", "f32", F32_TOL), ("latent16", "f16", F16_TOL),
                             ("sd1", "q8_0", QUANT_TOL["q8_0"])]:
        path = folder / f"unet-{name}-{dtype}.gguf"
        if dtype == "q8_0":
            make_unet(name).save_pretrained(folder / f"unet-{name}")
            convert_unet(folder / f"unet-{name}", path, dtype, model_id="test-q8")
        else:
            unet_bundle(name, f16=dtype == "f16").write(path)
        sample, timesteps, context = inputs(name)
        ref, _ = reference(make_unet(name), sample, timesteps, context)
        x86 = cutecpp.Context(cutecpp.Model.load(path), threads=2).unet(sample, timesteps, context)
        n, _, h, w = sample.shape
        jobs.bundle(path)
        jobs.add(f"unet {name} {dtype}", "unet", x86, sample, n, h, w, timesteps, context, context.shape[1],
                 tol=tol, against=ref)


def full_bundle_cases(jobs: Jobs, folder: Path) -> None:
    """The alignment, both decoders and both encoders, on one bundle of every component."""
    path = full_bundle(seed=3).write(folder / "full.gguf")
    ctx = cutecpp.Context(cutecpp.Model.load(path), threads=2)
    rng = np.random.default_rng(3)
    align = ctx.model.info["config"]["components"]["alignment"]
    states = rng.standard_normal((2, 9, align["in_dim"])).astype(np.float32)
    jobs.bundle(path)
    jobs.add("alignment", "align", ctx.align(states), states, 2, 9, tol=F32_TOL)
    for kind in ("tiny", "vae"):
        channels = ctx.model.info["config"]["components"][f"{kind}_decoder"]["latent_channels"]
        latents = rng.standard_normal((1, channels, 6, 5)).astype(np.float32)
        decoded = getattr(ctx, f"{kind}_decode")(latents)
        jobs.add(f"{kind} decoder", f"{kind}_decode", decoded, latents, 1, 6, 5, tol=F32_TOL)
        images = rng.uniform(-1, 1, (1, 3, 48, 40)).astype(np.float32)
        encoded = getattr(ctx, f"{kind}_encode")(images)
        jobs.add(f"{kind} encoder", f"{kind}_encode", encoded, images, 1, 48, 40, tol=F32_TOL)


def shipped_cases(jobs: Jobs) -> None:
    """cute-mini draws a whole picture with its own settings: contexts from random text states
    through its alignment (cond 12 tokens, uncond 3), seed 1, its 15 steps, then its decoder."""
    ctx = cutecpp.Context(cutecpp.Model.load(SHIPPED), threads=2)
    rng = np.random.default_rng(1)
    in_dim = ctx.model.info["config"]["components"]["alignment"]["in_dim"]
    cond = ctx.align(rng.standard_normal((12, in_dim)).astype(np.float32))
    uncond = ctx.align(rng.standard_normal((3, in_dim)).astype(np.float32))
    latents = ctx.sample(cond, uncond, seed=1)
    picture = ctx.tiny_decode(latents[None])
    _, h, w = latents.shape
    jobs.bundle(SHIPPED)
    latents_out = jobs.output("cute-mini latents", latents, tol=LATENTS_TOL)
    jobs.add("cute-mini picture", "draw", picture, latents_out, latents.size, cond, len(cond), uncond, len(uncond),
             -1, -1, "nan", 1, h, w)  # judged in 8-bit levels (below)


@pytest.fixture(scope="module")
def results(core, tmp_path_factory) -> dict[str, tuple[Case, np.ndarray]]:
    folder = tmp_path_factory.mktemp("aarch64")
    jobs = Jobs(folder)
    noise = cutecpp.rng_normal(7, 1000, stream=3, offset=11)
    jobs.add("noise", "rng", noise, 7, 3, 11, exact=True)
    unet_cases(jobs, folder)
    full_bundle_cases(jobs, folder)
    shipped_cases(jobs)
    log = jobs.run(core)
    out = {}
    for case in jobs.cases:
        got = np.fromfile(case.out, dtype=np.float32).reshape(case.x86.shape)
        out[case.name] = case, got
    print(log)
    return out


CASE_NAMES = ["noise", "unet micro f32", "unet odd f32", "unet latent16 f16", "unet sd1 q8_0", "alignment",
              "tiny decoder", "tiny encoder", "vae decoder", "vae encoder", "cute-mini latents"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_aarch64_build_computes_what_x86_64_does(name, results):
    case, got = results[name]
    if case.exact:
        assert np.array_equal(got.view(np.uint32), case.x86.view(np.uint32)), "not the same bits"
        return
    err = rel_err(got, case.against)
    assert err <= case.tol, f"{name}: relative max error {err:.2e} > {case.tol} (against x86-64: " \
                            f"{rel_err(got, case.x86):.2e})"


def test_cute_mini_draws_the_same_picture_on_aarch64(results):
    case, got = results["cute-mini picture"]
    levels = np.abs(np.round((got + 1) * 127.5) - np.round((case.x86 + 1) * 127.5))
    assert float(levels.max()) <= 1, f"{int((levels > 1).sum())} of {levels.size} values differ by more than one level"
