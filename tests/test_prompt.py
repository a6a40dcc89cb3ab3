"""Prompt rules: what is understood, what is refused and how, and that no string crashes them."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cutecpp
from cutecpp.cli import cli
from cutecpp.errors import CutecppError
from cutecpp.prompt import Prompt, PromptError, PromptRules, check_prompt, normalize, parse_prompt
from cutecpp.vocab import load_vocabulary

VOCAB = load_vocabulary()
ENCODER_WORDS = frozenset(VOCAB.encoder_words())


def refusal(text: str, **kw) -> PromptError:
    with pytest.raises(PromptError) as info:
        parse_prompt(text, **kw)
    return info.value


def test_seed_example():
    p = parse_prompt("小熊 穿蓝裤子 冰山上 笑")
    assert p.encoder_text == p.key == "小熊 穿 蓝 裤子 冰山上 笑"
    assert p.animals == (("bear", 1),) and p.features == (("trousers", "blue"),)
    assert (p.place, p.expression, p.light, p.lang, p.notices) == ("iceberg", "smile", None, "zh", ())
    assert str(check_prompt("小熊 穿蓝裤子 冰山上 笑")) == "好的：小熊 穿 蓝 裤子 冰山上 笑"


def test_public_api():
    assert cutecpp.parse_prompt is parse_prompt and cutecpp.check_prompt is check_prompt
    assert cutecpp.load_vocabulary is load_vocabulary and cutecpp.PromptError is PromptError
    assert issubclass(PromptError, CutecppError) and issubclass(PromptError, ValueError)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_prompt("小熊").place = "iceberg"


@pytest.mark.parametrize(("zh", "en"), [
    ("小熊 穿蓝裤子 冰山上 笑", "bear, blue trousers, iceberg, smiling"),
    ("小熊 穿蓝裤子 冰山上 笑", "A smiling bear wearing blue pants on the iceberg"),
    ("小猫 戴红帽子 蘑菇伞下", "cat with a red hat under the mushroom"),
    ("两只小兔 拿气球 花园里", "two bunnies holding balloons in the garden"),
    ("熊猫 抱 泰迪熊 睡觉", "panda hugging a teddy bear, sleeping"),
    ("三只小猪 彩虹", "three little pigs under the rainbow"),
    ("企鹅 吃冰淇淋 雪地里 晚上", "penguin eating ice cream in the snow at night"),
    ("小狗和小猫 踢足球 草地上", "a dog and a cat playing football on the grass"),
])
def test_english_equals_chinese(zh, en):
    a, b = parse_prompt(zh), parse_prompt(en)
    assert a.encoder_text == b.encoder_text and a.key == b.key
    assert (a.lang, b.lang) == ("zh", "en")
    assert str(check_prompt(en)).startswith("OK: ")


@pytest.mark.parametrize("text", ["小熊", "熊", "熊熊", "狗熊", "小狗熊", "一只小熊", "bear", "a bear", "bears"])
def test_bear_synonyms(text):
    assert parse_prompt(text).encoder_text == "小熊"


@pytest.mark.parametrize("text", ["小熊 蓝裤子", "小熊 穿蓝裤子", "小熊穿着蓝色的裤子", "小熊 穿 蓝蓝的 长裤",
                                  "小熊 裤子是蓝色的", "bear in blue jeans", "BEAR, BLUE TROUSERS"])
def test_composed_features(text):
    assert parse_prompt(text).encoder_text == "小熊 穿 蓝 裤子"


@pytest.mark.parametrize(("text", "animals"), [
    ("两只小猫", (("cat", 2),)),
    ("俩小猫", (("cat", 2),)),
    ("2只小猫", (("cat", 2),)),
    ("三只小猪", (("pig", 3),)),
    ("小熊和两只小猫", (("bear", 1), ("cat", 2))),
    ("两只戴帽子的小猫", (("cat", 2),)),
    ("小猫 小猫", (("cat", 2),)),
    ("two cats and a dog", (("cat", 2), ("dog", 1))),
    ("小狗 小猫", (("cat", 1), ("dog", 1))),  # vocabulary order: the same concepts give the same key
])
def test_counts(text, animals):
    assert parse_prompt(text).animals == animals


@pytest.mark.parametrize("text", ["bear with a smile", "a a bear smiling", "小熊 一个 笑"])
def test_a_stray_one_is_harmless(text):
    assert parse_prompt(text).encoder_text == "小熊 笑"


def test_count_words_in_encoder_text():
    assert parse_prompt("两只小猫 和 一只小狗").encoder_text == "两只 小猫 小狗"
    assert parse_prompt("拿一个气球的小熊").encoder_text == "小熊 拿 气球"


@pytest.mark.parametrize(("text", "code", "word"), [
    ("四只小猫", "refused", "四只"),
    ("小熊 和 三只小猫", "too_many_animals", None),
    ("cat and dog and rabbit and fox", "too_many_animals", None),
    ("小熊 拿两个气球", "item_count", "两个"),
    ("小熊 2只", "count_dangling", "2只"),
    ("小熊 12只", "number", "12只"),
])
def test_count_limits(text, code, word):
    err = refusal(text)
    assert (err.code, err.word) == (code, word)


def test_rules_are_configurable():
    assert refusal("小熊和小猫", rules=PromptRules(max_animals=1)).code == "too_many_animals"
    assert refusal("小熊 戴帽子 穿裤子", rules=PromptRules(max_features=1)).code == "too_many_features"
    assert refusal("猫", rules=PromptRules(min_chars=2)).code == "too_short"
    assert refusal("小熊 冰山上", rules=PromptRules(max_chars=3)).code == "too_long"
    assert parse_prompt("猫").animals == (("cat", 1),)  # default: one character is a prompt


def test_refusal_names_every_problem_word():
    err = refusal("拟人化北极熊 8K")
    assert (err.code, err.word, err.words, err.lang) == ("refused", "拟人化", ("拟人化", "8K"), "zh")
    assert "拟人化" in err.message and "8K" in err.message and "\n" not in err.message
    assert err.suggestions == ["北极熊"]  # style words just go: the rest of the prompt is offered
    assert str(check_prompt("拟人化北极熊 8K")) == err.message == str(err)


def test_too_long_still_names_refused_words():
    err = refusal("一只拟人化北极熊，身着蓝色工装裤，站在冰川前，写实风格，8K")  # the seed's failing prompt
    assert err.code == "too_long" and {"拟人化", "8K"} <= set(err.words)
    assert "最多 20 个字" in err.message


@pytest.mark.parametrize(("text", "word", "lang"), [
    ("小熊 毛衣", "毛衣", "zh"),
    ("小熊 穿雨衣", "雨衣", "zh"),  # the whole word, not the part the longest match left over
    ("小狗 桌子上", "桌子", "zh"),
    ("bear with a xylophone", "xylophone", "en"),
    ("小熊 qwerty", "qwerty", "zh"),
])
def test_unknown_word_is_named_with_known_suggestions(text, word, lang):
    err = refusal(text)
    assert (err.code, err.word, err.lang) == ("unknown", word, lang)
    assert word in err.message and err.suggestions
    for s in err.suggestions:
        assert VOCAB.lookup(s.lower()) is not None and s in err.message


def test_suggestions_prefer_the_same_kind():
    assert set(refusal("小熊 穿毛衣").suggestions) <= {e.zh_word for e in VOCAB.entries("item")}
    assert set(refusal("小狗 在桌子上").suggestions) <= {e.zh_word for e in VOCAB.entries("place")}


@pytest.mark.parametrize(("text", "code"), [
    ("小熊 枪", "refused"), ("ghost bear", "refused"), ("小女孩", "refused"), ("哭哭的小猫", "refused"),
    ("小熊 打雷", "refused"), ("nsfw bear", "refused"),
])
def test_out_of_domain_words(text, code):
    err = refusal(text)
    assert err.code == code and err.word in err.message


def test_rewrites_come_with_a_notice():
    p = parse_prompt("萌萌的小兔子，胡萝卜，草地，阳光")  # the seed's example
    assert p.encoder_text == "小兔 拿 胡萝卜 草地上 亮亮的" and p.light == "bright"
    assert len(p.notices) == 1 and "阳光" in p.notices[0] and "亮亮的" in p.notices[0]
    assert "阳光" in str(check_prompt("小兔 阳光"))
    assert parse_prompt("一群小鸭子").animals == (("duck", 3),)
    assert parse_prompt("霸王龙").animals == (("dinosaur", 1),)
    en = parse_prompt("bear in the sunshine")
    assert en.light == "bright" and "sunshine" in en.notices[0] and en.notices[0].isascii()


def test_verbs():
    odd = parse_prompt("小熊 穿帽子")  # 穿 for a hat: drawn, and gently corrected
    assert odd.encoder_text == "小熊 戴 帽子" and "戴" in odd.notices[0]
    assert parse_prompt("小熊 帽子").encoder_text == parse_prompt("小熊 戴着帽子").encoder_text == "小熊 戴 帽子"
    assert parse_prompt("bear wearing a hat").notices == ()  # English 'wearing' fits hats and trousers
    assert parse_prompt("小熊 看 星星").notices == ()  # 看 may stand alone
    assert "抱" in parse_prompt("小熊抱小猫").notices[0]  # 抱 with nothing to hold: left out, said so


@pytest.mark.parametrize(("text", "code"), [
    ("白色的小猫", "colour_animal"),
    ("小猪 绿苹果", "colour_fixed"),
    ("小熊 蓝色", "colour_dangling"),
    ("小熊 戴 红 蓝 帽子", "two_colours"),
    ("小熊 戴帽子 戴皇冠", "slot_conflict"),
    ("小熊 戴帽子 穿裤子 拿气球", "too_many_features"),
    ("小熊 冰山上 草地上", "two_places"),
    ("小熊 笑 睡觉", "two_expressions"),
    ("帽子 冰山上", "no_animal"),
])
def test_shape_refusals(text, code):
    assert refusal(text).code == code


def test_natural_colours_are_fine():
    assert parse_prompt("粉色的小猪").encoder_text == "小猪"
    assert parse_prompt("小熊 绿绿的草地").encoder_text == "小熊 草地上"


def test_no_animal_message():
    assert refusal("帽子").message == "请先说一种小动物，比如 小熊、小猫"
    err = refusal("a red hat")
    assert err.lang == "en" and "animal" in err.message and err.suggestions[0] == "bear"


@pytest.mark.parametrize(("text", "code"), [
    ("", "empty"), ("，。！？", "empty"), ("   ", "empty"), ("\x00\u200b", "empty"),
    ("小熊😀", "bad_char"), ("медведь", "bad_char"), ("小熊 ★", "bad_char"), ("くま", "bad_char"),
    ("小" * 21, "too_long"), ("bear " * 25, "too_long"),
])
def test_characters_and_length(text, code):
    assert refusal(text).code == code


def test_bad_character_is_named():
    err = refusal("小熊😀")
    assert err.word == "😀" and "😀" in err.message


def test_length_counts_characters_not_spaces():
    assert parse_prompt("两只小猫 戴红帽子 拿气球 在花园里 笑").animals == (("cat", 2),)  # 16 characters
    assert parse_prompt("小熊" + " " * 500).encoder_text == "小熊"


def test_huge_input_is_refused_fast():
    start = time.perf_counter()
    err = refusal("小熊" * 500_000)
    assert err.code == "too_long" and time.perf_counter() - start < 0.5


def test_full_width_and_punctuation():
    assert parse_prompt("Ｂｅａｒ　ｗｉｔｈ　ａ　ｈａｔ").encoder_text == parse_prompt("bear with a hat").encoder_text
    assert parse_prompt("小熊，戴着：“帽子”！").encoder_text == "小熊 戴 帽子"
    assert parse_prompt("小熊\t戴帽子\n（冰山上）").encoder_text == "小熊 戴 帽子 冰山上"


@pytest.mark.parametrize(("raw", "normal"), [
    ("  小熊，，穿蓝裤子。 ", "小熊 穿蓝裤子"),
    ("ＢＥＡＲ　１２３", "bear 123"),
    ("小\u200b熊\u200d", "小熊"),
    ("bear's\ttoy\r\n", "bears toy"),
    ("e\u0301", "é"),
    ("小熊\x00\x07笑", "小熊笑"),
    ("a+b=c", "a b c"),
])
def test_normalize(raw, normal):
    assert normalize(raw) == normal


@pytest.mark.parametrize("bad", [None, b"\xe5\xb0\x8f", 42, ["小熊"]])
def test_not_a_string(bad):
    with pytest.raises(TypeError):
        parse_prompt(bad)


def test_messages_follow_the_prompt_language():
    assert refusal("xyzzy bear").message.isascii()
    assert not refusal("小熊 xyzzy").message.isascii()


def test_prompt_as_dict_is_json():
    data = json.loads(json.dumps(parse_prompt("小熊 戴帽子").as_dict(), ensure_ascii=False))
    assert data["encoder_text"] == "小熊 戴 帽子" and data["features"] == [["hat", None]]
    assert check_prompt("小熊 枪").as_dict()["code"] == "refused"


# --- properties ----------------------------------------------------------------------------------

_WORDS = sorted(VOCAB.words())
_NOISE = ["", " ", "，", "的", "😀", "\u200d", "\u0301", "Ａ", "x", "\u202e", "\x00", "٣", "ﷺ"]
vocabulary_text = st.lists(st.sampled_from(_WORDS + _NOISE), max_size=8).map(
    lambda parts: ("" if len(parts) % 2 else " ").join(parts))
any_text = st.one_of(st.text(max_size=40), vocabulary_text,
                     st.text(st.characters(codec="utf-8", categories=("Cc", "Cf", "Mn", "So", "Lo", "Nd", "P")),
                             max_size=30))
PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))


@PROPERTY
@given(any_text)
def test_never_crashes_and_speaks_only_known_words(text):
    try:
        prompt = parse_prompt(text)
    except PromptError as exc:
        assert exc.message and "\n" not in exc.message and exc.code
        return
    assert isinstance(prompt, Prompt) and prompt.animals
    assert set(prompt.encoder_text.split()) <= ENCODER_WORDS
    assert sum(n for _, n in prompt.animals) <= 3 and len(prompt.features) <= 2


@PROPERTY
@given(any_text)
def test_normalize_is_idempotent_and_parse_sees_only_it(text):
    normal = normalize(text)
    assert normalize(normal) == normal
    first, second = check_prompt(text), check_prompt(normal)
    assert first.ok == second.ok
    if first.ok:
        assert first.prompt.key == second.prompt.key
    else:
        assert first.error.code == second.error.code


@PROPERTY
@given(any_text)
def test_encoder_text_means_itself(text):
    result = check_prompt(text)
    if result.ok:
        again = parse_prompt(result.prompt.encoder_text)
        assert again.key == result.prompt.key and again.notices == ()


def _concepts(draw) -> tuple[list[str], dict]:
    """A valid prompt made of random canonical words in random order, and what it means."""
    animal = draw(st.sampled_from(VOCAB.entries("animal")))
    count = draw(st.sampled_from(VOCAB.entries("count")))
    parts = [count.zh_word + animal.zh_word]
    meaning = {"animals": ((animal.id, count.n),), "features": (), "place": None}
    if draw(st.booleans()):
        item = draw(st.sampled_from(VOCAB.entries("item")))
        colour = draw(st.sampled_from(VOCAB.entries("colour"))) if item.recolour and draw(st.booleans()) else None
        parts.append(VOCAB.canonical_verb(item).zh_word + (colour.zh_word if colour else "") + item.zh_word)
        meaning["features"] = ((item.id, colour.id if colour else None),)
    if draw(st.booleans()):
        place = draw(st.sampled_from(VOCAB.entries("place")))
        parts.append(place.zh_word)
        meaning["place"] = place.id
    return draw(st.permutations(parts)), meaning


@PROPERTY
@given(st.data())
def test_valid_prompts_in_any_order(data):
    parts, meaning = _concepts(data.draw)
    prompt = parse_prompt(" ".join(parts))
    assert (prompt.animals, prompt.features, prompt.place) == tuple(meaning.values())


# --- the command line ----------------------------------------------------------------------------

def test_cli_check():
    runner = CliRunner()
    ok = runner.invoke(cli, ["check", "小熊", "穿蓝裤子", "冰山上", "笑"])
    assert ok.exit_code == 0 and ok.stdout.strip() == "好的：小熊 穿 蓝 裤子 冰山上 笑"
    bad = runner.invoke(cli, ["check", "拟人化北极熊 8K"])
    assert bad.exit_code == 1 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "拟人化" in bad.stderr
    data = json.loads(runner.invoke(cli, ["check", "--json", "bear, blue trousers"]).stdout)
    assert data["ok"] and data["encoder_text"] == "小熊 穿 蓝 裤子"
    refused = runner.invoke(cli, ["check", "--json", "小熊 枪"])
    assert refused.exit_code == 1 and json.loads(refused.stdout)["word"] == "枪"


def test_cli_words():
    runner = CliRunner()
    out = runner.invoke(cli, ["words"])
    assert out.exit_code == 0 and "小熊  bear  🐻" in out.stdout
    assert all(f"{c} (" in out.stdout for c in ("animal", "item", "place", "refuse", "rewrite"))
    one = runner.invoke(cli, ["words", "--category", "colour"])
    assert one.exit_code == 0 and "红  red" in one.stdout and "animal" not in one.stdout
    data = json.loads(runner.invoke(cli, ["words", "--json", "-c", "animal"]).stdout)
    assert data["format_version"] == 1 and list(data["entries"]) == ["animal"]
    assert data["entries"]["animal"][0]["zh"][0] == "小熊"
    bad = runner.invoke(cli, ["words", "--category", "animals"])
    assert bad.exit_code == 1 and "unknown category 'animals'" in bad.stderr


@pytest.mark.parametrize("text, understood", [
    ("小熊 吃草莓", "小熊 拿 草莓"),          # greedy matching read 吃草 (grazing) + 莓 and refused it
    ("小熊 捧花束", "小熊 抱 花束"),
    ("小狗 滑雪橇", "小狗 坐 雪橇"),
    ("小熊吃草莓冰山上", "小熊 拿 草莓 冰山上"),  # no spaces at all
])
def test_segmentation_covers_the_whole_prompt(text, understood):
    assert parse_prompt(text).encoder_text == understood
