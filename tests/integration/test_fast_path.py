"""The batched fast path publishes exactly what the per-post path publishes: the same posts through
a worker with the fast path (the default) and one with it off (`MODSTREAM_FAST_PATH=false`), real
Tansu broker, simulator judges, workers as processes. Every verdict is byte-identical apart from its
timings (`latency_ms`, `decided_at`), passthrough headers included, and the verdict counters agree."""

from __future__ import annotations

import random
import re
import signal
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Message, Producer

from tests.conftest import worker_env
from tests.kafka_support import (
    TRIGGERING_TEXTS,
    WorkerProcess,
    all_committed,
    metrics,
    post_value,
    read_topic,
    wait_for,
)
from worker.local.broker import EmbeddedBroker, create_topics
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

N_POSTS = 600
BENIGN = [
    "Had a lovely walk by the river this morning",
    "Does anyone know a good recipe for lentil soup?",
    "kill the process and restart the server",
    "Nuevo récord en la maratón de hoy",
]
TIMINGS = re.compile(rb'"latency_ms":[-0-9.eE+]+|"decided_at":"[^"]*"')


def produce_posts(bootstrap: str) -> dict[int, int]:
    rng = random.Random(29)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    last: dict[int, int] = {}

    def on_delivery(err: object, msg: Message) -> None:
        assert err is None, err
        last[int(msg.partition() or 0)] = max(last.get(int(msg.partition() or 0), -1), int(msg.offset() or 0))

    for i in range(N_POSTS):
        text = rng.choice(TRIGGERING_TEXTS) if rng.random() < 0.1 else rng.choice(BENIGN)
        value = post_value(f"fp-{i}", f"{text} #{i}") if i % 97 else b"{not json"
        headers = [("tenant-id", f"t{i % 3}".encode())] if i % 2 else []
        producer.produce("posts", key=f"fp-{i}".encode(), value=value, headers=headers, on_delivery=on_delivery)
    assert producer.flush(60) == 0
    return last


Published = dict[bytes, tuple[bytes, list[tuple[str, bytes]]]]


def published(bootstrap: str, topic: str, expected: int) -> tuple[Published, dict[bytes, str]]:
    """Verdicts by key with their timings blanked, and their headers; and each one's decided_at."""
    out: Published = {}
    decided: dict[bytes, str] = {}
    for msg in read_topic(bootstrap, topic, expected):
        key = msg.key() or b""
        assert key not in out, f"two verdicts for {key!r}"
        out[key] = (TIMINGS.sub(b"<timing>", msg.value() or b""), list(msg.headers() or []))
        decided[key] = orjson.loads(msg.value() or b"{}")["decided_at"]
    return out, decided


def run_worker(
    broker: EmbeddedBroker,
    sims: tuple[SimulatorProcess, SimulatorProcess],
    last: dict[int, int],
    log: Path,
    fast: bool,
) -> dict[str, float]:
    name = "fast" if fast else "slow"
    env = worker_env(
        broker,
        sims,
        group=f"g-{name}",
        MODSTREAM_FAST_PATH=str(fast).lower(),
        MODSTREAM_TOPICS__ACTIONS=f"actions-{name}",
        MODSTREAM_TOPICS__AUDIT=f"audit-{name}",
        MODSTREAM_TOPICS__DLQ=f"dlq-{name}",
        MODSTREAM_HEADERS__PASSTHROUGH='["tenant-id"]',
        # Today's scoring clears most of these posts (the fast path's subject); the shipped heads
        # (the default) send most benign posts to a judge for some policy (docs/funnel.md, Figures).
        MODSTREAM_FUNNEL_HEADS="false",
    )
    worker = WorkerProcess(env, log).start()
    try:
        wait_for(
            lambda: all_committed(broker.bootstrap_servers, f"g-{name}", "posts", last, 4),
            300,
            f"every post committed by the {name} worker",
            interval_s=0.2,
        )
        counted = metrics(worker)
    finally:
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.log()[-3000:]
    return counted


def test_fast_path_verdicts_are_the_per_post_paths_bytes(
    broker: EmbeddedBroker, sims: tuple[SimulatorProcess, SimulatorProcess], tmp_path: Path
) -> None:
    topics = {"posts": 4}
    for name in ("fast", "slow"):
        topics |= {f"actions-{name}": 4, f"audit-{name}": 4, f"dlq-{name}": 1}
    create_topics(broker.bootstrap_servers, topics)
    last = produce_posts(broker.bootstrap_servers)
    fast_metrics = run_worker(broker, sims, last, tmp_path / "fast.log", fast=True)
    slow_metrics = run_worker(broker, sims, last, tmp_path / "slow.log", fast=False)
    invalid = len([i for i in range(N_POSTS) if i % 97 == 0])
    fast, fast_decided = published(broker.bootstrap_servers, "actions-fast", N_POSTS - invalid)
    slow, _ = published(broker.bootstrap_servers, "actions-slow", N_POSTS - invalid)
    assert len(slow) == N_POSTS - invalid
    assert sorted(fast) == sorted(slow)
    cleared = [key for key, (value, _) in slow.items() if b'"tier":"funnel"' in value and b'"results":[]' in value]
    assert len(cleared) > N_POSTS // 2, "most posts must be cleared, or the fast path was not exercised"
    for key in cleared:
        assert fast[key] == slow[key], f"{key!r}: fast path {fast[key]!r} != per-post path {slow[key]!r}"
    # The fast path decides a whole group at one instant: far fewer distinct decided_at values than
    # cleared posts shows the groups really went that way (the per-post path stamps each post).
    assert len({fast_decided[key] for key in cleared}) < len(cleared) // 4
    for name in ("modstream_verdicts_total", "modstream_dlq_records_total", "modstream_post_latency_seconds_count"):
        assert fast_metrics.get(name) == slow_metrics.get(name), name
    assert fast_metrics["modstream_verdicts_total"] == N_POSTS - invalid
