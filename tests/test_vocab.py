"""The shipped vocabulary and its loader: breadth, consistency, exact encoder words, and clear
errors for hand-edited files that are wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cutecpp.prompt import parse_prompt
from cutecpp.vocab import CATEGORIES, SHIPPED, Vocabulary, VocabularyError, load_vocabulary


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return load_vocabulary()


def test_shipped_file_header(vocab):
    data = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert data["format"] == "cutecpp-vocabulary" and data["format_version"] == 1 == vocab.version
    assert "MIT" in vocab.licence and vocab.about
    assert load_vocabulary() is vocab  # loaded once


def test_breadth(vocab):
    """Children ask for far more than a demo list (the design's minimums)."""
    assert len(vocab.entries("animal")) >= 50
    assert len(vocab.entries("item")) >= 30
    assert len(vocab.entries("place")) >= 25
    assert len(vocab.entries("colour")) >= 10
    assert {e.n for e in vocab.entries("count")} == {1, 2, 3}
    assert vocab.entries("refuse") and vocab.entries("rewrite") and vocab.entries("expression")


def test_one_entry_per_line():
    """The file stays editable by hand: every entry is one line of its category's list."""
    text = SHIPPED.read_text(encoding="utf-8")
    data = json.loads(text)
    entry_lines = [line for line in text.splitlines() if line.startswith('    {"id": ')]
    assert len(entry_lines) == sum(len(data.get(c, [])) for c in CATEGORIES)
    for line in entry_lines:
        json.loads(line.rstrip(","))


@pytest.mark.parametrize(("word", "entry_id"), [
    ("小熊", "bear"), ("熊", "bear"), ("熊熊", "bear"), ("狗熊", "bear"), ("bears", "bear"),
    ("小猫", "cat"), ("猫咪", "cat"), ("猫", "cat"), ("kitten", "cat"),
    ("裤子", "trousers"), ("长裤", "trousers"), ("jeans", "trousers"), ("pants", "trousers"),
    ("冰山上", "iceberg"), ("冰山", "iceberg"), ("teddy bear", "teddy"), ("ice cream", "ice_cream"),
    ("红红的", "red"), ("红色", "red"), ("两只", "two"), ("俩", "two"), ("拟人化", "persona"), ("8k", "style"),
    ("阳光", "sunlight"), ("的", "particle"),
])
def test_synonyms(vocab, word, entry_id):
    assert vocab.lookup(word).id == entry_id


def test_drawn_entries_have_art_and_hints(vocab):
    for e in vocab.entries():
        if e.category in ("animal", "item", "place", "light", "expression"):
            assert e.emoji and not e.emoji.isascii(), e.id
            assert e.zh_word and e.en_word, e.id
        if e.category == "animal":
            assert e.hints["shape"] in ("head", "body")
        if e.category == "item":
            assert e.slot in vocab.slots and e.verbs
            assert (e.base is not None) == e.recolour, e.id
        if e.category == "place":
            assert e.hints["layout"]


def test_every_word_parses_to_its_own_entry(vocab):
    """No synonym is swallowed by a longer word or split into others by the longest match."""
    for e in vocab.entries():
        for word in (*e.zh, *e.en):
            zh = not word.isascii()
            subject = "小熊 " if zh else "bear "
            if e.category == "animal":
                p = parse_prompt(word, vocab=vocab)
                assert e.id in dict(p.animals), (word, p)
            elif e.category in ("item", "place", "light", "expression"):
                p = parse_prompt(subject + word, vocab=vocab)
                assert e.id in {*dict(p.features), p.place, p.light, p.expression}, (word, p)
            elif e.category == "colour":
                p = parse_prompt(subject + word + (" 帽子" if zh else " hat"), vocab=vocab)
                assert p.features == (("hat", e.id),), (word, p)


def test_encoder_words_exact(vocab):
    """encoder_words() is exactly the set of words encoder texts are made of: every word is
    reachable (checked here) and nothing else appears (the property tests in test_prompt)."""
    words = vocab.encoder_words()
    assert words == sorted(set(words)) and all(w and " " not in w for w in words)
    seen: set[str] = set()
    recolourable = next(e for e in vocab.entries("item") if e.recolour)
    prompts = [e.zh_word for e in vocab.entries("animal")]
    prompts += [f"小熊 {e.zh_word}" for c in ("item", "place", "light", "expression") for e in vocab.entries(c)]
    prompts += [f"小熊 {c.zh_word}{recolourable.zh_word}" for c in vocab.entries("colour")]
    prompts += [f"{c.zh_word}小熊" for c in vocab.entries("count")]
    for text in prompts:
        seen.update(parse_prompt(text, vocab=vocab).encoder_text.split())
    assert seen == set(words)
    assert {"小熊", "穿", "蓝", "裤子", "冰山上", "笑", "两只", "三只"} <= set(words)
    assert "一只" not in words  # one animal is written without a count


def test_rewrite_targets_are_drawable(vocab):
    for e in vocab.entries("rewrite"):
        assert all(vocab.lookup(w).category not in ("filler", "refuse", "rewrite") for w in e.to)
        assert e.reason["zh"] and e.reason["en"]
    assert vocab.lookup("亮亮的").category == "light"


def test_from_file_matches_shipped(vocab):
    again = Vocabulary.from_file(SHIPPED)
    assert again.encoder_words() == vocab.encoder_words() and len(again.words()) == len(vocab.words())
    assert "animal=" in repr(again)


def test_entry_as_dict(vocab):
    bear = vocab.get("bear").as_dict()
    assert bear["zh"][0] == "小熊" and bear["en"][0] == "bear" and bear["emoji"] == "🐻" and bear["shape"] == "head"
    assert vocab.get("hat").as_dict()["recolour"] is True


# --- validation of hand-made bad files ----------------------------------------------------------

def _minimal() -> dict:
    return {
        "format": "cutecpp-vocabulary", "format_version": 1, "licence": "MIT", "about": "test",
        "slots": {"head": {"zh": "头上", "en": "head", "max": 1}},
        "animal": [{"id": "bear", "zh": ["小熊", "熊"], "en": ["bear"], "emoji": "🐻", "shape": "head"}],
        "verb": [{"id": "dai", "zh": ["戴"], "gloss": "wear"}],
        "colour": [{"id": "red", "zh": ["红"], "en": ["red"], "rgb": "#ff0000"}],
        "item": [{"id": "hat", "zh": ["帽子"], "en": ["hat"], "emoji": "🧢", "slot": "head", "verbs": ["dai"],
                  "recolour": True, "base": "red"}],
        "filler": [{"id": "particle", "zh": ["的"], "en": ["the"]}],
    }


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "vocab.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_minimal_vocabulary_works(tmp_path):
    vocab = Vocabulary.from_file(_write(tmp_path, _minimal()))
    assert vocab.encoder_words() == sorted(["小熊", "戴", "帽子", "红"])
    assert parse_prompt("熊 的 红帽子", vocab=vocab).encoder_text == "小熊 戴 红 帽子"


def _break(change):
    data = _minimal()
    change(data)
    return data


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d["animal"][0]["zh"].append("帽子"), r"item 'hat'.*duplicate word '帽子' \(also in animal 'bear'\)"),
    (lambda d: d["animal"][0]["en"].append("bear"), r"duplicate word 'bear' \(listed twice\)"),
    (lambda d: d["animal"][0]["zh"].append(" "), r"animal 'bear'.*empty word"),
    (lambda d: d.update(animls=[]), r"unknown category 'animls'"),
    (lambda d: d["animal"][0].update(zh=[]), r"animal 'bear'.*canonical word missing.*'zh'"),
    (lambda d: d["item"][0].update(en=[]), r"item 'hat'.*canonical word missing.*'en'"),
    (lambda d: d["item"][0].update(verbs=["wear"]), r"item 'hat'.*verb 'wear' is not a known verb id"),
    (lambda d: d["item"][0].update(slot="tail"), r"slot 'tail' is not in 'slots'"),
    (lambda d: d["animal"][0].update(natual=["red"]), r"unknown field 'natual'"),
    (lambda d: d["animal"][0].update(natural=["blue"]), r"colour 'blue' is not a known colour id"),
    (lambda d: d["animal"][0].update(id="Bear!"), r"'id' must be lower-case ASCII"),
    (lambda d: d["animal"].append(dict(d["animal"][0], zh=["大熊"], en=["big bear"])), r"id is also used"),
    (lambda d: d["animal"][0]["en"].append("Bear"), r"'en' word 'Bear' must be lower-case ASCII"),
    (lambda d: d["animal"][0]["zh"].append("ｂｅａｒ熊"), r"'zh' word 'ｂｅａｒ熊' must be Chinese"),
    (lambda d: d["animal"][0].pop("emoji"), r"'emoji' must be a non-empty string"),
    (lambda d: d.update(format_version=2), r"unsupported format_version 2"),
    (lambda d: d.update(rewrite=[{"id": "x", "zh": ["阳光"], "to": ["亮亮的"], "reason": {"zh": "z", "en": "e"}}]),
     r"rewrite 'x'.*'to' word '亮亮的' is not a drawable word"),
    (lambda d: d.update(refuse=[{"id": "style", "zh": ["高清"], "reason": {"zh": "z"}}]), r"'reason' must give"),
])
def test_bad_vocabulary_is_refused_with_the_reason(tmp_path, change, expected):
    path = _write(tmp_path, _break(change))
    with pytest.raises(VocabularyError, match=expected) as info:
        Vocabulary.from_file(path)
    assert str(path) in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(VocabularyError, match="not valid JSON"):
        Vocabulary.from_file(_write(tmp_path, "{ nope"))
    with pytest.raises(VocabularyError, match="cannot read"):
        Vocabulary.from_file(tmp_path / "missing.json")
    with pytest.raises(VocabularyError, match="must be a JSON object"):
        Vocabulary.from_file(_write(tmp_path, "[]"))


def test_vocabulary_error_is_a_cutecpp_error():
    from cutecpp.errors import CutecppError

    assert issubclass(VocabularyError, CutecppError) and issubclass(VocabularyError, ValueError)
    with pytest.raises(KeyError, match="unknown category"):
        load_vocabulary().entries("x")
