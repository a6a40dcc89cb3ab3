"""The shipped vocabulary (`cutecpp/data/vocab.json`): loader, validation and the lookups the
prompt rules need.

One file feeds the prompt rules, `cutecpp words`, the dataset maker and the text-encoder pruning
tool, so a word a child may type, a caption the model was trained on and a token the pruned
encoder keeps can never drift apart. The file is meant to be edited by hand; that is why loading
checks everything (unknown categories and fields, duplicate or empty words, missing canonical
words, dangling references) and says exactly where the problem is.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import CutecppError

FORMAT = "cutecpp-vocabulary"
FORMAT_VERSION = 1

#: Every category, in the order `cutecpp words` shows them.
CATEGORIES = ("animal", "item", "verb", "colour", "count", "place", "light", "expression",
              "filler", "refuse", "rewrite")
#: Categories whose canonical Chinese word can reach the text encoder.
CONCEPTS = ("animal", "item", "verb", "colour", "count", "place", "light", "expression")
#: Categories the dataset maker draws (each needs an emoji).
DRAWN = ("animal", "item", "place", "light", "expression")

SHAPES = ("head", "body")
LAYOUTS = ("ground", "behind", "over", "around", "corner")

#: The vocabulary shipped in the package (next to the default model, as info.py finds it).
SHIPPED = Path(__file__).resolve().parent / "data" / "vocab.json"

_TOP_KEYS = frozenset({"format", "format_version", "licence", "about", "slots", *CATEGORIES})
_COMMON = frozenset({"id", "zh", "en"})
_FIELDS: dict[str, frozenset[str]] = {
    "animal": _COMMON | {"emoji", "also", "shape", "natural"},
    "item": _COMMON | {"emoji", "also", "slot", "verbs", "recolour", "base", "natural"},
    "verb": _COMMON | {"gloss", "alone", "any"},
    "colour": _COMMON | {"rgb"},
    "count": _COMMON | {"n"},
    "place": _COMMON | {"emoji", "also", "layout", "natural"},
    "light": _COMMON | {"emoji", "background"},
    "expression": _COMMON | {"emoji", "draw", "overlay"},
    "filler": _COMMON,
    "refuse": _COMMON | {"reason", "drop", "suggest"},
    "rewrite": _COMMON | {"reason", "to"},
}

_ID = re.compile(r"[a-z][a-z0-9_]*\Z")
# Words are stored exactly as `prompt.normalize` leaves them, so lookups need no second pass.
# CJK unified ideographs (and extension A) are unchanged by NFKC; compatibility ideographs are not.
_HAN = "\u3400-\u4dbf\u4e00-\u9fff"
_ZH_WORD = re.compile(f"[{_HAN}0-9a-z]*[{_HAN}][{_HAN}0-9a-z]*\\Z")
_EN_WORD = re.compile(r"[a-z0-9]+( [a-z0-9]+)*\Z")
_RGB = re.compile(r"#[0-9a-f]{6}\Z")


class VocabularyError(CutecppError, ValueError):
    """A vocabulary file that cannot be used, with the file, the entry and the reason."""

    status = 1


@dataclass(frozen=True)
class Slot:
    """Where a worn or held item goes, and how many items fit there."""

    name: str
    zh: str
    en: str
    max: int


@dataclass(frozen=True)
class Entry:
    """One vocabulary entry. The first `zh` / `en` word is canonical; `hints` keeps the
    dataset maker's fields (shape, layout, rgb, background, draw, overlay) as written."""

    id: str
    category: str
    zh: tuple[str, ...]
    en: tuple[str, ...]
    order: int
    emoji: str = ""
    also: tuple[str, ...] = ()
    slot: str | None = None
    verbs: tuple[str, ...] = ()
    recolour: bool = False
    base: str | None = None
    natural: tuple[str, ...] = ()
    gloss: str | None = None
    alone: bool = False
    fits_any: bool = False
    n: int | None = None
    reason: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False
    suggest: tuple[str, ...] = ()
    to: tuple[str, ...] = ()
    hints: Mapping[str, Any] = field(default_factory=dict)

    @property
    def zh_word(self) -> str:
        """The canonical Chinese word ('' where the entry has none)."""
        return self.zh[0] if self.zh else ""

    @property
    def en_word(self) -> str:
        """The canonical English word ('' where the entry has none)."""
        return self.en[0] if self.en else ""

    def word(self, lang: str) -> str:
        """The canonical word for messages in `lang`, falling back to the other language."""
        first, second = (self.zh_word, self.en_word) if lang == "zh" else (self.en_word, self.zh_word)
        return first or second or self.id

    def as_dict(self) -> dict[str, Any]:
        """The entry as the file spells it (for `cutecpp words --json`)."""
        out: dict[str, Any] = {"id": self.id, "category": self.category, "zh": list(self.zh), "en": list(self.en)}
        optional = {
            "emoji": self.emoji, "also": list(self.also), "slot": self.slot, "verbs": list(self.verbs),
            "base": self.base, "natural": list(self.natural), "gloss": self.gloss, "n": self.n,
            "reason": dict(self.reason), "suggest": list(self.suggest), "to": list(self.to),
        }
        out.update({k: v for k, v in optional.items() if v})
        if self.category == "item":
            out["recolour"] = self.recolour
        for flag, value in (("alone", self.alone), ("any", self.fits_any), ("drop", self.drop)):
            if value:
                out[flag] = True
        out.update(self.hints)
        return out


