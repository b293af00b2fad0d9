"""Prometheus metrics of one worker, in its own registry (no process-global state)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """`histogram.observe(amount)` `count` times, in one bucket increment and one sum increment
    (the sum gains `amount * count` at once: equal to `count` additions up to float rounding).
    For an unlabelled histogram without exemplars; prometheus_client keeps no public API for it,
    so a histogram without its internals (`_buckets`, `_upper_bounds`, `_sum`) is observed
    `count` times instead. tests/unit/stream/test_cleared_metrics.py compares both ways."""
    buckets = getattr(histogram, "_buckets", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    total = getattr(histogram, "_sum", None)
    if buckets is None or bounds is None or total is None:
        for _ in range(count):
            histogram.observe(amount)
        return
    total.inc(amount * count)
    for i, bound in enumerate(bounds):
        if amount <= bound:
            buckets[i].inc(count)
            break


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_consumed = Counter(
            "modstream_records_consumed", "Records read from the posts topic", ["topic"], registry=r
        )
        self.verdicts = Counter(
            "modstream_verdicts", "Verdicts published to the actions topic", ["decision", "tier"], registry=r
        )
        self.dlq_records = Counter(
            "modstream_dlq_records", "Records sent to the dead-letter topic", ["error_type"], registry=r
        )
        self.review_records = Counter(
            "modstream_review_records",
            "Review records sent to the review topic (decision review), per reason: unresolved, review_action, "
            "severe_negative (a record with several reasons counts once under each)",
            ["reason"],
            registry=r,
        )
        self.trace_headers_dropped = Counter(
            "modstream_trace_headers_dropped",
            "Input traceparent/tracestate headers dropped as invalid (W3C format), per header",
            ["header"],
            registry=r,
        )
        self.funnel_candidates = Counter(
            "modstream_funnel_candidates", "Posts the funnel passed to the judge, per policy", ["policy_id"], registry=r
        )
        self.funnel_posts = Counter(
            "modstream_funnel_posts",
            "Posts screened, per language (producer's tag or detected; und: no letters) and route "
            "(judge: a language rule sent it to the judge; allow: every policy exempts the language; else funnel)",
            ["lang", "route"],
            registry=r,
        )
        self.funnel_heads_stale = Gauge(
            "modstream_funnel_heads_stale",
            "Policies with a fitted head that no longer fits (funnel block or model changed since "
            "`modstream funnel fit`): scored the old way",
            registry=r,
        )
        # Funnel recall measured in production (funnel/recall.py): the judge's verdicts on candidates
        # and on bypass-sampled cleared posts; estimate ≈ C / (C + S / rate).
        self.funnel_candidate_violations = Counter(
            "modstream_funnel_candidate_violations",
            "Funnel candidates the judge found violating, per policy",
            ["policy_id"],
            registry=r,
        )
        self.funnel_sampled_violations = Counter(
            "modstream_funnel_sampled_violations",
            "Bypass-sampled cleared posts the judge found violating (funnel misses), per policy",
            ["policy_id"],
            registry=r,
        )
        self.funnel_sampled = Counter(
            "modstream_funnel_sampled",
            "Cleared posts the bypass sample sent to tier 1, per policy",
            ["policy_id"],
            registry=r,
        )
        self.funnel_recall_estimate = Gauge(
            "modstream_funnel_recall_estimate",
            "Estimated funnel recall per policy from the bypass sample (this worker's counts since start)",
            ["policy_id"],
            registry=r,
        )
        self.judge_latency = Histogram(
            "modstream_judge_latency_seconds",
            "Latency of one HTTP call to a judge",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.judge_calls = Counter(
            "modstream_judge_calls", "Judge calls by outcome (ok or the failure kind)", ["tier", "outcome"], registry=r
        )
        self.judge_retries = Counter(
            "modstream_judge_retries",
            "Judge calls retried because the judge was unavailable",
            ["tier", "error"],
            registry=r,
        )
        self.escalations = Counter(
            "modstream_escalations", "Tier-1 results escalated to tier 2, by reason", ["reason"], registry=r
        )
        self.post_latency = Histogram(
            "modstream_post_latency_seconds",
            "Time from consuming a post to its verdict being acknowledged",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("modstream_in_flight_posts", "Posts being processed now", registry=r)
        self.paused_partitions = Gauge("modstream_paused_partitions", "Partitions paused by backpressure", registry=r)
        self.commit_lag = Gauge(
            "modstream_commit_lag_records",
            "Records consumed but not yet committable (finished or not), per partition",
            ["topic", "partition"],
            registry=r,
        )
        self.commits = Counter("modstream_commits", "Offset commits", ["result"], registry=r)
        self.publish_errors = Counter(
            "modstream_publish_errors", "Delivery failures (each retried)", ["topic", "error"], registry=r
        )
        self.policy_reloads = Counter("modstream_policy_reloads", "Policy directory reloads", ["result"], registry=r)
        self.ready = Gauge(
            "modstream_ready", "1 when assigned and every judge is ready (/health, model listed)", registry=r
        )
        self.judge_breaker_state = Gauge(
            "modstream_judge_breaker_state",
            "Circuit breaker of one judge endpoint: 0 closed, 1 half-open (probing), 2 open (skipped)",
            ["tier", "endpoint"],
            registry=r,
        )
        self.shadow_agreement = Counter(
            "modstream_shadow_agreement",
            "Posts where a shadow policy's violation flag agrees (or not) with its live twin's",
            ["policy_id", "agree"],
            registry=r,
        )
        # ---- delivery guarantees and backpressure (docs/reliability.md) ----
        self.in_flight_cap = Gauge("modstream_in_flight_cap", "max_in_flight: the cap on held posts", registry=r)
        self.in_flight_high_water = Gauge(
            "modstream_in_flight_high_water", "Most posts held at once since start (never above the cap)", registry=r
        )
        self.parked = Gauge(
            "modstream_parked_records", "Records consumed but waiting for room in their partition", registry=r
        )
        self.partition_in_flight = Gauge(
            "modstream_partition_in_flight",
            "Records of one partition started and not yet committable (parked ones not included)",
            ["topic", "partition"],
            registry=r,
        )
        self.tasks_running = Gauge("modstream_tasks_running", "Posts being judged or published now", registry=r)
        self.rebalances = Counter("modstream_rebalances", "Partitions assigned, revoked or lost", ["event"], registry=r)
        self.abandoned = Counter(
            "modstream_abandoned_records",
            "In-flight records given up on (revoke/lost/drain deadline/rewind); replayed by the next owner",
            ["reason"],
            registry=r,
        )
        self.processing_retries = Counter(
            "modstream_processing_retries", "Posts whose processing raised and was retried", registry=r
        )
        self.client_restarts = Counter(
            "modstream_kafka_client_restarts", "Kafka clients recreated after a fatal error", ["client"], registry=r
        )
        self.kafka_errors = Counter(
            "modstream_kafka_errors", "Kafka client errors by class and name", ["client", "class", "error"], registry=r
        )
        self.broker_up = Gauge("modstream_broker_reachable", "1 when the last broker probe succeeded", registry=r)
        # ---- operations: dashboards and alerts (docs/operations.md) ----
        self.policy_verdicts = Counter(
            "modstream_policy_verdicts",
            "How each live policy ended for each judged post: its action when violated (hide, age_gate, label), "
            "review (unresolved, or action review), allow; tier is the deciding judge's",
            ["policy_id", "decision", "tier"],
            registry=r,
        )
        self.judge_tokens = Counter(
            "modstream_judge_tokens",
            "Tokens of judge calls as the server reported them (usage): prompt, completion, cached_prompt",
            ["tier", "kind"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "modstream_consumer_lag_records",
            "Records of an assigned partition after its committed offset (librdkafka statistics: "
            "high watermark minus committed offset; refreshed every 15 s)",
            ["topic", "partition"],
            registry=r,
        )
        # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds... (Linux /proc).
        ProcessCollector(registry=r)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a partition's series once it is revoked or lost, so they do not go stale (the
        next owner reports them)."""
        for gauge in (self.commit_lag, self.partition_in_flight, self.consumer_lag):
            with contextlib.suppress(KeyError):
                gauge.remove(topic, str(partition))


