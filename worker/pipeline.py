"""The path of one valid post after the funnel: judge (t1) -> escalate -> judge (t2) -> verdict.

Kafka is not visible here: `app.py` feeds screened posts in and publishes what comes out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from funnel import FunnelResult
from worker.config import EscalationSettings
from worker.contracts import AuditRecord, Post, SourceRef, Verdict
from worker.escalate import PolicyOutcome, Reason, escalation_reasons, settle
from worker.funnel import PolicyRuntime
from worker.judge import JudgeCall, JudgeFn
from worker.verdict import assemble_audit, assemble_verdict


@dataclass(frozen=True, slots=True)
class Judged:
    verdict: Verdict
    # None when no judge was called (funnel said no candidate): nothing restricted to keep.
    audit: AuditRecord | None
    calls: list[JudgeCall]
    escalations: list[Reason]


@dataclass(frozen=True, slots=True)
class Judges:
    t1: JudgeFn
    t2: JudgeFn
    rules: EscalationSettings


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
    t1_calls = await asyncio.gather(*(judges.t1(policy, post) for policy in candidates))
    reasons = [escalation_reasons(call, screened, post.id, judges.rules) for call in t1_calls]
    escalated = [call for call, why in zip(t1_calls, reasons, strict=True) if why]
    t2_by_policy = dict(
        zip(
            (c.policy.id for c in escalated),
            await asyncio.gather(*(judges.t2(c.policy, post) for c in escalated)),
            strict=True,
        )
    )
    outcomes = [
        settle(call, why, t2_by_policy.get(call.policy.id), judges.rules)
        for call, why in zip(t1_calls, reasons, strict=True)
    ]
    live: list[PolicyOutcome] = [o for o in outcomes if not o.policy.meta.shadow]
    verdict = assemble_verdict(post.id, live, screened, source, (time.perf_counter() - started) * 1000)
    calls = [*t1_calls, *t2_by_policy.values()]
    audit = assemble_audit(verdict, calls) if calls else None
    return Judged(verdict, audit, calls, [r for why in reasons for r in why])
