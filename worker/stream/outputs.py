"""Outputs and commits: one contract, two implementations, picked once in wiring.py.

Every record the worker derives from a consumed record (verdict, audit, DLQ record) goes through
`Outputs.send`, named by the consumed record's position; committing goes through `Outputs.commit`.

- `AtLeastOnceOutputs` (the default): `send` returns once the broker acknowledged (retriable errors
  wait and retry, a fatal producer is recreated, a record the broker can never take raises
  `Undeliverable`); `commit` commits the tracker's contiguous finished offsets.
- `TransactionalOutputs` (`exactly_once: true`, transactions.py): `send` files the record under
  its position; `commit` produces the filed records below the committable offsets together with
  those offsets in one Kafka transaction.

The loop, the tasks, the fast path and the rebalance handling call only this contract (Confluent
Parallel Consumer's OffsetCommitter has the same shape).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import structlog

from worker.kafka.errors import classify
from worker.kafka.producer import DeliveryFailed, Headers, Output, Undeliverable
from worker.ops.sensors import Sensors
from worker.stream.offsets import OffsetTracker, TopicPartitionKey
from worker.stream.records import Position

log = structlog.get_logger("modstream.outputs")


class Outputs(Protocol):
    # Whether the producer watchdog (watch.py) applies: transactions flush at commit instead.
    watch_producer: bool

    async def start(self, stop: asyncio.Event) -> None:
        """Before the first record (exactly-once: register the transactional id)."""

    async def send(
        self, position: Position, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        """Deliver (or file) one record derived from the record at `position`. Raises Undeliverable
        when the broker can never take it as it is."""

    async def send_batch(self, items: Sequence[tuple[Position, Output]]) -> list[int]:
        """Deliver (or file) many records at once, without retrying: returns the indices of the
        items that failed (their records go the per-post way, which retries)."""

    async def commit(self) -> None:
        """Commit what is due (a failure is counted and retried at the next commit)."""

    async def release(
        self, keys: Sequence[TopicPartitionKey], lost: bool, wait_s: float
    ) -> dict[TopicPartitionKey, int]:
        """Partitions are going (their tasks are finished or abandoned): settle their outputs within
        `wait_s` and return the offsets the consumer should commit for them before they move."""

    def drop(self, tp: TopicPartitionKey) -> None:
        """Forget a partition's pending outputs (rewound: they will be produced again)."""


class Sender(Protocol):
    """What the at-least-once outputs need of the producer (worker/kafka/producer.Publisher)."""

    generation: int

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()) -> None: ...

    async def send_many(self, outputs: Sequence[Output]) -> list[tuple[int, DeliveryFailed]]: ...

    def restart(self, seen_generation: int, reason: str) -> bool: ...

    def flush(self, timeout_s: float) -> int: ...


class Committer(Protocol):
    """What the outputs need of the consumer (worker/kafka/consumer.GroupConsumer)."""

    async def commit(self, offsets: dict[TopicPartitionKey, int]) -> None: ...

    def group_metadata(self) -> object: ...


class AtLeastOnceOutputs:
    watch_producer = True

    def __init__(self, sender: Sender, committer: Committer, tracker: OffsetTracker, sensors: Sensors) -> None:
        self.sender = sender
        self.committer = committer
        self.tracker = tracker
        self.sensors = sensors

    async def start(self, stop: asyncio.Event) -> None:
        return None

    async def send(
        self, position: Position, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        """Deliver or keep trying: a record we derived must reach the broker before its offset commits."""
        delay = 0.1
        while True:
            try:
                await self.sender.send(topic, key, value, headers)
                return
            except DeliveryFailed as exc:
                await self._after_failure(topic, exc, delay)
                delay = min(delay * 2, 5.0)

    async def _after_failure(self, topic: str, exc: DeliveryFailed, delay: float) -> None:
        kind = classify(exc.error)
        self.sensors.on_publish_error(topic, exc.error.name())
        if kind == "permanent":
            raise Undeliverable(str(exc)) from None
        if kind == "fatal":
            await asyncio.to_thread(self.sender.restart, exc.generation, str(exc))
            return
        log.warning("delivery_failed_retrying", topic=topic, error=str(exc), kind=kind, retry_in_s=delay)
        await asyncio.sleep(delay)

    async def send_batch(self, items: Sequence[tuple[Position, Output]]) -> list[int]:
        failures = await self.sender.send_many([output for _, output in items])
        for index, exc in failures:
            self.sensors.on_publish_error(items[index][1][0], exc.error.name())
        fatal = [exc for _, exc in failures if classify(exc.error) == "fatal"]
        if fatal:  # recreate once for the group; the per-post retries go through the new producer
            await asyncio.to_thread(self.sender.restart, fatal[0].generation, str(fatal[0]))
        return [index for index, _ in failures]

    async def commit(self) -> None:
        offsets = self.tracker.to_commit()
        self.sensors.on_commit_lag({tp: self.tracker.in_flight(tp) for tp in offsets})
        if not offsets:
            return
        try:
            await self.committer.commit(offsets)
        except Exception as exc:  # KafkaException: counted, retried at the next commit
            self.sensors.on_commit(False)
            log.warning("commit_failed", error=str(exc))
            return
        self.tracker.mark_committed(offsets)
        self.sensors.on_commit(True)

    async def release(
        self, keys: Sequence[TopicPartitionKey], lost: bool, wait_s: float
    ) -> dict[TopicPartitionKey, int]:
        # Nothing derived from a revoked partition may land after ownership moved on: wait for the
        # broker's acknowledgements within what is left of the bound (at least 1 s).
        remaining = await asyncio.to_thread(self.sender.flush, max(1.0, wait_s))
        if remaining:
            log.warning("revoke_flush_incomplete", unflushed=remaining, partitions=list(keys))
        pending = {} if lost else self.tracker.to_commit()
        return {key: pending[key] for key in keys if key in pending}

    def drop(self, tp: TopicPartitionKey) -> None:
        return None
