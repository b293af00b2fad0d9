"""Funnel stage: which policies should a judge look at for each post (the `funnel` library does
the scoring; this module binds it to one policy snapshot and keeps it off the event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from funnel import Funnel, FunnelResult, PolicySpec, load_thresholds, specs_from_hints
from worker.policies import Policy, PolicySet


def specs_from_policies(policies: Iterable[Policy], thresholds: dict[str, float] | None = None) -> list[PolicySpec]:
    """Each policy's `funnel:` front matter as a `PolicySpec`; calibrated `thresholds` (the
    sidecar, `funnel.load_thresholds(dir)`) override the front matter's `threshold`."""
    return specs_from_hints(((p.id, p.meta.funnel.model_dump()) for p in policies), thresholds)


@dataclass(frozen=True, slots=True)
class PolicyRuntime:
    """One policy-set version and the funnel compiled for it. Swapped whole on reload, so a
    post is screened and judged entirely under one version."""

    policies: PolicySet
    funnel: Funnel

    @classmethod
    def build(cls, policies: PolicySet) -> PolicyRuntime:
        # A shadow policy with a live twin is screened as its twin (same candidates), so its
        # agreement is measured on exactly the posts the live version sees; it has no funnel column.
        screened = [p for p in policies.policies if p.meta.shadow_of is None]
        return cls(policies, Funnel.build(specs_from_policies(screened, load_thresholds(policies.directory))))

    def candidates(self, screened: FunnelResult) -> list[Policy]:
        wanted = set(screened.candidates)
        return [p for p in self.policies.policies if (p.meta.shadow_of or p.id) in wanted]


async def screen(runtime: PolicyRuntime, texts: Sequence[str]) -> list[FunnelResult]:
    """Score a batch in a worker thread: the funnel is CPU work and must not stall Kafka polling."""
    if not texts:
        return []
    return await asyncio.to_thread(runtime.funnel.score_batch, list(texts))
