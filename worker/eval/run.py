"""Eval harness, I/O part: judge labelled (post, policy) pairs with the real JudgeClient, no Kafka.

--tier cascade runs the worker's own cascade (`worker.cascade.tiers.cascade`) and decides with
`policy_decision` (the precedence rule of worker/cascade/precedence.py), so an eval measures the
decisions the worker would make. The funnel is not run: every labelled pair is judged, and the
funnel-disagreement and severe-negative escalations therefore never fire here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from funnel import FunnelResult
from worker.cascade.escalate import PolicyOutcome
from worker.cascade.tiers import Judges, ask, cascade
from worker.cascade.verdict import policy_decision
from worker.config import EscalationSettings, JudgeTierSettings
from worker.eval.scoring import EvalTier, LabelledPost, PairResult, RunSummary, pairs_for
from worker.judges.client import JudgeCall, JudgeClient, JudgeUnavailable
from worker.policies.files import Policy, PolicySet


@dataclass(frozen=True, slots=True)
class EvalJudges:
    tier: EvalTier
    t1: JudgeTierSettings
    t2: JudgeTierSettings
    rules: EscalationSettings
    multi_policy: bool = False
    concurrency: int = 8
    # A judge that stays unavailable this long fails the pair ("unavailable") instead of hanging.
    give_up_after_s: float = 120.0


async def list_models(http: httpx.AsyncClient, base_url: str) -> list[str]:
    """Model ids a judge serves (`/v1/models`); raises httpx.HTTPError when it does not answer."""
    response = await http.get(f"{base_url}/models", timeout=10.0)
    response.raise_for_status()
    return [str(m.get("id")) for m in response.json().get("data", [])]


def _usage(call: JudgeCall, share: int) -> tuple[float, float, float]:
    usage = call.audit.usage or {}
    details = usage.get("prompt_tokens_details") or {}
    return (
        float(usage.get("prompt_tokens") or 0) / share,
        float(usage.get("completion_tokens") or 0) / share,
        float(details.get("cached_tokens") or 0) / share,
    )


def pair_result(item: LabelledPost, outcome: PolicyOutcome, calls: Sequence[JudgeCall]) -> PairResult:
    """One pair from its settled outcome and the calls made for it (t1, maybe t2). A multi-policy
    call's latency is the pair's latency; its tokens are shared out evenly between its policies."""
    policy = outcome.policy
    answer = outcome.deciding.answer
    prompt = completion = cached = latency = 0.0
    for call in calls:
        share = len(call.audit.policy_versions or {}) or 1
        p, c, k = _usage(call, share)
        prompt, completion, cached, latency = prompt + p, completion + c, cached + k, latency + call.audit.latency_ms
    return PairResult(
        post_id=item.post.id,
        policy_id=policy.id,
        policy_version=policy.version,
        label=item.labels[policy.id],
        predicted=None if answer is None else answer.violation,
        decision=policy_decision(outcome),
        tier=outcome.deciding.tier,
        confidence=None if answer is None else answer.confidence,
        escalation_reasons=list(outcome.escalation_reasons),
        failure=None if answer is not None else outcome.deciding.failure,
        latency_ms=latency,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
    )


def unavailable(item: LabelledPost, policy: Policy, tier: EvalTier) -> PairResult:
    return PairResult(
        post_id=item.post.id,
        policy_id=policy.id,
        policy_version=policy.version,
        label=item.labels[policy.id],
        predicted=None,
        decision="review",
        tier="t2" if tier == "t2" else "t1",
        confidence=None,
        failure="unavailable",
    )


class Evaluator:
    """Judges every labelled pair of a dataset under one policy set."""

    def __init__(self, judges: EvalJudges) -> None:
        self.judges = judges
        # Each client owns its HTTP session (closed by `aclose`).
        self.t1 = JudgeClient("t1", judges.t1, give_up_after_s=judges.give_up_after_s)
        self.t2 = JudgeClient("t2", judges.t2, give_up_after_s=judges.give_up_after_s)
        many = judges.multi_policy
        self.cascade_judges = Judges(
            t1=self.t1.judge,
            t2=self.t2.judge,
            rules=judges.rules,
            t1_many=self.t1.judge_many if many else None,
            t2_many=self.t2.judge_many if many else None,
        )

    async def aclose(self) -> None:
        await self.t1.aclose()
        await self.t2.aclose()

    async def run(
        self, policies: PolicySet, items: Sequence[LabelledPost], advance: Callable[[int], None] | None = None
    ) -> RunSummary:
        by_id = policies.by_id()
        pairs = pairs_for(items, list(by_id))
        # One task per post: in multi_policy mode its policies share one request, as in the worker.
        wanted: dict[str, list[Policy]] = {}
        for item, pid in pairs:
            wanted.setdefault(item.post.id, []).append(by_id[pid])
        slots = asyncio.Semaphore(self.judges.concurrency)

        async def one(item: LabelledPost) -> list[PairResult]:
            async with slots:
                results = await self._judge_post(item, wanted[item.post.id])
            if advance is not None:
                advance(len(results))
            return results

        nested = await asyncio.gather(*(one(item) for item in items if item.post.id in wanted))
        results = [r for group in nested for r in group]
        return RunSummary(str(policies.directory), {p.id: p.version for p in policies.policies}, results)

    async def _judge_post(self, item: LabelledPost, policies: list[Policy]) -> list[PairResult]:
        j = self.judges
        first = self.t2 if j.tier == "t2" else self.t1
        try:
            if j.tier != "cascade":
                calls = await ask(first.judge, first.judge_many if j.multi_policy else None, policies, item.post)
                outcomes = [PolicyOutcome(c.policy, c, unresolved=c.answer is None) for c in calls]
                return [pair_result(item, o, [c]) for o, c in zip(outcomes, calls, strict=True)]
            done = await cascade(item.post, policies, self.cascade_judges, _unscreened(policies))
        except JudgeUnavailable:
            return [unavailable(item, p, j.tier) for p in policies]
        results = []
        for call, outcome in zip(done.t1_calls, done.outcomes, strict=True):
            t2 = done.t2_for(call.policy.id)
            results.append(pair_result(item, outcome, [call] if t2 is None else [call, t2]))
        return results


def _unscreened(policies: Sequence[Policy]) -> FunnelResult:
    # No funnel in eval: the pair is judged because it is labelled, not because it was screened in.
    return FunnelResult(candidates=[p.id for p in policies], scores={}, signals={}, very_sure=[])
