"""Funnel interface and the minimal keyword stage (normalise, then whole-word match)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import ahocorasick


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """What the funnel needs from one policy (its front matter's `funnel:` block)."""

    id: str
    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    exemplars: tuple[str, ...] = ()
    threshold: float = 0.5
    very_sure: float = 0.95


@dataclass(frozen=True, slots=True)
class FunnelResult:
    """Per post: which policies it is a candidate for, the scores, and the signals that fired."""

    candidates: list[str]
    scores: dict[str, float]
    signals: dict[str, list[str]] = field(default_factory=dict)
    very_sure: list[str] = field(default_factory=list)

    @property
    def is_candidate(self) -> bool:
        return bool(self.candidates)


def normalise(text: str) -> str:
    """NFKC + casefold; whitespace collapsed. Words are then matched on ` word ` boundaries."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _word_chars(text: str) -> str:
    return "".join(ch if ch.isalnum() else " " for ch in text)


class Funnel:
    def __init__(self, policies: Sequence[PolicySpec]) -> None:
        self.policies = tuple(policies)
        self._automaton = ahocorasick.Automaton()
        terms: dict[str, list[str]] = {}
        for policy in self.policies:
            for keyword in policy.keywords:
                term = " " + " ".join(_word_chars(normalise(keyword)).split()) + " "
                terms.setdefault(term, []).append(policy.id)
        for term, owners in terms.items():
            self._automaton.add_word(term, (term.strip(), tuple(owners)))
        self._empty = not terms
        if not self._empty:
            self._automaton.make_automaton()

    @classmethod
    def build(cls, policies: Sequence[PolicySpec]) -> Funnel:
        return cls(policies)

    def score(self, text: str) -> FunnelResult:
        signals: dict[str, list[str]] = {}
        if not self._empty:
            haystack = " " + " ".join(_word_chars(normalise(text)).split()) + " "
            for _end, (term, owners) in self._automaton.iter(haystack):
                for owner in owners:
                    hits = signals.setdefault(owner, [])
                    if f"keyword:{term}" not in hits:
                        hits.append(f"keyword:{term}")
        scores = {p.id: (1.0 if p.id in signals else 0.0) for p in self.policies}
        candidates = [p.id for p in self.policies if scores[p.id] >= p.threshold and scores[p.id] > 0]
        very_sure = [p.id for p in self.policies if scores[p.id] >= p.very_sure and scores[p.id] > 0]
        return FunnelResult(candidates=candidates, scores=scores, signals=signals, very_sure=very_sure)

    def score_batch(self, texts: Sequence[str]) -> list[FunnelResult]:
        return [self.score(text) for text in texts]