class Vocabulary:
    """A validated vocabulary and its word index. Build with `from_file`, `from_dict` or
    `load_vocabulary()` (the shipped one, loaded once)."""

    def __init__(self, data: Any, source: str = "<vocabulary>") -> None:
        self.source = source
        _check_header(data, source)
        self.version: int = data["format_version"]
        self.licence: str = str(data.get("licence", ""))
        about = data.get("about", "")
        self.about: str = " ".join(about) if isinstance(about, list) else str(about)
        self.slots: Mapping[str, Slot] = MappingProxyType(_read_slots(data.get("slots", {}), source))
        entries: list[Entry] = []
        for category in CATEGORIES:
            entries.extend(_read_category(data, category, len(entries), source))
        self._entries = tuple(entries)
        self._by_id = _index_ids(entries, source)
        self._words = _index_words(entries, source)
        _check_references(self, source)
        self.max_zh_len = max((len(w) for w in self._words if " " not in w), default=1)
        self.max_en_tokens = max((w.count(" ") + 1 for w in self._words), default=1)

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        """Load and validate a vocabulary file (UTF-8 JSON)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise VocabularyError(f"{path}: cannot read the vocabulary ({exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}, column {exc.colno}"
            raise VocabularyError(f"{path}: not valid JSON ({where}: {exc.msg})") from None
        return cls(data, str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> Vocabulary:
        return cls(data, source)

    def entries(self, category: str | None = None) -> tuple[Entry, ...]:
        """Entries in file order, all or one category's."""
        if category is None:
            return self._entries
        if category not in CATEGORIES:
            raise KeyError(f"unknown category {category!r} (known: {', '.join(CATEGORIES)})")
        return tuple(e for e in self._entries if e.category == category)

    def get(self, entry_id: str) -> Entry:
        """The entry with this id (KeyError if none)."""
        return self._by_id[entry_id]

    def lookup(self, word: str) -> Entry | None:
        """The entry a normalised word belongs to, or None."""
        return self._words.get(word)

    def words(self) -> Mapping[str, Entry]:
        """Every known word (Chinese words and English phrases) -> its entry."""
        return MappingProxyType(self._words)

    def canonical_verb(self, item: Entry) -> Entry:
        """The verb written before `item` in encoder text: the first of its verbs."""
        return self._by_id[item.verbs[0]]

    def count_entry(self, n: int) -> Entry | None:
        return next((e for e in self.entries("count") if e.n == n), None)

    def encoder_words(self) -> list[str]:
        """Every canonical Chinese word an encoder_text can contain, sorted.

        Exact by construction: these are the words `Prompt.encoder_text` is assembled from, so the
        text-encoder pruning tool can keep only the tokens they need."""
        items = self.entries("item")
        words = {e.zh_word for c in ("animal", "place", "light", "expression") for e in self.entries(c)}
        words.update(e.zh_word for e in items)
        words.update(self.canonical_verb(e).zh_word for e in items)
        if any(e.recolour for e in items):
            words.update(e.zh_word for e in self.entries("colour"))
        words.update(e.zh_word for e in self.entries("count") if e.n != 1)
        return sorted(words)

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}={len(self.entries(c))}" for c in CATEGORIES)
        return f"Vocabulary({self.source!r}, {counts})"


