"""Judge stage: ask gpt-oss-safeguard (vLLM's OpenAI chat completions API) about one post under one policy.

docs/judges.md §3: the policy is the system message and the post the (last) user message, so every
request for one policy version shares a byte-identical prefix and vLLM's prefix cache reuses
the policy's KV. Effort goes in the top-level `reasoning_effort`. The answer is validated here,
whatever `response_format` promised. A judge that is unreachable or answers 5xx is not a verdict:
the call retries (with jittered backoff) until it answers or the caller gives up. Each endpoint has
a circuit breaker (worker/judges/breaker.py): endpoints that keep failing are skipped, and a tier whose
endpoints are all open reports `available() == False`, which pauses consumption in the worker.
`judge_many` asks about several policies in one request (judge_mode multi_policy, docs/judges.md).
A post too long for the tier's context is cut before it is sent (worker/judges/budget.py), and the answer's
logprobs give `p_violation`, the probability of the violation digit (worker/judges/confidence.py).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson
import structlog
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, stop_never, wait_random_exponential

from worker.config import JudgeTierSettings
from worker.contracts import AuditCall, JudgeAnswer, Post
from worker.judges.breaker import BreakerState, CircuitBreaker
from worker.judges.budget import TEMPLATE_OVERHEAD_TOKENS, cut_middle, estimate_tokens, output_cap, plan_budget
from worker.judges.confidence import p_violation
from worker.judges.multipolicy import multi_prompt, multi_schema
from worker.ops.tracing import current_trace_headers
from worker.policies.files import Policy

log = structlog.get_logger("modstream.judge")

TierName = Literal["t1", "t2"]
# Why a call produced no verdict; each one is an escalation reason upstream.
Failure = Literal["truncated", "empty", "invalid_json", "invalid_answer", "rejected"]

# Bounds are for servers that enforce the schema with a grammar (vLLM + xgrammar on small models,
# llama.cpp): without them a small model can ramble inside a string until max_tokens. The verdict
# keeps 500 characters of rationale anyway.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "violation": {"type": "integer", "enum": [0, 1]},
        "policy_category": {"type": ["string", "null"], "maxLength": 64},
        "rule_ids": {"type": "array", "items": {"type": "string", "maxLength": 32}, "maxItems": 8},
        "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
        "rationale": {"type": "string", "maxLength": 500},
    },
    "required": ["violation", "policy_category", "rule_ids", "confidence", "rationale"],
    "additionalProperties": False,
}


class JudgeUnavailable(Exception):
    """Transport error, timeout, 429 or 5xx: the judge is not answering; retry later."""


@dataclass(frozen=True, slots=True)
class JudgeCall:
    """One judge call as it ended: a validated answer, or the failure that prevented one."""

    tier: TierName
    policy: Policy
    answer: JudgeAnswer | None
    failure: Failure | None
    audit: AuditCall
    # P(violation digit = 1) from the answer's logprobs (None: none returned, or no digit found).
    p_violation: float | None = None
    # The post was cut to fit the context.
    truncated: bool = False


def user_message(post: Post) -> str:
    """The post as the user message. Only the post's own text goes here, after any context turns."""
    if not post.context:
        return post.text
    turns = "\n".join(f"[{turn.role}] {turn.text}" for turn in post.context)
    return f"Conversation so far:\n{turns}\n\nContent to classify:\n{post.text}"


