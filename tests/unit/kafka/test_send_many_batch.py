"""`Publisher.send_many` queues a group of one topic without headers in one `produce_batch` call;
what librdkafka refuses or fails is reported by index exactly as on the one-by-one path. A real
client with no broker behind it: every queued record times out (`message.timeout.ms`), and a
record larger than `message.max.bytes` is refused before it is queued."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import KafkaError

from worker.kafka.producer import Output, Publisher, _batchable

NO_BROKER = {
    "bootstrap.servers": "127.0.0.1:9",  # discard port: nothing answers
    "message.timeout.ms": 300,
    "message.max.bytes": 4096,
    "log_level": 0,
}


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """What each `produce_batch` call left to produce one by one (empty: the call queued or
    refused every record itself)."""
    left: list[list[int]] = []
    original = Publisher._produce_batch

    def spy(self: Publisher, *args: Any) -> list[int]:
        left.append(original(self, *args))
        return left[-1]

    monkeypatch.setattr(Publisher, "_produce_batch", spy)
    return left


async def send_many(outputs: list[Output]) -> list[tuple[int, int]]:
    publisher = Publisher(NO_BROKER)
    publisher.start(asyncio.get_running_loop())
    try:
        failures = await publisher.send_many(outputs)
    finally:
        publisher.close(timeout_s=0)
    return [(index, exc.error.code()) for index, exc in failures]


def test_only_one_topic_without_headers_goes_in_one_call() -> None:
    assert _batchable([("actions", b"a", b"1", ()), ("actions", b"b", b"2", [])])
    assert not _batchable([("actions", b"a", b"1", ()), ("actions", b"b", b"2", [("h", b"v")])])
    assert not _batchable([("actions", b"a", b"1", ()), ("audit", b"b", b"2", ())])


async def test_every_record_of_a_batch_is_answered_by_index(batches: list[list[int]]) -> None:
    outputs: list[Output] = [("actions", f"k{i}".encode(), b"v" * i, ()) for i in range(6)]
    assert await send_many(outputs) == [(i, KafkaError._MSG_TIMED_OUT) for i in range(6)]
    assert batches == [[]]


async def test_a_record_refused_inside_a_batch_is_named_by_its_index(batches: list[list[int]]) -> None:
    outputs: list[Output] = [
        ("actions", b"a", b"small", ()),
        ("actions", b"b", b"x" * 10_000, ()),  # over message.max.bytes: refused, never queued
        ("actions", b"c", b"small too", ()),
    ]
    assert await send_many(outputs) == [
        (0, KafkaError._MSG_TIMED_OUT),
        (1, KafkaError.MSG_SIZE_TOO_LARGE),
        (2, KafkaError._MSG_TIMED_OUT),
    ]
    assert batches == [[]]


async def test_a_group_with_headers_goes_one_by_one_with_the_same_answers(batches: list[list[int]]) -> None:
    outputs: list[Output] = [
        ("actions", b"a", b"small", [("tenant-id", b"t")]),
        ("actions", b"b", b"x" * 10_000, ()),
    ]
    assert await send_many(outputs) == [(0, KafkaError._MSG_TIMED_OUT), (1, KafkaError.MSG_SIZE_TOO_LARGE)]
    assert batches == []
