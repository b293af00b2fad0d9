"""The simulator's serving model, free of HTTP: prompt rendering, prefix cache, latency, faults, stats."""

from __future__ import annotations

import hashlib
import math
import random
from array import array
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from . import tokens
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
    ("unenforced_rate", "unenforced"),
)


SYSTEM_HEADER = (
    "You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n"
    "Current date: {date}\n\n"
    "Reasoning: {effort}\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message."
)
# Pinned, as `VLLM_SYSTEM_START_DATE` pins it, so the cached prefix does not change every day.
PINNED_DATE = "2026-01-01"


def _prompt_parts(messages: Sequence[tuple[str, str]], effort: str) -> list[tuple[bool, str]]:
    """The harmony rendering as (is_special_token, text) pieces."""
    parts: list[tuple[bool, str]] = []

    def message(role: str, text: str, channel: str | None = None) -> None:
        parts.extend([(True, tokens.START), (False, role)])
        if channel:
            parts.extend([(True, tokens.CHANNEL), (False, channel)])
        parts.extend([(True, tokens.MESSAGE), (False, text), (True, tokens.END)])

    message("system", SYSTEM_HEADER.format(date=PINNED_DATE, effort=effort))
    for role, content in messages:
        if role in ("system", "developer"):
            # vLLM turns the leading system message into harmony's developer instructions.
            message("developer", "# Instructions\n\n" + content)
        elif role == "assistant":
            message("assistant", content, channel="final")
        else:
            message(role, content)
    parts.extend([(True, tokens.START), (False, "assistant")])
    return parts


def render_prompt(messages: Sequence[tuple[str, str]], effort: str) -> str:
    """The harmony text vLLM feeds gpt-oss for these messages (system header with the effort and a
    pinned date first, then the policy as developer instructions, the post last), as far as it
    matters for token counts and the prefix cache."""
    return "".join(text for _, text in _prompt_parts(messages, effort))


def prompt_token_ids(messages: Sequence[tuple[str, str]], effort: str) -> list[int]:
    """`render_prompt` in o200k_harmony token ids: special tokens as themselves, message text as
    ordinary text (a "<|start|>" typed in a post is not a special token). Each text is encoded once
    and cached, so a policy costs nothing after its first post."""
    ids: list[int] = []
    for is_special, text in _prompt_parts(messages, effort):
        if is_special:
            ids.append(tokens.special(text))
        else:
            ids.extend(tokens.encode(text))
    return ids


class Lookup(NamedTuple):
    hit_tokens: int
    blocks: list[bytes]  # chained hashes of the prompt's full blocks, in order


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

    def lookup_and_insert(self, token_ids: Sequence[int]) -> Lookup:
        """Tokens of `token_ids` served from cache; all full blocks are cached afterwards."""
        bs = self.block_size
        parent = b""
        hit_blocks = 0
        missing = False
        hashes: list[bytes] = []
        for start in range(0, len(token_ids) - bs + 1, bs):
            # Chained: a block only matches when everything before it matched too.
            chunk = array("I", token_ids[start : start + bs]).tobytes()
            parent = hashlib.blake2b(parent + chunk, digest_size=16).digest()
            hashes.append(parent)
            if not missing and parent in self._blocks:
                hit_blocks += 1
                self._blocks.move_to_end(parent)
                continue
            missing = True
            self._blocks[parent] = None
            if len(self._blocks) > self.capacity_blocks:
                self._blocks.popitem(last=False)
        # vLLM always computes at least the last prompt token, so a fully cached prompt hits fewer.
        n = len(token_ids)
        hit = min(hit_blocks * bs, ((n - 1) // bs) * bs) if n else 0
        return Lookup(hit, hashes)


class KvBlocks:
    """KV-cache blocks held by running requests, counted as vLLM's block pool counts them: a full
    prompt block that several running requests share (one policy prefix) is held once; each
    request's partial last prompt block and the tokens it has generated are its own. Cached blocks
    no running request holds are free (evictable), as in vLLM."""

    def __init__(self, total_blocks: int, block_size: int) -> None:
        self.total_blocks = max(1, total_blocks)
        self.block_size = block_size
        self._shared: Counter[bytes] = Counter()
        self._private = 0

    def own_blocks(self, tokens_: int) -> int:
        return -(-tokens_ // self.block_size)

    def hold(self, blocks: Sequence[bytes], own_tokens: int) -> None:
        self._shared.update(blocks)
        self._private += self.own_blocks(own_tokens)

    def grow(self, own_before: int, own_after: int) -> None:
        self._private += self.own_blocks(own_after) - self.own_blocks(own_before)

    def release(self, blocks: Sequence[bytes], own_tokens: int) -> None:
        self._shared.subtract(blocks)
        for block in blocks:
            if self._shared[block] <= 0:
                del self._shared[block]
        self._private -= self.own_blocks(own_tokens)

    @property
    def used_blocks(self) -> int:
        return len(self._shared) + self._private

    def usage(self) -> float:
        """vllm:kv_cache_usage_perc: the fraction of blocks in use (1 = full)."""
        return min(1.0, self.used_blocks / self.total_blocks)


# A decode step is at least this many tokens and at least DECODE_STEP_S of simulated time: the
# per-token time is re-read from the batch size between steps, without a timer per token.
DECODE_STEP_MIN_TOKENS = 16
DECODE_STEP_S = 0.02


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Service time of one request (see docs/simulator.md, "Latency model"):

    prefill = uncached prompt tokens x prefill_ms_per_token
    decode  = sum over output tokens of decode_ms_per_token x (1 + batch_slowdown x running / max_num_seqs)

    where `running` is the number of requests running (this one included) while that token is
    generated; everything is multiplied by `speed` (0 = instant).
    """

    prefill_ms_per_token: float
    decode_ms_per_token: float
    batch_slowdown: float
    max_num_seqs: int
    speed: float

    def prefill_s(self, uncached_prompt_tokens: int) -> float:
        return uncached_prompt_tokens * self.prefill_ms_per_token * self.speed / 1000.0

    def token_s(self, running: int) -> float:
        """Time for one more output token of one request while `running` requests decode together."""
        load = min(max(running, 1), self.max_num_seqs) / self.max_num_seqs
        return self.decode_ms_per_token * (1.0 + self.batch_slowdown * load) * self.speed / 1000.0

    def service_s(self, uncached_prompt_tokens: int, output_tokens: int, running: int) -> float:
        """Prefill + decode with the batch size held at `running` for the whole request."""
        return self.prefill_s(uncached_prompt_tokens) + output_tokens * self.token_s(running)

    def step_tokens(self, remaining: int, running: int) -> int:
        """How many tokens the next decode step generates before the batch size is read again."""
        per_token = self.token_s(running)
        if per_token <= 0.0:
            return remaining
        return min(remaining, max(DECODE_STEP_MIN_TOKENS, math.ceil(DECODE_STEP_S / per_token)))


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
        live = (self.running, self.waiting)
        fresh = Stats()
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))
        self.running, self.waiting = live
        self.max_running, self.max_waiting = self.running, self.waiting

    def enter_queue(self) -> None:
        self.waiting += 1
        self.queued_total += 1
        self.max_waiting = max(self.max_waiting, self.waiting)

    def start_running(self, queued: bool) -> None:
        self.waiting -= int(queued)
        self.running += 1
        self.max_running = max(self.max_running, self.running)

    def stop_running(self) -> None:
        self.running -= 1

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
