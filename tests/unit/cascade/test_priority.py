"""Review priority: severity x (1 - confidence) x age (worker/cascade/priority.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.cascade.priority import age_seconds, policy_confidence, priority, result_confidence, review_priority
from worker.contracts import Confidence, PolicyResult, ReviewPolicy, Severity

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def result(violation: bool | None, confidence: Confidence = "high", p: float | None = None) -> PolicyResult:
    return PolicyResult(
        policy_id="p", policy_version="v", violation=violation, confidence=confidence, rationale="", p_violation=p
    )


def policy(
    severity: Severity, t1: PolicyResult | None, t2: PolicyResult | None, unresolved: bool = True
) -> ReviewPolicy:
    return ReviewPolicy(
        policy_id="p", policy_version="v", severity=severity, action="hide", unresolved=unresolved,
        proposed_violation=True, t1=t1, t2=t2,
    )  # fmt: skip


def test_each_factor_raises_priority() -> None:
    severities: list[Severity] = ["low", "medium", "high", "severe"]
    by_severity = [priority(s, 0.5, 0) for s in severities]
    assert by_severity == sorted(by_severity) and len(set(by_severity)) == 4
    assert priority("medium", 0.2, 0) > priority("medium", 0.8, 0)
    assert priority("medium", 0.5, 7200) > priority("medium", 0.5, 3600) > priority("medium", 0.5, 0)
    assert priority("medium", 0.5, 3600) == pytest.approx(2 * 0.5 * 2)
    # A fully confident answer still ranks (floor on the doubt); age is capped at a week.
    assert priority("low", 1.0, 0) > 0
    assert priority("low", 0.5, 30 * 86400) == priority("low", 0.5, 7 * 86400)


def test_confidence_of_results_and_policies() -> None:
    assert result_confidence(None) == result_confidence(result(None)) == 0.0
    assert result_confidence(result(True, "low")) < result_confidence(result(True, "high"))
    assert result_confidence(result(True, "high", p=0.5)) == 0.0
    assert result_confidence(result(True, "low", p=0.95)) == pytest.approx(0.9)
    assert policy_confidence(policy("high", result(True), result(False))) == 0.0  # the tiers disagree
    assert policy_confidence(policy("high", result(True, "low"), result(True, "high"))) == 0.75  # tier 2 decides
    assert policy_confidence(policy("high", result(True, "medium"), None)) == 0.5


def test_a_post_ranks_by_its_most_urgent_open_policy() -> None:
    open_severe = policy("severe", result(None), None)
    closed_severe = policy("severe", result(True), None, unresolved=False)
    open_low = policy("low", result(True, "low"), None)
    assert review_priority([open_low, closed_severe], 0) == priority("low", 0.25, 0)
    assert review_priority([open_low, open_severe], 0) == priority("severe", 0.0, 0)
    assert review_priority([closed_severe], 0) == 0.0


def test_age_from_created_at() -> None:
    assert age_seconds(NOW - timedelta(minutes=30), NOW) == 1800
    assert age_seconds(None, NOW) == 0.0
    assert age_seconds(NOW + timedelta(hours=1), NOW) == 0.0  # a clock ahead of ours is not negative age
