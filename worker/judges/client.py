"""Judge stage, HTTP part: send judge requests to a tier's vLLM endpoints over aiohttp.

The request and the answer are worker/judges/protocol.py's (pure); this module moves the bytes. A
judge that is unreachable, times out or answers 429/5xx is not a verdict: the call retries (tenacity,
jittered exponential back-off) until it answers or the caller gives up. The first attempt runs
without tenacity's wrapper; only a failure enters the retry loop, which then behaves as if it had
made that first attempt itself. Each endpoint has a circuit breaker (worker/judges/breaker.py):
endpoints that keep failing are skipped, and a tier whose endpoints are all open reports
`available() == False`, which pauses consumption in the worker. Requests go to the endpoint with
the fewest in flight (worker/judges/endpoints.py).

The HTTP client is aiohttp: in a client-only bench against the simulator it spends about a tenth of
the CPU per call that httpx's pool does (docs/judges.md, "HTTP client"). Pass a `ClientSession` to
share one, or let the client create (lazily, inside the running loop) and own its own, sized to the
tier's `max_in_flight`; `aclose()` closes an owned session.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp
import orjson
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_random_exponential,
)

from worker.config import JudgeTierSettings
from worker.contracts import Post
from worker.judges.breaker import BreakerState
from worker.judges.budget import estimate_tokens
from worker.judges.endpoints import BreakerListener, Endpoints
from worker.judges.protocol import (
    ANSWER_SCHEMA,
    Completion,
    Failure,
    JudgeCall,
    JudgeFn,
    JudgeManyFn,
    JudgeUnavailable,
    Sent,
    TierName,
    build_multi_request,
    build_request,
    chat_url,
    lists_model,
    multi_calls,
    parse_answer,
    parse_multi_answer,
    prepare_multi_request,
    prepare_request,
    read_completion,
    server_root,
    single_call,
    user_message,
)
from worker.ops.tracing import current_trace_headers
from worker.policies.files import Policy

# Re-exported: callers that import the judge's names from here keep working.
__all__ = [
    "ANSWER_SCHEMA",
    "BreakerListener",
    "Completion",
    "Endpoints",
    "Failure",
    "JudgeCall",
    "JudgeClient",
    "JudgeFn",
    "JudgeManyFn",
    "JudgeUnavailable",
    "ObserveLatency",
    "TierName",
    "build_multi_request",
    "build_request",
    "parse_answer",
    "parse_multi_answer",
    "prepare_multi_request",
    "prepare_request",
    "server_root",
    "user_message",
]

log = structlog.get_logger("modstream.judge")

ObserveLatency = Callable[[str, float], None]
# Readiness probes (/health, /v1/models) are small and must not hang a health check.
READY_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
# Idle keep-alive connections are kept this long (aiohttp's default is 15 s): a tier that is quiet for
# a few seconds does not pay new connections when posts come back.
KEEPALIVE_S = 60.0
# Errors that mean "the judge did not answer": connect errors, resets, broken bodies, timeouts.
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


class JudgeClient:
    """Async client for one judge tier, at most `max_in_flight` requests at once."""

    def __init__(
        self,
        tier: TierName,
        settings: JudgeTierSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        give_up_after_s: float | None = None,
        on_latency: ObserveLatency | None = None,
        on_retry: Callable[[str], None] | None = None,
        on_breaker: BreakerListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`session=None`: the client creates its own on first use and `aclose()` closes it.
        `give_up_after_s=None` (the worker): retry an unavailable judge forever, the post waits.
        A number (the eval harness): raise JudgeUnavailable once retrying has taken that long."""
        self.tier = tier
        self.settings = settings
        self._session = session
        self._owns_session = session is None
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._endpoints = Endpoints(
            settings.base_urls, settings.breaker_failures, settings.breaker_cooldown_s, self._breaker_changed
        )
        self._urls = {url: chat_url(url) for url in settings.base_urls}
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        self._on_breaker = on_breaker
        self._on_latency = on_latency
        self._on_retry = on_retry
        self._give_up_after_s = give_up_after_s
        self._clock = clock
        self._headers = {"content-type": "application/json"}
        estimate_tokens("")  # load the tokenizer (~0.5 s, once per process) now, not inside the first call
        if settings.api_key is not None:
            self._headers["authorization"] = f"Bearer {settings.api_key.get_secret_value()}"

    # ---- the session --------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        """The session; an owned one is created on first use, inside the running event loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                # Every request in flight gets a connection; a few more for readiness probes.
                limit=self.settings.max_in_flight + 2 * len(self.settings.base_urls),
                keepalive_timeout=KEEPALIVE_S,
            )
            # No cookies (a judge sets none), no proxy from the environment (judges are internal).
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def aclose(self) -> None:
        """Close the session if this client created it (a session passed in belongs to the caller)."""
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> JudgeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ---- state ---------------------------------------------------------------------------------

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

    # ---- judging -------------------------------------------------------------------------------

    async def judge(self, policy: Policy, post: Post) -> JudgeCall:
        body, truncated = prepare_request(policy, post, self.settings)
        return single_call(await self._send(body, truncated), policy)

    async def judge_many(self, policies: Sequence[Policy], post: Post) -> list[JudgeCall]:
        """One request for several policies (judge_mode multi_policy); one JudgeCall per policy, all
        sharing the request's audit record. One policy is an ordinary single-policy request."""
        if len(policies) == 1:
            return [await self.judge(policies[0], post)]
        body, truncated = prepare_multi_request(policies, post, self.settings)
        return multi_calls(await self._send(body, truncated), policies)

    async def _send(self, body: dict[str, Any], truncated: bool) -> Sent:
        payload = orjson.dumps(body)
        started = time.perf_counter()
        try:
            status, data, endpoint = await self._post_once(payload)
        except JudgeUnavailable as first:
            status, data, endpoint = await self._retry(payload, first, started)
        latency_ms = (time.perf_counter() - started) * 1000
        return Sent(
            self.tier, self.settings, body, truncated, endpoint, latency_ms, status, read_completion(status, data)
        )

    async def _retry(self, payload: bytes, first: JudgeUnavailable, started: float) -> tuple[int, bytes, str]:
        """Retry after a failed first attempt. Tenacity sees that attempt as its own first one (it is
        replayed, not re-sent), so back-off, `on_retry` and the give-up delay are as if it had run it."""
        replay: JudgeUnavailable | None = first

        async def attempt() -> tuple[int, bytes, str]:
            nonlocal replay
            if replay is not None:
                failed, replay = replay, None
                raise failed
            return await self._post_once(payload)

        give_up = self._give_up_after_s
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(JudgeUnavailable),
            wait=wait_random_exponential(multiplier=self.settings.retry_initial_s, max=self.settings.retry_max_s),
            stop=stop_never if give_up is None else stop_after_delay(give_up - (time.perf_counter() - started)),
            before_sleep=self._before_retry,
            reraise=True,
        )
        result: tuple[int, bytes, str] = await retrying(attempt)
        return result

    def _before_retry(self, state: RetryCallState) -> None:
        if self._on_retry is not None:
            error = state.outcome.exception() if state.outcome is not None else None
            self._on_retry(type(error).__name__ if error is not None else "unknown")

    async def _post_once(self, payload: bytes) -> tuple[int, bytes, str]:
        """One attempt: (status, body, endpoint), or JudgeUnavailable when the judge did not answer."""
        async with self._slots:
            endpoint = self._endpoints.acquire(self._clock())
            if endpoint is None:
                raise JudgeUnavailable(f"{self.tier}: every endpoint's circuit breaker is open")
            started = time.perf_counter()
            ok: bool | None = None
            try:
                async with self._http().post(
                    self._urls[endpoint], data=payload, headers=self._request_headers(), timeout=self._timeout
                ) as response:
                    status = response.status
                    data = await response.read()
                ok = not (status == 429 or status >= 500)
            except _TRANSPORT_ERRORS as exc:
                ok = False
                raise JudgeUnavailable(f"{endpoint}: {type(exc).__name__}: {exc}") from exc
            finally:
                # ok stays None only when the call was cancelled: that says nothing about the server.
                self._endpoints.release(endpoint, ok, self._clock())
            if self._on_latency is not None:
                self._on_latency(self.tier, time.perf_counter() - started)
        if not ok:
            raise JudgeUnavailable(f"{endpoint}: HTTP {status}")
        return status, data, endpoint

    def _request_headers(self) -> Mapping[str, str]:
        # The post's W3C trace context (traceparent/tracestate), if it came with one.
        trace = current_trace_headers()
        return {**self._headers, **trace} if trace else self._headers

    # ---- readiness -----------------------------------------------------------------------------

    async def ready(self) -> bool:
        """Readiness: every endpoint's engine is healthy and serves our model. vLLM's `/health` (at
        the server root, beside `/v1`) answers 200 while the engine works and 503 once it is dead;
        `/v1/models` never checks the engine, so it only confirms the model name is served. A 404 on
        `/health` (an endpoint behind a gateway that does not route it) leaves `/v1/models` to decide."""
        results = await asyncio.gather(*(self._endpoint_ready(url) for url in self.settings.base_urls))
        return all(results)

    async def _endpoint_ready(self, base_url: str) -> bool:
        health = await self._get(f"{server_root(base_url)}/health")
        if health is None or health[0] not in (200, 404):
            return False
        models = await self._get(f"{base_url}/models")
        return models is not None and lists_model(*models, self.settings.model)

    async def _get(self, url: str) -> tuple[int, bytes] | None:
        """(status, body), or None when the server did not answer."""
        try:
            async with self._http().get(url, headers=self._headers, timeout=READY_TIMEOUT) as response:
                return response.status, await response.read()
        except _TRANSPORT_ERRORS:
            return None
