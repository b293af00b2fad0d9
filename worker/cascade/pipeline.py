"""The path of one valid post after the funnel: the cascade (worker.cascade.tiers) on its candidates,
the bypass sample beside it, then the verdict and the audit record.

Kafka is not visible here: the stream feeds screened posts in and publishes what comes out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime

from funnel import FunnelResult
from worker.cascade.escalate import PolicyOutcome, Reason
from worker.cascade.tiers import Judges, ask, cascade
from worker.cascade.verdict import (
    ShadowAgreement,
    all_results,
    assemble_audit,
    assemble_review,
    assemble_verdict,
    review_policies,
    review_reasons,
    shadow_agreement,
)
from worker.contracts import AuditRecord, Post, ReviewPolicy, ReviewReason, ReviewRecord, SourceRef, Verdict
from worker.judges.protocol import JudgeCall
from worker.policies.screening import PolicyRuntime


@dataclass(frozen=True, slots=True)
class Judged:
    verdict: Verdict
    # None when no judge was called (funnel said no candidate): nothing restricted to keep.
    audit: AuditRecord | None
    calls: list[JudgeCall]
    escalations: list[Reason]
    shadow: list[ShadowAgreement] = field(default_factory=list)
    # How each live policy ended (per-policy verdict metrics).
    outcomes: list[PolicyOutcome] = field(default_factory=list)
    # Decision `review`: every live policy with its tier-1/tier-2 results, and why a human is needed.
    review_policies: list[ReviewPolicy] = field(default_factory=list)
    review_reasons: list[ReviewReason] = field(default_factory=list)

    def review_record(self, post: Post, audit_topic: str, now: datetime) -> ReviewRecord | None:
        """The review-topic record when the decision is `review`, else None."""
        if self.verdict.decision != "review":
            return None
        return assemble_review(post, self.verdict, self.review_policies, self.review_reasons, audit_topic, now)


__all__ = ["Judged", "Judges", "ask", "judge_post"]


async def judge_post(
    post: Post,
    screened: FunnelResult,
    runtime: PolicyRuntime,
    judges: Judges,
    source: SourceRef,
    started: float,
) -> Judged:
    """`started` is the perf_counter time the post was consumed (verdict latency counts from there)."""
    candidates = runtime.candidates(screened)
    # Bypass sample (docs/funnel.md): cleared policies judged by tier 1 anyway, to measure recall.
    bypass = runtime.sampled(screened)
    done, sampled_calls = await asyncio.gather(
        cascade(post, candidates, judges, screened), asyncio.gather(*(judges.t1(p, post) for p in bypass))
    )
    t1_calls, t2_calls, outcomes = done.t1_calls, done.t2_calls, done.outcomes
    live: list[PolicyOutcome] = [o for o in outcomes if not o.policy.meta.shadow]
    rates = runtime.bypass_rates(judges.rules.bypass_sample_rate)
    sampled = [(PolicyOutcome(c.policy, c), rates[c.policy.id]) for c in sampled_calls]
    results = all_results(live, sampled)
    verdict = assemble_verdict(
        post.id,
        live,
        screened,
        source,
        (time.perf_counter() - started) * 1000,
        sampled,
        policy_versions=runtime.versions,
        fit=runtime.fit_id,
        public_rationale=judges.public_rationale,
        results=results,
    )
    calls = [*t1_calls, *t2_calls, *sampled_calls]
    audit = assemble_audit(verdict, calls, results, screened.signals) if calls else None
    review = verdict.decision == "review"
    return Judged(
        verdict,
        audit,
        calls,
        [r for why in done.reasons for r in why],
        shadow_agreement(outcomes),
        outcomes=live,
        review_policies=review_policies(live, results) if review else [],
        review_reasons=review_reasons(live, results) if review else [],
    )
