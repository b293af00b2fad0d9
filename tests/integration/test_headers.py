"""Header passthrough and trace propagation end to end: real Tansu broker, the simulator as both
judge tiers, the worker as a process. Posts produced with `traceparent`, `tracestate`, `tenant-id`
(and a header off the allow-list) come out with exactly the allowed ones on their verdict, audit and
DLQ records, and every judge request of a post carried that post's trace context.

With OpenTelemetry on (the worker in-process, spans into the SDK's in-memory exporter), each judged
post's spans hang under its incoming traceparent, the judge requests carry the judge span's context
and the verdict and audit records the publish span's."""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Message, Producer

from tests.conftest import worker_env
from tests.kafka_support import (
    TRIGGERING_TEXTS,
    WorkerProcess,
    metric_samples,
    post_value,
    read_topic,
)
from worker.config import Settings
from worker.local.broker import EmbeddedBroker
from worker.ops import tracing
from worker.sim.process import SimulatorProcess
from worker.stream.worker import Worker

pytestmark = pytest.mark.integration

Headers = list[tuple[str, bytes]]
PASSTHROUGH = '["traceparent", "tracestate", "tenant-id"]'
BENIGN = ["Had a lovely walk by the river this morning", "Does anyone know a good recipe for lentil soup?"]


def traceparent(rng: random.Random) -> bytes:
    return f"00-{rng.getrandbits(128) | 1:032x}-{rng.getrandbits(64) | 1:016x}-01".encode()


def produce_with_headers(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, Headers]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
    assert producer.flush(60) == 0 and not errors, errors


def headers_of(msg: Message) -> dict[str, bytes]:
    found = msg.headers() or []
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"a header appears twice: {names}"
    return {name: value for name, value in found}


def test_headers_reach_verdict_audit_dlq_and_the_judge_requests(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    rng = random.Random(7)
    sent: dict[str, Headers] = {}
    records: list[tuple[bytes, bytes, Headers]] = []

    def add(post_id: str, value: bytes, headers: Headers) -> None:
        sent[post_id] = headers
        records.append((post_id.encode(), value, headers))

    for i, text in enumerate(TRIGGERING_TEXTS):
        # Low confidence: tier 1 answers and tier 2 is asked too (two judge tiers, one trace).
        headers = [
            ("traceparent", traceparent(rng)),
            ("tracestate", f"modstream=t{i}".encode()),
            ("tenant-id", f"tenant-{i}".encode()),
            ("x-secret", b"never copied"),
        ]
        add(f"j-{i}", post_value(f"j-{i}", f"{text} [[sim: confidence=low]] #j-{i}"), headers)
    for i, text in enumerate(BENIGN):
        add(f"b-{i}", post_value(f"b-{i}", f"{text} #b-{i}"), [("traceparent", traceparent(rng)), ("tenant-id", b"t")])
    add(
        "bad-tp",
        post_value("bad-tp", f"{TRIGGERING_TEXTS[0]} #bad-tp"),
        [("traceparent", b"00-xyz-01"), ("tenant-id", b"acme")],
    )
    add("plain", post_value("plain", f"{TRIGGERING_TEXTS[0]} #plain"), [])
    dlq_headers = [("traceparent", traceparent(rng)), ("tenant-id", b"acme"), ("x-secret", b"never copied")]
    add("broken", b'{"id": "broken", "text": ', dlq_headers)
    produce_with_headers(broker.bootstrap_servers, "posts", records)

    worker = spawn_worker(worker_env(broker, sims, group="g-headers", MODSTREAM_HEADERS__PASSTHROUGH=PASSTHROUGH))
    n_posts = len(records) - 1
    actions = read_topic(broker.bootstrap_servers, "actions", n_posts, timeout_s=120, producer_alive=worker.alive)
    judged = [m for m in actions if orjson.loads(m.value())["tier"] != "funnel"]
    audit = read_topic(broker.bootstrap_servers, "audit", len(judged), timeout_s=60, producer_alive=worker.alive)
    dead = read_topic(broker.bootstrap_servers, "dlq", 1, timeout_s=60, producer_alive=worker.alive)
    dropped = metric_samples(worker, "modstream_trace_headers_dropped_total")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]

    def expected(post_id: str) -> dict[str, bytes]:
        if post_id == "bad-tp":  # the invalid traceparent is dropped, the tenant stays
            return {"tenant-id": b"acme"}
        return {name: value for name, value in sent[post_id] if name != "x-secret"}

    assert len(actions) == n_posts
    for msg in actions:
        assert headers_of(msg) == expected(msg.key().decode()), msg.key()
    judged_ids = {m.key().decode() for m in judged}
    assert {f"j-{i}" for i in range(len(TRIGGERING_TEXTS))} | {"bad-tp", "plain"} <= judged_ids
    assert sorted(m.key() for m in audit) == sorted(m.key() for m in judged)
    for msg in audit:
        assert headers_of(msg) == expected(msg.key().decode()), msg.key()

    assert len(dead) == 1
    dlq = headers_of(dead[0])
    assert dlq["error.type"] == b"invalid_json" and dlq["source.topic"] == b"posts"
    assert {k: v for k, v in dlq.items() if not k.startswith(("error.", "source."))} == expected("broken")
    assert dropped == [('{header="traceparent"}', 1.0)]

    # Every judge request of a post carried that post's trace context, on both tiers; none invented.
    seen_tiers: dict[str, set[str]] = {}
    for tier, sim in zip(("t1", "t2"), sims, strict=True):
        bodies, http_headers = sim.requests(), sim.request_headers()
        assert len(bodies) == len(http_headers)
        for body, got in zip(bodies, http_headers, strict=True):
            post_id = body["messages"][-1]["content"].rsplit("#", 1)[-1]
            seen_tiers.setdefault(post_id, set()).add(tier)
            want = {k: v.decode() for k, v in expected(post_id).items() if k in ("traceparent", "tracestate")}
            assert {k: v for k, v in got.items() if k in ("traceparent", "tracestate")} == want, post_id
            assert "tenant-id" not in got and "x-secret" not in got
    assert judged_ids <= set(seen_tiers)
    assert any(seen_tiers[f"j-{i}"] == {"t1", "t2"} for i in range(len(TRIGGERING_TEXTS))), "low confidence escalates"


