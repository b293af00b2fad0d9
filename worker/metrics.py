"""Prometheus metrics of one worker, in its own registry (no process-global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


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
        self.funnel_candidates = Counter(
            "modstream_funnel_candidates", "Posts the funnel passed to the judge, per policy", ["policy_id"], registry=r
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
        self.ready = Gauge("modstream_ready", "1 when assigned and judges answer /v1/models", registry=r)
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
