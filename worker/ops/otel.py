"""OpenTelemetry spans per post (docs/operations.md, "OpenTelemetry spans"). Imported only when
`tracing.otel_enabled` is on (worker/ops/tracing.py `configure_tracing`); needs the `otel` extra.

Per judged post, one trace segment whose parent is the post's incoming `traceparent` (a new trace
when it came without one):

    modstream.post     CONSUMER  consumed -> verdict acknowledged (messaging.* attributes)
      modstream.funnel           consumed -> judging starts (decode, funnel batch)
      modstream.judge            the cascade; its context goes on every judge HTTP request
      modstream.publish PRODUCER verdict + audit sent -> acknowledged; its context goes on those records

Exporter and sampling follow the standard OTEL_* environment variables: OTEL_TRACES_EXPORTER
(`otlp`, the default: OTLP over HTTP/protobuf, OTEL_EXPORTER_OTLP_ENDPOINT / _TRACES_ENDPOINT,
_HEADERS...; `console`; `none`), OTEL_TRACES_SAMPLER(_ARG) (default parentbased_always_on),
OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES (service.name defaults to `modstream`), OTEL_BSP_*.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
# Consumed.where's fields -> OpenTelemetry messaging semantic conventions.
_WHERE = {
    "topic": "messaging.destination.name",
    "partition": "messaging.destination.partition.id",
    "offset": "messaging.kafka.offset",
}


def _inject(span: Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
    return carrier


def _fail(span: Span, error: str | None) -> None:
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))


class OtelPostTrace:
    """One post's spans; created by `OtelPostTracer.begin` when its judging task starts."""

    def __init__(self, tracer: OtelPostTracer, post: Span, judge: Span) -> None:
        self._tracer = tracer
        self._post = post
        self._judge: Span | None = judge
        self._publish: Span | None = None
        self._ended = False
        # The judge span's context: sent on every judge request of this post (both tiers).
        self.http_headers: Mapping[str, str] = _inject(judge)

    def publishing(self) -> Mapping[str, str]:
        """Judging is over: end the judge span, start the publish span and return its context (for
        the post's output records, in place of the caller's)."""
        if self._judge is not None:
            self._judge.end()
            self._judge = None
        if self._publish is None:
            self._publish = self._tracer.child(self._post, "modstream.publish", kind=SpanKind.PRODUCER)
        return _inject(self._publish)

    def end(self, error: str | None = None) -> None:
        """Verdict published (error None), or the post failed (`error`: the DLQ reason, or `retried`)."""
        if self._ended:
            return
        self._ended = True
        for span in (self._judge, self._publish):
            if span is not None:
                _fail(span, error)
                span.end()
        _fail(self._post, error)
        if error is not None:
            self._post.set_attribute("modstream.error", error)
        self._post.end()


class OtelPostTracer:
    """Starts the spans of each judged post on `provider` (worker/ops/tracing.py `PostTracer`)."""

    def __init__(self, provider: TracerProvider) -> None:
        try:
            release = version("modstream")
        except PackageNotFoundError:
            release = None
        self.provider = provider
        self._tracer = provider.get_tracer("modstream", release)

    def child(self, parent: Span, name: str, kind: SpanKind = SpanKind.INTERNAL, start_ns: int | None = None) -> Span:
        return self._tracer.start_span(name, context=set_span_in_context(parent), kind=kind, start_time=start_ns)

    def begin(
        self, parent: Mapping[str, str], consumed_at: float, where: Mapping[str, object] | None = None
    ) -> OtelPostTrace:
        """`parent`: the post's valid W3C trace headers ({} without); `consumed_at`: time.perf_counter()
        when the record was consumed (Consumed.started); `where`: its topic, partition and offset."""
        now_ns = time.time_ns()
        consumed_ns = now_ns - int(max(0.0, time.perf_counter() - consumed_at) * 1e9)
        context: Context = _PROPAGATOR.extract(parent)
        attributes: dict[str, str | int] = {"messaging.system": "kafka", "messaging.operation.type": "process"}
        for field, value in (where or {}).items():
            if field in _WHERE and isinstance(value, str | int):
                attributes[_WHERE[field]] = str(value) if field == "partition" else value
        post = self._tracer.start_span(
            "modstream.post", context=context, kind=SpanKind.CONSUMER, start_time=consumed_ns, attributes=attributes
        )
        self.child(post, "modstream.funnel", start_ns=consumed_ns).end(now_ns)
        return OtelPostTrace(self, post, self.child(post, "modstream.judge", start_ns=now_ns))


def exporter_from_env() -> SpanExporter | None:
    """OTEL_TRACES_EXPORTER: `otlp` (default; HTTP/protobuf), `console` or `none` (None)."""
    name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        )
        if protocol.strip() != "http/protobuf":
            raise ValueError(f"OTLP protocol {protocol!r}: the otel extra ships the http/protobuf exporter only")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ValueError(f"OTEL_TRACES_EXPORTER={name!r}: modstream supports otlp, console or none")


def provider_from_env() -> TracerProvider:
    """A TracerProvider configured by the OTEL_* variables (sampler, resource, batch processor);
    it flushes its spans at interpreter exit."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "modstream"}))
    provider = TracerProvider(resource=resource)
    exporter = exporter_from_env()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def tracer_from_env() -> OtelPostTracer:
    return OtelPostTracer(provider_from_env())
