"""The simulator's serving model, free of HTTP: prompt rendering, prefix cache, latency, faults, stats."""

from __future__ import annotations

import hashlib
import random
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from .config import FaultSettings

# vLLM's buckets for vllm:e2e_request_latency_seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

# Rate fields in the order one uniform draw walks through them.
_RATE_ORDER: tuple[tuple[str, str], ...] = (
    ("fail_5xx_rate", "5xx"),
    ("timeout_rate", "timeout"),
    ("truncate_rate", "truncate"),
    ("invalid_json_rate", "invalid_json"),
    ("empty_rate", "empty"),
)


def render_prompt(messages: Sequence[tuple[str, str]], effort: str) -> str:
    """Roughly the harmony rendering vLLM feeds gpt-oss, as far as it matters for the prefix cache.

    The system header (with the reasoning effort and a pinned date) comes first, so requests
    at different efforts share almost no cached prefix; then each message in order, so the
    policy (system/developer) is a shared prefix and the post (user) is the uncached tail.
    """
    parts = [
        "<|start|>system<|message|> You are ChatGPT, a large language model trained by OpenAI. "
        f"Knowledge cutoff: 2024-06 Current date: 2026-01-01 Reasoning: {effort} "
        "# Valid channels: analysis, commentary, final. Channel must be included for every message. <|end|>"
    ]
    for role, content in messages:
        # vLLM turns the system message into harmony's developer message.
        shown = "developer" if role == "system" else role
        header = "# Instructions " if shown == "developer" else ""
        parts.append(f"<|start|>{shown}<|message|> {header}{content} <|end|>")
    parts.append("<|start|>assistant")
    return " ".join(parts)


class PrefixCache:
    """An LRU of chained hashes of full token blocks, like vLLM's automatic prefix caching."""

    def __init__(self, capacity_blocks: int, block_size: int) -> None:
        self.capacity_blocks = max(1, capacity_blocks)
        self.block_size = block_size
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def clear(self) -> None:
        self._blocks.clear()

    def lookup_and_insert(self, tokens: Sequence[str]) -> int:
        """Tokens of `tokens` served from cache; all full blocks are cached afterwards."""
        bs = self.block_size
        parent = b""
        hit_blocks = 0
        missing = False
        for start in range(0, len(tokens) - bs + 1, bs):
            # Chained: a block only matches when everything before it matched too.
            parent = hashlib.blake2b(parent + "\x1f".join(tokens[start : start + bs]).encode(), digest_size=16).digest()
            if not missing and parent in self._blocks:
                hit_blocks += 1
                self._blocks.move_to_end(parent)
                continue
            missing = True
            self._blocks[parent] = None
            if len(self._blocks) > self.capacity_blocks:
                self._blocks.popitem(last=False)
        # vLLM always computes at least the last prompt token, so a fully cached prompt hits n-1 at most.
        return min(hit_blocks * bs, ((len(tokens) - 1) // bs) * bs) if tokens else 0


def service_seconds(uncached_prompt_tokens: int, output_tokens: int, config_speed: float,
                    prefill_ms_per_token: float, decode_ms_per_token: float) -> float:  # fmt: skip
    """Prefill of the uncached prompt plus decode of every output token, scaled by --speed."""
    ms = uncached_prompt_tokens * prefill_ms_per_token + output_tokens * decode_ms_per_token
    return ms * config_speed / 1000.0


def draw_fault(rng: random.Random, faults: FaultSettings) -> str | None:
    """One uniform draw per request picks at most one fault (rates add up to at most 1)."""
    x = rng.random()
    edge = 0.0
    for name, fault in _RATE_ORDER:
        edge += float(getattr(faults, name))
        if x < edge:
            return fault
    return None


@dataclass
class Stats:
    """Counters behind GET /sim/stats and /metrics; `reset()` zeroes them (live gauges stay)."""

    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    by_effort: Counter[str] = field(default_factory=Counter)
    by_finish_reason: Counter[str] = field(default_factory=Counter)
    running: int = 0
    waiting: int = 0
    running_tokens: int = 0
    max_running: int = 0
    max_waiting: int = 0
    queued_total: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    latency_bucket_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_sum: float = 0.0
    latency_count: int = 0

    def reset(self) -> None:
        live = (self.running, self.waiting, self.running_tokens)
        fresh = Stats()
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))
        self.running, self.waiting, self.running_tokens = live
        self.max_running, self.max_waiting = self.running, self.waiting

    def enter_queue(self) -> None:
        self.waiting += 1
        self.queued_total += 1
        self.max_waiting = max(self.max_waiting, self.waiting)

    def start_running(self, tokens: int, queued: bool) -> None:
        self.waiting -= int(queued)
        self.running += 1
        self.running_tokens += tokens
        self.max_running = max(self.max_running, self.running)

    def stop_running(self, tokens: int) -> None:
        self.running -= 1
        self.running_tokens -= tokens

    def observe_success(self, finish_reason: str, prompt_tokens: int, completion_tokens: int, latency_s: float) -> None:
        self.by_finish_reason[finish_reason] += 1
        self.prompt_tokens += prompt_tokens
        self.generation_tokens += completion_tokens
        self.latency_sum += latency_s
        self.latency_count += 1
        for i, bound in enumerate(LATENCY_BUCKETS):
            if latency_s <= bound:
                self.latency_bucket_counts[i] += 1
                break

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "by_fault": dict(self.by_fault),
            "by_effort": dict(self.by_effort),
            "by_finish_reason": dict(self.by_finish_reason),
            "running": self.running,
            "waiting": self.waiting,
            "max_running": self.max_running,
            "max_waiting": self.max_waiting,
            "queued_total": self.queued_total,
            "prefix_cache_queries": self.prefix_cache_queries,
            "prefix_cache_hits": self.prefix_cache_hits,
            "prompt_tokens": self.prompt_tokens,
            "generation_tokens": self.generation_tokens,
        }
