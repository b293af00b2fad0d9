"""A reviewer's decision -> the superseding verdict. Pure (the apply consumer does the I/O).

Per policy of the review record: `confirm` keeps the cascade's `proposed_violation`, `overturn`
flips it; either way the policy is resolved (unresolved false, confidence high), and a violation
of a policy whose action is `review` becomes `hide` (the human was the review). Policies the
reviewer did not rule on keep the cascade's result (an unresolved one keeps the post in review).
The post's decision is recomputed by the one precedence rule (worker/cascade/precedence.py).

The verdict is tier "human", route "review", revision = next_revision(of what it supersedes),
verdict_id = verdict_id("review", post_id, revision, decision_id): replaying a decision repeats
its verdict. A second decision on the same review (a correction) supersedes the first decision's
verdict, carrying both decisions' outcomes (the later one wins per policy).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker import __version__
from worker.cascade.precedence import decide
from worker.cascade.revisions import next_revision, verdict_id
from worker.contracts import (
    Action,
    FunnelSummary,
    PolicyResult,
    ReviewDecision,
    ReviewPolicy,
    ReviewRecord,
    SourceRef,
    Verdict,
)
from worker.review.store import AppliedDecision

REVIEWED_ACTION: Action = "hide"


class InvalidDecision(ValueError):
    """A review decision that cannot be applied; `kind` becomes the DLQ header `error.type`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class Superseding:
    verdict: Verdict
    applied: AppliedDecision


def check(record: ReviewRecord, decision: ReviewDecision) -> None:
    if decision.post_id != record.post.id:
        mismatch = f"decision for post {decision.post_id!r}, review is of {record.post.id!r}"
        raise InvalidDecision("post_mismatch", mismatch)
    known = {p.policy_id for p in record.policies}
    unknown = sorted({c.policy_id for c in decision.calls} - known)
    if unknown:
        raise InvalidDecision("unknown_policy", f"policies {unknown} are not in review {record.review_id!r}")


def human_result(policy: ReviewPolicy, outcome: str | None) -> PolicyResult:
    """One policy's result in the superseding verdict. Never carries a rationale (the reviewer's
    reason stays on the decision record)."""
    base = policy.t2 if policy.t2 is not None else policy.t1
    if outcome is None:
        if base is not None:
            return base.model_copy(update={"severity": policy.severity, "action": policy.action,
                                           "unresolved": policy.unresolved, "rationale": ""})  # fmt: skip
        violation: bool | None = None if policy.unresolved else policy.proposed_violation
        return PolicyResult(
            policy_id=policy.policy_id, policy_version=policy.policy_version, violation=violation,
            severity=policy.severity, action=policy.action, unresolved=policy.unresolved,
            confidence="low", rationale="",
        )  # fmt: skip
    violation = policy.proposed_violation if outcome == "confirm" else not policy.proposed_violation
    return PolicyResult(
        policy_id=policy.policy_id,
        policy_version=policy.policy_version,
        violation=violation,
        severity=policy.severity,
        # A policy whose action is `review` asked for a human; the human found a violation: hide.
        action=REVIEWED_ACTION if policy.action == "review" else policy.action,
        unresolved=False,
        category=base.category if base is not None else None,
        rule_ids=list(base.rule_ids) if base is not None else [],
        confidence="high",
        rationale="",
    )


def supersede(
    record: ReviewRecord, decision: ReviewDecision, previous: AppliedDecision | None, source: SourceRef
) -> Superseding:
    """The verdict `decision` produces. `previous`: the newest decision already applied to this
    review (None for the first); `source`: where the decision was read (the verdict's `source`)."""
    check(record, decision)
    outcomes = dict(previous.outcomes) if previous is not None else {}
    outcomes.update({call.policy_id: call.outcome for call in decision.calls})
    results = [human_result(p, outcomes.get(p.policy_id)) for p in record.policies]
    post_decision, interim = decide(results)
    revision = next_revision(previous.revision if previous is not None else record.revision)
    supersedes = previous.verdict_id if previous is not None else record.verdict_id
    vid = verdict_id("review", record.post.id, revision, decision.decision_id)
    waited_ms = max(0.0, (decision.decided_at - record.created_at).total_seconds() * 1000.0)
    verdict = Verdict(
        post_id=record.post.id,
        verdict_id=vid,
        revision=revision,
        supersedes=supersedes,
        route="review",
        decision=post_decision,
        interim_action=interim,
        results=results,
        tier="human",
        escalated=False,
        funnel=FunnelSummary(candidates=[], scores={}),
        latency_ms=round(waited_ms, 3),
        decided_at=decision.decided_at,
        worker_version=__version__,
        source=source,
    )
    return Superseding(verdict, AppliedDecision(decision.decision_id, revision, vid, outcomes))
