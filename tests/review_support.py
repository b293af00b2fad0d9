"""Review records and decisions for the review-queue tests (unit and integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from worker.cascade.revisions import stream_verdict_id
from worker.contracts import (
    AuditRef,
    Decision,
    FunnelSummary,
    PolicyResult,
    Post,
    ReviewDecision,
    ReviewerCall,
    ReviewPolicy,
    ReviewRecord,
    Severity,
    SourceRef,
    Verdict,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def result(policy_id: str, violation: bool | None, confidence: str = "low", **extra: Any) -> PolicyResult:
    return PolicyResult.model_validate({
        "policy_id": policy_id, "policy_version": "1", "violation": violation, "confidence": confidence,
        "rationale": f"rationale of {policy_id}", "unresolved": violation is None, **extra,
    })  # fmt: skip


def policy(
    policy_id: str,
    proposed: bool,
    *,
    unresolved: bool = True,
    severity: Severity = "high",
    action: str = "hide",
    t1: PolicyResult | None = None,
    t2: PolicyResult | None = None,
) -> ReviewPolicy:
    return ReviewPolicy.model_validate({
        "policy_id": policy_id, "policy_version": "1", "severity": severity, "action": action,
        "unresolved": unresolved, "proposed_violation": proposed, "t1": t1, "t2": t2,
    })  # fmt: skip


def review_record(
    post_id: str,
    policies: list[ReviewPolicy],
    *,
    text: str = "a post under review",
    priority: float = 1.0,
    created_at: datetime = T0,
    decision: Decision = "review",
    offset: int = 0,
) -> ReviewRecord:
    source = SourceRef(topic="posts", partition=0, offset=offset)
    vid = stream_verdict_id(post_id, source)
    return ReviewRecord(
        review_id=vid,
        post=Post(id=post_id, text=text),
        verdict_id=vid,
        revision=1,
        decision=decision,
        interim_action="allow" if decision == "review" else None,
        reasons=["unresolved"],
        policies=policies,
        priority=priority,
        audit=AuditRef(topic="audit", post_id=post_id, verdict_id=vid),
        created_at=created_at,
        source=source,
    )


def review_decision(
    record: ReviewRecord, calls: dict[str, str], *, decision_id: str = "d-1", reviewer: str = "alice",
    after: timedelta = timedelta(minutes=5),
) -> ReviewDecision:  # fmt: skip
    return ReviewDecision(
        decision_id=decision_id,
        review_id=record.review_id,
        post_id=record.post.id,
        verdict_id=record.verdict_id,
        revision=record.revision,
        reviewer=reviewer,
        calls=[ReviewerCall.model_validate({"policy_id": p, "outcome": o}) for p, o in calls.items()],
        decided_at=record.created_at + after,
    )


def stream_verdict(record: ReviewRecord) -> Verdict:
    """The revision-1 verdict the worker published for a post it sent to review."""
    assert record.source is not None
    return Verdict(
        post_id=record.post.id, verdict_id=record.verdict_id, revision=1, decision=record.decision,
        interim_action=record.interim_action, results=[], tier="t2", escalated=True,
        funnel=FunnelSummary(candidates=[], scores={}), latency_ms=1.0, decided_at=record.created_at,
        worker_version="test", source=record.source,
    )  # fmt: skip
