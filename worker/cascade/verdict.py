"""Verdict assembly: pure functions turning per-policy outcomes into the published Verdict, the
restricted AuditRecord (the only place the chain of thought, the rationale and the funnel's
matched signals are kept) and, for a `review` decision, the ReviewRecord."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from funnel import FunnelResult
from worker.cascade.escalate import PolicyOutcome
from worker.cascade.precedence import decide, policy_call
from worker.cascade.priority import age_seconds, review_priority
from worker.cascade.revisions import FIRST_REVISION, stream_verdict_id
from worker.contracts import (
    AuditRecord,
    AuditRef,
    Decision,
    FunnelSummary,
    PolicyResult,
    Post,
    ReviewPolicy,
    ReviewReason,
    ReviewRecord,
    Severity,
    SourceRef,
    Tier,
    Verdict,
)
from worker.judges.protocol import JudgeCall
from worker.policies.files import Policy

WORKER_VERSION = "0.1.0"


def funnel_summary(
    result: FunnelResult, policy_versions: Mapping[str, str] | None = None, fit: str | None = None
) -> FunnelSummary:
    """`policy_versions` / `fit`: the policy-set snapshot and heads fit the post was screened under.
    No matched keywords/patterns: those are an evasion map, kept on the audit record (`funnel_signals`)."""
    return FunnelSummary(
        candidates=list(result.candidates),
        scores={k: round(v, 4) for k, v in result.scores.items()},
        policy_versions=dict(policy_versions or {}),
        fit=fit,
    )


_SEVERITY_RANK: dict[Severity, int] = {"low": 0, "medium": 1, "high": 2, "severe": 3}


def outcome_severity(outcome: PolicyOutcome) -> Severity:
    """The policy's severity, raised to `severe` when either tier's answer named a severe category
    (a tier-2 "safe" does not lower what tier 1 found)."""
    meta = outcome.policy.meta
    found: list[Severity] = [meta.severity]
    for call in (outcome.first, outcome.deciding):
        if call is not None and call.answer is not None:
            found.append(meta.severity_of(call.answer.policy_category))
    if outcome.severe_negative:
        found.append("severe")
    return max(found, key=_SEVERITY_RANK.__getitem__)


def unanswered_result(
    policy: Policy, why: str, severity: Severity | None = None, truncated: bool = False
) -> PolicyResult:
    """A policy no judge answered validly for: `violation` None, unresolved, at its severity's action."""
    severity = severity or policy.meta.severity_of(None)
    return PolicyResult(
        policy_id=policy.id,
        policy_version=policy.version,
        violation=None,
        severity=severity,
        action=policy.meta.action_for(severity),
        unresolved=True,
        confidence="low",
        rationale=why,
        truncated=truncated,
    )


def call_result(
    call: JudgeCall, severity: Severity | None = None, unresolved: bool = False, note: str | None = None
) -> PolicyResult:
    """One judge call as a policy result (with its rationale). No valid answer: `violation` None,
    unresolved."""
    policy, answer = call.policy, call.answer
    if severity is None:
        severity = policy.meta.severity_of(answer.policy_category if answer else None)
    if answer is None:
        failure = call.failure or "no answer"
        why = note or f"no valid answer from {call.tier} ({failure}); sent to human review"
        return unanswered_result(policy, why, severity, call.truncated)
    return PolicyResult(
        policy_id=policy.id,
        policy_version=policy.version,
        violation=answer.violation == 1,
        severity=severity,
        action=policy.meta.action_for(severity),
        unresolved=unresolved,
        category=answer.policy_category,
        rule_ids=answer.rule_ids,
        confidence=answer.confidence,
        rationale=note or answer.rationale[:500],
        p_violation=None if call.p_violation is None else round(call.p_violation, 4),
        truncated=call.truncated,
    )


def policy_result(outcome: PolicyOutcome) -> PolicyResult:
    """How one policy ended, with its rationale (the audit record's copy)."""
    note = None
    if outcome.severe_negative:
        note = "tier 2 cleared what tier 1 found violating on a severe policy; sent to human review"
    return call_result(outcome.deciding, outcome_severity(outcome), outcome.unresolved, note)


def policy_decision(outcome: PolicyOutcome) -> Decision:
    """What this policy alone would decide (per-policy metrics, eval)."""
    return decide([policy_result(outcome)])[0]


def all_results(
    outcomes: Sequence[PolicyOutcome], sampled: Sequence[tuple[PolicyOutcome, float]] = ()
) -> list[PolicyResult]:
    """Every policy's result, the bypass-sampled ones (`sampled: true`) last; rationale included."""
    return [
        *(policy_result(o) for o in outcomes),
        *(policy_result(o).model_copy(update={"sampled": True, "sample_rate": rate}) for o, rate in sampled),
    ]


