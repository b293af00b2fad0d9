"""OpenTelemetry spans per post (worker/ops/otel.py through worker/ops/tracing.py's hooks), recorded
by the SDK's in-memory exporter; the setting; and no opentelemetry import when it is off."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from worker.config import ConfigError, load_settings
from worker.ops import otel, tracing
from worker.ops.sensors import Sensors
from worker.ops.tracing import Header, bind_trace, current_trace_headers, end_post_trace, publish_headers

ROOT = Path(__file__).resolve().parents[3]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TP = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()
WHERE = {"topic": "posts", "partition": 3, "offset": 41}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = tracing.install_tracer(otel.OtelPostTracer(provider))
    try:
        yield exporter
    finally:
        tracing.install_tracer(previous)
        provider.shutdown()


def in_task(fn: Callable[[], None]) -> None:
    """Run `fn` in a fresh context, as each post's asyncio task does."""
    contextvars.copy_context().run(fn)


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    finished = exporter.get_finished_spans()
    named = {span.name: span for span in finished}
    assert len(named) == len(finished), [s.name for s in finished]
    return named


def traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def test_a_post_with_a_traceparent_gets_the_span_chain_under_its_parent(spans: InMemorySpanExporter) -> None:
    headers: list[Header] = [("traceparent", TP), ("tracestate", b"rojo=1"), ("tenant-id", b"acme")]
    seen: dict[str, object] = {}

    def post() -> None:
        bind_trace(headers, time.perf_counter() - 0.05, WHERE)
        seen["judge"] = dict(current_trace_headers())
        assert not spans.get_finished_spans()[1:], "only the funnel span is over before judging"
        seen["out"] = publish_headers(headers)
        end_post_trace()
        end_post_trace()  # a second end is a no-op

    in_task(post)
    named = by_name(spans)
    assert set(named) == {"modstream.post", "modstream.funnel", "modstream.judge", "modstream.publish"}
    root = named["modstream.post"]
    assert root.parent is not None and root.parent.is_remote
    assert f"{root.parent.trace_id:032x}" == TRACE_ID and f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.kind is SpanKind.CONSUMER and named["modstream.publish"].kind is SpanKind.PRODUCER
    assert root.attributes is not None and dict(root.attributes) == {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": "posts",
        "messaging.destination.partition.id": "3",
        "messaging.kafka.offset": 41,
    }
    root_id = root.get_span_context().span_id  # type: ignore[union-attr]
    for name in ("modstream.funnel", "modstream.judge", "modstream.publish"):
        span = named[name]
        assert span.parent is not None and span.parent.span_id == root_id, name
        assert f"{span.get_span_context().trace_id:032x}" == TRACE_ID, name  # type: ignore[union-attr]
        assert span.status.status_code is StatusCode.UNSET
    # The chain is in time order: consumed (50 ms ago) -> funnel -> judge -> publish -> end.
    funnel, judge, publish = named["modstream.funnel"], named["modstream.judge"], named["modstream.publish"]
    assert root.start_time == funnel.start_time and funnel.end_time == judge.start_time
    assert funnel.end_time - funnel.start_time >= 40_000_000  # type: ignore[operator]
    assert judge.end_time <= publish.start_time and publish.end_time <= root.end_time  # type: ignore[operator]
    # The judge requests carried the judge span's context, the output records the publish span's;
    # the caller's tracestate travels on, other headers stay as they were.
    assert seen["judge"] == {"traceparent": traceparent_of(judge), "tracestate": "rojo=1"}
    out = dict(seen["out"])  # type: ignore[call-overload]
    assert out == {
        "tenant-id": b"acme",
        "traceparent": traceparent_of(publish).encode(),
        "tracestate": b"rojo=1",
    }


def test_a_post_without_a_traceparent_starts_a_trace(spans: InMemorySpanExporter) -> None:
    out: list[Header] = []

    def post() -> None:
        bind_trace([("tenant-id", b"t")], time.perf_counter())
        out.extend(publish_headers([("tenant-id", b"t")]))
        end_post_trace()

    in_task(post)
    named = by_name(spans)
    assert named["modstream.post"].parent is None
    assert dict(out) == {"tenant-id": b"t", "traceparent": traceparent_of(named["modstream.publish"]).encode()}


def test_failed_and_retried_posts_end_their_spans_as_errors(spans: InMemorySpanExporter) -> None:
    def post() -> None:
        bind_trace([("traceparent", TP)], time.perf_counter(), WHERE)
        bind_trace([("traceparent", TP)], time.perf_counter(), WHERE)  # the task's second attempt
        Sensors().on_dead_letter("deadline_exceeded")  # the sensors hook ends the post's spans

    in_task(post)
    finished = spans.get_finished_spans()
    roots = [s for s in finished if s.name == "modstream.post"]
    assert [s.status.description for s in roots] == ["retried", "deadline_exceeded"]
    assert all(s.status.status_code is StatusCode.ERROR for s in roots)
    assert roots[1].attributes is not None and roots[1].attributes["modstream.error"] == "deadline_exceeded"
    judges = [s for s in finished if s.name == "modstream.judge"]
    assert len(judges) == 2 and all(s.status.status_code is StatusCode.ERROR for s in judges)
    assert not [s for s in finished if s.name == "modstream.publish"]


