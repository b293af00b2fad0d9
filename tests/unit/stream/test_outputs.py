"""The outputs contract: the at-least-once implementation over in-process producer and consumer
stand-ins (scripted delivery outcomes), and the in-memory alternative the other unit tests use."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from confluent_kafka import KafkaError

from tests.unit.stream.memory import MemoryOutputs
from worker.kafka.producer import DeliveryFailed, Headers, Output, Undeliverable
from worker.ops.metrics import Metrics
from worker.ops.sensors import Sensors
from worker.stream.offsets import OffsetTracker, TopicPartitionKey
from worker.stream.outputs import AtLeastOnceOutputs

TP = ("posts", 0)


class ScriptedSender:
    """A producer whose deliveries fail with the scripted errors first, then succeed."""

    def __init__(self, errors: Sequence[KafkaError] = ()) -> None:
        self.errors = list(errors)
        self.generation = 0
        self.delivered: list[Output] = []
        self.restarts = 0

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()) -> None:
        if self.errors:
            raise DeliveryFailed(self.errors.pop(0), self.generation)
        self.delivered.append((topic, key, value, headers))

    async def send_many(self, outputs: Sequence[Output]) -> list[tuple[int, DeliveryFailed]]:
        failures: list[tuple[int, DeliveryFailed]] = []
        for index, output in enumerate(outputs):
            if self.errors:
                failures.append((index, DeliveryFailed(self.errors.pop(0), self.generation)))
            else:
                self.delivered.append(output)
        return failures

    def restart(self, seen_generation: int, reason: str) -> bool:
        if seen_generation != self.generation:
            return False
        self.generation += 1
        self.restarts += 1
        return True

    def flush(self, timeout_s: float) -> int:
        return 0


class Committer:
    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.commits: list[dict[TopicPartitionKey, int]] = []

    async def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("commit refused")
        self.commits.append(dict(offsets))

    def group_metadata(self) -> object:
        return None


def counter(sensors: Sensors, name: str, **labels: str) -> float:
    return sensors.metrics.registry.get_sample_value(name, labels) or 0.0


def make(errors: Sequence[KafkaError] = (), fail_commits: int = 0) -> tuple[AtLeastOnceOutputs, ScriptedSender]:
    sender = ScriptedSender(errors)
    tracker = OffsetTracker()
    outputs = AtLeastOnceOutputs(sender, Committer(fail_commits), tracker, Sensors(Metrics()))
    return outputs, sender


async def test_retriable_failures_are_retried_until_delivered(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_wait(_s: float) -> None:
        return None

    monkeypatch.setattr(asyncio, "sleep", no_wait)
    outputs, sender = make([KafkaError(KafkaError._TRANSPORT, "down")] * 3)
    await outputs.send((TP, 0), "actions", b"k", b"v", [])
    assert sender.delivered == [("actions", b"k", b"v", [])]
    assert counter(outputs.sensors, "modstream_publish_errors_total", topic="actions", error="_TRANSPORT") == 3


async def test_a_fatal_failure_recreates_the_producer_and_delivers() -> None:
    outputs, sender = make([KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "seq")])
    await outputs.send((TP, 0), "actions", b"k", b"v", [])
    assert sender.restarts == 1
    assert len(sender.delivered) == 1


async def test_a_permanent_failure_raises_undeliverable() -> None:
    outputs, _ = make([KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "big")])
    with pytest.raises(Undeliverable):
        await outputs.send((TP, 0), "actions", b"k", b"v" * 10, [])


async def test_send_batch_reports_failed_indices_without_retrying() -> None:
    outputs, sender = make([KafkaError(KafkaError._MSG_TIMED_OUT, "slow")])
    items = [((TP, i), ("actions", str(i).encode(), b"v", [])) for i in range(3)]
    assert await outputs.send_batch(items) == [0]
    assert [key for _, key, _, _ in sender.delivered] == [b"1", b"2"]
    assert sender.restarts == 0


async def test_send_batch_with_a_fatal_failure_recreates_the_producer_once() -> None:
    fatal = KafkaError(KafkaError._FATAL, "fenced", fatal=True)
    outputs, sender = make([fatal, fatal])
    items = [((TP, i), ("actions", str(i).encode(), b"v", [])) for i in range(3)]
    assert await outputs.send_batch(items) == [0, 1]
    assert sender.restarts == 1


async def test_commit_takes_the_contiguous_finished_offsets_and_retries_a_failure() -> None:
    outputs, _ = make(fail_commits=1)
    tracker = outputs.tracker
    for offset in range(4):
        tracker.start(TP, offset)
    tracker.finish_many(TP, [0, 1, 3])
    await outputs.commit()  # refused: counted, nothing marked committed
    assert counter(outputs.sensors, "modstream_commits_total", result="error") == 1
    assert tracker.to_commit() == {TP: 2}
    await outputs.commit()
    assert outputs.committer.commits == [{TP: 2}]  # type: ignore[attr-defined]
    assert tracker.to_commit() == {}
    assert counter(outputs.sensors, "modstream_commits_total", result="ok") == 1


async def test_release_hands_back_offsets_on_revoke_and_none_when_lost() -> None:
    outputs, _ = make()
    other = ("posts", 1)
    for tp in (TP, other):
        outputs.tracker.start(tp, 0)
        outputs.tracker.finish(tp, 0)
    assert await outputs.release([TP], lost=False, wait_s=1.0) == {TP: 1}
    assert await outputs.release([TP], lost=True, wait_s=0.0) == {}


async def test_memory_outputs_commit_and_release_like_the_real_one() -> None:
    tracker = OffsetTracker()
    memory = MemoryOutputs(tracker)
    tracker.start(TP, 5)
    await memory.send((TP, 5), "actions", b"k", b"v", [])
    tracker.finish(TP, 5)
    assert await memory.release([TP], lost=False, wait_s=1.0) == {TP: 6}
    await memory.commit()
    assert memory.committed == {TP: 6}