def assemble_verdict(
    post_id: str,
    outcomes: Sequence[PolicyOutcome],
    funnel: FunnelResult,
    source: SourceRef,
    latency_ms: float,
    sampled: Sequence[tuple[PolicyOutcome, float]] = (),
    policy_versions: Mapping[str, str] | None = None,
    fit: str | None = None,
    public_rationale: bool = False,
    results: Sequence[PolicyResult] | None = None,
) -> Verdict:
    """Shadow policies must already be filtered out: they never change the decision. `sampled`:
    bypass-sampled tier-1 outcomes with their sampling rate; listed with `sampled: true`, never
    part of the decision or the tier. `policy_versions` / `fit`: what the post was screened under
    (`PolicyRuntime.versions` / `.fit_id`), recorded in `funnel` on every verdict. `results`:
    `all_results(outcomes, sampled)` when the caller already has them. The rationale is published
    only with `public_rationale` (empty otherwise; the audit record keeps it)."""
    calls = [o.deciding for o in outcomes]
    tier: Tier = "funnel"
    if calls:
        tier = "t2" if any(c.tier == "t2" for c in calls) else "t1"
    top = next((c for c in calls if c.tier == tier), None)
    reasons = sorted({r for o in outcomes for r in o.escalation_reasons})
    full = list(results) if results is not None else all_results(outcomes, sampled)
    decision, interim = decide(full)
    public = full if public_rationale else [r.model_copy(update={"rationale": ""}) for r in full]
    return Verdict(
        post_id=post_id,
        verdict_id=stream_verdict_id(post_id, source),
        revision=FIRST_REVISION,
        supersedes=None,
        route="stream",
        decision=decision,
        interim_action=interim,
        results=public,
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


def assemble_audit(
    verdict: Verdict,
    calls: Sequence[JudgeCall],
    results: Sequence[PolicyResult] = (),
    funnel_signals: Mapping[str, Sequence[str]] | None = None,
) -> AuditRecord:
    """`results`: every policy's result with its rationale (`all_results`); `funnel_signals`: the
    funnel's matched keywords/patterns per policy. Both are kept here, never on the verdict."""
    # A multi-policy request yields one JudgeCall per policy sharing one AuditCall: keep it once.
    audits = list({id(c.audit): c.audit for c in calls}.values())
    return AuditRecord(
        post_id=verdict.post_id,
        verdict_id=verdict.verdict_id,
        revision=verdict.revision,
        decision=verdict.decision,
        calls=audits,
        source=verdict.source,
        results=list(results),
        funnel_signals={k: list(v) for k, v in (funnel_signals or {}).items()},
    )


def review_policy(result: PolicyResult, t1: PolicyResult | None = None, t2: PolicyResult | None = None) -> ReviewPolicy:
    """One policy of a review record from its (deciding) result and what each tier said.
    `unresolved`: the reviewer must decide it (precedence: it asks for review); `proposed_violation`:
    the result's answer, else tier 1's, else false."""
    guess = next((r.violation for r in (result, t1) if r is not None and r.violation is not None), False)
    return ReviewPolicy(
        policy_id=result.policy_id,
        policy_version=result.policy_version,
        severity=result.severity,
        action=result.action,
        unresolved=policy_call(result) == "review",
        proposed_violation=guess,
        t1=t1,
        t2=t2,
    )


def review_policies(outcomes: Sequence[PolicyOutcome], results: Sequence[PolicyResult]) -> list[ReviewPolicy]:
    """The live policies of a post under review, each with what tier 1 and tier 2 said; `unresolved`
    marks those the reviewer must decide (the others are context)."""
    return [
        review_policy(result, call_result(o.t1), call_result(o.t2) if o.t2 is not None else None)
        for o, result in zip(outcomes, results, strict=False)
    ]


def review_reasons(outcomes: Sequence[PolicyOutcome], results: Sequence[PolicyResult]) -> list[ReviewReason]:
    reasons: set[ReviewReason] = set()
    for outcome, result in zip(outcomes, results, strict=False):
        if outcome.severe_negative:
            reasons.add("severe_negative")
        elif result.unresolved or result.violation is None:
            reasons.add("unresolved")
        elif result.violation and result.action == "review":
            reasons.add("review_action")
    return sorted(reasons)


def assemble_review(
    post: Post,
    verdict: Verdict,
    policies: Sequence[ReviewPolicy],
    reasons: Sequence[ReviewReason],
    audit_topic: str,
    now: datetime,
) -> ReviewRecord:
    """The review-topic record for a verdict whose decision is `review` (review_id = verdict_id: a
    replay repeats the same record). Priority: worker/cascade/priority.py."""
    return ReviewRecord(
        review_id=verdict.verdict_id,
        post=post,
        verdict_id=verdict.verdict_id,
        revision=verdict.revision,
        decision=verdict.decision,
        interim_action=verdict.interim_action,
        reasons=list(reasons),
        policies=list(policies),
        priority=review_priority(policies, age_seconds(post.created_at, now)),
        audit=AuditRef(topic=audit_topic, post_id=verdict.post_id, verdict_id=verdict.verdict_id),
        created_at=now,
        source=verdict.source,
    )


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
