"""Captions for a scene, in Chinese and English, in the seed's grammar
`[animal] + [1-2 features] + [place/thing]` (+ light, + expression), the way children say them.

Every word comes from the vocabulary: synonyms of each concept, the verbs that go with each item,
counts (两只 / 2只 / 俩 / two / a pair of), colour forms (红 / 红色的 / 红红的), natural colours the
parser accepts and drops (白色的北极熊), fillers (可爱的, 在, 的, and, the). Word order varies
(place or light first, 戴红帽子的小猫, 开心的小熊) and Chinese is written with or without spaces.

Each caption is checked with `cutecpp.prompt.parse_prompt`: it must give exactly the scene's concepts
and no notices, within the prompt length limits. A variant that fails is recorded in `FAILURES` (for
`make_dataset.py stats`) and another is drawn; the plain canonical caption is the last resort, and if
even that fails the scene and the prompt rules disagree, which raises CaptionError.
"""

from __future__ import annotations

import random
from collections import Counter

from cutecpp.prompt import PromptError, PromptRules, parse_prompt
from cutecpp.vocab import Entry, Vocabulary

from .scene import Scene, prompt_concepts

RULES = PromptRules()
FAILURES: Counter = Counter()  # (lang, reason, caption) -> times; variants that did not round-trip
ATTEMPTS = 12

_ZH_COUNT_PREFERRED = {
    1: ["一只"] * 4 + ["一个", "一头", "1只", "单只"],
    2: ["两只"] * 8 + ["两个", "两头", "两条", "两匹", "2只", "二只", "俩", "一对", "2个"],
    3: ["三只"] * 8 + ["三个", "三头", "三条", "三匹", "3只", "仨", "3个"],
}
_ZH_ITEM_COUNT = ["一个", "一个", "一个", "一只"]
_ZH_ADJ = ["可爱的", "小小的", "胖胖的", "萌萌的", "毛茸茸的", "漂亮的", "乖乖的", "可爱"]
_ZH_LINK = ["和", "跟", "和", " ", "还有", "与"]
_ZH_PLACE_VERB = {"ground": ["站在", "坐在", "在"], "behind": ["在"], "over": ["在", "坐在"],
                  "around": ["在"], "corner": ["在"]}
_EN_COUNT = {2: ["two"] * 5 + ["2", "a pair of", "twin", "a couple of"], 3: ["three"] * 5 + ["3"]}
_EN_ADJ = ["cute", "little", "fluffy", "tiny", "lovely", "chubby", "adorable", "small", "baby", "pretty"]
_EN_PREP = {"ground": ["on", "on", "at", "in"], "behind": ["in front of", "near", "by", "at"],
            "over": ["under"], "around": ["in", "with", "around"], "corner": ["under", "in", "with"]}
_EN_IRREGULAR_PLURAL = {"mice", "geese", "octopi"}
_EN_BOTH = {"sheep", "fish", "deer", "moose", "reindeer", "elk", "shrimp", "squid", "tropical fish"}


# Mood words that read well before the animal as "X的小熊" (others go after the animal).
_ZH_MOOD_BEFORE_NOT = {"喜欢", "爱", "亲", "亲亲", "爱你", "比心", "爱心", "你好", "再见", "问好", "打招呼", "哈哈",
                       "大笑", "哈哈大笑", "哈哈笑", "笑哈哈", "开心地笑", "做梦", "午睡", "舞蹈", "歌唱", "困了",
                       "睡着了", "玩水", "飞来飞去", "飞起来", "跳起来", "跳高", "跳芭蕾", "赛跑"}
# English mood words that go before the noun ("a smiling bear", "a shy cat").
_EN_MOOD_ADJ = {"happy", "sleepy", "shy", "surprised", "amazed", "curious", "cheerful", "joyful", "asleep"}
# English verb forms for a feature: -ing forms of the item's own verbs, with the preposition they need.
_EN_VERB_FORM = {"playing": "playing with", "sitting": "sitting in", "skating": "skating on",
                 "looking": "looking at", "flying": "flying"}


class CaptionError(AssertionError):
    """A scene whose canonical caption does not parse back to it: the composer and the prompt rules
    disagree (a bug in one of them)."""