def usage_tokens(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Token counts of an OpenAI-style `usage` object by kind (missing or malformed fields: none)."""
    if not isinstance(usage, Mapping):
        return {}
    out: dict[str, int] = {}
    for kind, field in (("prompt", "prompt_tokens"), ("completion", "completion_tokens")):
        value = usage.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out[kind] = value
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, Mapping) else None
    if isinstance(cached, int) and not isinstance(cached, bool) and cached > 0:
        out["cached_prompt"] = cached
    return out


def consumer_lag_from_stats(stats: str | bytes) -> dict[tuple[str, int], int]:
    """Per-partition consumer lag from librdkafka's statistics JSON (`topics.*.partitions.*.
    consumer_lag`); partitions with an unknown lag (-1) and the internal partition -1 are left out."""
    try:
        data = orjson.loads(stats)
    except orjson.JSONDecodeError:
        return {}
    out: dict[tuple[str, int], int] = {}
    topics = data.get("topics") if isinstance(data, dict) else None
    for topic, entry in (topics or {}).items():
        partitions = entry.get("partitions") if isinstance(entry, dict) else None
        for key, partition in (partitions or {}).items():
            lag = partition.get("consumer_lag") if isinstance(partition, dict) else None
            if not isinstance(lag, int) or lag < 0 or key == "-1":
                continue
            try:
                out[(str(topic), int(key))] = lag
            except ValueError:
                continue
    return out
