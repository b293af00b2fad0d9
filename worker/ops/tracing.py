"""Kafka header passthrough and W3C trace-context propagation (docs/operations.md, "Headers and traces").

A post's Kafka headers whose names are on the allow-list (`headers.passthrough`) are copied, bytes
as received, onto every record derived from it: the verdict, the audit record and the DLQ record.
Nothing off the list is ever copied: headers can carry anything.

`traceparent` and `tracestate` (W3C Trace Context) are checked first: a `traceparent` that is not
`version-traceid-parentid-flags` in lower-case hex (or has an all-zero id, or version ff) is dropped,
and so is a `tracestate` without a valid `traceparent` or with characters the HTTP header could not
carry. What passes is also sent as HTTP headers on the post's judge requests (the worker does not
start spans of its own, so it forwards the caller's context unchanged; no traceparent in, none out).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType

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


def bind_trace(headers: Iterable[Header]) -> None:
    """Make `headers`' trace context the current task's (see `current_trace_headers`)."""
    _trace.set(trace_http_headers(headers))


def current_trace_headers() -> Mapping[str, str]:
    """The HTTP trace headers bound to the current task (empty outside a post's processing)."""
    return _trace.get()
