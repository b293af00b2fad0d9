"""What the sweep makes of one re-judged post, given its current verdict. Pure.

The new results cover the re-judged policies; every other live policy keeps its result from the
current verdict (a sweep of one policy never drops another policy's `hide`). The decision comes
from the one precedence rule (worker/cascade/precedence.py). Only a changed (decision,
interim_action) pair is published, as a superseding verdict: route `sweep`, revision =
next_revision(current), supersedes = the current verdict id, verdict_id derived from the run id.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from worker.cascade.precedence import PolicyCall, decide, policy_call
from worker.cascade.revisions import next_revision, verdict_id
from worker.contracts import Applied, Decision, FunnelSummary, PolicyResult, ReasoningEffort, SourceRef, Tier, Verdict
from worker.sweep.current import Known
from worker.sweep.report import Counts

# Verdicts a sweep never overrides: a person decided (a reviewer, or an appeal re-judged with the
# author's statement). The sweep counts them as `kept` and leaves them alone.
KEPT_ROUTES = frozenset({"review", "appeal"})


def label(decision: Decision, interim: Applied | None) -> str:
    """`hide`, or `review(hide)` for a review with its interim action."""
    return f"{decision}({interim})" if decision == "review" and interim is not None else decision


def calls_by_policy(results: Sequence[PolicyResult]) -> dict[str, PolicyCall]:
    return {r.policy_id: policy_call(r) for r in results if not r.sampled}


def merged_results(
    current: Known, new: Sequence[PolicyResult], swept: Collection[str], live: Collection[str]
) -> list[PolicyResult]:
    """The re-judged results, then the current verdict's results of the other live policies."""
    kept = [r for r in current.results if not r.sampled and r.policy_id not in swept and r.policy_id in live]
    return [*new, *kept]


@dataclass(frozen=True, slots=True)
class Plan:
    decision: Decision
    interim_action: Applied | None
    results: list[PolicyResult]  # with rationale (the audit record's copy)
    changed: bool
    counts: Counts


def plan(current: Known, new: Sequence[PolicyResult], swept: Collection[str], live: Collection[str]) -> Plan:
    results = merged_results(current, new, swept, live)
    decision, interim = decide(results)
    changed = (decision, interim) != (current.decision, current.interim_action)
    counts = Counts()
    counts.bump("swept")
    counts.bump("changed" if changed else "unchanged")
    if changed:
        counts.transition(label(current.decision, current.interim_action), label(decision, interim))
    before, after = calls_by_policy(current.results), calls_by_policy(results)
    for policy_id in sorted(set(swept) | set(before)):
        old, now = before.get(policy_id, "allow"), after.get(policy_id, "allow")
        if old != now and (policy_id in live):
            counts.policy_transition(policy_id, old, now)
    return Plan(decision, interim, results, changed, counts)


def already_swept(current: Known | None, own: Known) -> Counts:
    """Counts for a post an interrupted run of this sweep already superseded (published nothing now)."""
    counts = Counts()
    for key in ("swept", "changed", "already_swept"):
        counts.bump(key)
    if current is not None and current.verdict_id == own.supersedes:
        counts.transition(label(current.decision, current.interim_action), label(own.decision, own.interim_action))
        before, after = calls_by_policy(current.results), calls_by_policy(own.results)
        for policy_id in sorted(set(before) | set(after)):
            old, now = before.get(policy_id, "allow"), after.get(policy_id, "allow")
            if old != now:
                counts.policy_transition(policy_id, old, now)
    return counts


@dataclass(frozen=True, slots=True)
class Judging:
    """How the post was re-judged (for the verdict's tier/model fields)."""

    tier: Tier
    model: str | None
    effort: ReasoningEffort | None
    escalation_reasons: list[str]
    funnel: FunnelSummary
    latency_ms: float


def superseding_verdict(
    post_id: str,
    current: Known,
    decided: Plan,
    how: Judging,
    run_id: str,
    source: SourceRef,
    now: datetime,
    worker_version: str,
) -> Verdict:
    revision = next_revision(current.revision)
    return Verdict(
        post_id=post_id,
        verdict_id=verdict_id("sweep", post_id, revision, run_id),
        revision=revision,
        supersedes=current.verdict_id,
        route="sweep",
        decision=decided.decision,
        interim_action=decided.interim_action,
        # No free-text rationale on the public verdict: the audit record keeps it.
        results=[r.model_copy(update={"rationale": ""}) for r in decided.results],
        tier=how.tier,
        model=how.model,
        reasoning_effort=how.effort,
        escalated=bool(how.escalation_reasons),
        escalation_reasons=sorted(set(how.escalation_reasons)),
        funnel=how.funnel,
        latency_ms=round(how.latency_ms, 2),
        decided_at=now,
        worker_version=worker_version,
        source=source,
    )