def fit_user_message(post: Post, budget: int) -> tuple[str, bool]:
    """The user message cut to `budget` tokens, and whether anything was cut. The post text keeps
    its head and tail; conversation context, if any, gets at most a third of the budget."""
    full = user_message(post)
    if estimate_tokens(full) <= budget:
        return full, False
    if not post.context:
        return cut_middle(post.text, budget), True
    frame = estimate_tokens("Conversation so far:\n\n\nContent to classify:\n")
    turns = "\n".join(f"[{turn.role}] {turn.text}" for turn in post.context)
    turns = cut_middle(turns, min(estimate_tokens(turns), max(budget - frame, 0) // 3))
    message = ""
    for slack in (0, 8, 64):  # tokens may merge differently across the joins than apart
        text = cut_middle(post.text, max(budget - frame - estimate_tokens(turns) - slack, 0))
        message = f"Conversation so far:\n{turns}\n\nContent to classify:\n{text}"
        if estimate_tokens(message) <= budget:
            break
    return message, True


def build_request(policy: Policy, post: Post, settings: JudgeTierSettings) -> dict[str, Any]:
    """The request body. Key order is fixed and `messages` comes last, with the post at the very end,
    so bodies for one policy version are byte-identical up to the post text."""
    return prepare_request(policy, post, settings)[0]


def prepare_request(policy: Policy, post: Post, settings: JudgeTierSettings) -> tuple[dict[str, Any], bool]:
    """`build_request`, and whether the post had to be cut to fit the context."""
    return _body(policy.prompt, ANSWER_SCHEMA, "policy_verdict", post, settings)


def build_multi_request(policies: Sequence[Policy], post: Post, settings: JudgeTierSettings) -> dict[str, Any]:
    """One request for several policies (judge_mode multi_policy); same layout, policy sections in
    the order given (callers pass policy-set order, so one candidate set is one prefix)."""
    return prepare_multi_request(policies, post, settings)[0]


def prepare_multi_request(
    policies: Sequence[Policy], post: Post, settings: JudgeTierSettings
) -> tuple[dict[str, Any], bool]:
    prompt = multi_prompt([(p.id, p.prompt) for p in policies])
    schema = multi_schema(ANSWER_SCHEMA, [p.id for p in policies])
    return _body(prompt, schema, "policy_verdicts", post, settings)


def _body(
    system: str, schema: dict[str, Any], schema_name: str, post: Post, settings: JudgeTierSettings
) -> tuple[dict[str, Any], bool]:
    response_format: dict[str, Any] | None = None
    if settings.response_format == "json_schema":
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": schema_name, "schema": schema, "strict": True},
        }
    elif settings.response_format == "json_object":
        response_format = {"type": "json_object", "schema": schema}
    # Counted as prompt in case the server renders the schema into it (harmony can).
    fixed = TEMPLATE_OVERHEAD_TOKENS + estimate_tokens(system)
    fixed += estimate_tokens(orjson.dumps(response_format).decode()) if response_format else 0
    budget = plan_budget(fixed, settings.max_model_len, settings.max_post_tokens, settings.max_tokens)
    user, truncated = fit_user_message(post, budget.post_tokens)
    max_tokens = output_cap(budget.max_tokens, settings.max_model_len, fixed + estimate_tokens(user))
    body: dict[str, Any] = {"model": settings.model, "reasoning_effort": settings.reasoning_effort}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if response_format is not None:
        body["response_format"] = response_format
    if settings.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = settings.top_logprobs
    body["messages"] = [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
    ]
    return body, truncated


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def decode_object(content: str | None, finish_reason: str | None) -> dict[str, Any] | Failure:
    """The JSON object in the model's answer text, or why there is none."""
    if finish_reason == "length":
        return "truncated"
    if content is None or not content.strip():
        return "empty"
    text = _FENCE.sub("", content.strip())
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        # Small models sometimes wrap the object in prose; accept exactly one outer object.
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return "invalid_json"
        try:
            data = orjson.loads(text[start : end + 1])
        except orjson.JSONDecodeError:
            return "invalid_json"
    if not isinstance(data, dict):
        return "invalid_json"
    return data


def validate_answer(data: Any) -> JudgeAnswer | Failure:
    try:
        return JudgeAnswer.model_validate(data)
    except ValidationError:
        return "invalid_answer"


def parse_answer(content: str | None, finish_reason: str | None) -> JudgeAnswer | Failure:
    """Validate the model's answer text. Never trusts `response_format` to have been enforced."""
    data = decode_object(content, finish_reason)
    return data if isinstance(data, str) else validate_answer(data)


def parse_multi_answer(
    content: str | None, finish_reason: str | None, policy_ids: Sequence[str]
) -> dict[str, JudgeAnswer | Failure]:
    """Per policy id: its validated entry of a multi-policy answer, or why there is none. A broken
    answer fails every policy; a missing or invalid entry fails only its own policy."""
    data = decode_object(content, finish_reason)
    if isinstance(data, str):
        return dict.fromkeys(policy_ids, data)
    entries = data.get("results")
    found: dict[str, JudgeAnswer | Failure] = {}
    if isinstance(entries, dict):  # the format asked for: {"results": {policy_id: answer}}
        found = {pid: validate_answer(entries[pid]) for pid in policy_ids if pid in entries}
    elif isinstance(entries, list):  # tolerated: [{"policy_id": ..., ...answer}], first entry per id wins
        for entry in entries:
            if isinstance(entry, dict) and entry.get("policy_id") in policy_ids:
                found.setdefault(str(entry["policy_id"]), validate_answer(entry))
    return {pid: found.get(pid, "invalid_answer") for pid in policy_ids}


BreakerListener = Callable[[str, BreakerState], None]


class Endpoints:
    """Several base URLs for one tier, chosen by least requests in flight (ties: list order) among
    those whose circuit breaker lets a request through."""

    def __init__(
        self,
        base_urls: list[str],
        failure_threshold: int = 5,
        cooldown_s: float = 10.0,
        on_state: BreakerListener | None = None,
    ) -> None:
        self.in_flight = dict.fromkeys(base_urls, 0)
        self.breakers = {url: CircuitBreaker(failure_threshold, cooldown_s) for url in base_urls}
        self._on_state = on_state

    def acquire(self, now: float) -> str | None:
        """An endpoint to send to, or None when every endpoint's breaker is open."""
        allowed = [url for url in self.in_flight if self.breakers[url].can_try(now)]
        if not allowed:
            return None
        url = min(allowed, key=self.in_flight.__getitem__)
        self._transition(url, lambda b: b.on_send(now))
        self.in_flight[url] += 1
        return url

    def release(self, url: str, ok: bool | None, now: float) -> None:
        """ok: the server answered (any status but 429/5xx); False: it did not; None: we gave up first."""
        self.in_flight[url] -= 1
        if ok is None:
            self._transition(url, CircuitBreaker.on_abandon)
        elif ok:
            self._transition(url, CircuitBreaker.on_success)
        else:
            self._transition(url, lambda b: b.on_failure(now))

    def available(self) -> bool:
        """At least one endpoint is known good (closed). Open or probing endpoints do not count."""
        return any(b.state == "closed" for b in self.breakers.values())

    def states(self) -> dict[str, BreakerState]:
        return {url: b.state for url, b in self.breakers.items()}

    def _transition(self, url: str, change: Callable[[CircuitBreaker], None]) -> None:
        breaker = self.breakers[url]
        before = breaker.state
        change(breaker)
        if breaker.state != before and self._on_state is not None:
            self._on_state(url, breaker.state)


ObserveLatency = Callable[[str, float], None]


class JudgeClient:
    """Async client for one judge tier, at most `max_in_flight` requests at once."""

    def __init__(
        self,
        tier: TierName,
        settings: JudgeTierSettings,
        http: httpx.AsyncClient,
        on_latency: ObserveLatency | None = None,
        on_retry: Callable[[str], None] | None = None,
        on_breaker: BreakerListener | None = None,
        give_up_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`give_up_after_s=None` (the worker): retry an unavailable judge forever, the post waits.
        A number (the eval harness): raise JudgeUnavailable once retrying has taken that long."""
        self.tier = tier
        self.settings = settings
        self._http = http
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._endpoints = Endpoints(
            settings.base_urls, settings.breaker_failures, settings.breaker_cooldown_s, self._breaker_changed
        )
        self._on_breaker = on_breaker
        self._on_latency = on_latency
        self._on_retry = on_retry
        self._give_up_after_s = give_up_after_s
        self._clock = clock
        self._headers = {"content-type": "application/json"}
        estimate_tokens("")  # load the tokenizer (~0.5 s, once per process) now, not inside the first call
        if settings.api_key is not None:
            self._headers["authorization"] = f"Bearer {settings.api_key.get_secret_value()}"

    def available(self) -> bool:
        """False while every endpoint of this tier is open (down): the worker pauses consumption."""
        return self._endpoints.available()

    def breaker_states(self) -> dict[str, BreakerState]:
        return self._endpoints.states()

    def _breaker_changed(self, endpoint: str, state: BreakerState) -> None:
        level = log.warning if state == "open" else log.info
        level("judge_breaker", tier=self.tier, endpoint=endpoint, state=state, available=self.available())
        if self._on_breaker is not None:
            self._on_breaker(endpoint, state)

    async def judge(self, policy: Policy, post: Post) -> JudgeCall:
        body, truncated = prepare_request(policy, post, self.settings)
        response, endpoint, latency_ms = await self._send(body)
        done = _read_completion(response)
        outcome = parse_answer(done.content, done.finish_reason) if done.error is None else _error_failure(response)
        p = p_violation(done.logprobs) if isinstance(outcome, JudgeAnswer) else None
        audit = self._audit([policy], body, endpoint, latency_ms, done, truncated, p, None)
        return _call(self.tier, policy, outcome, audit, p, truncated)

    async def judge_many(self, policies: Sequence[Policy], post: Post) -> list[JudgeCall]:
        """One request for several policies (judge_mode multi_policy); one JudgeCall per policy, all
        sharing the request's audit record. One policy is an ordinary single-policy request."""
        if len(policies) == 1:
            return [await self.judge(policies[0], post)]
        body, truncated = prepare_multi_request(policies, post, self.settings)
        response, endpoint, latency_ms = await self._send(body)
        done = _read_completion(response)
        ids = [p.id for p in policies]
        if done.error is None:
            outcomes = parse_multi_answer(done.content, done.finish_reason, ids)
        else:
            outcomes = dict.fromkeys(ids, _error_failure(response))
        ps = {pid: p_violation(done.logprobs, after=pid) if isinstance(outcomes[pid], JudgeAnswer) else None
              for pid in ids}  # fmt: skip
        audit = self._audit(policies, body, endpoint, latency_ms, done, truncated, None, ps)
        return [_call(self.tier, p, outcomes[p.id], audit, ps[p.id], truncated) for p in policies]

    async def _send(self, body: dict[str, Any]) -> tuple[httpx.Response, str, float]:
        payload = orjson.dumps(body)
        started = time.perf_counter()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(JudgeUnavailable),
            wait=wait_random_exponential(multiplier=self.settings.retry_initial_s, max=self.settings.retry_max_s),
            stop=stop_never if self._give_up_after_s is None else stop_after_delay(self._give_up_after_s),
            before_sleep=self._before_retry,
            reraise=True,
        )
        response: httpx.Response
        endpoint: str
        response, endpoint = await retrying(self._post_once, payload)
        return response, endpoint, (time.perf_counter() - started) * 1000

    def _before_retry(self, state: Any) -> None:
        if self._on_retry is not None:
            self._on_retry(type(state.outcome.exception()).__name__ if state.outcome else "unknown")

    async def _post_once(self, payload: bytes) -> tuple[httpx.Response, str]:
        async with self._slots:
            endpoint = self._endpoints.acquire(self._clock())
            if endpoint is None:
                raise JudgeUnavailable(f"{self.tier}: every endpoint's circuit breaker is open")
            started = time.perf_counter()
            ok: bool | None = None
            try:
                response = await self._http.post(
                    f"{endpoint}/chat/completions",
                    content=payload,
                    # The post's W3C trace context (traceparent/tracestate), if it came with one.
                    headers={**self._headers, **current_trace_headers()},
                    timeout=self.settings.timeout_s,
                )
                ok = not (response.status_code == 429 or response.status_code >= 500)
            except httpx.TransportError as exc:  # connect errors, resets, timeouts
                ok = False
                raise JudgeUnavailable(f"{endpoint}: {type(exc).__name__}: {exc}") from exc
            finally:
                # ok stays None only when the call was cancelled: that says nothing about the server.
                self._endpoints.release(endpoint, ok, self._clock())
            if self._on_latency is not None:
                self._on_latency(self.tier, time.perf_counter() - started)
        if not ok:
            raise JudgeUnavailable(f"{endpoint}: HTTP {response.status_code}")
        return response, endpoint

    def _audit(
        self,
        policies: Sequence[Policy],
        body: dict[str, Any],
        endpoint: str,
        latency_ms: float,
        done: Completion,
        truncated: bool,
        p: float | None,
        ps: dict[str, float | None] | None,
    ) -> AuditCall:
        return AuditCall(
            tier=self.tier,
            # A multi-policy call names every policy it asked about, joined with "+".
            policy_id="+".join(p.id for p in policies),
            policy_version="+".join(p.version for p in policies),
            policy_versions={p.id: p.version for p in policies} if len(policies) > 1 else None,
            shadow=any(p.meta.shadow for p in policies),
            model=self.settings.model,
            endpoint=endpoint,
            reasoning_effort=self.settings.reasoning_effort,
            request=body,
            reasoning=done.reasoning,
            content=done.content,
            finish_reason=done.finish_reason,
            error=done.error,
            latency_ms=latency_ms,
            usage=done.usage,
            p_violation=p,
            p_violations=ps,
            truncated=truncated,
        )

    async def ready(self) -> bool:
        """Readiness: every endpoint's engine is healthy and serves our model. vLLM's `/health` (at
        the server root, beside `/v1`) answers 200 while the engine works and 503 once it is dead;
        `/v1/models` never checks the engine, so it only confirms the model name is served. A 404 on
        `/health` (an endpoint behind a gateway that does not route it) leaves `/v1/models` to decide."""
        results = await asyncio.gather(*(self._endpoint_ready(url) for url in self.settings.base_urls))
        return all(results)

    async def _endpoint_ready(self, base_url: str) -> bool:
        return await self._healthy(base_url) and await self._lists_model(base_url)

    async def _healthy(self, base_url: str) -> bool:
        try:
            response = await self._http.get(f"{server_root(base_url)}/health", headers=self._headers, timeout=5.0)
        except httpx.HTTPError:
            return False
        return response.status_code in (200, 404)

    async def _lists_model(self, base_url: str) -> bool:
        try:
            response = await self._http.get(f"{base_url}/models", headers=self._headers, timeout=5.0)
            if response.status_code != 200:
                return False
            models = orjson.loads(response.content).get("data", [])
            return any(m.get("id") == self.settings.model for m in models)
        except (httpx.HTTPError, orjson.JSONDecodeError, AttributeError, TypeError):
            return False


def server_root(base_url: str) -> str:
    """`http://vllm:8000/v1` -> `http://vllm:8000`: vLLM serves /health and /metrics beside /v1."""
    return base_url.removesuffix("/v1")


@dataclass(frozen=True, slots=True)
class Completion:
    """What the judge client reads from a chat completion response."""

    content: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    # choices[0].logprobs.content: [{token, logprob, bytes, top_logprobs: [...]}, ...]
    logprobs: list[Any] | None = None


def _read_completion(response: httpx.Response) -> Completion:
    if response.status_code != 200:
        # 4xx: the server refused this request (unknown model, prompt too long). No verdict.
        return Completion(error=f"HTTP {response.status_code}: {response.text[:500]}")
    try:
        data = orjson.loads(response.content)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        # `reasoning` on current vLLM; `reasoning_content` on servers before vllm#33402.
        reasoning = message.get("reasoning") or message.get("reasoning_content")
        logprobs = (choice.get("logprobs") or {}).get("content")
        return Completion(
            content=message.get("content"),
            reasoning=reasoning,
            finish_reason=choice.get("finish_reason"),
            usage=data.get("usage"),
            logprobs=logprobs if isinstance(logprobs, list) else None,
        )
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return Completion(error=f"malformed response body: {type(exc).__name__}: {exc}")


def _error_failure(response: httpx.Response) -> Failure:
    return "rejected" if response.status_code != 200 else "invalid_json"


def _call(
    tier: TierName,
    policy: Policy,
    outcome: JudgeAnswer | Failure,
    audit: AuditCall,
    p: float | None = None,
    truncated: bool = False,
) -> JudgeCall:
    if isinstance(outcome, JudgeAnswer):
        return JudgeCall(tier, policy, outcome, None, audit, p, truncated)
    return JudgeCall(tier, policy, None, outcome, audit, None, truncated)


JudgeFn = Callable[[Policy, Post], Awaitable[JudgeCall]]
JudgeManyFn = Callable[[Sequence[Policy], Post], Awaitable[list[JudgeCall]]]