def _zh_words(e: Entry) -> list[str]:
    """Synonyms with the canonical word weighted up (it is also what most children say)."""
    return [e.zh[0]] * max(2, len(e.zh) // 2) + list(e.zh[1:])


_EN_SINGULAR_S = {"octopus", "rhinoceros", "hippopotamus", "glasses", "asparagus", "walrus", "bus", "grass"}


def _is_plural(w: str) -> bool:
    last = w.split()[-1]
    if last in _EN_IRREGULAR_PLURAL:
        return True
    return last.endswith("s") and not last.endswith("ss") and last not in _EN_SINGULAR_S


def _plurals(e: Entry) -> list[str]:
    words = [w for w in e.en if _is_plural(w) or w in _EN_BOTH or w.endswith("fish")]
    return words or [e.en[0] + "s"]


def _singulars(e: Entry) -> list[str]:
    words = [w for w in e.en if not _is_plural(w)]
    return words or list(e.en)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class Captioner:
    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.verbs_en: dict[str, list[str]] = {}
        for v in vocab.entries("verb"):
            self.verbs_en.setdefault(v.gloss or "", []).extend(w for w in v.en if w.endswith("ing"))

    # --- checking --------------------------------------------------------------------------------

    def check(self, text: str, scene: Scene, lang: str) -> str | None:
        """None if `text` parses to exactly the scene's concepts with no notices, else the reason."""
        limit = RULES.max_chars if lang == "zh" else RULES.max_chars_en
        n = len(text.replace(" ", "")) if lang == "zh" else len(text)
        if n > limit:
            return "too long"
        try:
            prompt = parse_prompt(text, RULES, self.vocab)
        except PromptError as exc:
            return f"refused: {exc.code}"
        if prompt.lang != lang:
            return f"read as {prompt.lang}"
        if prompt.notices:
            return f"notice: {prompt.notices[0]}"
        got = prompt_concepts(prompt)
        if got != scene.concepts():
            diff = [k for k in got if got[k] != scene.concepts()[k]]
            return f"parsed differently ({', '.join(diff)})"
        return None

    def captions(self, scene: Scene, rng: random.Random, n_zh: int = 3, n_en: int = 2) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"zh": [], "en": []}
        for lang, n, make in (("zh", n_zh, self.zh), ("en", n_en, self.en)):
            for _ in range(n):
                text = self._one(scene, rng, lang, make, out[lang])
                if text is None:
                    break
                out[lang].append(text)
        return out

    def _one(self, scene: Scene, rng: random.Random, lang: str, make, taken: list[str]) -> str | None:
        """A caption that parses back to the scene; None when even the canonical one is over the
        language's length limit (a full scene said in English can pass 100 characters: such a
        picture simply has no English caption; scenes are fitted to the Chinese limit)."""
        for attempt in range(ATTEMPTS):
            text = make(scene, rng, plain=attempt >= ATTEMPTS - 2)
            if text in taken and attempt < ATTEMPTS - 3:
                continue
            reason = self.check(text, scene, lang)
            if reason is None:
                return text
            if reason != "too long":
                FAILURES[(lang, reason, text)] += 1
        text = make(scene, rng, plain=True, canonical=True)
        reason = self.check(text, scene, lang)
        if reason == "too long" and lang == "en":
            return None
        if reason is not None:
            raise CaptionError(f"canonical caption {text!r} does not parse back to {scene.concepts()}: {reason}")
        return text

    # --- Chinese ---------------------------------------------------------------------------------

    def _zh_animals(self, scene: Scene, rng: random.Random, plain: bool, canonical: bool) -> str:
        parts = []
        groups = list(scene.animals)
        rng.shuffle(groups)
        for animal_id, n in groups:
            e = self.vocab.get(animal_id)
            word = e.zh[0] if canonical else rng.choice(_zh_words(e))
            pre = ""
            if n > 1:
                pre = "两只" if canonical and n == 2 else "三只" if canonical else rng.choice(_ZH_COUNT_PREFERRED[n])
            elif not plain and rng.random() < 0.08:
                pre = rng.choice(_ZH_COUNT_PREFERRED[1])
            adj = ""
            if not plain and rng.random() < 0.12:
                adj = rng.choice(_ZH_ADJ)
            if not plain and e.natural and rng.random() < 0.08:
                colour = self.vocab.get(rng.choice(e.natural))
                word_c = rng.choice(colour.zh)
                adj += word_c if word_c.endswith("的") else word_c + "的"
            parts.append(pre + adj + word)
        if len(parts) == 1:
            return parts[0]
        if plain:
            return " ".join(parts)
        out = parts[0]
        for p in parts[1:]:
            out += rng.choice(_ZH_LINK) + p
        return out

    def _zh_feature(self, item_id: str, colour: str | None, rng: random.Random, plain: bool, canonical: bool) -> str:
        item = self.vocab.get(item_id)
        word = item.zh[0] if canonical else rng.choice(_zh_words(item))
        verb = ""
        r = 0.0 if plain else rng.random()
        if canonical or r < 0.88:
            verb_id = item.verbs[0] if canonical or rng.random() < 0.55 else rng.choice(item.verbs)
            v = self.vocab.get(verb_id)
            verb = v.zh[0] if canonical else rng.choice(v.zh)
        elif r < 0.93:
            verb = rng.choice(self.vocab.get("dai_with").zh)
        count = rng.choice(_ZH_ITEM_COUNT) if not plain and rng.random() < 0.06 else ""
        col = ""
        if colour is not None:
            c = self.vocab.get(colour)
            col = c.zh[0] if canonical else rng.choice(c.zh)
            if not plain and not col.endswith("的") and not col.endswith("灿灿") and rng.random() < 0.25:
                col += "的"
        elif not plain and item.natural and rng.random() < 0.06:
            col = rng.choice(self.vocab.get(rng.choice(item.natural)).zh)
        return verb + count + col + word

    def zh(self, scene: Scene, rng: random.Random, plain: bool = False, canonical: bool = False) -> str:
        animals = self._zh_animals(scene, rng, plain, canonical)
        feats = [self._zh_feature(i, c, rng, plain, canonical) for i, c in scene.features]
        if not plain:
            rng.shuffle(feats)
        place = light = expr = ""
        if scene.place:
            e = self.vocab.get(scene.place)
            place = e.zh[0] if canonical else rng.choice(_zh_words(e))
            if not plain and rng.random() < 0.3:
                place = rng.choice(_ZH_PLACE_VERB[e.hints.get("layout", "behind")]) + place
        if scene.light:
            e = self.vocab.get(scene.light)
            light = e.zh[0] if canonical else rng.choice(_zh_words(e))
        if scene.expression:
            e = self.vocab.get(scene.expression)
            expr = e.zh[0] if canonical else rng.choice(_zh_words(e))
        if plain:
            return " ".join(p for p in [animals, *feats, place, light, expr] if p)
        # word order: a feature or the mood may come before the animal as a 的-phrase, place and
        # light may open the caption
        head: list[str] = []
        subject = animals
        if feats and rng.random() < 0.15:
            subject = feats.pop(0) + "的" + subject
        if expr and len(expr) > 1 and expr not in _ZH_MOOD_BEFORE_NOT and rng.random() < 0.35:
            subject = expr + "的" + subject
            expr = ""
        if light and rng.random() < 0.5:
            head.append(light)
            light = ""
        if place and rng.random() < 0.15:
            head.append(place)
            place = ""
        blocks = [*head, subject, *feats, place, light, expr]
        blocks = [b for b in blocks if b]
        sep = "" if rng.random() < 0.3 else " "
        if sep == " " and rng.random() < 0.2:
            return "，".join(blocks)
        return sep.join(blocks)

    # --- English ---------------------------------------------------------------------------------

    def _en_animals(self, scene: Scene, rng: random.Random, plain: bool, canonical: bool, mood: str = "") -> str:
        parts = []
        groups = list(scene.animals)
        rng.shuffle(groups)
        for k, (animal_id, n) in enumerate(groups):
            e = self.vocab.get(animal_id)
            adj = [mood] if mood and k == 0 else []
            if not plain and rng.random() < 0.15:
                adj.append(rng.choice(_EN_ADJ))
            if not plain and e.natural and rng.random() < 0.08:
                adj.append(self.vocab.get(rng.choice(e.natural)).en[0])
            if n == 1:
                noun = e.en[0] if canonical else rng.choice(_singulars(e))
                art = "a" if canonical or plain else rng.choice(["a", "a", "a", "one", ""])
                if art == "a":
                    art = _article((adj or [noun])[0])
            else:
                noun = _plurals(e)[0] if canonical else rng.choice(_plurals(e))
                art = ("two" if n == 2 else "three") if canonical or plain else rng.choice(_EN_COUNT[n])
            parts.append(" ".join(w for w in [art, *adj, noun] if w))
        if len(parts) == 1:
            return parts[0]
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def _en_verbs(self, item: Entry) -> list[str]:
        """English verb phrases that fit the item: its own verbs' -ing forms, else by sense."""
        own = [_EN_VERB_FORM.get(w, w) for v in item.verbs for w in self.vocab.get(v).en if w.endswith("ing")]
        if own:
            return own
        gloss = self.vocab.get(item.verbs[0]).gloss
        return {"wear": ["wearing", "wearing", "dressed in"], "hold": ["holding"]}.get(gloss or "", [])

    def _en_feature(self, item_id: str, colour: str | None, rng: random.Random, plain: bool, canonical: bool) -> str:
        item = self.vocab.get(item_id)
        word = item.en[0] if canonical else rng.choice(item.en)
        verbs = self._en_verbs(item)
        verb = "with" if canonical or plain or not verbs else rng.choice([*verbs, *verbs, "with"])
        col = ""
        if colour is not None:
            col = self.vocab.get(colour).en[0] if canonical else rng.choice(self.vocab.get(colour).en)
        elif not plain and item.natural and rng.random() < 0.06:
            col = self.vocab.get(rng.choice(item.natural)).en[0]
        art = "" if word.endswith("s") else _article(col or word)
        if not plain and not canonical and rng.random() < 0.2:
            art = ""
        return " ".join(w for w in [verb, art, col, word] if w)

    def _en_place(self, scene: Scene, rng: random.Random, plain: bool, canonical: bool) -> str:
        e = self.vocab.get(scene.place)
        words = [w for w in e.en if not (w.endswith("s") and (w[:-1] in e.en or w[:-2] in e.en))]
        word = e.en[0] if canonical else rng.choice(words)
        if plain or canonical:
            return f"at the {word}"
        prep = rng.choice(_EN_PREP[e.hints.get("layout", "behind")])
        the = "the " if rng.random() < 0.75 else ""
        return f"{prep} {the}{word}"

    def _en_light(self, scene: Scene, rng: random.Random, plain: bool, canonical: bool) -> tuple[str, str]:
        """(before the animal, after everything) for the light."""
        e = self.vocab.get(scene.light)
        word = e.en[0] if canonical else rng.choice(e.en)
        if word.startswith("night") or word in ("dusk",):
            return "", f"at {word}"
        if word == "evening":
            return "", "in the evening"
        if word in ("goodnight", "good night"):
            return "", word
        if word == "light":
            return "", "in the light"
        if word.endswith("ly"):
            word = "bright"
        if not plain and rng.random() < 0.5:
            return f"{_article(word)} {word} picture of", ""
        return "", word

    def _en_mood(self, scene: Scene, rng: random.Random, plain: bool, canonical: bool) -> tuple[str, str]:
        """(before the animal, at the end) for the expression: 'a smiling bear', '... and smiles'."""
        e = self.vocab.get(scene.expression)
        usable = []
        for w in e.en:
            if (w.endswith("ing") and len(w) > 5) or w in _EN_MOOD_ADJ or " " in w:
                usable.append(w)
            elif w in ("hearts", "love", "kisses", "wings"):
                usable.append("with " + w)
            elif w.endswith("s") and not w.endswith("ss"):
                usable.append("and " + w)
        word = (usable or [e.en[0]])[0] if canonical else rng.choice(usable or [e.en[0]])
        before = " " not in word and word != "asleep"
        if not plain and not canonical and before and rng.random() < 0.5:
            return word, ""
        return "", word

    def en(self, scene: Scene, rng: random.Random, plain: bool = False, canonical: bool = False) -> str:
        mood, tail_mood = self._en_mood(scene, rng, plain, canonical) if scene.expression else ("", "")
        animals = self._en_animals(scene, rng, plain, canonical, mood)
        feats = [self._en_feature(i, c, rng, plain, canonical) for i, c in scene.features]
        if not plain:
            rng.shuffle(feats)
        if len(feats) == 2 and not plain and rng.random() < 0.5:
            feats[1] = "and " + feats[1]
        place = self._en_place(scene, rng, plain, canonical) if scene.place else ""
        light_pre, light_post = self._en_light(scene, rng, plain, canonical) if scene.light else ("", "")
        if place and not plain and rng.random() < 0.12:
            words = [place[0].upper() + place[1:] + ",", light_pre, animals, *feats, light_post, tail_mood]
        else:
            words = [light_pre, animals, *feats, place, light_post, tail_mood]
        return " ".join(w for w in words if w)
