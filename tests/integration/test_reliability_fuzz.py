"""Bad input against a real broker: a hypothesis-generated batch (derandomized) of arbitrary bytes,
huge values, deep JSON, invalid UTF-8, control and bidi characters, null keys and values,
tombstones, mixed with valid posts, plus a record too large for the worker to copy to the DLQ.
The worker never crashes; every valid post gets a verdict and every bad record is in the DLQ
with the reason decode_post gives for it. (The pure decode fuzz is in test_reliability_units.py.)"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Message, Producer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import worker_env
from tests.kafka_support import WorkerProcess, all_committed, post_value, read_topic, wait_for
from tests.unit.stream.test_reliability import LIMIT, record_values
from worker.contracts import Post
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess
from worker.stream.decode import DecodeError, decode_post

pytestmark = pytest.mark.integration

HUGE = 1_500_000  # above the worker producer's message.max.bytes (1,000,000): the DLQ keeps a marker

keys = st.one_of(st.none(), st.binary(max_size=40))
BATCH = 200


def generated_batch() -> list[tuple[bytes | None, bytes | None]]:
    """`BATCH` distinct (key, value) records drawn by hypothesis, derandomized (same every run).
    Drawing many examples (not one list in one example) gives the variety of a real fuzz run:
    hypothesis starts with the simplest example and then explores."""
    drawn: list[tuple[bytes | None, bytes | None]] = []

    @settings(derandomize=True, max_examples=BATCH * 3, deadline=None, database=None)
    @given(keys, record_values)
    def collect(key: bytes | None, value: bytes | None) -> None:
        if (key, value) not in drawn and len(drawn) < BATCH:
            drawn.append((key, value))

    collect()
    return drawn


def produce_positions(bootstrap: str, records: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
    """Produce in order; returns each record's (partition, offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4_000_000, "linger.ms": 5})
    positions: list[tuple[int, int]] = [(-1, -1)] * len(records)
    errors: list[str] = []

    def on_delivery(index: int) -> Callable[[Any, Message], None]:
        def report(err: Any, msg: Message) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                positions[index] = (int(msg.partition() or 0), int(msg.offset() or 0))

        return report

    for i, (key, value) in enumerate(records):
        producer.produce("posts", key=key, value=value, on_delivery=on_delivery(i))
        producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors[:3]
    return positions


def test_a_generated_bad_batch_never_crashes_the_worker(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    records = generated_batch()
    records += [(f"ok-{i}".encode(), post_value(f"ok-{i}", f"plain post {i} \u202eevil\u202c")) for i in range(30)]
    records.append((b"huge", b'{"id": "huge", "text": "' + b"x" * HUGE + b'"}'))
    positions = produce_positions(broker.bootstrap_servers, records)
    last: dict[int, int] = {}
    for partition, offset in positions:
        last[partition] = max(offset, last.get(partition, -1))
    worker = spawn_worker(worker_env(broker, sims, group="g-fuzz", MODSTREAM_MAX_RECORD_BYTES=str(LIMIT)))
    started = time.monotonic()
    wait_for(lambda: all_committed(broker.bootstrap_servers, "g-fuzz", "posts", last, 4), 180, "all committed")
    assert worker.alive(), worker.log()[-3000:]
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()[-3000:]

    expected_posts: set[str] = set()
    expected_dlq: dict[tuple[int, int], str] = {}
    for (_key, value), position in zip(records, positions, strict=True):
        outcome = decode_post(value, LIMIT)
        if isinstance(outcome, Post):
            expected_posts.add(outcome.id)
        else:
            assert isinstance(outcome, DecodeError)
            expected_dlq[position] = outcome.type
    actions = read_topic(broker.bootstrap_servers, "actions", len(expected_posts), timeout_s=60)
    verdict_keys = {m.key().decode(errors="surrogateescape") for m in actions}
    missing = {
        pid
        for pid in expected_posts
        if pid.encode("utf-8", "surrogatepass").decode(errors="surrogateescape") not in verdict_keys
    }
    assert not missing, f"valid posts without a verdict: {sorted(missing)[:5]}"
    dead = read_topic(broker.bootstrap_servers, "dlq", len(expected_dlq), timeout_s=60)
    seen: dict[tuple[int, int], dict[str, str]] = {}
    for msg in dead:
        headers = {k: v.decode(errors="replace") for k, v in msg.headers() or []}
        seen[(int(headers["source.partition"]), int(headers["source.offset"]))] = headers
        assert headers["error.message"], headers
    for position, error_type in expected_dlq.items():
        assert position in seen, f"bad record at {position} ({error_type}) is not in the DLQ"
        assert seen[position]["error.type"] == error_type
    huge = seen[positions[-1]]
    assert huge["error.type"] == "too_large" and "error.original_dropped" in huge
    kinds = sorted(set(expected_dlq.values()))
    print(
        f"\nfuzz: {len(records)} records, {len(expected_posts)} valid, {len(expected_dlq)} bad {kinds}, "
        f"{time.monotonic() - started:.0f}s"
    )
