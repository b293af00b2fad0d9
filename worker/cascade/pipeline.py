"""The path of one valid post after the funnel: judge (t1) -> escalate -> judge (t2) -> verdict.

Kafka is not visible here: `app.py` feeds screened posts in and publishes what comes out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from funnel import FunnelResult
from worker.cascade.escalate import PolicyOutcome, Reason, escalation_reasons, settle
from worker.cascade.verdict import ShadowAgreement, assemble_audit, assemble_verdict, shadow_agreement
from worker.config import EscalationSettings
from worker.contracts import AuditRecord, Post, SourceRef, Verdict
from worker.judges.client import JudgeCall, JudgeFn, JudgeManyFn
from worker.policies.files import Policy
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


@dataclass(frozen=True, slots=True)
class Judges:
    t1: JudgeFn
    t2: JudgeFn
    rules: EscalationSettings
    # judge_mode multi_policy: one request per tier for all of a post's live candidates.
    t1_many: JudgeManyFn | None = None
    t2_many: JudgeManyFn | None = None


async def ask(one: JudgeFn, many: JudgeManyFn | None, policies: Sequence[Policy], post: Post) -> list[JudgeCall]:
    """One call per policy, or (multi_policy) one call for the live policies. Shadow policies are
    always asked alone: they must be judged independently of the live twin they are compared with.
    Returns the calls in the order of `policies`."""
    live = [p for p in policies if not p.meta.shadow]
    if many is None or len(live) < 2:
        return list(await asyncio.gather(*(one(p, post) for p in policies)))
    alone = [p for p in policies if p.meta.shadow]
    grouped, singles = await asyncio.gather(many(live, post), asyncio.gather(*(one(p, post) for p in alone)))
    by_id = {c.policy.id: c for c in [*grouped, *singles]}
    return [by_id[p.id] for p in policies]


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
    t1_calls, sampled_calls = await asyncio.gather(
        ask(judges.t1, judges.t1_many, candidates, post), asyncio.gather(*(judges.t1(p, post) for p in bypass))
    )
    reasons = [escalation_reasons(call, screened, post.id, judges.rules) for call in t1_calls]
    escalated = [call.policy for call, why in zip(t1_calls, reasons, strict=True) if why]
    t2_calls = await ask(judges.t2, judges.t2_many, escalated, post)
    t2_by_policy = {c.policy.id: c for c in t2_calls}
    outcomes = [
        settle(call, why, t2_by_policy.get(call.policy.id), judges.rules)
        for call, why in zip(t1_calls, reasons, strict=True)
    ]
    live: list[PolicyOutcome] = [o for o in outcomes if not o.policy.meta.shadow]
    rates = runtime.bypass_rates(judges.rules.bypass_sample_rate)
    sampled = [(PolicyOutcome(c.policy, c), rates[c.policy.id]) for c in sampled_calls]
    verdict = assemble_verdict(
        post.id,
        live,
        screened,
        source,
        (time.perf_counter() - started) * 1000,
        sampled,
        policy_versions=runtime.versions,
        fit=runtime.fit_id,
    )
    calls = [*t1_calls, *t2_calls, *sampled_calls]
    audit = assemble_audit(verdict, calls) if calls else None
    return Judged(verdict, audit, calls, [r for why in reasons for r in why], shadow_agreement(outcomes), outcomes=live)
