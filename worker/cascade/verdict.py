"""Verdict assembly: pure functions turning per-policy outcomes into the published Verdict and
the restricted AuditRecord (the only place the chain of thought is kept)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from funnel import FunnelResult
from worker.cascade.escalate import PolicyOutcome
from worker.contracts import (
    AuditRecord,
    Decision,
    FunnelSummary,
    PolicyResult,
    SourceRef,
    Tier,
    Verdict,
)
from worker.judges.protocol import JudgeCall

WORKER_VERSION = "0.1.0"


def funnel_summary(
    result: FunnelResult, policy_versions: Mapping[str, str] | None = None, fit: str | None = None
) -> FunnelSummary:
    """`policy_versions` / `fit`: the policy-set snapshot and heads fit the post was screened under."""
    return FunnelSummary(
        candidates=list(result.candidates),
        scores={k: round(v, 4) for k, v in result.scores.items()},
        signals={k: list(v) for k, v in result.signals.items()},
        policy_versions=dict(policy_versions or {}),
        fit=fit,
    )


def policy_result(outcome: PolicyOutcome) -> PolicyResult:
    policy, answer = outcome.policy, outcome.deciding.answer
    if answer is None:
        failure = outcome.deciding.failure or "no answer"
        return PolicyResult(
            policy_id=policy.id,
            policy_version=policy.version,
            violation=False,
            confidence="low",
            rationale=f"no valid answer from {outcome.deciding.tier} ({failure}); sent to human review",
            truncated=outcome.deciding.truncated,
        )
    return PolicyResult(
        policy_id=policy.id,
        policy_version=policy.version,
        violation=answer.violation == 1,
        category=answer.policy_category,
        rule_ids=answer.rule_ids,
        confidence=answer.confidence,
        rationale=answer.rationale[:500],
        p_violation=None if outcome.deciding.p_violation is None else round(outcome.deciding.p_violation, 4),
        truncated=outcome.deciding.truncated,
    )


def decide(outcomes: Sequence[PolicyOutcome]) -> Decision:
    """hide beats review beats allow: a decided violation hides now; open questions go to humans."""
    if any(not o.unresolved and o.deciding.answer is not None and o.deciding.answer.violation == 1 for o in outcomes):
        return "hide"
    if any(o.unresolved for o in outcomes):
        return "review"
    return "allow"


def assemble_verdict(
    post_id: str,
    outcomes: Sequence[PolicyOutcome],
    funnel: FunnelResult,
    source: SourceRef,
    latency_ms: float,
    sampled: Sequence[tuple[PolicyOutcome, float]] = (),
    policy_versions: Mapping[str, str] | None = None,
    fit: str | None = None,
) -> Verdict:
    """Shadow policies must already be filtered out: they never change the decision. `sampled`:
    bypass-sampled tier-1 outcomes with their sampling rate; listed with `sampled: true`, never
    part of the decision or the tier. `policy_versions` / `fit`: what the post was screened under
    (`PolicyRuntime.versions` / `.fit_id`), recorded in `funnel` on every verdict."""
    calls = [o.deciding for o in outcomes]
    tier: Tier = "funnel"
    if calls:
        tier = "t2" if any(c.tier == "t2" for c in calls) else "t1"
    top = next((c for c in calls if c.tier == tier), None)
    reasons = sorted({r for o in outcomes for r in o.escalation_reasons})
    return Verdict(
        post_id=post_id,
        decision=decide(outcomes),
        results=[
            *(policy_result(o) for o in outcomes),
            *(policy_result(o).model_copy(update={"sampled": True, "sample_rate": rate}) for o, rate in sampled),
        ],
        tier=tier,
        model=top.audit.model if top else None,
        reasoning_effort=top.audit.reasoning_effort if top else None,
        escalated=bool(reasons),
        escalation_reasons=list(reasons),
        funnel=funnel_summary(funnel, policy_versions, fit),
        latency_ms=round(latency_ms, 2),
        decided_at=datetime.now(UTC),
        worker_version=WORKER_VERSION,
        source=source,
    )


def assemble_audit(verdict: Verdict, calls: Sequence[JudgeCall]) -> AuditRecord:
    # A multi-policy request yields one JudgeCall per policy sharing one AuditCall: keep it once.
    audits = list({id(c.audit): c.audit for c in calls}.values())
    return AuditRecord(post_id=verdict.post_id, decision=verdict.decision, calls=audits, source=verdict.source)


@dataclass(frozen=True, slots=True)
class ShadowAgreement:
    policy_id: str  # the shadow policy
    agree: bool


def shadow_agreement(outcomes: Sequence[PolicyOutcome]) -> list[ShadowAgreement]:
    """For each shadow policy with a `shadow_of` twin judged on the same post: do their violation
    flags agree? Pairs where either side has no answer are not counted (nothing to compare)."""
    by_id = {o.policy.id: o for o in outcomes}
    found: list[ShadowAgreement] = []
    for outcome in outcomes:
        twin_id = outcome.policy.meta.shadow_of
        twin = by_id.get(twin_id) if twin_id is not None else None
        if twin is None:
            continue
        mine, theirs = outcome.deciding.answer, twin.deciding.answer
        if mine is None or theirs is None:
            continue
        found.append(ShadowAgreement(outcome.policy.id, mine.violation == theirs.violation))
    return found
