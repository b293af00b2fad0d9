"""The cascade: tier 1 -> escalate -> tier 2 -> settle, for one post and a list of policies.

Pure apart from the judge callables it is given: no Kafka, no HTTP. The worker (`pipeline.judge_post`)
and `modstream eval` (`worker.eval.run`) both run it, so an eval measures the decisions the worker makes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from funnel import FunnelResult
from worker.cascade.escalate import PolicyOutcome, Reason, escalation_reasons, settle
from worker.config import EscalationSettings
from worker.contracts import Post
from worker.judges.protocol import JudgeCall, JudgeFn, JudgeManyFn
from worker.policies.files import Policy


@dataclass(frozen=True, slots=True)
class Judges:
    t1: JudgeFn
    t2: JudgeFn
    rules: EscalationSettings
    # judge_mode multi_policy: one request per tier for all of a post's live candidates.
    t1_many: JudgeManyFn | None = None
    t2_many: JudgeManyFn | None = None
    # Publish each policy's rationale on the verdict (Settings.public_rationale); the audit keeps it.
    public_rationale: bool = False


@dataclass(frozen=True, slots=True)
class Cascade:
    """What the cascade did for one post; every list but `t2_calls` is in the order of the policies."""

    t1_calls: list[JudgeCall]
    reasons: list[list[Reason]]
    t2_calls: list[JudgeCall]
    outcomes: list[PolicyOutcome]

    def t2_for(self, policy_id: str) -> JudgeCall | None:
        return next((c for c in self.t2_calls if c.policy.id == policy_id), None)


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


async def cascade(post: Post, policies: Sequence[Policy], judges: Judges, screened: FunnelResult) -> Cascade:
    """Tier 1 judges every policy; the escalation rules pick the calls tier 2 re-judges; `settle`
    decides each policy (or leaves it to human review). `screened` is the funnel's result for the
    post (its `very_sure` feeds the funnel-disagreement rule)."""
    t1_calls = await ask(judges.t1, judges.t1_many, policies, post)
    reasons = [escalation_reasons(call, screened, post.id, judges.rules) for call in t1_calls]
    escalated = [call.policy for call, why in zip(t1_calls, reasons, strict=True) if why]
    t2_calls = await ask(judges.t2, judges.t2_many, escalated, post)
    t2_by_policy = {c.policy.id: c for c in t2_calls}
    outcomes = [
        settle(call, why, t2_by_policy.get(call.policy.id), judges.rules)
        for call, why in zip(t1_calls, reasons, strict=True)
    ]
    return Cascade(t1_calls, reasons, t2_calls, outcomes)
