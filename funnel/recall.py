"""Recall measured in production: bypass sampling of cleared posts and the recall estimate.

The funnel's recall is the whole system's recall ceiling, and posts it clears are never judged,
so nothing downstream can see what it misses. A small, deterministic share of the posts the
funnel clears for a policy is sent to tier 1 anyway (`bypass_sampled`): their verdicts say
`sampled: true`. From the two counts per policy

* C = candidates the judge found violating,
* S = sampled cleared posts the judge found violating, at sampling rate r,

the violations the funnel missed are about S / r, so the funnel's recall is about
`C / (C + S / r)`. Its interval is a Wilson score interval on the sample where both kinds of
posts are seen at the same rate: `C·r` candidate violations against `S` missed ones (an
approximation that treats `C·r` as exact; C is usually far larger than S, so the interval is
dominated by S, which is the Poisson-like count). The judge is the reference: the estimate is
the funnel's recall *of what the judge calls a violation*.

Pure functions, no I/O; the worker and `modstream funnel recall --from-audit` use them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from funnel.spec import FunnelResult


def wilson_interval(successes: float, trials: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default); (0, 1) with no trials.
    Accepts non-integer counts (weighted samples)."""
    if trials <= 0:
        return 0.0, 1.0
    p = min(max(successes / trials, 0.0), 1.0)
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def bypass_sampled(post_id: str, policy_id: str, rate: float) -> bool:
    """Is this cleared (post, policy) in the bypass sample? Deterministic (the same post is
    sampled on every replay) and independent of the audit sample (its own salt)."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    digest = hashlib.sha256(f"bypass\0{post_id}\0{policy_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def bypass_policies(post_id: str, result: FunnelResult, rates: Mapping[str, float], default: float) -> list[str]:
    """Policies the funnel cleared this post for (scored, not a candidate) that the bypass
    sample sends to tier 1 anyway; `rates` per policy (front matter), else `default` (global)."""
    chosen = set(result.candidates)
    return [pid for pid in result.scores if pid not in chosen and bypass_sampled(post_id, pid, rates.get(pid, default))]


@dataclass(slots=True)
class RecallCounts:
    """Per policy: candidates judged violating, bypass-sampled cleared posts judged violating and
    the sum of 1/rate over the latter (the estimated number of violations the funnel cleared)."""

    candidate_violations: int = 0
    sampled_violations: int = 0
    sampled_posts: int = 0
    missed_estimate: float = 0.0
    rate_sum: float = 0.0

    def add_candidate(self, violating: bool) -> None:
        self.candidate_violations += violating

    def add_sampled(self, violating: bool, rate: float) -> None:
        self.sampled_posts += 1
        self.rate_sum += rate
        if violating:
            self.sampled_violations += 1
            self.missed_estimate += 1.0 / rate if rate > 0 else 0.0


@dataclass(frozen=True, slots=True)
class RecallEstimate:
    policy_id: str
    candidate_violations: int
    sampled_violations: int
    sampled_posts: int
    rate: float
    recall: float | None
    low: float
    high: float


def estimate(policy_id: str, counts: RecallCounts) -> RecallEstimate:
    """Recall ≈ C / (C + Σ 1/rate) with a Wilson interval on (C·r, C·r + S); None without
    any sampled post (nothing is known about what was cleared)."""
    if counts.sampled_posts == 0:
        return RecallEstimate(policy_id, counts.candidate_violations, 0, 0, 0.0, None, 0.0, 1.0)
    if counts.sampled_violations:
        rate = counts.sampled_violations / counts.missed_estimate
    else:
        rate = counts.rate_sum / counts.sampled_posts
    c = counts.candidate_violations
    total = c + counts.missed_estimate
    recall = c / total if total > 0 else None
    low, high = wilson_interval(c * rate, c * rate + counts.sampled_violations)
    return RecallEstimate(policy_id, c, counts.sampled_violations, counts.sampled_posts, rate, recall, low, high)


@dataclass(slots=True)
class RecallTracker:
    """Running counts per policy (the worker's metrics and the CLI share it)."""

    counts: dict[str, RecallCounts] = field(default_factory=dict)

    def observe(self, policy_id: str, violating: bool, sampled: bool, rate: float | None) -> None:
        entry = self.counts.setdefault(policy_id, RecallCounts())
        if sampled:
            if rate is None or rate <= 0:
                raise ValueError(f"a bypass-sampled result for {policy_id!r} needs its sampling rate")
            entry.add_sampled(violating, rate)
        else:
            entry.add_candidate(violating)

    def estimates(self) -> list[RecallEstimate]:
        return [estimate(pid, self.counts[pid]) for pid in sorted(self.counts)]


def tracker_from_verdicts(
    records: Iterable[Mapping[str, object]], default_rate: float | None = None, known: Iterable[str] | None = None
) -> RecallTracker:
    """Counts from verdict records (`{"results": [{"policy_id", "violation", "sampled",
    "sample_rate"}...]}`, the actions/audit export). Shadow and funnel-only results are skipped:
    a result without a judge call has no `violation` worth counting (tier "funnel" verdicts have
    no results). A policy id outside `known` (when given) is an error, not silently dropped."""
    tracker = RecallTracker()
    allowed = set(known) if known is not None else None
    for number, record in enumerate(records, 1):
        results = record.get("results")
        if not isinstance(results, list):
            raise ValueError(f"record {number}: no 'results' list")
        for result in results:
            if not isinstance(result, Mapping):
                raise ValueError(f"record {number}: a result is not an object")
            pid = str(result.get("policy_id"))
            if allowed is not None and pid not in allowed:
                raise ValueError(f"record {number}: unknown policy id {pid!r}")
            sampled = bool(result.get("sampled", False))
            raw_rate = result.get("sample_rate", default_rate)
            rate = float(raw_rate) if isinstance(raw_rate, int | float) else None
            tracker.observe(pid, bool(result.get("violation")), sampled, rate if sampled else None)
    return tracker
