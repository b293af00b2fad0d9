"""Judge stage: ask gpt-oss-safeguard (vLLM's OpenAI chat completions API) about one post under one policy.

DESIGN §5: the policy is the system message and the post the (last) user message, so every
request for one policy version shares a byte-identical prefix and vLLM's prefix cache reuses
the policy's KV. Effort goes in the top-level `reasoning_effort`. The answer is validated here,
whatever `response_format` promised. A judge that is unreachable or answers 5xx is not a verdict:
the call retries (with jittered backoff) until it answers or the caller gives up.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from worker.config import JudgeTierSettings
from worker.contracts import AuditCall, JudgeAnswer, Post
from worker.policies import Policy

TierName = Literal["t1", "t2"]
# Why a call produced no verdict; each one is an escalation reason upstream.
Failure = Literal["truncated", "empty", "invalid_json", "invalid_answer", "rejected"]

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "violation": {"type": "integer", "enum": [0, 1]},
        "policy_category": {"type": ["string", "null"]},
        "rule_ids": {"type": "array", "items": {"type": "string"}},
        "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
        "rationale": {"type": "string"},
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


def user_message(post: Post) -> str:
    """The post as the user message. Only the post's own text goes here, after any context turns."""
    if not post.context:
        return post.text
    turns = "\n".join(f"[{turn.role}] {turn.text}" for turn in post.context)
    return f"Conversation so far:\n{turns}\n\nContent to classify:\n{post.text}"


def build_request(policy: Policy, post: Post, settings: JudgeTierSettings) -> dict[str, Any]:
    """The request body. Key order is fixed and `messages` comes last, with the post at the very end,
    so bodies for one policy version are byte-identical up to the post text."""
    body: dict[str, Any] = {
        "model": settings.model,
        "reasoning_effort": settings.reasoning_effort,
        "max_tokens": settings.max_tokens,
    }
    if settings.response_format == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "policy_verdict", "schema": ANSWER_SCHEMA, "strict": True},
        }
    elif settings.response_format == "json_object":
        body["response_format"] = {"type": "json_object", "schema": ANSWER_SCHEMA}
    body["messages"] = [
        {"role": "system", "content": policy.prompt},
        {"role": "user", "content": user_message(post)},
    ]
    return body


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def parse_answer(content: str | None, finish_reason: str | None) -> JudgeAnswer | Failure:
    """Validate the model's answer text. Never trusts `response_format` to have been enforced."""
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
    try:
        return JudgeAnswer.model_validate(data)
    except ValidationError:
        return "invalid_answer"


class Endpoints:
    """Several base URLs for one tier, chosen by least requests in flight (ties: list order)."""

    def __init__(self, base_urls: list[str]) -> None:
        self.in_flight = dict.fromkeys(base_urls, 0)

    def acquire(self) -> str:
        url = min(self.in_flight, key=self.in_flight.__getitem__)
        self.in_flight[url] += 1
        return url

    def release(self, url: str) -> None:
        self.in_flight[url] -= 1


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
    ) -> None:
        self.tier = tier
        self.settings = settings
        self._http = http
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._endpoints = Endpoints(settings.base_urls)
        self._on_latency = on_latency
        self._on_retry = on_retry
        self._headers = {"content-type": "application/json"}
        if settings.api_key is not None:
            self._headers["authorization"] = f"Bearer {settings.api_key.get_secret_value()}"

    async def judge(self, policy: Policy, post: Post) -> JudgeCall:
        body = build_request(policy, post, self.settings)
        payload = orjson.dumps(body)
        started = time.perf_counter()
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(JudgeUnavailable),
            wait=wait_random_exponential(multiplier=self.settings.retry_initial_s, max=self.settings.retry_max_s),
            before_sleep=self._before_retry,
            reraise=True,
        )
        response: httpx.Response
        endpoint: str
        response, endpoint = await retrying(self._post_once, payload)
        latency_ms = (time.perf_counter() - started) * 1000
        return self._to_call(policy, body, endpoint, response, latency_ms)

    def _before_retry(self, state: Any) -> None:
        if self._on_retry is not None:
            self._on_retry(type(state.outcome.exception()).__name__ if state.outcome else "unknown")

    async def _post_once(self, payload: bytes) -> tuple[httpx.Response, str]:
        async with self._slots:
            endpoint = self._endpoints.acquire()
            started = time.perf_counter()
            try:
                response = await self._http.post(
                    f"{endpoint}/chat/completions",
                    content=payload,
                    headers=self._headers,
                    timeout=self.settings.timeout_s,
                )
            except httpx.TransportError as exc:  # connect errors, resets, timeouts
                raise JudgeUnavailable(f"{endpoint}: {type(exc).__name__}: {exc}") from exc
            finally:
                self._endpoints.release(endpoint)
            if self._on_latency is not None:
                self._on_latency(self.tier, time.perf_counter() - started)
        if response.status_code == 429 or response.status_code >= 500:
            raise JudgeUnavailable(f"{endpoint}: HTTP {response.status_code}")
        return response, endpoint

    def _to_call(
        self, policy: Policy, body: dict[str, Any], endpoint: str, response: httpx.Response, latency_ms: float
    ) -> JudgeCall:
        reasoning: str | None = None
        content: str | None = None
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None
        error: str | None = None
        outcome: JudgeAnswer | Failure
        if response.status_code != 200:
            # 4xx: the server refused this request (unknown model, prompt too long). No verdict.
            error = f"HTTP {response.status_code}: {response.text[:500]}"
            outcome = "rejected"
        else:
            try:
                data = orjson.loads(response.content)
                choice = data["choices"][0]
                message = choice.get("message") or {}
                content = message.get("content")
                reasoning = message.get("reasoning") or message.get("reasoning_content")
                finish_reason = choice.get("finish_reason")
                usage = data.get("usage")
                outcome = parse_answer(content, finish_reason)
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
                error = f"malformed response body: {type(exc).__name__}: {exc}"
                outcome = "invalid_json"
        audit = AuditCall(
            tier=self.tier,
            policy_id=policy.id,
            policy_version=policy.version,
            model=self.settings.model,
            endpoint=endpoint,
            reasoning_effort=self.settings.reasoning_effort,
            request=body,
            reasoning=reasoning,
            content=content,
            finish_reason=finish_reason,
            error=error,
            latency_ms=latency_ms,
            usage=usage,
        )
        if isinstance(outcome, JudgeAnswer):
            return JudgeCall(self.tier, policy, outcome, None, audit)
        return JudgeCall(self.tier, policy, None, outcome, audit)

    async def ready(self) -> bool:
        """Readiness: every endpoint lists our model on `/v1/models` (vLLM's /health lies after GPU faults)."""
        results = await asyncio.gather(*(self._lists_model(url) for url in self.settings.base_urls))
        return all(results)

    async def _lists_model(self, base_url: str) -> bool:
        try:
            response = await self._http.get(f"{base_url}/models", headers=self._headers, timeout=5.0)
            if response.status_code != 200:
                return False
            models = orjson.loads(response.content).get("data", [])
            return any(m.get("id") == self.settings.model for m in models)
        except (httpx.HTTPError, orjson.JSONDecodeError, AttributeError, TypeError):
            return False


JudgeFn = Callable[[Policy, Post], Awaitable[JudgeCall]]
