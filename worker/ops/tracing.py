"""Kafka header passthrough and W3C trace-context propagation (docs/operations.md, "Headers and traces").

A post's Kafka headers whose names are on the allow-list (`headers.passthrough`) are copied, bytes
as received, onto every record derived from it: the verdict, the audit record and the DLQ record.
Nothing off the list is ever copied: headers can carry anything.

`traceparent` and `tracestate` (W3C Trace Context) are checked first: a `traceparent` that is not
`version-traceid-parentid-flags` in lower-case hex (or has an all-zero id, or version ff) is dropped,
and so is a `tracestate` without a valid `traceparent` or with characters the HTTP header could not
carry. What passes is also sent as HTTP headers on the post's judge requests.

OpenTelemetry spans are optional (`tracing.otel_enabled`, the `otel` extra; worker/ops/otel.py). Off,
no OpenTelemetry module is imported and the worker forwards the caller's context unchanged (no
traceparent in, none out). On, `configure_tracing` installs a `PostTracer`: `bind_trace` starts the
post's spans (parent: its incoming traceparent), the judge requests carry the judge span's context,
`publish_headers` swaps the publish span's context into the output records' headers, and
`end_post_trace` (called by the sensors' verdict and dead-letter hooks) ends them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from pydantic import BaseModel, ConfigDict, field_validator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
DEFAULT_PASSTHROUGH = [TRACEPARENT, TRACESTATE]
# Header names the worker writes itself on DLQ records; never taken from the input.
RESERVED_PREFIXES = ("error.", "source.")
# W3C Trace Context, version-format: 2 hex version, 32 hex trace-id, 16 hex parent-id, 2 hex flags;
# versions above 00 may append `-` and more fields.
_TRACEPARENT = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?")
# tracestate: printable ASCII (no control characters, so it can never split an HTTP header).
_TRACESTATE = re.compile(rb"[\x20-\x7e]*")
# W3C asks for at least 512 characters of tracestate to be propagated; far longer is refused.
MAX_TRACESTATE_BYTES = 8192

# One (name, value) Kafka header, value bytes as received.
Header = tuple[str, bytes]
# As confluent-kafka may give them (a consumed record's are a list of (str, bytes | None)).
RawValue = str | bytes | None
RawHeaders = Sequence[tuple[str, RawValue]] | Mapping[str, RawValue] | None


def valid_traceparent(value: bytes) -> bool:
    """Does `value` follow the W3C `traceparent` format (and is it usable)?"""
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return False
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == b"ff" or (version == b"00" and rest is not None):
        return False
    return trace_id != b"0" * 32 and parent_id != b"0" * 16


def valid_tracestate(value: bytes) -> bool:
    return len(value) <= MAX_TRACESTATE_BYTES and _TRACESTATE.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Passthrough:
    """The headers to copy onto derived records, and the trace headers dropped as invalid."""

    headers: tuple[Header, ...] = ()
    dropped: tuple[str, ...] = ()


def select_headers(raw: RawHeaders, allow: Iterable[str]) -> Passthrough:
    """The allow-listed headers of one input record (names compared case-insensitively, kept as
    received). Headers without a value are skipped. Other headers keep every occurrence in order;
    `traceparent`/`tracestate` keep their first occurrence, and only when valid (`tracestate`
    only beside a valid `traceparent`)."""
    if not raw:
        return Passthrough()
    allowed = {name.lower() for name in allow}
    kept: list[Header] = []
    dropped: list[str] = []
    seen_trace: set[str] = set()
    for name, raw_value in raw.items() if isinstance(raw, Mapping) else raw:
        lowered = name.lower()
        if lowered not in allowed or raw_value is None:
            continue
        value = raw_value.encode() if isinstance(raw_value, str) else raw_value
        if lowered in TRACE_HEADERS:
            if lowered in seen_trace:
                continue
            seen_trace.add(lowered)
            ok = valid_traceparent(value) if lowered == TRACEPARENT else valid_tracestate(value)
            if not ok:
                dropped.append(lowered)
                continue
        kept.append((name, value))
    if not any(name.lower() == TRACEPARENT for name, _ in kept):
        # W3C: no (valid) traceparent, no tracestate.
        kept = [(name, value) for name, value in kept if name.lower() != TRACESTATE]
    return Passthrough(tuple(kept), tuple(dropped))


def trace_http_headers(headers: Iterable[Header]) -> dict[str, str]:
    """The W3C trace headers among `headers` (already selected and checked), for an HTTP request."""
    return {name.lower(): value.decode("ascii") for name, value in headers if name.lower() in TRACE_HEADERS}


# The trace headers of the post the current asyncio task works on (set per processing task; child
# tasks inherit a copy). The judge client adds them to its HTTP requests.
_trace: ContextVar[Mapping[str, str]] = ContextVar("modstream_trace_headers", default=MappingProxyType({}))


class TracingSettings(BaseModel):
    """`tracing` in worker/config.py: OpenTelemetry spans per post (docs/operations.md, "OpenTelemetry
    spans"). Exporter, sampler and resource come from the standard OTEL_* environment variables."""

    model_config = ConfigDict(extra="forbid")

    # Off (the default): no OpenTelemetry module is imported and the worker forwards the caller's
    # trace context unchanged. On: needs the `otel` extra (pip install 'modstream[otel]').
    otel_enabled: bool = False

    @field_validator("otel_enabled")
    @classmethod
    def _sdk_installed(cls, value: bool) -> bool:
        if value:
            try:
                found = importlib.util.find_spec("opentelemetry.sdk") is not None
            except ModuleNotFoundError:  # no opentelemetry package at all
                found = False
            if not found:
                raise ValueError("OpenTelemetry spans need the otel extra: pip install 'modstream[otel]'")
        return value


class PostTrace(Protocol):
    """One post's spans (worker/ops/otel.py `OtelPostTrace`). Contexts are W3C HTTP headers."""

    @property
    def http_headers(self) -> Mapping[str, str]:
        """The judge span's context, for the post's judge requests."""
        ...

    def publishing(self) -> Mapping[str, str]:
        """Judging is over: start the publish span and return its context, for the output records."""
        ...

    def end(self, error: str | None = None) -> None: ...


class PostTracer(Protocol):
    def begin(
        self, parent: Mapping[str, str], consumed_at: float, where: Mapping[str, object] | None = None
    ) -> PostTrace:
        """Start a post's spans; `parent`: its valid incoming trace headers (`trace_http_headers`)."""
        ...


# None: OpenTelemetry off (the default), nothing but the caller's headers is forwarded.
_tracer: PostTracer | None = None
# The spans of the post the current asyncio task works on (with a tracer installed).
_post: ContextVar[PostTrace | None] = ContextVar("modstream_post_trace", default=None)


def install_tracer(tracer: PostTracer | None) -> PostTracer | None:
    """Use `tracer` for the posts bound from now on (None: no spans). Returns the previous one."""
    global _tracer
    previous, _tracer = _tracer, tracer
    return previous


def configure_tracing(otel_enabled: bool) -> None:
    """At start-up (`modstream run`): OpenTelemetry spans from the OTEL_* environment when enabled
    (and OTEL_SDK_DISABLED is not true). Disabled, no opentelemetry module is imported."""
    if not otel_enabled or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        install_tracer(None)
        return
    from worker.ops.otel import tracer_from_env

    install_tracer(tracer_from_env())


def bind_trace(
    headers: Sequence[Header], consumed_at: float | None = None, where: Mapping[str, object] | None = None
) -> None:
    """Make `headers`' trace context the current task's (see `current_trace_headers`). With a tracer
    installed, start the post's spans (`consumed_at`: its perf_counter() at consumption; `where`: its
    topic/partition/offset) and bind the judge span's context instead; a retried post's earlier
    spans end as failed (`retried`)."""
    tracer = _tracer
    if tracer is None:
        _trace.set(trace_http_headers(headers))
        return
    end_post_trace("retried")
    parent = trace_http_headers(headers)
    post = tracer.begin(parent, time.perf_counter() if consumed_at is None else consumed_at, where)
    _post.set(post)
    _trace.set(post.http_headers)


def publish_headers(headers: Sequence[Header]) -> list[Header]:
    """The headers for the current post's output records: `headers` as they are, or with the publish
    span's trace context in place of the caller's when the post is traced."""
    post = _post.get()
    if post is None:
        return list(headers)
    context = [(name, value.encode("ascii")) for name, value in post.publishing().items()]
    return [(name, value) for name, value in headers if name.lower() not in TRACE_HEADERS] + context


def end_post_trace(error: str | None = None) -> None:
    """End the current post's spans (`error`: why it failed, e.g. the DLQ reason). No-op untraced."""
    post = _post.get()
    if post is not None:
        _post.set(None)
        post.end(error)


def current_trace_headers() -> Mapping[str, str]:
    """The HTTP trace headers bound to the current task (empty outside a post's processing)."""
    return _trace.get()
