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

    def fingerprint(self) -> str:
        """Hash of what decides the *scores* (not the thresholds): a calibration made for
        other keywords, patterns or exemplars is stale."""
        body = json.dumps([self.id, list(self.keywords), list(self.patterns), list(self.exemplars)])
        return hashlib.sha256(body.encode()).hexdigest()[:16]


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


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(item) for item in value)


def spec_from_hints(policy_id: str, hints: Mapping[str, Any]) -> PolicySpec:
    """One policy's `funnel:` front matter (as plain data) → `PolicySpec`."""
    return PolicySpec(
        id=policy_id,
        keywords=_strings(hints.get("keywords")),
        patterns=_strings(hints.get("patterns")),
        exemplars=_strings(hints.get("exemplars")),
        threshold=float(hints.get("threshold", 0.5)),
        very_sure=float(hints.get("very_sure", 0.95)),
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
