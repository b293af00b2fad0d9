"""The funnel's input (one `PolicySpec` per policy) and output (one `FunnelResult` per post)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """What the funnel needs from one policy (its front matter's `funnel:` block)."""

    id: str
    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    exemplars: tuple[str, ...] = ()
    threshold: float = 0.5
    very_sure: float = 0.95
    # (language or "default", route) pairs from the policy's `languages:` front matter; routing
    # only, so not part of the fingerprint (see funnel/language.py).
    languages: tuple[tuple[str, str], ...] = ()

    def fingerprint(self) -> str:
        """Hash of what decides the *scores* (not the thresholds): a calibration made for
        other keywords, patterns or exemplars is stale."""
        body = json.dumps([self.id, list(self.keywords), list(self.patterns), list(self.exemplars)])
        return hashlib.sha256(body.encode()).hexdigest()[:16]


class RoundedScores(dict[str, float]):
    """Scores the funnel rounded itself: Python floats from `np.round(float64, 4)`, each already
    equal to `round(v, 4)` (an integer divided by 10**4 in IEEE arithmetic is the double nearest
    that decimal, which is what `round` returns; tests/unit/funnel/test_rounded_scores.py).
    Encoders may skip rounding them again."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class FunnelResult:
    """Per post: which policies it is a candidate for, the scores, and the signals that fired."""

    candidates: list[str]
    scores: dict[str, float]
    signals: dict[str, list[str]] = field(default_factory=dict)
    very_sure: list[str] = field(default_factory=list)
    # The post's language (producer's tag or detected; "und": nothing to read) and its route:
    # `judge` when a language rule made it a candidate, `allow` when every policy exempts it,
    # else `funnel`. None without the language step.
    lang: str | None = None
    route: str = "funnel"
    # Policies this post was cleared for but that the bypass sample sends to tier 1 anyway
    # (funnel/recall.py `bypass_policies`, chosen by post id); not candidates: their verdicts say
    # `sampled: true` and do not change the decision.
    sampled: list[str] = field(default_factory=list)

    @property
    def is_candidate(self) -> bool:
        return bool(self.candidates)


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(item) for item in value)


def _keywords(hints: Mapping[str, Any]) -> tuple[str, ...]:
    """`keywords` and then every language's `keywords_by_lang` list, duplicates dropped. All are
    matched on every post: language ID on short posts is not sure enough to pick one list."""
    merged = dict.fromkeys(_strings(hints.get("keywords")))
    for words in (hints.get("keywords_by_lang") or {}).values():
        merged.update(dict.fromkeys(_strings(words)))
    return tuple(merged)


def spec_from_hints(policy_id: str, hints: Mapping[str, Any]) -> PolicySpec:
    """One policy's `funnel:` front matter (as plain data) → `PolicySpec`; a `languages` key
    (the policy's top-level `languages:` block) becomes the routing rules."""
    return PolicySpec(
        id=policy_id,
        keywords=_keywords(hints),
        patterns=_strings(hints.get("patterns")),
        exemplars=_strings(hints.get("exemplars")),
        threshold=float(hints.get("threshold", 0.5)),
        very_sure=float(hints.get("very_sure", 0.95)),
        languages=tuple((str(k), str(v)) for k, v in (hints.get("languages") or {}).items()),
    )


def specs_from_hints(
    hints_by_policy: Iterable[tuple[str, Mapping[str, Any]]],
    thresholds: Mapping[str, float] | None = None,
) -> list[PolicySpec]:
    """Specs for a policy set; calibrated `thresholds` (the sidecar, see calibrate.py) win
    over the front matter's `threshold`, policy by policy."""
    specs = [spec_from_hints(policy_id, hints) for policy_id, hints in hints_by_policy]
    if not thresholds:
        return specs
    return [replace(s, threshold=thresholds[s.id]) if s.id in thresholds else s for s in specs]