async def test_otel_spans_hang_under_the_incoming_traceparent_and_their_context_goes_out(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from worker.ops.otel import OtelPostTracer

    rng = random.Random(11)
    sent: dict[str, bytes] = {}
    states: dict[str, str] = {}
    records: list[tuple[bytes, bytes, Headers]] = []
    for i, text in enumerate(TRIGGERING_TEXTS):
        post_id = f"o-{i}"
        sent[post_id] = traceparent(rng)
        states[post_id] = f"modstream=o{i}"
        headers = [("traceparent", sent[post_id]), ("tracestate", states[post_id].encode())]
        records.append((post_id.encode(), post_value(post_id, f"{text} [[sim: confidence=low]] #{post_id}"), headers))
    untraced = f"{TRIGGERING_TEXTS[0]} #o-none"
    records.append((b"o-none", post_value("o-none", untraced), [("tenant-id", b"t")]))
    benign = traceparent(rng)
    records.append((b"o-benign", post_value("o-benign", f"{BENIGN[0]} #o-benign"), [("traceparent", benign)]))
    await asyncio.to_thread(produce_with_headers, broker.bootstrap_servers, "posts", records)

    env = worker_env(broker, sims, group="g-otel", MODSTREAM_METRICS_PORT="0", MODSTREAM_METRICS_HOST="127.0.0.1")
    env["MODSTREAM_TRACING__OTEL_ENABLED"] = "true"
    env["MODSTREAM_HEADERS__PASSTHROUGH"] = PASSTHROUGH
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.tracing.otel_enabled
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = tracing.install_tracer(OtelPostTracer(provider))
    worker = Worker(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        actions = await asyncio.to_thread(read_topic, broker.bootstrap_servers, "actions", len(records), 120)
        judged = [m for m in actions if orjson.loads(m.value())["tier"] != "funnel"]
        audit = await asyncio.to_thread(read_topic, broker.bootstrap_servers, "audit", len(judged), 60)
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        tracing.install_tracer(previous)
        provider.shutdown()

    spans = exporter.get_finished_spans()
    trees: dict[str, dict[str, Any]] = {}  # trace id -> span name -> span
    for span in spans:
        context = span.get_span_context()
        assert context is not None
        names = trees.setdefault(f"{context.trace_id:032x}", {})
        assert span.name not in names, f"two {span.name} spans in one trace"
        names[span.name] = span

    def ctx(span: Any) -> str:
        c = span.get_span_context()
        return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"

    by_key = {m.key().decode(): m for m in actions}
    requests = [
        (tier, body["messages"][-1]["content"].rsplit("#", 1)[-1], got)
        for tier, sim in zip(("t1", "t2"), sims, strict=True)
        for body, got in zip(sim.requests(), sim.request_headers(), strict=True)
    ]
    for post_id, tp in sent.items():
        trace_id, parent_id = tp.decode().split("-")[1:3]
        tree = trees[trace_id]
        assert set(tree) == {"modstream.post", "modstream.funnel", "modstream.judge", "modstream.publish"}, post_id
        root = tree["modstream.post"]
        assert root.parent.is_remote and f"{root.parent.span_id:016x}" == parent_id, post_id
        assert dict(root.attributes)["messaging.destination.name"] == "posts"
        for name in ("modstream.funnel", "modstream.judge", "modstream.publish"):
            assert tree[name].parent.span_id == root.get_span_context().span_id, (post_id, name)
        # Every judge request of this post, on both tiers (low confidence escalates), carried the
        # judge span's context and the caller's tracestate.
        carried = [(tier, got) for tier, pid, got in requests if pid == post_id]
        assert {tier for tier, _ in carried} == {"t1", "t2"}, post_id
        for _, got in carried:
            assert got["traceparent"] == ctx(tree["modstream.judge"]) and got["tracestate"] == states[post_id]
        # The verdict and the audit record carry the publish span's context.
        want = {
            "traceparent": ctx(tree["modstream.publish"]).encode(),
            "tracestate": states[post_id].encode(),
        }
        assert headers_of(by_key[post_id]) == want, post_id
        (audited,) = [m for m in audit if m.key().decode() == post_id]
        assert headers_of(audited) == want, post_id

    # A judged post without a traceparent starts a trace of its own, and its records carry it.
    none_headers = headers_of(by_key["o-none"])
    none_trace = none_headers["traceparent"].decode().split("-")[1]
    assert none_trace not in {tp.decode().split("-")[1] for tp in sent.values()}
    assert trees[none_trace]["modstream.post"].parent is None
    assert none_headers["tenant-id"] == b"t"
    # A post the funnel cleared takes the batched fast path: no spans, the caller's context unchanged.
    assert orjson.loads(by_key["o-benign"].value())["tier"] == "funnel"
    assert headers_of(by_key["o-benign"]) == {"traceparent": benign}
    assert benign.decode().split("-")[1] not in trees
    assert len(trees) == len(sent) + 1, "one trace per judged post"