def verifier_label(entry: Entry) -> str:
    """The name a verifier (tools/verifier.py, a bundle's cutecpp.verifier.labels) gives an entry: 'animal:bear'."""
    return f"{entry.category}:{entry.id}"


@functools.cache
def load_vocabulary() -> Vocabulary:
    """The vocabulary shipped in the package, loaded and validated once per process."""
    return Vocabulary.from_file(SHIPPED)


# --- reading -------------------------------------------------------------------------------------

def _fail(source: str, where: str, what: str) -> VocabularyError:
    return VocabularyError(f"{source}: {where}: {what}" if where else f"{source}: {what}")


def _check_header(data: Any, source: str) -> None:
    if not isinstance(data, dict):
        raise _fail(source, "", "the vocabulary must be a JSON object")
    if data.get("format") != FORMAT:
        raise _fail(source, "", f"'format' must be {FORMAT!r}, not {data.get('format')!r}")
    version = data.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise _fail(source, "", f"unsupported format_version {version!r} (this cutecpp reads {FORMAT_VERSION})")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise _fail(source, "", f"unknown category {unknown[0]!r} (known: {', '.join(CATEGORIES)})")


def _read_slots(raw: Any, source: str) -> dict[str, Slot]:
    if not isinstance(raw, dict):
        raise _fail(source, "slots", "must be an object of slot name -> {zh, en, max}")
    slots = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("max"), int) or spec["max"] < 1:
            raise _fail(source, f"slot {name!r}", "needs zh, en and max (a positive integer)")
        slots[name] = Slot(name, str(spec.get("zh", name)), str(spec.get("en", name)), spec["max"])
    return slots


def _read_category(data: dict, category: str, start: int, source: str) -> list[Entry]:
    raw = data.get(category, [])
    if not isinstance(raw, list):
        raise _fail(source, category, "must be a list of entries")
    return [_read_entry(item, category, start + i, source) for i, item in enumerate(raw)]


def _read_entry(raw: Any, category: str, order: int, source: str) -> Entry:
    where = f"{category} #{order + 1}"
    if not isinstance(raw, dict):
        raise _fail(source, where, "an entry must be an object")
    entry_id = raw.get("id")
    if not isinstance(entry_id, str) or not _ID.match(entry_id):
        raise _fail(source, where, f"'id' must be lower-case ASCII (letters, digits, _), not {entry_id!r}")
    where = f"{category} {entry_id!r}"
    unknown = sorted(set(raw) - _FIELDS[category])
    if unknown:
        raise _fail(source, where, f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_FIELDS[category]))})")
    zh = _words(raw, "zh", _ZH_WORD, "Chinese characters (digits and a-z allowed alongside)", source, where)
    en = _words(raw, "en", _EN_WORD, "lower-case ASCII words separated by single spaces", source, where)
    _check_canonical(category, zh, en, source, where)
    fields = _typed_fields(raw, category, source, where)
    hints = {k: v for k, v in raw.items() if k in ("shape", "layout", "rgb", "background", "draw", "overlay")}
    return Entry(id=entry_id, category=category, zh=zh, en=en, order=order, hints=MappingProxyType(hints), **fields)


def _words(raw: dict, key: str, pattern: re.Pattern, rule: str, source: str, where: str) -> tuple[str, ...]:
    words = raw.get(key, [])
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise _fail(source, where, f"'{key}' must be a list of words")
    for word in words:
        if not word.strip():
            raise _fail(source, where, f"empty word in '{key}'")
        if not pattern.match(word):
            raise _fail(source, where, f"'{key}' word {word!r} must be {rule}")
    return tuple(words)


def _check_canonical(category: str, zh: tuple, en: tuple, source: str, where: str) -> None:
    if category in DRAWN or category == "colour":
        needed = ("zh", "en")
    elif category in ("verb", "count"):
        needed = ("zh",)
    else:
        needed = ()
    for key, words in (("zh", zh), ("en", en)):
        if key in needed and not words:
            raise _fail(source, where, f"canonical word missing: '{key}' needs at least one word")
    if not zh and not en:
        raise _fail(source, where, "no words at all")


