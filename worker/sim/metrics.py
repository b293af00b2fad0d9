"""/metrics with vLLM's metric names, read live from the simulator's Stats.

A custom collector on a per-server CollectorRegistry (no process globals), so two simulators
in one process do not share series and POST /sim/reset resets what Prometheus sees too
(which Prometheus reads as an ordinary counter reset).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .engine import LATENCY_BUCKETS, Stats


class VllmMetricsCollector(Collector):
    def __init__(self, stats: Stats, model: str, kv_usage: Callable[[], float]) -> None:
        self._stats = stats
        self._model = model
        self._kv_usage = kv_usage

    def collect(self) -> Iterable[Metric]:
        s = self._stats
        labels = ["model_name"]
        values = [self._model]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(values, value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=labels)
            c.add_metric(values, value)
            return c

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.", s.running)
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", s.waiting)
        yield gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            self._kv_usage(),
        )
        yield counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of tokens.", s.prefix_cache_queries)
        yield counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of tokens.", s.prefix_cache_hits)
        yield counter("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens)
        yield counter("vllm:generation_tokens", "Number of generation tokens processed.", s.generation_tokens)

        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=[*labels, "finished_reason"],
        )
        for reason in sorted(set(s.by_finish_reason) | {"stop", "length"}):
            success.add_metric([*values, reason], s.by_finish_reason.get(reason, 0))
        yield success

        hist = HistogramMetricFamily(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", labels=labels
        )
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(LATENCY_BUCKETS, s.latency_bucket_counts, strict=True):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", s.latency_count))
        hist.add_metric(values, buckets, sum_value=s.latency_sum)
        yield hist


def build_registry(stats: Stats, model: str, kv_usage: Callable[[], float]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(VllmMetricsCollector(stats, model, kv_usage))
    return registry
