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
