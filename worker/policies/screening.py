"""Funnel stage: which policies should a judge look at for each post (the `funnel` library does
the scoring; this module binds it to one policy snapshot and keeps it off the event loop)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import structlog

from funnel import DEFAULT_MODEL_DIR, Funnel, FunnelResult, PolicySpec, load_thresholds, specs_from_hints
from funnel.core import DEFAULT_LANGUAGES
from funnel.heads import load_heads
from funnel.language import UNDETERMINED, LanguageConfig
from funnel.recall import RecallTracker, bypass_policies
from funnel.recall import estimate as recall_estimate
from worker.contracts import PolicyResult
from worker.ops.metrics import Metrics
from worker.policies.files import Policy, PolicySet

log = structlog.get_logger("modstream.funnel")


def specs_from_policies(policies: Iterable[Policy], thresholds: dict[str, float] | None = None) -> list[PolicySpec]:
    """Each policy's `funnel:` front matter as a `PolicySpec`; calibrated `thresholds` (the
    sidecar, `funnel.load_thresholds(dir)`) override the front matter's `threshold`."""
    return specs_from_hints(
        ((p.id, {**p.meta.funnel.model_dump(), "languages": p.meta.languages}) for p in policies), thresholds
    )


@dataclass(frozen=True, slots=True)
class PolicyRuntime:
    """One policy-set version and the funnel compiled for it. Swapped whole on reload, so a
    post is screened and judged entirely under one version."""

    policies: PolicySet
    funnel: Funnel

    @classmethod
    def build(
        cls,
        policies: PolicySet,
        languages: LanguageConfig | None = DEFAULT_LANGUAGES,
        use_heads: bool = False,
        embeddings: bool = True,
    ) -> PolicyRuntime:
        """`languages`: the project's language settings (`Settings.languages.config()`); None
        turns the language step off. `use_heads`: score with the fitted heads of the policy
        directory (`Settings.funnel_heads`; off by default, see docs/funnel.md). `embeddings`
        False (`Settings.funnel_embeddings`): keywords and patterns only, the embedding model is
        not loaded, and heads (which read the embedding) are not used."""
        # A shadow policy with a live twin is screened as its twin (same candidates), so its
        # agreement is measured on exactly the posts the live version sees; it has no funnel column.
        screened = [p for p in policies.policies if p.meta.shadow_of is None]
        specs = specs_from_policies(screened, load_thresholds(policies.directory))
        # Fitted heads (`modstream funnel fit`) where present and still fitting the policy; a
        # policy whose funnel block changed since the fit is scored the old way (warned, counted).
        heads = load_heads(policies.directory) if use_heads and embeddings else None
        model_dir = DEFAULT_MODEL_DIR if embeddings else None
        funnel = Funnel.build(specs, model_dir=model_dir, languages=languages, heads=heads)
        if funnel.stale_heads:
            log.warning("funnel_heads_stale", policies=funnel.stale_heads, hint="re-run modstream funnel fit")
        return cls(policies, funnel)

    @property
    def versions(self) -> dict[str, str]:
        """Every live policy's id -> version in this snapshot (recorded on each verdict)."""
        return {p.id: p.version for p in self.policies.live}

    @property
    def fit_id(self) -> str | None:
        """The fitted heads' fit id the funnel scores with, None without heads in use."""
        return self.funnel.fit_id

    def candidates(self, screened: FunnelResult) -> list[Policy]:
        wanted = set(screened.candidates)
        return [p for p in self.policies.policies if (p.meta.shadow_of or p.id) in wanted]

    def bypass_rates(self, default: float) -> dict[str, float]:
        """Bypass sample rate per live policy: its `funnel.bypass_sample_rate`, else `default`."""
        return {
            p.id: default if p.meta.funnel.bypass_sample_rate is None else p.meta.funnel.bypass_sample_rate
            for p in self.policies.live
        }

    def sampled(self, screened: FunnelResult) -> list[Policy]:
        """The live policies the bypass sample sends this (cleared) post to tier 1 for."""
        wanted = set(screened.sampled)
        return [p for p in self.policies.live if p.id in wanted]


def with_bypass(result: FunnelResult, post_id: str, rates: Mapping[str, float]) -> FunnelResult:
    """`result` with `sampled` set: the policies it was cleared for that the bypass sample
    (funnel.recall.bypass_policies, deterministic by post id) sends to tier 1 anyway."""
    if max(rates.values(), default=0.0) <= 0.0:  # no bypass sample (the default): no hashing per policy
        return result
    chosen = bypass_policies(post_id, result, rates, 0.0)
    return replace(result, sampled=chosen) if chosen else result


def count_recall(metrics: Metrics, tracker: RecallTracker, results: Iterable[PolicyResult]) -> None:
    """Funnel-recall counters and the estimate gauge from one verdict's results: judged
    candidates and bypass-sampled cleared posts (funnel/recall.py)."""
    touched: set[str] = set()
    for result in results:
        if result.violation is None:  # no valid answer: says nothing about the funnel's recall
            continue
        if result.sampled:
            metrics.funnel_sampled.labels(result.policy_id).inc()
            if result.violation:
                metrics.funnel_sampled_violations.labels(result.policy_id).inc()
        elif result.violation:
            metrics.funnel_candidate_violations.labels(result.policy_id).inc()
        tracker.observe(result.policy_id, result.violation, result.sampled, result.sample_rate)
        touched.add(result.policy_id)
    for policy_id in touched:
        estimate = recall_estimate(policy_id, tracker.counts[policy_id])
        if estimate.recall is not None:
            metrics.funnel_recall_estimate.labels(policy_id).set(estimate.recall)


async def screen(
    runtime: PolicyRuntime, texts: Sequence[str], langs: Sequence[str | None] | None = None
) -> list[FunnelResult]:
    """Score a batch in a worker thread: the funnel is CPU work and must not stall Kafka polling.
    `langs`: each post's `Post.lang` (the producer's tag wins over language detection)."""
    if not texts:
        return []
    return await asyncio.to_thread(runtime.funnel.score_batch, list(texts), None if langs is None else list(langs))


def count_screened(metrics: Metrics, results: Iterable[FunnelResult | Exception]) -> None:
    """`modstream_funnel_posts_total{lang,route}`: posts screened per language and route (one
    increment per distinct pair of the batch: `labels()` costs more than the counting)."""
    counts = Counter((r.lang or UNDETERMINED, r.route) for r in results if isinstance(r, FunnelResult))
    for (lang, route), count in counts.items():
        metrics.funnel_posts.labels(lang, route).inc(count)
