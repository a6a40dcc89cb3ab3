"""The shipped default model (cutecpp/data/cute-mini.gguf) on a fresh install: found with no
argument, the text encoder it names is built from the installed parts, and the issue's acceptance
command draws a 512x512 WebP whose pixels depend only on the seed, not on the thread count."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cutecpp import Model, default_model_path
from cutecpp.cli import cli
from cutecpp.encoder_build import QWEN_CODER_05B

PROMPT = "小熊 穿蓝裤子 冰山上 笑"


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    cache = tmp_path_factory.mktemp("default-model-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("CUTECPP_CACHE", str(cache))  # a fresh install: the encoder is built here on first use
    mp.delenv("CUTECPP_TEXT_ENCODER", raising=False)
    yield CliRunner()
    mp.undo()


def test_shipped_and_described():
    path = default_model_path()
    assert path is not None and path.name == "cute-mini.gguf"
    assert path.stat().st_size <= 60e6  # the size target
    info = Model.load(path).info
    config = info["config"]
    assert {"unet", "tiny_decoder", "alignment"} <= set(config["components"])
    assert config["sampling"]["default_steps"] <= 15
    assert config["text_encoder"] == {"sha256": QWEN_CODER_05B.sha256, "layers": 12}


def test_info_names_it(runner):
    r = runner.invoke(cli, ["info"])
    assert r.exit_code == 0, r.output
    assert str(default_model_path()) in r.stdout


def test_acceptance_generate_same_pixels_any_threads(runner, tmp_path):
    out = tmp_path / "bear.webp"
    r = runner.invoke(cli, ["generate", PROMPT, "-o", str(out), "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    with Image.open(out) as im:
        assert im.format == "WEBP" and im.size == (512, 512)
    pictures = []
    for threads in ("1", "2"):
        png = tmp_path / f"t{threads}.png"
        r = runner.invoke(cli, ["generate", PROMPT, "-o", str(png), "--seed", "1", "--threads", threads,
                                "--no-cache"])
        assert r.exit_code == 0, r.output
        with Image.open(png) as im:
            pictures.append(np.asarray(im.convert("RGB")))
    assert np.array_equal(pictures[0], pictures[1])
    assert pictures[0].std() > 5  # a picture, not a flat fill
    # Another seed draws another picture.
    r = runner.invoke(cli, ["generate", PROMPT, "-o", str(tmp_path / "s2.png"), "--seed", "2", "--no-cache"])
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "s2.png") as im:
        assert not np.array_equal(np.asarray(im.convert("RGB")), pictures[0])


def test_refusal_is_one_line(runner):
    r = runner.invoke(cli, ["generate", "拟人化 8K"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "拟人化" in lines[0]


def test_sampled_as_its_recipe_says():
    """The shipped bundle's sampling section is tools/cute_mini.py's SAMPLING, which exports write."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import cute_mini

    assert Model.load(default_model_path()).sampling == cute_mini.SAMPLING
