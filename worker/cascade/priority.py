"""Review-queue priority: a pure function of severity, the judges' confidence and the post's age
(docs/workflow.md, "Verdicts"). Higher first.

    priority = SEVERITY_WEIGHT[severity] x (1 - confidence) x (1 + age_hours)

- severity weight: low 1, medium 2, high 4, severe 8 (a severe question outranks any milder one of
  the same doubt and age);
- confidence in [0, 1]: |2p - 1| from the deciding answer's p_violation when there is one, else
  low 0.25 / medium 0.5 / high 0.75 from its stated confidence; 0 when no judge answered validly
  or the two tiers disagree (then nobody is sure); 1 - confidence is floored at 0.05 so that a
  confident answer sent to review (a policy whose action is `review`) still ranks by severity and age;
- age: hours since the post was created (capped at 7 days), so the queue drains oldest-first among
  equals and nothing starves. The worker computes it when the record is written; the console may
  recompute it with the current time (same function).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from worker.contracts import Confidence, PolicyResult, ReviewPolicy, Severity

SEVERITY_WEIGHT: dict[Severity, float] = {"low": 1.0, "medium": 2.0, "high": 4.0, "severe": 8.0}
CONFIDENCE_VALUE: dict[Confidence, float] = {"low": 0.25, "medium": 0.5, "high": 0.75}
MIN_DOUBT = 0.05
MAX_AGE_HOURS = 7 * 24.0


def priority(severity: Severity, confidence: float, age_s: float) -> float:
    doubt = max(MIN_DOUBT, 1.0 - min(max(confidence, 0.0), 1.0))
    age_hours = min(max(age_s, 0.0) / 3600.0, MAX_AGE_HOURS)
    return round(SEVERITY_WEIGHT[severity] * doubt * (1.0 + age_hours), 6)


def result_confidence(result: PolicyResult | None) -> float:
    """How sure one tier's result is, in [0, 1] (0: no valid answer)."""
    if result is None or result.violation is None:
        return 0.0
    if result.p_violation is not None:
        return abs(2.0 * result.p_violation - 1.0)
    return CONFIDENCE_VALUE[result.confidence]


def policy_confidence(policy: ReviewPolicy) -> float:
    """The deciding tier's confidence (tier 2 when it answered), 0 when the tiers disagree."""
    t1, t2 = policy.t1, policy.t2
    answers = [r.violation for r in (t1, t2) if r is not None and r.violation is not None]
    if len(set(answers)) > 1:
        return 0.0
    return result_confidence(t2 if t2 is not None else t1)


def age_seconds(created_at: datetime | None, now: datetime) -> float:
    if created_at is None or created_at.tzinfo is None:
        return 0.0
    return max(0.0, (now - created_at).total_seconds())


def review_priority(policies: Iterable[ReviewPolicy], age_s: float) -> float:
    """A post's priority: its most urgent policy under review (0 when none is)."""
    return max((priority(p.severity, policy_confidence(p), age_s) for p in policies if p.unresolved), default=0.0)
