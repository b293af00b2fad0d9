"""How the sweep re-judges one post: the funnel (or not), then the real cascade or one tier, through
the worker's judge client, every request paced by the sweep's token bucket."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from funnel import FunnelResult
from worker.cascade.escalate import PolicyOutcome, below
from worker.cascade.tiers import Judges, ask, cascade
from worker.cascade.verdict import all_results, funnel_summary
from worker.config import EscalationSettings, JudgeTierSettings, Settings
from worker.contracts import FunnelSummary, PolicyResult, Post, ReasoningEffort, Tier
from worker.judges.client import JudgeClient
from worker.judges.protocol import JudgeCall, JudgeFn, JudgeManyFn
from worker.policies.files import Policy
from worker.policies.screening import PolicyRuntime, screen
from worker.sweep.bucket import TokenBucket
from worker.sweep.state import SweepTier


def paced(fn: JudgeFn, bucket: TokenBucket) -> JudgeFn:
    async def call(policy: Policy, post: Post) -> JudgeCall:
        await bucket.acquire()
        return await fn(policy, post)

    return call


def paced_many(fn: JudgeManyFn, bucket: TokenBucket) -> JudgeManyFn:
    async def call(policies: Sequence[Policy], post: Post) -> list[JudgeCall]:
        await bucket.acquire()
        return await fn(policies, post)

    return call


def tier_settings(base: JudgeTierSettings, effort: ReasoningEffort | None) -> JudgeTierSettings:
    return base if effort is None else base.model_copy(update={"reasoning_effort": effort})


@dataclass(frozen=True, slots=True)
class Rejudged:
    outcomes: list[PolicyOutcome]
    results: list[PolicyResult]  # all_results(outcomes): with rationale
    calls: list[JudgeCall]
    funnel: FunnelSummary
    signals: dict[str, list[str]] = field(default_factory=dict)

    @property
    def tier(self) -> Tier:
        tiers = {o.deciding.tier for o in self.outcomes}
        return "t2" if "t2" in tiers else "t1" if tiers else "funnel"

    @property
    def top(self) -> JudgeCall | None:
        return next((o.deciding for o in self.outcomes if o.deciding.tier == self.tier), None)

    @property
    def requests(self) -> int:
        return len({id(c.audit) for c in self.calls})

    @property
    def reasons(self) -> list[str]:
        return sorted({r for o in self.outcomes for r in o.escalation_reasons})


class Rejudger:
    """The judges of one sweep. `policies`: the live policies re-judged (shadows never are)."""

    def __init__(
        self,
        settings: Settings,
        runtime: PolicyRuntime | None,
        policies: Sequence[Policy],
        tier: SweepTier,
        effort: ReasoningEffort | None,
        bucket: TokenBucket,
    ) -> None:
        self.runtime = runtime
        self.policies = list(policies)
        self.tier = tier
        self.rules: EscalationSettings = settings.escalation
        t1_effort = effort if tier in ("t1", "cascade") else None
        t2_effort = effort if tier in ("t2", "cascade") else None
        self.t1 = JudgeClient("t1", tier_settings(settings.judge_t1, t1_effort))
        self.t2 = JudgeClient("t2", tier_settings(settings.judge_t2, t2_effort))
        many = settings.judge_mode == "multi_policy"
        self.judges = Judges(
            t1=paced(self.t1.judge, bucket),
            t2=paced(self.t2.judge, bucket),
            rules=self.rules,
            t1_many=paced_many(self.t1.judge_many, bucket) if many else None,
            t2_many=paced_many(self.t2.judge_many, bucket) if many else None,
        )

    async def aclose(self) -> None:
        await self.t1.aclose()
        await self.t2.aclose()

    async def _screen(self, post: Post) -> tuple[FunnelResult, list[Policy], FunnelSummary]:
        ids = [p.id for p in self.policies]
        if self.runtime is None:  # --funnel off: every re-judged policy is a candidate
            screened = FunnelResult(candidates=ids, scores={}, signals={}, very_sure=[])
            return screened, list(self.policies), FunnelSummary(candidates=ids, scores={})
        (screened,) = await screen(self.runtime, [post.text], [post.lang])
        wanted = {p.id for p in self.runtime.candidates(screened)}
        chosen = [p for p in self.policies if p.id in wanted]
        summary = funnel_summary(screened, self.runtime.versions, self.runtime.fit_id)
        return screened, chosen, summary

    async def rejudge(self, post: Post) -> Rejudged:
        screened, chosen, summary = await self._screen(post)
        signals = {k: list(v) for k, v in screened.signals.items()} if self.runtime is not None else {}
        outcomes: list[PolicyOutcome] = []
        calls: list[JudgeCall] = []
        if chosen and self.tier == "cascade":
            done = await cascade(post, chosen, self.judges, screened)
            outcomes, calls = done.outcomes, [*done.t1_calls, *done.t2_calls]
        elif chosen:
            one, many = (
                (self.judges.t1, self.judges.t1_many) if self.tier == "t1" else (self.judges.t2, self.judges.t2_many)
            )
            calls = await ask(one, many, chosen, post)
            outcomes = [PolicyOutcome(c.policy, c, unresolved=self._unsure(c)) for c in calls]
        return Rejudged(outcomes, all_results(outcomes), calls, summary, signals)

    def _unsure(self, call: JudgeCall) -> bool:
        """One tier alone: no valid answer, or (tier 2) below the tier-2 confidence bar, is a human's call."""
        if call.answer is None:
            return True
        return self.tier == "t2" and below(call.answer.confidence, self.rules.t2_min_confidence)
