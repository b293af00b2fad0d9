"""The simulator's serving model (worker.sim.engine): prefix cache, prompt rendering, faults, latency."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from worker.sim.config import FaultSettings
from worker.sim.engine import PrefixCache, Stats, draw_fault, render_prompt, service_seconds


def words(n: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_prefix_cache_hits_full_shared_blocks_only() -> None:
    cache = PrefixCache(capacity_blocks=100, block_size=16)
    policy = words(40, "p")
    assert cache.lookup_and_insert(policy + words(10, "a")) == 0
    # 40 shared tokens = 2 full blocks; the third block differs (8 policy + 8 post tokens).
    assert cache.lookup_and_insert(policy + words(10, "b")) == 32


def test_prefix_cache_is_chained() -> None:
    cache = PrefixCache(capacity_blocks=100, block_size=4)
    cache.lookup_and_insert(words(8, "a"))
    # The second block is identical but follows a different first block: no hit.
    assert cache.lookup_and_insert(words(4, "z") + words(8, "a")[4:]) == 0


def test_fully_cached_prompt_still_computes_its_last_token() -> None:
    cache = PrefixCache(capacity_blocks=100, block_size=4)
    prompt = words(8)
    cache.lookup_and_insert(prompt)
    assert cache.lookup_and_insert(prompt) == 4


def test_prefix_cache_evicts_least_recently_used() -> None:
    cache = PrefixCache(capacity_blocks=2, block_size=4)
    cache.lookup_and_insert(words(4, "a"))
    cache.lookup_and_insert(words(4, "b"))
    cache.lookup_and_insert(words(4, "c"))  # evicts "a"
    assert len(cache) == 2
    assert cache.lookup_and_insert([*words(4, "a"), "tail"]) == 0


def test_render_prompt_puts_effort_first_and_post_last() -> None:
    low = render_prompt([("system", "POLICY"), ("user", "POST")], "low")
    high = render_prompt([("system", "POLICY"), ("user", "POST")], "high")
    assert low != high and "Reasoning: low" in low
    assert low.index("POLICY") < low.index("POST")
    assert "developer<|message|>" in low  # vLLM maps the system message to harmony's developer role


def test_draw_fault_follows_rates() -> None:
    rng = random.Random(1)
    assert {draw_fault(rng, FaultSettings()) for _ in range(100)} == {None}
    assert {draw_fault(rng, FaultSettings(truncate_rate=1.0)) for _ in range(100)} == {"truncate"}
    mixed = [draw_fault(rng, FaultSettings(fail_5xx_rate=0.5, empty_rate=0.5)) for _ in range(400)]
    assert set(mixed) == {"5xx", "empty"}
    assert 150 < mixed.count("5xx") < 250


def test_fault_rates_must_share_one() -> None:
    with pytest.raises(ValidationError):
        FaultSettings(fail_5xx_rate=0.6, timeout_rate=0.6)


def test_service_time_counts_uncached_prefill_and_decode() -> None:
    assert service_seconds(1000, 100, 1.0, 0.02, 0.2) == pytest.approx(0.04)
    assert service_seconds(1000, 100, 2.0, 0.02, 0.2) == pytest.approx(0.08)
    assert service_seconds(1000, 100, 0.0, 0.02, 0.2) == 0.0


def test_stats_reset_keeps_live_gauges() -> None:
    stats = Stats()
    stats.enter_queue()
    stats.start_running(10, queued=True)
    stats.requests = 5
    stats.reset()
    assert (stats.requests, stats.running, stats.running_tokens, stats.max_running) == (0, 1, 10, 1)
    stats.stop_running(10)
    assert (stats.running, stats.running_tokens) == (0, 0)
