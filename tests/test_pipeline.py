"""End to end on tiny random weights: prompt rules, text encoder, alignment, sampler, decoder,
picture output and cache, through the Python API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bundles import Bundle, pipeline_bundle, tiny_text_encoder, unet_bundle
from click.testing import CliRunner

import cutecpp
from cutecpp.cli import cli
from cutecpp.convert import header_keys
from cutecpp.errors import CancelledError, InvalidArgumentError, ModelError
from cutecpp.image import read_meta
from cutecpp.pipeline import Pipeline
from cutecpp.prompt import PromptError

LAYERS = 2
PROMPT = "小熊 穿蓝裤子 冰山上 笑"


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory):
    return tiny_text_encoder(tmp_path_factory.mktemp("pipe-encoder"), LAYERS)


def make_bundle(path, sha: str, *, sampling: str = "flow3", layers: int = LAYERS, **sampling_changes):
    return pipeline_bundle("test-pipeline", sha, layers=layers, default_steps=4, sampling=sampling,
                           **sampling_changes).write(path)


@pytest.fixture(scope="module")
def bundle_path(encoder_path, tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("pipe") / "m.gguf", encoder_path[1])


@pytest.fixture()
def pipe(bundle_path, encoder_path, tmp_path):
    return Pipeline.load(bundle_path, threads=2, text_encoder=encoder_path[0], cache=tmp_path / "c.sqlite3")


def pixels(res) -> np.ndarray:
    return np.asarray(res.image)


def test_generate_picture_and_metadata(pipe):
    res = pipe.generate(PROMPT, seed=1, size=64)
    assert res.image.size == (64, 64) and res.image.mode == "RGB"
    assert res.prompt.encoder_text == "小熊 穿 蓝 裤子 冰山上 笑"
    assert (res.seed, res.steps, res.sampler, res.cfg, res.size) == (1, 4, "flow_euler", 5.0, 64)
    assert set(res.timings) == {"text", "denoise", "decode", "total"} and not res.cached
    assert res.timings["total"] >= res.timings["denoise"] > 0
    assert pixels(res).std() > 0  # random weights draw noise, but not a flat picture
    assert read_meta(res.encoded("webp")) == res.meta
    assert res.meta["model"] == "test-pipeline" and res.meta["understood"] == res.prompt.encoder_text


def test_same_seed_same_pixels_any_threads(bundle_path, encoder_path):
    one = Pipeline.load(bundle_path, threads=1, text_encoder=encoder_path[0], cache=False)
    two = Pipeline.load(bundle_path, threads=2, text_encoder=encoder_path[0], cache=False)
    a = one.generate(PROMPT, seed=7, size=64)
    b = two.generate(PROMPT, seed=7, size=64)
    c = two.generate(PROMPT, seed=8, size=64)
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))
    # English words for the same concepts draw the same picture.
    d = two.generate("bear, blue trousers, iceberg, smiling", seed=7, size=64)
    assert np.array_equal(pixels(a), pixels(d))


def test_settings_override_and_cfg_one(pipe):
    a = pipe.generate(PROMPT, seed=3, size=64, steps=2, cfg=1.0, use_cache=False)
    b = pipe.generate(PROMPT, seed=3, size=64, steps=2, cfg=3.0, use_cache=False)
    assert a.steps == 2 and a.cfg == 1.0
    assert not np.array_equal(pixels(a), pixels(b))


def test_cache_hit(pipe):
    first = pipe.generate(PROMPT, seed=5, size=64)
    again = pipe.generate(PROMPT, seed=5, size=64)
    assert again.cached and not first.cached
    assert np.array_equal(pixels(first), pixels(again))
    assert again.timings["total"] < first.timings["total"]
    assert not pipe.generate(PROMPT, seed=5, size=64, steps=3).cached  # settings are part of the key


def test_cache_follows_the_bundle_file_not_only_its_id(encoder_path, tmp_path):
    # A candidate rewritten in place under the same model id must draw afresh, not get the old pictures.
    path, cache = tmp_path / "m.gguf", tmp_path / "c.sqlite3"

    def draw():
        pipe = Pipeline.load(path, threads=2, text_encoder=encoder_path[0], cache=cache)
        return pipe.generate(PROMPT, seed=5, size=64)

    make_bundle(path, encoder_path[1])
    first = draw()
    again = draw()  # a new pipeline on the same file: the cache serves it
    assert again.cached and np.array_equal(pixels(first), pixels(again))
    make_bundle(path, encoder_path[1], flow_shift=1.0)  # same id, other sampling: other pixels
    other = draw()
    assert not other.cached and other.model_id == first.model_id
    assert not np.array_equal(pixels(first), pixels(other))


def test_refusals_and_bad_settings(pipe):
    with pytest.raises(PromptError, match="拟人化"):
        pipe.generate("拟人化北极熊 8K", seed=1)
    for kwargs, match in (({"size": 72}, "multiple of 16"), ({"size": 4096}, "between"), ({"steps": 0}, "steps"),
                          ({"cfg": -1.0}, "cfg"), ({"seed": -1}, "seed")):
        with pytest.raises(InvalidArgumentError, match=match):
            pipe.generate(PROMPT, **kwargs)
    with pytest.raises(InvalidArgumentError, match="sampler"):
        pipe.generate(PROMPT, seed=1, size=64, sampler="ddim")


def test_cancel_and_progress(pipe):
    seen = []
    pipe.generate(PROMPT, seed=11, size=64, progress=lambda i, n: seen.append((i, n)), use_cache=False)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with pytest.raises(CancelledError):
        pipe.generate(PROMPT, seed=11, size=64, progress=lambda i, n: i < 2, use_cache=False)
    assert pipe.generate(PROMPT, seed=11, size=64, use_cache=False).image.size == (64, 64)


def test_encoder_mismatch(bundle_path, encoder_path, tmp_path):
    other = make_bundle(tmp_path / "other.gguf", "f" * 64)
    with pytest.raises(ModelError, match="trained with"):
        Pipeline.load(other, text_encoder=encoder_path[0], cache=False)
    deeper = make_bundle(tmp_path / "deeper.gguf", encoder_path[1], layers=3)
    with pytest.raises(ModelError, match="cut to 3 blocks"):
        Pipeline.load(deeper, text_encoder=encoder_path[0], cache=False)


def test_bundle_without_text_encoder(tmp_path, encoder_path):
    b = Bundle()
    part = unet_bundle("micro")
    b.kv.update(part.kv)
    b.tensors.update(part.tensors)
    b.kv.update(header_keys("bare", ["unet"]))
    with pytest.raises(ModelError, match="which text encoder"):
        Pipeline.load(b.write(tmp_path / "bare.gguf"), text_encoder=encoder_path[0], cache=False)


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture()
def cli_env(encoder_path, tmp_path, monkeypatch):
    monkeypatch.setenv("CUTECPP_TEXT_ENCODER", str(encoder_path[0]))
    monkeypatch.setenv("CUTECPP_CACHE", str(tmp_path / "cache"))
    return CliRunner()


def test_cli_generate_writes_webp_and_png(cli_env, bundle_path, tmp_path):
    out = tmp_path / "bear.webp"
    args = ["generate", PROMPT, "--model", str(bundle_path), "--seed", "1", "--size", "64", "-o", str(out)]
    r = cli_env.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    from PIL import Image

    with Image.open(out) as im:
        assert im.format == "WEBP" and im.size == (64, 64)
    assert read_meta(out)["seed"] == 1
    r = cli_env.invoke(cli, [*args[:-1], str(tmp_path / "bear.png"), "--json", "--no-cache"])
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout)
    assert meta[0]["path"].endswith("bear.png") and set(meta[0]["timings_ms"]) >= {"text", "denoise", "decode"}
    with Image.open(tmp_path / "bear.png") as im:
        assert im.format == "PNG"
    # The same seed gives the same pixels with 1 and 2 threads.
    for t in ("1", "2"):
        r = cli_env.invoke(cli, [*args[:-1], str(tmp_path / f"t{t}.png"), "--threads", t, "--no-cache"])
        assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "t1.png") as a, Image.open(tmp_path / "t2.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_cli_generate_count(cli_env, bundle_path, tmp_path):
    r = cli_env.invoke(cli, ["generate", PROMPT, "--model", str(bundle_path), "--seed", "4", "--size", "64",
                             "--count", "2", "-o", str(tmp_path / "pic.png")])
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == [str(tmp_path / "pic-1.png"), str(tmp_path / "pic-2.png")]


@pytest.mark.parametrize("args, words", [
    (["拟人化 8K"], ["拟人化"]),
    ([PROMPT, "--size", "100"], ["size", "multiple"]),
    ([PROMPT, "-o", "/nonexistent-dir/x.webp"], ["does not exist"]),
    ([PROMPT, "-o", "/sys/x.webp"], ["cannot write"]),
])
def test_cli_generate_errors_are_one_line(cli_env, bundle_path, args, words):
    r = cli_env.invoke(cli, ["generate", *args, "--model", str(bundle_path), "--seed", "1"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in r.output


def test_cli_generate_missing_model(cli_env, tmp_path):
    r = cli_env.invoke(cli, ["generate", PROMPT, "--model", str(tmp_path / "none.gguf")])
    assert r.exit_code == 1 and "no such file" in r.stderr.lower()


def test_api_exports():
    assert cutecpp.Pipeline is Pipeline


def test_cli_bench_reports_every_figure(cli_env, bundle_path):
    r = cli_env.invoke(cli, ["bench", "--model", str(bundle_path), "--runs", "2", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["model_id"] == "test-pipeline" and report["settings"]["size"] == 512
    assert set(report["warm_ms"]) == {"text", "denoise", "decode", "total"} and len(report["warm_ms_all"]) == 2
    assert 0 < report["cold_load_ms"] < report["cold_total_ms"] and report["peak_rss_mb"] > 0
    r = cli_env.invoke(cli, ["bench", "--model", "/nonexistent.gguf"])
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and len(r.stderr.strip().splitlines()) == 1


def test_cli_setup(cli_env, bundle_path, encoder_path):
    r = cli_env.invoke(cli, ["setup", "--model", str(bundle_path)])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"text encoder: {encoder_path[0]}"
