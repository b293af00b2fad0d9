"""The simulator's serving model (worker.sim.engine): prefix cache, prompt rendering, faults, latency."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from tests.conftest import POLICIES_DIR
from worker.sim import tokens
from worker.sim.config import FaultSettings
from worker.sim.engine import KvBlocks, LatencyModel, PrefixCache, Stats, draw_fault, prompt_token_ids, render_prompt


def ids(n: int, base: int = 1000) -> list[int]:
    return list(range(base, base + n))


def test_prefix_cache_hits_full_shared_blocks_only() -> None:
    cache = PrefixCache(capacity_blocks=100, block_size=16)
    policy = ids(40, 1000)
    assert cache.lookup_and_insert(policy + ids(10, 5000)).hit_tokens == 0
    # 40 shared tokens = 2 full blocks; the third block differs (8 policy + 8 post tokens).
    assert cache.lookup_and_insert(policy + ids(10, 6000)).hit_tokens == 32


def test_prefix_cache_128_token_blocks() -> None:
    # vLLM's measured arithmetic: a repeated 979-token prompt hits 896 (7 blocks of 128); under 128 never hits.
    cache = PrefixCache(capacity_blocks=100, block_size=128)
    prompt = ids(979)
    assert cache.lookup_and_insert(prompt).hit_tokens == 0
    lookup = cache.lookup_and_insert(prompt)
    assert lookup.hit_tokens == 896 and len(lookup.blocks) == 7
    short = ids(127, 9000)
    cache.lookup_and_insert(short)
    assert cache.lookup_and_insert(short).hit_tokens == 0


def test_prefix_cache_is_chained() -> None:
    cache = PrefixCache(capacity_blocks=100, block_size=4)
    cache.lookup_and_insert(ids(8))
    # The second block is identical but follows a different first block: no hit.
    assert cache.lookup_and_insert(ids(4, 7000) + ids(8)[4:]).hit_tokens == 0


def test_fully_cached_prompt_still_computes_its_last_token() -> None:
    cache = PrefixCache(capacity_blocks=100, block_size=4)
    prompt = ids(8)
    cache.lookup_and_insert(prompt)
    assert cache.lookup_and_insert(prompt).hit_tokens == 4


def test_prefix_cache_evicts_least_recently_used() -> None:
    cache = PrefixCache(capacity_blocks=2, block_size=4)
    cache.lookup_and_insert(ids(4, 100))
    cache.lookup_and_insert(ids(4, 200))
    cache.lookup_and_insert(ids(4, 300))  # evicts the first
    assert len(cache) == 2
    assert cache.lookup_and_insert([*ids(4, 100), 1]).hit_tokens == 0


def test_render_prompt_is_harmony_with_effort_first_and_post_last() -> None:
    low = render_prompt([("system", "POLICY"), ("user", "POST")], "low")
    high = render_prompt([("system", "POLICY"), ("user", "POST")], "high")
    assert low != high and "Reasoning: low" in low
    assert low.index("POLICY") < low.index("POST")
    # vLLM maps the system message to harmony's developer instructions.
    assert "<|start|>developer<|message|># Instructions\n\nPOLICY<|end|>" in low
    assert low.startswith("<|start|>system<|message|>")
    assert low.endswith("<|start|>user<|message|>POST<|end|><|start|>assistant")


def test_prompt_tokens_are_o200k_with_harmony_specials() -> None:
    messages = [("system", "Policy text here."), ("user", "hello <|start|> world")]
    token_ids = prompt_token_ids(messages, "low")
    start = tokens.special(tokens.START)
    # Four <|start|> specials (system, developer, user, assistant); the post's look-alike text is not one.
    assert token_ids.count(start) == 4
    assert tokens.decode(token_ids) == render_prompt(messages, "low")
    # Counted in o200k tokens, not words: far more tokens than whitespace-separated words.
    assert len(token_ids) > len(render_prompt(messages, "low").split())


def test_simulator_counts_like_the_project_tokenizer() -> None:
    from worker.judges.tokens import count_tokens

    for text in ("plain words", '{"violation": 1}', "日本語 👍🏽 <|end|> text", (POLICIES_DIR / "hate.md").read_text()):
        assert tokens.count(text) == count_tokens(text)


def test_token_cut_is_a_prefix_and_counts_tokens() -> None:
    text = '{"violation": 1, "policy_category": "spam", "rationale": "日本語 👍🏽"}'
    n = tokens.count(text)
    assert n == len(tokens.encode(text)) and n > 10
    for k in range(n + 2):
        cut = tokens.cut(text, k)
        assert text.startswith(cut)
        assert tokens.count(cut) <= k
    assert tokens.cut(text, n) == text and tokens.cut(text, 0) == ""


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


MODEL = LatencyModel(prefill_ms_per_token=0.02, decode_ms_per_token=0.2, batch_slowdown=1.0, max_num_seqs=64,
                     speed=1.0)  # fmt: skip


def test_prefill_counts_only_uncached_prompt_tokens() -> None:
    assert MODEL.prefill_s(1000) == pytest.approx(0.02)
    # A 979-token prompt with 896 cached tokens prefills 83.
    assert MODEL.service_s(979 - 896, 0, 1) == pytest.approx(83 * 0.02 / 1000)


def test_decode_slows_as_the_batch_grows() -> None:
    # t_tok = base x (1 + k x running / max_num_seqs)
    assert MODEL.token_s(1) == pytest.approx(0.2e-3 * (1 + 1 / 64))
    assert MODEL.token_s(32) == pytest.approx(0.2e-3 * 1.5)
    assert MODEL.token_s(64) == pytest.approx(0.4e-3)
    assert MODEL.token_s(500) == MODEL.token_s(64), "running never exceeds max_num_seqs"
    alone, full = MODEL.service_s(1000, 400, 1), MODEL.service_s(1000, 400, 64)
    assert full - alone == pytest.approx(400 * (0.4e-3 - 0.2e-3 * (1 + 1 / 64)))
    flat = LatencyModel(0.02, 0.2, batch_slowdown=0.0, max_num_seqs=64, speed=1.0)
    assert flat.token_s(1) == flat.token_s(64) == pytest.approx(0.2e-3)


def test_speed_scales_everything() -> None:
    slow = LatencyModel(0.02, 0.2, 1.0, 64, speed=2.0)
    assert slow.service_s(1000, 100, 8) == pytest.approx(2 * MODEL.service_s(1000, 100, 8))
    instant = LatencyModel(0.02, 0.2, 1.0, 64, speed=0.0)
    assert instant.service_s(1000, 100, 64) == 0.0
    assert instant.step_tokens(400, 64) == 400, "speed 0: one step, no timers per token"


def test_decode_steps_cover_the_output_and_are_bounded() -> None:
    # Each step is >= 16 tokens and >= 20 ms of simulated time, so the batch size is re-read often
    # without a timer per token; the steps add up to the output exactly.
    remaining, steps = 1000, []
    while remaining:
        step = MODEL.step_tokens(remaining, 64)
        steps.append(step)
        remaining -= step
    assert sum(steps) == 1000
    assert steps[0] == 50  # 20 ms / 0.4 ms per token
    assert MODEL.step_tokens(10, 64) == 10


def test_kv_blocks_share_a_cached_prefix_and_grow_with_decode() -> None:
    kv = KvBlocks(total_blocks=100, block_size=128)
    prefix = [b"a", b"b", b"c"]  # three full prompt blocks (one policy)
    kv.hold(prefix, own_tokens=50)  # + a partial last block of 50 tokens
    kv.hold(prefix, own_tokens=60)  # a second post under the same policy: the prefix is held once
    assert kv.used_blocks == 3 + 1 + 1
    kv.grow(50, 50 + 100)  # 150 own tokens: two blocks now
    assert kv.used_blocks == 6 and kv.usage() == pytest.approx(0.06)
    kv.release(prefix, 150)
    assert kv.used_blocks == 3 + 1, "the prefix stays held by the request still running"
    kv.release(prefix, 60)
    assert kv.used_blocks == 0


def test_stats_reset_keeps_live_gauges() -> None:
    stats = Stats()
    stats.enter_queue()
    stats.start_running(queued=True)
    stats.requests = 5
    stats.reset()
    assert (stats.requests, stats.running, stats.waiting, stats.max_running) == (0, 1, 0, 1)
    stats.stop_running()
    assert stats.running == 0