def _typed_fields(raw: dict, category: str, source: str, where: str) -> dict[str, Any]:
    def text(key: str, required: bool = False) -> str | None:
        value = raw.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise _fail(source, where, f"'{key}' must be a non-empty string")
        return value

    def ids(key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(source, where, f"'{key}' must be a list of strings")
        return tuple(value)

    def flag(key: str) -> bool:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise _fail(source, where, f"'{key}' must be true or false")
        return value

    out: dict[str, Any] = {}
    if category in DRAWN:
        out["emoji"] = text("emoji", required=True)
        out["also"] = ids("also")
    if category in ("animal", "item", "place"):
        out["natural"] = ids("natural")
    if category == "animal" and raw.get("shape") not in SHAPES:
        raise _fail(source, where, f"'shape' must be one of {', '.join(SHAPES)}")
    if category == "place" and raw.get("layout") not in LAYOUTS:
        raise _fail(source, where, f"'layout' must be one of {', '.join(LAYOUTS)}")
    if category == "colour" and not _RGB.match(str(raw.get("rgb", ""))):
        raise _fail(source, where, "'rgb' must be a colour like '#e53935'")
    if category == "item":
        out.update(slot=text("slot", required=True), verbs=ids("verbs"), recolour=flag("recolour"), base=text("base"))
        if not out["verbs"]:
            raise _fail(source, where, "'verbs' needs at least one verb id (the first is canonical)")
    if category == "verb":
        out.update(gloss=text("gloss", required=True), alone=flag("alone"), fits_any=flag("any"))
    if category == "count":
        n = raw.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise _fail(source, where, "'n' must be a positive integer")
        out["n"] = n
    if category in ("refuse", "rewrite"):
        out["reason"] = _reason(raw, source, where)
    if category == "refuse":
        out.update(drop=flag("drop"), suggest=ids("suggest"))
    if category == "rewrite":
        out["to"] = ids("to")
        if not out["to"]:
            raise _fail(source, where, "'to' needs at least one word")
    return out


def _reason(raw: dict, source: str, where: str) -> Mapping[str, str]:
    reason = raw.get("reason")
    if not isinstance(reason, dict) or not all(isinstance(reason.get(k), str) and reason[k] for k in ("zh", "en")):
        raise _fail(source, where, "'reason' must give a message in both 'zh' and 'en'")
    return MappingProxyType({"zh": reason["zh"], "en": reason["en"]})


# --- indexes and cross-references ----------------------------------------------------------------

def _index_ids(entries: Iterable[Entry], source: str) -> dict[str, Entry]:
    by_id: dict[str, Entry] = {}
    for e in entries:
        if e.id in by_id:
            raise _fail(source, f"{e.category} {e.id!r}", f"id is also used by {by_id[e.id].category} {e.id!r}")
        by_id[e.id] = e
    return by_id


def _index_words(entries: Iterable[Entry], source: str) -> dict[str, Entry]:
    words: dict[str, Entry] = {}
    for e in entries:
        for word in (*e.zh, *e.en):
            other = words.get(word)
            if other is not None:
                also = "listed twice" if other is e else f"also in {other.category} {other.id!r}"
                raise _fail(source, f"{e.category} {e.id!r}", f"duplicate word {word!r} ({also})")
            words[word] = e
    return words


def _check_references(vocab: Vocabulary, source: str) -> None:
    def need(e: Entry, ref: str, categories: tuple[str, ...], what: str) -> None:
        target = vocab._by_id.get(ref)
        if target is None or target.category not in categories:
            raise _fail(source, f"{e.category} {e.id!r}", f"{what} {ref!r} is not a known {' or '.join(categories)} id")

    for e in vocab.entries():
        for ref in e.verbs:
            need(e, ref, ("verb",), "verb")
        for ref in (*e.natural, *([e.base] if e.base else [])):
            need(e, ref, ("colour",), "colour")
        for ref in e.suggest:
            need(e, ref, CONCEPTS, "suggestion")
        if e.slot is not None and e.slot not in vocab.slots:
            raise _fail(source, f"item {e.id!r}", f"slot {e.slot!r} is not in 'slots' ({', '.join(vocab.slots)})")
        for word in e.to:
            target = vocab.lookup(word)
            if target is None or target.category not in CONCEPTS or target.category == "verb":
                raise _fail(source, f"rewrite {e.id!r}", f"'to' word {word!r} is not a drawable word here")
