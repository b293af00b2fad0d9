"""The fast path observes the post-latency histogram once per post, in one update per distinct
latency (`observe_many`): the exposition is what observing each post alone gives."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from worker.ops.metrics import LATENCY_BUCKETS, Metrics, observe_many
from worker.ops.sensors import Sensors


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def histogram() -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    return registry, Histogram("h_seconds", "h", buckets=LATENCY_BUCKETS, registry=registry)


@pytest.mark.parametrize("seed", range(5))
def test_observe_many_is_observing_one_at_a_time(seed: int) -> None:
    rng = random.Random(seed)
    one_registry, one = histogram()
    many_registry, many = histogram()
    # Values on, between and beyond the bucket bounds, zero, and one larger than every bound (+Inf).
    values = [*LATENCY_BUCKETS, 0.0, 1e9, *(rng.uniform(0, 400) for _ in range(20))]
    for value in values:
        count = rng.randint(1, 300)
        for _ in range(count):
            one.observe(value)
        observe_many(many, value, count)
    expected, got = samples(one_registry), samples(many_registry)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-12), key


def test_on_cleared_counts_every_post_once() -> None:
    sensors = Sensors(Metrics())
    sensors.on_cleared({0.004: 3, 0.2: 2, 700.0: 1})
    registry = sensors.metrics.registry
    assert registry.get_sample_value("modstream_verdicts_total", {"decision": "allow", "tier": "funnel"}) == 6
    assert registry.get_sample_value("modstream_post_latency_seconds_count") == 6
    assert registry.get_sample_value("modstream_post_latency_seconds_bucket", {"le": "0.01"}) == 3
    assert registry.get_sample_value("modstream_post_latency_seconds_bucket", {"le": "0.25"}) == 5
    assert registry.get_sample_value("modstream_post_latency_seconds_bucket", {"le": "300.0"}) == 5
    assert registry.get_sample_value("modstream_post_latency_seconds_bucket", {"le": "+Inf"}) == 6
    assert math.isclose(registry.get_sample_value("modstream_post_latency_seconds_sum") or 0, 0.012 + 0.4 + 700)
