"""Prompt rules: a child's words -> the concepts the model can draw, or a friendly refusal.

Shared by the CLI, the Python API and the kiosk, so every entry point accepts and refuses the
same prompts with the same words. The steps:

1. `normalize`: NFKC (full-width -> half-width), punctuation -> spaces, control and format
   characters and combining marks dropped, ASCII lower-cased, whitespace collapsed.
2. Characters and length: only Chinese characters, a-z, 0-9 and spaces; limits in `PromptRules`
   (a 1 MB string is refused before any work is done on it).
3. Words: Chinese by the segmentation of each space-separated chunk that covers the most of it
   with known words, in the fewest words (`穿蓝裤子` -> 穿 | 蓝 | 裤子, `吃草莓` -> 吃 | 草莓),
   English by longest phrase first (`ice cream`, `teddy bear`).
4. Concepts: animals with counts, features (item + colour; the verb is optional and corrected
   when it does not fit), one place, one light, one expression. Order is free.
5. `Prompt.encoder_text`: the canonical Chinese words in a fixed order; the only text the text
   encoder ever sees, so English and Chinese prompts with the same concepts give the same picture.

Refusal policy: a problem that would change what is drawn (an unknown word, a colour that cannot be
applied, too many things) refuses the prompt; a problem that only changes how it is said (a verb
that does not fit its item, a verb with nothing after it, a word known to hurt the model) is fixed
and reported in `Prompt.notices`. Every message is in the prompt's language. When several problems
occur, the first (in reading order) is explained and the other problem words are listed after it.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidArgumentError
from .vocab import CONCEPTS, Entry, Vocabulary, load_vocabulary

__all__ = ["Prompt", "PromptCheck", "PromptError", "PromptRules", "check_prompt", "normalize", "parse_prompt"]


@dataclass(frozen=True)
class PromptRules:
    """Limits for prompts.

    The seed checks `^[一-龥\\w\\s]{2,15}$`. Here punctuation is turned into spaces instead of refused,
    spaces are not counted, a single character (`猫`) is a valid prompt because the vocabulary
    decides, and 20 characters fit a full prompt with a count, two features, a place and a mood
    (`两只小猫 戴红帽子 拿气球 在花园里 笑` is 16). English words are about five times longer."""

    min_chars: int = 1  # Chinese prompts: characters other than spaces
    max_chars: int = 20  # Chinese prompts: characters other than spaces
    max_chars_en: int = 100  # English prompts: characters including spaces, after normalising
    max_input_chars: int = 1000  # raw input; anything longer is refused before normalising
    max_animals: int = 3  # the seed's limit, and what the training pictures hold
    max_features: int = 2  # the grammar's "1-2 features"; the training pictures hold 0-2
    max_suggestions: int = 3


class PromptError(InvalidArgumentError, ValueError):
    """A prompt the model cannot draw. `message` is one friendly line in the prompt's language;
    `code` says which rule refused it (for the kiosk and tests); `word` is the first offending word
    and `words` all of them; `suggestions` are known words (or a whole prompt) to try instead."""

    def __init__(self, message: str, *, code: str, lang: str, word: str | None = None,
                 words: tuple[str, ...] = (), suggestions: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.lang = lang
        self.word = word
        self.words = tuple(words) or ((word,) if word else ())
        self.suggestions = list(suggestions or [])

    def as_dict(self) -> dict[str, Any]:
        return {"ok": False, "code": self.code, "message": self.message, "word": self.word,
                "words": list(self.words), "suggestions": self.suggestions, "lang": self.lang}


@dataclass(frozen=True)
class Prompt:
    """How a prompt was understood. `animals` are (id, count) and `features` (item id, colour id or
    None), both in vocabulary order so the same concepts always give the same `key`."""

    original: str
    normalized: str
    lang: str
    animals: tuple[tuple[str, int], ...]
    features: tuple[tuple[str, str | None], ...]
    place: str | None
    expression: str | None
    light: str | None = None
    notices: tuple[str, ...] = ()
    encoder_text: str = ""  # canonical Chinese words, single spaces: what the text encoder sees
    key: str = ""  # cache key: same concepts -> same key (it is the encoder text)
    understood: str = ""  # the concepts in the prompt's language, for people

    def describe(self) -> str:
        """One friendly line: how the prompt was understood, with any notices."""
        if self.lang == "zh":
            notes = f"（{'；'.join(self.notices)}）" if self.notices else ""
            return f"好的：{self.understood}{notes}"
        notes = f" (note: {'; '.join(self.notices)})" if self.notices else ""
        return f"OK: {self.understood}{notes}"

    def as_dict(self) -> dict[str, Any]:
        return {"ok": True, "original": self.original, "normalized": self.normalized, "lang": self.lang,
                "animals": [list(a) for a in self.animals], "features": [list(f) for f in self.features],
                "place": self.place, "light": self.light, "expression": self.expression,
                "notices": list(self.notices), "encoder_text": self.encoder_text, "key": self.key,
                "understood": self.understood}


@dataclass(frozen=True)
class PromptCheck:
    """The result of `check_prompt`: never raises for a bad prompt, so a UI can show `str()`."""

    ok: bool
    prompt: Prompt | None = None
    error: PromptError | None = None

    def __str__(self) -> str:
        return self.prompt.describe() if self.prompt is not None else str(self.error)

    def as_dict(self) -> dict[str, Any]:
        return self.prompt.as_dict() if self.prompt is not None else self.error.as_dict()


def parse_prompt(text: str, rules: PromptRules | None = None, vocab: Vocabulary | None = None) -> Prompt:
    """Understand a prompt or raise PromptError (TypeError if `text` is not a str)."""
    if not isinstance(text, str):
        raise TypeError(f"prompt must be str, not {type(text).__name__}")
    return _Parser(rules or PromptRules(), vocab or load_vocabulary()).parse(text)


def check_prompt(text: str, rules: PromptRules | None = None, vocab: Vocabulary | None = None) -> PromptCheck:
    """Like parse_prompt, but a refusal comes back as a PromptCheck instead of an exception."""
    try:
        return PromptCheck(ok=True, prompt=parse_prompt(text, rules, vocab))
    except PromptError as exc:
        return PromptCheck(ok=False, error=exc)


# --- normalising ---------------------------------------------------------------------------------

_DELETED = frozenset("'\u2019")  # apostrophes join words: bear's -> bears, not "bear s"
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Mn", "Me"})
_ASCII_UPPER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebef\U00030000-\U0003134f"
_HAS_CJK = re.compile(f"[{_CJK}]")
_NOT_ALLOWED = re.compile(f"[^{_CJK}a-z0-9 ]")
_ASCII_WORD = re.compile(r"[a-z0-9]+\Z")
_LOCATIVE = frozenset("上里下边旁中前外")  # 桌子上, 在桌子旁边: the unknown word is probably a place
_PLACE_BEFORE = frozenset({"在", "到", "去", "in", "on", "at", "under", "near"})


def normalize(text: str) -> str:
    """The form prompts are matched in: NFKC, punctuation -> spaces, control/format characters and
    combining marks dropped, ASCII lower-cased, single spaces, stripped. Idempotent."""
    return _clean(text).translate(_ASCII_UPPER)


def _clean(text: str) -> str:
    # Dropping a character can let NFKC compose its neighbours (Hangul jamo around a ZWJ), so
    # repeat until nothing changes; two passes suffice in practice.
    for _ in range(4):
        cleaned = _clean_once(text)
        if cleaned == text:
            break
        text = cleaned
    return cleaned


def _clean_once(text: str) -> str:
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        if ch in _DELETED:
            continue
        category = unicodedata.category(ch)
        if ch.isspace() or category[0] == "P" or (ch.isascii() and category[0] == "S"):
            out.append(" ")
        elif category not in _DROPPED_CATEGORIES:
            out.append(ch)
    return " ".join("".join(out).split())


def _lang(normalized: str) -> str:
    if _HAS_CJK.search(normalized) or not re.search("[a-z]", normalized):
        return "zh"
    return "en"


# --- messages ------------------------------------------------------------------------------------

_MESSAGES: dict[str, tuple[str, str]] = {
    "empty": ("还没有写字呢：先说一种小动物，比如 小熊、小猫",
              "Nothing written yet: start with an animal, such as 'bear' or 'cat'"),
    "too_long": ("太长啦：最多 {max} 个字，现在有 {n} 个。说小动物、一两样东西和一个地方就好",
                 "Too long: at most {max} characters, this has {n}. "
                 "An animal, one or two things and a place is plenty"),
    "too_short": ("太短啦：至少要 {min} 个字，比如 小熊", "Too short: at least {min} characters, such as 'bear'"),
    "bad_char": ("“{word}”不是字：请只用中文（或英文）写，比如 小熊 戴帽子",
                 "'{word}' is not a letter: please use plain words, such as 'bear with a hat'"),
    "unknown": ("还不认识“{word}”：试试 {examples}", "cute-mini doesn't know '{word}' yet: try {examples}"),
    "number": ("数字只能是 1、2、3，用来数小动物，比如 两只小猫",
               "Numbers can only be 1, 2 or 3, to count animals, such as 'two cats'"),
    "count_dangling": ("“{word}”要放在小动物前面，比如 两只小猫", "'{word}' goes before an animal, such as 'two cats'"),
    "item_count": ("{thing}只能画一个：把“{word}”去掉试试", "Only one {thing} can be drawn: try without '{word}'"),
    "colour_animal": ("“{word}”不能用在{thing}身上：颜色只能给衣服和东西，比如 红帽子",
                      "'{word}' can't colour the {thing}: colours go on clothes and things, such as 'red hat'"),
    "colour_fixed": ("{thing}没有“{word}”的：能换颜色的是衣服、帽子、气球这些",
                     "There is no {word} {thing}: colours go on clothes, hats, balloons and such"),
    "colour_dangling": ("“{word}”要放在衣服或东西前面，比如 红帽子", "'{word}' goes before a thing, such as 'red hat'"),
    "two_colours": ("一样东西只能有一种颜色：“{a}”和“{b}”选一个", "One thing, one colour: choose '{a}' or '{b}'"),
    "two_places": ("只能画一个地方：{a}还是{b}？", "One place per picture: '{a}' or '{b}'?"),
    "two_lights": ("只能选一种光：{a}还是{b}？", "One light per picture: '{a}' or '{b}'?"),
    "two_expressions": ("一次只能一个样子：{a}还是{b}？", "One mood per picture: '{a}' or '{b}'?"),
    "too_many_animals": ("一张画最多画 {max} 只小动物，这里有 {n} 只",
                         "A picture fits at most {max} animals; this asks for {n}"),
    "too_many_features": ("最多画 {max} 样东西，这里有 {n} 样：{list}，挑最喜欢的",
                          "At most {max} things per picture; this has {n}: {list}. Pick your favourites"),
    "slot_conflict": ("{a}和{b}都在{slot}，只能选一个", "'{a}' and '{b}' both go on the {slot}: choose one"),
    "no_animal": ("请先说一种小动物，比如 小熊、小猫", "Please start with an animal, such as 'bear' or 'cat'"),
    "also": ("（还有：{list}）", " (also: {list})"),
    "try": ("。试试：{text}", ". Try: '{text}'"),
    "verb_fix": ("{thing}用“{verb}”：{verb}{thing}", "'{thing}' goes with '{verb}': {verb} {thing}"),
    "verb_dangling": ("“{word}”后面要跟一样东西，比如 {example}，这次没用上",
                      "'{word}' needs a thing after it, such as '{example}', so it was left out"),
}


def _say(lang: str, code: str, **values: Any) -> str:
    zh, en = _MESSAGES[code]
    return (zh if lang == "zh" else en).format(**values)


def _quote(words: list[str], lang: str) -> str:
    return "、".join(f"“{w}”" for w in words) if lang == "zh" else ", ".join(f"'{w}'" for w in words)


# --- words ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Token:
    word: str  # as typed (normalised, case kept)
    start: int
    end: int
    entry: Entry | None  # None: unknown word


def _tokenize(text: str, display: str, vocab: Vocabulary) -> list[_Token]:
    """Split normalised text into vocabulary words; unmatched stretches become unknown tokens.
    `display` is the same text before lower-casing: messages quote the word as the child wrote it."""
    return [_Token(display[t.start:t.end], t.start, t.end, t.entry) for t in _split(text, vocab)]


def _split(text: str, vocab: Vocabulary) -> list[_Token]:
    tokens: list[_Token] = []
    english: list[tuple[int, int]] = []
    for m in re.finditer(r"\S+", text):
        if _ASCII_WORD.match(m.group()):
            english.append(m.span())
            continue
        tokens += _match_english(text, english, vocab)
        english = []
        tokens += _match_chinese(text, m.start(), m.end(), vocab)
    return tokens + _match_english(text, english, vocab)


def _match_english(text: str, spans: list[tuple[int, int]], vocab: Vocabulary) -> list[_Token]:
    """Longest phrase first, so 'ice cream' and 'teddy bear' win over 'ice' and 'bear'."""
    tokens, i = [], 0
    while i < len(spans):
        for k in range(min(vocab.max_en_tokens, len(spans) - i), 0, -1):
            phrase = " ".join(text[s:e] for s, e in spans[i:i + k])
            entry = vocab.lookup(phrase) or (_singular(phrase, vocab) if k == 1 else None)
            if entry is not None:
                tokens.append(_Token(text[spans[i][0]:spans[i + k - 1][1]], spans[i][0], spans[i + k - 1][1], entry))
                i += k
                break
        else:
            tokens.append(_Token(text[spans[i][0]:spans[i][1]], *spans[i], None))
            i += 1
    return tokens


def _singular(word: str, vocab: Vocabulary) -> Entry | None:
    """Regular English plurals the vocabulary did not list."""
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            entry = vocab.lookup(word[: -len(suffix)] + repl)
            if entry is not None:
                return entry
    return None


def _match_chinese(text: str, start: int, end: int, vocab: Vocabulary) -> list[_Token]:
    """Segment one chunk so that known words cover as much of it as possible, then with as few
    words as possible (a match may not cut an ASCII word or number in two).

    Greedy longest match would read 吃草莓 as 吃草 (grazing) + 莓 and refuse a good prompt; this
    finds 吃 + 草莓. Unmatched characters become unknown tokens (one per stretch).
    """
    n = end - start
    # best[k]: (unknown characters, words) for text[start:start+k], and the step that got there.
    best: list[tuple[int, int] | None] = [None] * (n + 1)
    back: list[tuple[int, Entry | None]] = [(0, None)] * (n + 1)
    best[0] = (0, 0)
    for k in range(n):
        if best[k] is None:
            continue
        unknown, words = best[k]
        i = start + k
        candidates: list[tuple[int, Entry | None, tuple[int, int]]] = [(k + 1, None, (unknown + 1, words + 1))]
        if not _inside_ascii(text, i, start, end):
            for j in range(i + 1, min(end, i + vocab.max_zh_len) + 1):
                if _inside_ascii(text, j, start, end):
                    continue
                entry = vocab.lookup(text[i:j])
                if entry is not None:
                    candidates.append((j - start, entry, (unknown, words + 1)))
        for nk, entry, cost in candidates:
            if best[nk] is None or cost < best[nk]:
                best[nk] = cost
                back[nk] = (k, entry)
    pieces: list[tuple[int, int, Entry | None]] = []
    k = n
    while k > 0:
        prev, entry = back[k]
        pieces.append((start + prev, start + k, entry))
        k = prev
    tokens: list[_Token] = []
    for i, j, entry in reversed(pieces):
        if entry is None and tokens and tokens[-1].entry is None and tokens[-1].end == i:
            last = tokens.pop()
            i = last.start
        tokens.append(_Token(text[i:j], i, j, entry))
    return tokens


def _whole_word(index: int, tokens: list[_Token]) -> tuple[int, int]:
    """The token range to name for an unknown word: the unknown stretch plus a one-character noun
    stuck to it ('雨' + '衣' -> '雨衣'), so the message names the word the child wrote rather than
    the part the longest match left over."""
    first = last = index
    if index and _glued(tokens[index - 1], tokens[index]):
        first -= 1
    if index + 1 < len(tokens) and _glued(tokens[index], tokens[index + 1]):
        last += 1
    return first, last


def _glued(left: _Token, right: _Token) -> bool:
    noun = right if left.entry is None else left
    return (left.end == right.start and noun.entry is not None and len(noun.word) == 1 and not noun.word.isascii()
            and noun.entry.category in ("animal", "item", "place", "expression"))


def _inside_ascii(text: str, i: int, start: int, end: int) -> bool:
    return start < i < end and _is_ascii_alnum(text[i - 1]) and _is_ascii_alnum(text[i])


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


# --- the parser ----------------------------------------------------------------------------------

@dataclass
class _Problem:
    code: str
    message: str
    words: tuple[str, ...] = ()
    suggestions: Callable[[], list[str]] | list[str] = field(default_factory=list)
    droppable: bool = False


class _Parser:
    """One parse: the state is small, but keeping it on an object keeps each rule a short method."""

    def __init__(self, rules: PromptRules, vocab: Vocabulary) -> None:
        self.rules = rules
        self.vocab = vocab
        self.lang = "zh"
        self.problems: list[_Problem] = []
        self.notices: list[str] = []
        self.animals: dict[str, int] = {}
        self.features: dict[str, str | None] = {}
        self.places: list[Entry] = []
        self.lights: list[Entry] = []
        self.expressions: list[Entry] = []
        self.pending: dict[str, _Token] = {}  # count / verb / colour waiting for their word
        self.concepts: list[_Token] = []  # concept tokens so far, to see what a count or colour touches

    # entry point

    def parse(self, text: str) -> Prompt:
        if len(text) > self.rules.max_input_chars:
            self.lang = _lang(normalize(text[: self.rules.max_input_chars]))
            self._refuse("too_long", max=self._max_chars(), n=len(text))
        display = _clean(text)
        normalized = display.translate(_ASCII_UPPER)
        self.lang = _lang(normalized)
        self._check_characters(normalized)
        tokens = _tokenize(normalized, display, self.vocab)
        self._check_length(normalized, tokens)
        tokens = self._rewrite(tokens)
        for index in range(len(tokens)):
            self._feed(index, tokens)
        self._finish()
        prompt = self._build(text, normalized)
        if self.problems:
            self._raise(prompt)
        return prompt

    def _max_chars(self) -> int:
        return self.rules.max_chars if self.lang == "zh" else self.rules.max_chars_en

    def _check_characters(self, normalized: str) -> None:
        if not normalized:
            self._refuse("empty", suggestions=self._examples("animal"))
        bad = list(dict.fromkeys(_NOT_ALLOWED.findall(normalized)))
        if bad:
            self._refuse("bad_char", word="".join(bad[:3]), words=tuple(bad))

    def _check_length(self, normalized: str, tokens: list[_Token]) -> None:
        n = len(normalized.replace(" ", "")) if self.lang == "zh" else len(normalized)
        if n > self._max_chars():
            # Shortening alone may not help (the seed's '...写实风格，8K'): name the words that would
            # be refused anyway.
            bad = [t.word for t in tokens if t.entry is None or t.entry.category == "refuse"]
            also = _say(self.lang, "also", list=_quote(bad, self.lang)) if bad else ""
            raise PromptError(_say(self.lang, "too_long", max=self._max_chars(), n=n) + also, code="too_long",
                              lang=self.lang, word=bad[0] if bad else None, words=tuple(bad))
        if len(normalized.replace(" ", "")) < self.rules.min_chars:
            self._refuse("too_short", min=self.rules.min_chars)

    def _refuse(self, code: str, word: str | None = None, words: tuple[str, ...] = (),
                suggestions: list[str] | None = None, **values: Any) -> None:
        raise PromptError(_say(self.lang, code, word=word, **values), code=code, lang=self.lang, word=word,
                          words=words, suggestions=suggestions)

    # rewrites

    def _rewrite(self, tokens: list[_Token]) -> list[_Token]:
        out = []
        for token in tokens:
            entry = token.entry
            if entry is None or entry.category != "rewrite":
                out.append(token)
                continue
            targets = [self.vocab.lookup(w) for w in entry.to]
            out += [_Token(token.word, token.start, token.end, t) for t in targets]
            self.notices.append(entry.reason[self.lang].format(word=token.word))
        return out

    # one token at a time

    def _feed(self, index: int, tokens: list[_Token]) -> None:
        token = tokens[index]
        entry = token.entry
        if entry is None:
            self._unknown(index, tokens)
            return
        handler = {
            "count": self._count, "verb": self._verb, "colour": self._colour, "animal": self._animal,
            "item": self._item, "place": self._place, "light": self._light, "expression": self._expression,
            "refuse": self._refused,
        }.get(entry.category)
        if handler is not None:
            handler(token, entry)
        if entry.category in CONCEPTS:
            self.concepts.append(token)

    def _unknown(self, index: int, tokens: list[_Token]) -> None:
        first, last = _whole_word(index, tokens)
        word = "".join(t.word for t in tokens[first:last + 1])
        if word[0].isdigit():
            self._problem("number", word=word, suggestions=self._examples("count"))
            return
        before = tokens[first - 1] if first else None
        after = tokens[last + 1] if last + 1 < len(tokens) else None
        guess = self._guess_category(word, before, after, tokens)
        self._problem("unknown", word=word, suggestions=lambda: self._suggest(word, guess))

    def _refused(self, token: _Token, entry: Entry) -> None:
        suggestions = [self.vocab.get(i).word(self.lang) for i in entry.suggest]
        self.problems.append(_Problem("refused", entry.reason[self.lang].format(word=token.word), (token.word,),
                                      suggestions, droppable=entry.drop))

    def _count(self, token: _Token, entry: Entry) -> None:
        self._drop_pending("count")
        self.pending["count"] = token

    def _verb(self, token: _Token, entry: Entry) -> None:
        self._drop_pending("verb")
        self.pending["verb"] = token

    def _colour(self, token: _Token, entry: Entry) -> None:
        earlier = self.pending.get("colour")
        if earlier is not None:
            self._problem("two_colours", words=(earlier.word, token.word), a=earlier.word, b=token.word,
                          suggestions=[earlier.entry.word(self.lang), entry.word(self.lang)])
        self.pending["colour"] = token

    def _animal(self, token: _Token, entry: Entry) -> None:
        count = self.pending.pop("count", None)
        self._natural_colour(entry, "colour_animal")
        self._drop_pending("verb")
        self.animals[entry.id] = self.animals.get(entry.id, 0) + (count.entry.n if count else 1)

    def _item(self, token: _Token, entry: Entry) -> None:
        count = self._count_for_thing()
        if count is not None and (count.entry.n or 1) > 1:
            self._problem("item_count", word=count.word, thing=entry.word(self.lang),
                          suggestions=[entry.word(self.lang)])
        colour = self._item_colour(entry)
        verb = self.pending.pop("verb", None)
        if verb is not None and not self._fits(verb.entry, entry):
            self._notice_verb(entry)
        earlier = self.features.get(entry.id)
        if earlier and colour and earlier != colour:
            a, b = (self.vocab.get(c).word(self.lang) for c in (earlier, colour))
            self._problem("two_colours", words=(token.word,), a=a, b=b, suggestions=[a, b])
        self.features[entry.id] = colour or earlier

    def _place(self, token: _Token, entry: Entry) -> None:
        self._count_for_thing()  # "三颗星星": a place is drawn as it is
        self._natural_colour(entry, "colour_fixed")
        self._drop_pending("verb")
        self._one_of(self.places, entry, "two_places")

    def _light(self, token: _Token, entry: Entry) -> None:
        self._drop_pending("colour", "verb")
        self._one_of(self.lights, entry, "two_lights")

    def _expression(self, token: _Token, entry: Entry) -> None:
        self._drop_pending("colour", "verb")
        self._one_of(self.expressions, entry, "two_expressions")

    # the rules behind the handlers

    def _count_for_thing(self) -> _Token | None:
        """A count right before a thing counts the thing ('两个气球', '两个红气球'); one further back
        waits for its animal ('两只戴帽子的小猫')."""
        count = self.pending.get("count")
        recent = self.concepts[-2:]
        if count is None or not recent:
            return None
        if recent[-1] is count or (len(recent) == 2 and recent[0] is count and recent[1].entry.category == "colour"):
            return self.pending.pop("count")
        return None

    def _item_colour(self, item: Entry) -> str | None:
        colour = self.pending.pop("colour", None)
        if colour is None:
            return None
        if item.recolour:
            return colour.entry.id
        if colour.entry.id not in item.natural:
            self._problem("colour_fixed", word=colour.word, thing=item.word(self.lang),
                          suggestions=[item.word(self.lang)])
        return None

    def _natural_colour(self, entry: Entry, code: str) -> None:
        """A colour the thing already has is fine ('粉色的小猪'); any other would draw something else."""
        colour = self.pending.pop("colour", None)
        if colour is not None and colour.entry.id not in entry.natural:
            self._problem(code, word=colour.word, thing=entry.word(self.lang), suggestions=[entry.word(self.lang)])

    def _fits(self, verb: Entry, item: Entry) -> bool:
        """Chinese verbs must be the item's own (穿帽子 is corrected to 戴帽子); English verbs are
        coarser (one 'wearing' for 戴/穿/系/围), so they fit by sense."""
        if verb.fits_any or verb.id in item.verbs:
            return True
        return self.lang == "en" and verb.gloss in {self.vocab.get(v).gloss for v in item.verbs}

    def _notice_verb(self, item: Entry) -> None:
        verb = self.vocab.canonical_verb(item)
        verb_word = verb.zh_word if self.lang == "zh" else verb.gloss
        self.notices.append(_say(self.lang, "verb_fix", thing=item.word(self.lang), verb=verb_word))

    def _one_of(self, chosen: list[Entry], entry: Entry, code: str) -> None:
        if chosen and chosen[0].id != entry.id:
            a, b = chosen[0].word(self.lang), entry.word(self.lang)
            self._problem(code, words=(b,), a=a, b=b, suggestions=[a, b])
        elif not chosen:
            chosen.append(entry)

    def _drop_pending(self, *kinds: str) -> None:
        """A count, verb or colour whose word never came."""
        for kind in kinds:
            token = self.pending.pop(kind, None)
            if token is None:
                continue
            if kind == "count":
                if token.entry.n != 1:  # a stray 'a' / '一个' ('bear with a smile') changes nothing
                    self._problem("count_dangling", word=token.word, suggestions=self._examples("animal"))
            elif kind == "colour":
                self._problem("colour_dangling", word=token.word, suggestions=self._examples("item", recolour=True))
            elif not token.entry.alone:
                example = self._verb_example(token.entry)
                self.notices.append(_say(self.lang, "verb_dangling", word=token.word, example=example))

    def _verb_example(self, verb: Entry) -> str:
        item = next((e for e in self.vocab.entries("item") if verb.id in e.verbs), None)
        if item is None:
            return verb.word(self.lang)
        return f"{verb.zh_word}{item.zh_word}" if self.lang == "zh" else f"{verb.gloss} {item.en_word}"

    def _finish(self) -> None:
        colour = self.pending.get("colour")
        before = self.concepts[-2] if len(self.concepts) > 1 else None
        if (colour is not None and self.concepts[-1] is colour and before is not None
                and before.entry.category == "item" and not self.features.get(before.entry.id)):
            self.features[before.entry.id] = self._item_colour(before.entry)  # "裤子是蓝色的": after its item
        self._drop_pending("count", "colour", "verb")
        self._check_totals()

    def _check_totals(self) -> None:
        n = sum(self.animals.values())
        unsayable = any(c > 1 and self.vocab.count_entry(c) is None for c in self.animals.values())
        if n > self.rules.max_animals or unsayable:
            self._problem("too_many_animals", max=self.rules.max_animals, n=n)
        if len(self.features) > self.rules.max_features:
            names = [self.vocab.get(i).word(self.lang) for i in self.features]
            self._problem("too_many_features", words=tuple(names), max=self.rules.max_features, n=len(names),
                          list=_quote(names, self.lang), suggestions=names)
        self._check_slots()
        if not self.animals and not self.problems:
            self._problem("no_animal", suggestions=self._examples("animal"))

    def _check_slots(self) -> None:
        by_slot: dict[str, list[Entry]] = {}
        for item_id in self.features:
            item = self.vocab.get(item_id)
            by_slot.setdefault(item.slot or "", []).append(item)
        for name, items in by_slot.items():
            slot = self.vocab.slots.get(name)
            if slot is not None and len(items) > slot.max:
                a, b = items[0].word(self.lang), items[1].word(self.lang)
                self._problem("slot_conflict", words=(b,), a=a, b=b, slot=slot.zh if self.lang == "zh" else slot.en,
                              suggestions=[a, b])

    # problems and suggestions

    def _problem(self, code: str, word: str | None = None, words: tuple[str, ...] = (),
                 suggestions: Callable[[], list[str]] | list[str] | None = None, **values: Any) -> None:
        # An unknown word's message quotes its suggestions, which cost a search: both are made in
        # _raise, and only for the problem that is shown.
        message = "" if code == "unknown" else _say(self.lang, code, word=word, **values)
        self.problems.append(_Problem(code, message, words or ((word,) if word else ()), suggestions or []))

    def _raise(self, candidate: Prompt) -> None:
        first = self.problems[0]
        suggestions = first.suggestions() if callable(first.suggestions) else list(first.suggestions)
        message = first.message
        if first.code == "unknown":
            message = _say(self.lang, "unknown", word=first.words[0], examples=_quote(suggestions, self.lang))
        if all(p.droppable for p in self.problems) and candidate.animals:
            # style words and the like: the rest of the prompt is fine without them
            suggestions = [candidate.understood]
            message += _say(self.lang, "try", text=candidate.understood)
        words = tuple(dict.fromkeys(w for p in self.problems for w in p.words))
        others = [w for w in words if w not in first.words]
        if others:
            message += _say(self.lang, "also", list=_quote(others, self.lang))
        raise PromptError(message, code=first.code, lang=self.lang, word=first.words[0] if first.words else None,
                          words=words, suggestions=suggestions[: max(1, self.rules.max_suggestions)])

    def _guess_category(self, word: str, before: _Token | None, after: _Token | None,
                        tokens: list[_Token]) -> str | None:
        """Which kind of word the child probably meant, to suggest look-alikes of the same kind."""
        kind = before.entry.category if before is not None and before.entry is not None else None
        if kind in ("verb", "colour"):
            return "item"
        if kind == "count":
            return "animal"
        if (before is not None and before.word.lower() in _PLACE_BEFORE) or word[-1] in _LOCATIVE or \
                (after is not None and after.word[0] in _LOCATIVE):
            return "place"
        if not any(t.entry is not None and t.entry.category == "animal" for t in tokens):
            return "animal"
        return None

    def _suggest(self, word: str, category: str | None) -> list[str]:
        """Known words that look most like `word` (shared characters, then order), same kind first."""
        categories = (category,) if category else ("animal", "item", "place", "colour", "light", "expression")
        ascii_word = word.isascii()
        scored: list[tuple[float, int, Entry]] = []
        for entry in (e for c in categories for e in self.vocab.entries(c)):
            forms = entry.en if ascii_word else entry.zh
            best = max((difflib.SequenceMatcher(None, word, f).ratio() for f in forms), default=0.0)
            if best > 0:
                scored.append((-best, entry.order, entry))
        scored.sort(key=lambda s: (s[0], s[1]))
        found = [e.word(self.lang) for _, _, e in scored[: self.rules.max_suggestions]]
        if not found and category is not None:
            return self._suggest(word, None)
        return found or self._examples(category or "animal")

    def _examples(self, category: str, recolour: bool = False) -> list[str]:
        entries = [e for e in self.vocab.entries(category) if e.recolour or not recolour]
        return [e.word(self.lang) for e in entries[: max(1, self.rules.max_suggestions)]]

    # the result

    def _build(self, original: str, normalized: str) -> Prompt:
        animals = tuple(sorted(self.animals.items(), key=lambda a: self.vocab.get(a[0]).order))
        features = tuple(sorted(self.features.items(), key=lambda f: self.vocab.get(f[0]).order))
        one = {name: (chosen[0].id if chosen else None)
               for name, chosen in (("place", self.places), ("light", self.lights), ("expression", self.expressions))}
        encoder_text = " ".join(self._words(animals, features, one, "zh"))
        understood = encoder_text if self.lang == "zh" else ", ".join(self._words(animals, features, one, "en"))
        return Prompt(original=original, normalized=normalized, lang=self.lang, animals=animals, features=features,
                      place=one["place"], expression=one["expression"], light=one["light"],
                      notices=tuple(dict.fromkeys(self.notices)), encoder_text=encoder_text, key=encoder_text,
                      understood=understood)

    def _words(self, animals, features, one: dict[str, str | None], lang: str) -> list[str]:
        """Concepts in the canonical order: count+animal, verb colour item, place, light, expression.
        Chinese gives one word per concept part (the encoder text); English one phrase per concept."""
        get = self.vocab.get
        parts: list[str] = []
        for animal_id, n in animals:
            count = self.vocab.count_entry(n)
            if lang == "zh":
                parts += ([count.zh_word] if n > 1 and count else []) + [get(animal_id).zh_word]
            else:
                parts.append(get(animal_id).en_word + (f" x{n}" if n > 1 else ""))
        for item_id, colour in features:
            item = get(item_id)
            verb = self.vocab.canonical_verb(item)
            if lang == "zh":
                parts += [verb.zh_word] + ([get(colour).zh_word] if colour else []) + [item.zh_word]
            else:
                parts.append(" ".join([verb.gloss] + ([get(colour).en_word] if colour else []) + [item.en_word]))
        for name in ("place", "light", "expression"):
            if one[name]:
                parts.append(get(one[name]).word(lang))
        return parts