def test_concurrent_posts_keep_their_own_spans(spans: InMemorySpanExporter) -> None:
    """Each asyncio task binds its own post; a child task (the judging) sees its parent's context."""
    parents = [f"00-{i + 1:032x}-{i + 1:016x}-01".encode() for i in range(8)]

    async def one(tp: bytes) -> str:
        bind_trace([("traceparent", tp)], time.perf_counter())
        await asyncio.sleep(0)
        seen = await asyncio.ensure_future(_judge_headers())
        publish_headers([("traceparent", tp)])
        end_post_trace()
        return seen

    async def main() -> list[str]:
        return await asyncio.gather(*(one(tp) for tp in parents))

    seen = asyncio.run(main())
    judges = {traceparent_of(s): s for s in spans.get_finished_spans() if s.name == "modstream.judge"}
    assert sorted(seen) == sorted(judges)
    for tp, got in zip(parents, seen, strict=True):
        assert got.split("-")[1] == tp.decode().split("-")[1], "a post's judge requests stay in its trace"


async def _judge_headers() -> str:
    return current_trace_headers()["traceparent"]


def test_untraced_posts_pass_headers_through_unchanged() -> None:
    assert tracing.install_tracer(None) is None, "no tracer installed by default"
    headers: list[Header] = [("traceparent", TP), ("tenant-id", b"acme")]
    seen: list[object] = []

    def post() -> None:
        bind_trace(headers, time.perf_counter(), WHERE)
        seen.extend([dict(current_trace_headers()), publish_headers(headers)])
        end_post_trace("deadline_exceeded")

    in_task(post)
    assert seen == [{"traceparent": TP.decode()}, headers]


def test_the_setting_and_the_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().tracing.otel_enabled is False
    assert load_settings(tracing={"otel_enabled": True}).tracing.otel_enabled is True
    monkeypatch.setenv("MODSTREAM_TRACING__OTEL_ENABLED", "true")
    assert load_settings().tracing.otel_enabled is True
    with pytest.raises(ConfigError, match="tracing"):
        load_settings(tracing={"otel": True})

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "")
    previous = tracing.install_tracer(None)
    try:
        tracing.configure_tracing(True)
        installed = tracing.install_tracer(None)
        assert isinstance(installed, otel.OtelPostTracer)
        assert installed.provider.resource.attributes["service.name"] == "modstream"
        installed.provider.shutdown()
        monkeypatch.setenv("OTEL_SERVICE_NAME", "moderation-eu")
        tracing.configure_tracing(True)
        installed = tracing.install_tracer(None)
        assert isinstance(installed, otel.OtelPostTracer)
        assert installed.provider.resource.attributes["service.name"] == "moderation-eu"
        installed.provider.shutdown()
        monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
        tracing.configure_tracing(True)
        assert tracing.install_tracer(None) is None
    finally:
        tracing.install_tracer(previous)

    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = otel.exporter_from_env()
    assert isinstance(exporter, OTLPSpanExporter)
    exporter.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ValueError, match="http/protobuf"):
        otel.exporter_from_env()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="otlp, console or none"):
        otel.exporter_from_env()


def test_enabling_spans_without_the_otel_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(tracing.importlib.util, "find_spec", missing)
    with pytest.raises(ConfigError, match=r"tracing\.otel_enabled .*MODSTREAM_TRACING__OTEL_ENABLED.*otel extra"):
        load_settings(tracing={"otel_enabled": True})
    assert load_settings().tracing.otel_enabled is False, "off needs nothing"


def test_the_worker_imports_no_opentelemetry_module_when_tracing_is_off() -> None:
    """A fresh interpreter loads the worker's entry points and processes a post's trace hooks with
    tracing off: not one opentelemetry module gets imported."""
    script = """
import sys, time
from worker.cli.main import main
from worker.cli.run import run
from worker.config import load_settings
from worker.stream.serve import run_worker
from worker.stream.wiring import wire
from worker.ops.sensors import Sensors
from worker.ops.tracing import bind_trace, configure_tracing, end_post_trace, publish_headers
settings = load_settings()
configure_tracing(settings.tracing.otel_enabled)
tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
bind_trace([("traceparent", tp)], time.perf_counter(), {"topic": "posts"})
assert publish_headers([("traceparent", tp)]) == [("traceparent", tp)]
Sensors().on_dead_letter("x")
end_post_trace()
print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
