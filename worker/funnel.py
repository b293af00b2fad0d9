"""Funnel stage: which policies should a judge look at for each post (the `funnel` library does
the scoring; this module binds it to one policy snapshot and keeps it off the event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from funnel import Funnel, FunnelResult, PolicySpec
from worker.policies import Policy, PolicySet


def spec_of(policy: Policy) -> PolicySpec:
    hints = policy.meta.funnel
    return PolicySpec(
        id=policy.id,
        keywords=tuple(hints.keywords),
        patterns=tuple(hints.patterns),
        exemplars=tuple(hints.exemplars),
        threshold=hints.threshold,
        very_sure=hints.very_sure,
    )


@dataclass(frozen=True, slots=True)
class PolicyRuntime:
    """One policy-set version and the funnel compiled for it. Swapped whole on reload, so a
    post is screened and judged entirely under one version."""

    policies: PolicySet
    funnel: Funnel

    @classmethod
    def build(cls, policies: PolicySet) -> PolicyRuntime:
        return cls(policies, Funnel.build([spec_of(p) for p in policies.policies]))

    def candidates(self, screened: FunnelResult) -> list[Policy]:
        wanted = set(screened.candidates)
        return [p for p in self.policies.policies if p.id in wanted]


async def screen(runtime: PolicyRuntime, texts: Sequence[str]) -> list[FunnelResult]:
    """Score a batch in a worker thread: the funnel is CPU work and must not stall Kafka polling."""
    if not texts:
        return []
    return await asyncio.to_thread(runtime.funnel.score_batch, list(texts))
