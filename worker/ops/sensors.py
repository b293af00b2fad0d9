"""Metrics as named hooks (faust's sensors): the stream code says what happened
(`sensors.on_verdict(...)`, `sensors.on_dead_letter(...)`); this class owns the Prometheus
objects (worker/ops/metrics.py) and knows which series each event moves. Metric names and labels
are those of `Metrics`; nothing outside worker/ops touches a Prometheus object.

Hot hooks (a verdict, a judge call) keep their labelled children in small dicts: prometheus_client's
`labels()` takes a lock and builds a key per call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from funnel import FunnelResult
from funnel.recall import RecallTracker
from worker.cascade.pipeline import Judged
from worker.cascade.verdict import policy_decision
from worker.judges.breaker import STATE_VALUE, BreakerState
from worker.judges.client import JudgeCall
from worker.kafka.types import TopicPartitionKey
from worker.ops.metrics import Metrics, observe_many, usage_tokens
from worker.ops.tracing import end_post_trace
from worker.policies.screening import count_recall, count_screened


class Sensors:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        # Funnel recall from the judge's verdicts on candidates and bypass samples (funnel/recall.py).
        self.recall = RecallTracker()
        self._verdicts: dict[tuple[str, str], Any] = {}
        self._judge_calls: dict[tuple[str, str], Any] = {}
        self._latency: dict[str, Any] = {}

    # ---- consuming and screening ---------------------------------------------------------------

    def on_consumed(self, topic: str, count: int) -> None:
        self.metrics.records_consumed.labels(topic).inc(count)

    def on_abandoned(self, reason: str, count: int = 1) -> None:
        """In-flight or parked records given up on (replayed by the next owner or the re-fetch)."""
        if count:
            self.metrics.abandoned.labels(reason).inc(count)

    def on_trace_header_dropped(self, header: str) -> None:
        self.metrics.trace_headers_dropped.labels(header).inc()

    def on_screened(self, results: Iterable[FunnelResult | Exception], stale_heads: int) -> None:
        count_screened(self.metrics, results)
        self.metrics.funnel_heads_stale.set(stale_heads)

    def on_candidates(self, policy_ids: Iterable[str]) -> None:
        for policy_id in policy_ids:
            self.metrics.funnel_candidates.labels(policy_id).inc()

    # ---- outcomes --------------------------------------------------------------------------------

    def _verdict(self, decision: str, tier: str) -> Any:
        child = self._verdicts.get((decision, tier))
        if child is None:
            child = self._verdicts[(decision, tier)] = self.metrics.verdicts.labels(decision, tier)
        return child

    def on_judged(self, judged: Judged, latency_s: float) -> None:
        """One post's verdict (and audit) acknowledged by the broker."""
        for reason in judged.escalations:
            self.metrics.escalations.labels(reason).inc()
        for agreement in judged.shadow:
            self.metrics.shadow_agreement.labels(agreement.policy_id, str(agreement.agree).lower()).inc()
        verdict = judged.verdict
        self._verdict(verdict.decision, verdict.tier).inc()
        count_recall(self.metrics, self.recall, verdict.results)
        for outcome in judged.outcomes:
            decision = policy_decision(outcome)
            self.metrics.policy_verdicts.labels(outcome.policy.id, decision, outcome.deciding.tier).inc()
        self.metrics.post_latency.observe(latency_s)
        end_post_trace()  # the post's OpenTelemetry spans, when enabled (worker/ops/tracing.py)

    def on_cleared(self, latencies_s: Mapping[float, int]) -> None:
        """Verdicts of the fast path (funnel cleared, no judge): `allow` by the funnel tier, exactly
        what `on_judged` counts for such a post (no results, so nothing for recall). `latencies_s`:
        posts per latency (a group's posts mostly share one consumed-at time, so one latency):
        the latency histogram is observed once per post, in one update per distinct latency."""
        self._verdict("allow", "funnel").inc(sum(latencies_s.values()))
        histogram = self.metrics.post_latency
        for latency, count in latencies_s.items():
            observe_many(histogram, latency, count)

    def on_review_record(self, reasons: Iterable[str]) -> None:
        """A review record acknowledged on the review topic."""
        for reason in reasons:
            self.metrics.review_records.labels(reason).inc()

    def on_dead_letter(self, error_type: str) -> None:
        self.metrics.dlq_records.labels(error_type).inc()
        end_post_trace(error_type)

    def on_processing_retry(self) -> None:
        self.metrics.processing_retries.inc()

    # ---- judges ------------------------------------------------------------------------------------

    def on_judge_calls(self, calls: Sequence[JudgeCall]) -> None:
        for call in calls:
            key = (call.tier, call.failure or "ok")
            child = self._judge_calls.get(key)
            if child is None:
                child = self._judge_calls[key] = self.metrics.judge_calls.labels(*key)
            child.inc()
        # A multi-policy request's calls share one audit record (one request): count its tokens once.
        for audit in {id(c.audit): c.audit for c in calls}.values():
            for kind, tokens in usage_tokens(audit.usage).items():
                self.metrics.judge_tokens.labels(audit.tier, kind).inc(tokens)

    def on_judge_latency(self, tier: str, seconds: float) -> None:
        child = self._latency.get(tier)
        if child is None:
            child = self._latency[tier] = self.metrics.judge_latency.labels(tier)
        child.observe(seconds)

    def on_judge_retry(self, tier: str, error: str) -> None:
        self.metrics.judge_retries.labels(tier, error).inc()

    def on_breaker(self, tier: str, endpoint: str, state: BreakerState) -> None:
        self.metrics.judge_breaker_state.labels(tier, endpoint).set(STATE_VALUE[state])

    def on_policy_reload(self, result: str) -> None:
        self.metrics.policy_reloads.labels(result).inc()

    # ---- flow and backpressure -----------------------------------------------------------------

    def on_in_flight_cap(self, cap: int) -> None:
        self.metrics.in_flight_cap.set(cap)

    def on_flow(self, held: int, high_water: int, parked: int, tasks: int) -> None:
        m = self.metrics
        m.in_flight.set(held)
        m.in_flight_high_water.set(high_water)
        m.parked.set(parked)
        m.tasks_running.set(tasks)

    def on_paused(self, paused: int, in_flight: Mapping[TopicPartitionKey, int]) -> None:
        self.metrics.paused_partitions.set(paused)
        for (topic, partition), count in in_flight.items():
            self.metrics.partition_in_flight.labels(topic, str(partition)).set(count)

    # ---- commits, rebalances, clients ------------------------------------------------------------

    def on_commit_lag(self, lag: Mapping[TopicPartitionKey, int]) -> None:
        for (topic, partition), count in lag.items():
            self.metrics.commit_lag.labels(topic, str(partition)).set(count)

    def on_commit(self, ok: bool) -> None:
        self.metrics.commits.labels("ok" if ok else "error").inc()

    def on_publish_error(self, topic: str, error: str) -> None:
        self.metrics.publish_errors.labels(topic, error).inc()

    def on_rebalance(self, event: str, count: int) -> None:
        self.metrics.rebalances.labels(event).inc(count)

    def on_partition_gone(self, tp: TopicPartitionKey) -> None:
        self.metrics.forget_partition(*tp)

    def on_consumer_lag(self, lag: Mapping[TopicPartitionKey, int]) -> None:
        for (topic, partition), count in lag.items():
            self.metrics.consumer_lag.labels(topic, str(partition)).set(count)

    def on_kafka_error(self, client: str, kind: str, error: str) -> None:
        self.metrics.kafka_errors.labels(client, kind, error).inc()

    def on_client_restart(self, client: str) -> None:
        self.metrics.client_restarts.labels(client).inc()

    # ---- readiness (watch.py) --------------------------------------------------------------------

    def on_broker_probe(self, reachable: bool) -> None:
        self.metrics.broker_up.set(1 if reachable else 0)

    def on_readiness(self, ready: bool) -> None:
        self.metrics.ready.set(1 if ready else 0)
