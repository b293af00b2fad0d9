"""Header passthrough and W3C trace context: the pure selection/validation functions, the setting,
and the judge client forwarding the bound trace headers on a real HTTP request (the simulator)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers_policies import make_policy
from worker.config import ConfigError, JudgeTierSettings, load_settings
from worker.contracts import Post
from worker.judges.client import JudgeClient, build_request
from worker.ops.tracing import (
    DEFAULT_PASSTHROUGH,
    bind_trace,
    current_trace_headers,
    select_headers,
    trace_http_headers,
    valid_traceparent,
    valid_tracestate,
)
from worker.sim.process import SimulatorProcess

# The W3C Trace Context specification's own example.
TP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ALLOW = ["traceparent", "tracestate", "tenant-id"]


@pytest.mark.parametrize(
    "value",
    [
        TP,
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        # A later version may append fields; it is parsed as version 00 and kept.
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
    ],
)
def test_valid_traceparents(value: bytes) -> None:
    assert valid_traceparent(value)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"garbage",
        TP.upper(),  # upper-case hex is not allowed
        TP[:-1],  # flags one digit short
        TP + b"-extra",  # version 00 has exactly four fields
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff is invalid
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",  # not hex
        b" " + TP,
        TP + b"\r\nx-injected: 1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0١".encode(),  # a non-ASCII digit
    ],
)
def test_invalid_traceparents(value: bytes) -> None:
    assert not valid_traceparent(value)


def test_tracestate_must_be_printable_ascii_of_bounded_size() -> None:
    assert valid_tracestate(b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert not valid_tracestate(b"rojo=1\r\nx-injected: 1")
    assert not valid_tracestate("rojo=é".encode())
    assert not valid_tracestate(b"a=" + b"b" * 9000)


def test_only_allow_listed_headers_pass_with_their_bytes_and_names_as_received() -> None:
    raw: list[tuple[str, bytes | None]] = [
        ("Authorization", b"Bearer secret"),
        ("traceparent", TP),
        ("Tenant-ID", b"\x00\xffacme"),  # any bytes: kept as received
        ("x-internal", b"do not copy"),
        ("tracestate", b"rojo=00f067aa0ba902b7"),
        ("tenant-id", b"second"),  # other headers keep every occurrence, in order
        ("tenant-id", None),  # no value: skipped
    ]
    selected = select_headers(raw, ALLOW)
    assert selected.headers == (
        ("traceparent", TP),
        ("Tenant-ID", b"\x00\xffacme"),
        ("tracestate", b"rojo=00f067aa0ba902b7"),
        ("tenant-id", b"second"),
    )
    assert selected.dropped == ()
    assert select_headers(raw, []).headers == ()
    assert select_headers(None, ALLOW).headers == ()
    # confluent-kafka's other shapes: a mapping, str values (encoded as UTF-8).
    assert select_headers({"traceparent": TP.decode(), "x": "y"}, ALLOW).headers == (("traceparent", TP),)
    assert select_headers(raw, ["TENANT-ID"]).headers == (("Tenant-ID", b"\x00\xffacme"), ("tenant-id", b"second"))


def test_an_invalid_traceparent_is_dropped_with_its_tracestate_and_reported() -> None:
    raw: list[tuple[str, bytes | None]] = [
        ("traceparent", b"00-not-a-trace"),
        ("tracestate", b"rojo=1"),
        ("tenant-id", b"acme"),
    ]
    selected = select_headers(raw, ALLOW)
    assert selected.headers == (("tenant-id", b"acme"),)
    assert selected.dropped == ("traceparent",)
    # No traceparent at all: a tracestate alone is not kept either, and nothing is invented.
    alone = select_headers([("tracestate", b"rojo=1")], ALLOW)
    assert alone.headers == () and alone.dropped == ()
    # A tracestate that could break an HTTP header is dropped; the traceparent stays.
    bad_state = select_headers([("traceparent", TP), ("tracestate", b"a=1\nb")], ALLOW)
    assert bad_state.headers == (("traceparent", TP),) and bad_state.dropped == ("tracestate",)


def test_only_the_first_traceparent_counts() -> None:
    raw: list[tuple[str, bytes | None]] = [("traceparent", b"bad"), ("traceparent", TP)]
    selected = select_headers(raw, ALLOW)
    assert selected.headers == () and selected.dropped == ("traceparent",)
    twice = select_headers([("traceparent", TP), ("traceparent", TP.replace(b"-01", b"-00"))], ALLOW)
    assert twice.headers == (("traceparent", TP),)


header_names = st.sampled_from(["traceparent", "tracestate", "tenant-id", "Tenant-Id", "secret", "error.type", "x"])


@settings(max_examples=300, derandomize=True)
@given(
    st.lists(st.tuples(header_names | st.text(max_size=12), st.none() | st.binary(max_size=80)), max_size=12),
    st.lists(header_names, max_size=4),
)
def test_selection_never_leaks_and_never_raises(raw: list[tuple[str, bytes | None]], allow: list[str]) -> None:
    selected = select_headers(raw, allow)
    allowed = {a.lower() for a in allow}
    assert all(name.lower() in allowed for name, _ in selected.headers)
    assert all((name, value) in raw for name, value in selected.headers)
    http = trace_http_headers(selected.headers)
    assert set(http) <= {"traceparent", "tracestate"}
    assert all(valid_traceparent(v.encode()) for k, v in http.items() if k == "traceparent")
    httpx.Headers(http)  # every forwarded value is a legal HTTP header value


def test_trace_headers_are_bound_per_task() -> None:
    async def one(value: bytes | None) -> dict[str, str]:
        bind_trace(select_headers([("traceparent", value)] if value else [], DEFAULT_PASSTHROUGH).headers)
        await asyncio.sleep(0)  # let the other tasks bind theirs first
        return dict(current_trace_headers())

    async def main() -> list[dict[str, str]]:
        other = TP.replace(b"-01", b"-00")
        return await asyncio.gather(one(TP), one(None), one(other))

    first, none, other = asyncio.run(main())
    assert first == {"traceparent": TP.decode()}
    assert none == {}
    assert other == {"traceparent": TP.decode()[:-2] + "00"}
    assert dict(current_trace_headers()) == {}


def test_passthrough_setting() -> None:
    assert load_settings().headers.passthrough == ["traceparent", "tracestate"]
    assert load_settings(headers={"passthrough": ["TraceParent", "tenant-id", "tenant-id"]}).headers.passthrough == [
        "traceparent",
        "tenant-id",
    ]
    assert load_settings(headers={"passthrough": []}).headers.passthrough == []
    with pytest.raises(ConfigError, match=r"error\.type"):
        load_settings(headers={"passthrough": ["error.type"]})
    with pytest.raises(ConfigError, match=r"headers\.passthrough"):
        load_settings(headers={"passthrough": ["bad name"]})


@pytest.fixture
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-20b", seed=3, speed=0.2) as running:
        yield running


def test_judge_request_carries_the_bound_trace_headers_and_an_unchanged_body(sim: SimulatorProcess) -> None:
    policy = make_policy()
    tier = JudgeTierSettings(
        base_urls=[sim.base_url], model="openai/gpt-oss-safeguard-20b", reasoning_effort="low", api_key="s3cret"
    )
    post = Post(id="p1", text="FREE MONEY!!! crypto giveaway, send 1 BTC and get 2 back")

    async def judge(headers: list[tuple[str, bytes | None]]) -> None:
        async with JudgeClient("t1", tier) as client:
            bind_trace(select_headers(headers, DEFAULT_PASSTHROUGH).headers)
            await client.judge(policy, post)

    asyncio.run(judge([("traceparent", TP), ("tracestate", b"rojo=1"), ("tenant-id", b"acme")]))
    asyncio.run(judge([]))
    bodies, headers = sim.requests(), sim.request_headers()
    assert len(bodies) == len(headers) == 2
    assert headers[0]["traceparent"] == TP.decode() and headers[0]["tracestate"] == "rojo=1"
    assert "tenant-id" not in headers[0], "only trace headers go to the judge"
    assert headers[0]["authorization"] == "***", "the simulator's log never shows credentials"
    assert "traceparent" not in headers[1] and "tracestate" not in headers[1], "none invented"
    # The body (and its key order) is exactly what it would be without tracing.
    assert list(bodies[0]) == list(build_request(policy, post, tier)) and bodies[0] == bodies[1]
