"""Exactly-once mode (`exactly_once: true`): consume-transform-produce in Kafka transactions.

The `Outputs` contract (outputs.py) for this mode. `send` does not produce: it files the record
under the consumed record's position. A commit takes every record below the committable offsets
(contiguous, see offsets.py), sends their outputs and those offsets in one transaction
(`send_offsets_to_transaction`), and forgets them only once it committed. A failed transaction
leaves everything pending; the next commit retries it. Memory stays bounded by the worker's
in-flight cap.

What could and could not be verified on the brokers available here: docs/reliability.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from confluent_kafka import KafkaException, TopicPartition

from worker.kafka.errors import is_fatal
from worker.kafka.producer import Headers, Output, Publisher, Undeliverable
from worker.ops.sensors import Sensors
from worker.stream.offsets import OffsetTracker, TopicPartitionKey
from worker.stream.outputs import Committer
from worker.stream.records import Position

log = structlog.get_logger("modstream.transact")


class TransactionalOutputs:
    watch_producer = False  # transactions flush at commit; a stuck one fails and is retried

    def __init__(
        self,
        publisher: Publisher,
        committer: Committer,
        tracker: OffsetTracker,
        sensors: Sensors,
        max_message_bytes: int,
    ) -> None:
        self.publisher = publisher
        self.committer = committer
        self.tracker = tracker
        self.sensors = sensors
        self.max_message_bytes = max_message_bytes
        self._pending: dict[Position, list[Output]] = {}

    async def start(self, stop: asyncio.Event) -> None:
        """`init_transactions`, retried until the broker answers (or the worker stops)."""
        delay = 0.5
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.publisher.init_transactions, 30.0)
                return
            except KafkaException as exc:
                log.warning("init_transactions_failed_retrying", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def add(self, position: Position, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)
        # A record the broker would refuse must fail now, in its own task (-> DLQ marker), not
        # later inside a transaction that carries the outputs of other records too.
        if size > self.max_message_bytes - 512:
            raise Undeliverable(f"record of {size} bytes exceeds message.max.bytes={self.max_message_bytes}")
        self._pending.setdefault(position, []).append((topic, key, value, list(headers)))

    async def send(
        self, position: Position, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        self.add(position, topic, key, value, headers)

    async def send_batch(self, items: Sequence[tuple[Position, Output]]) -> list[int]:
        failed: list[int] = []
        for index, (position, (topic, key, value, headers)) in enumerate(items):
            try:
                self.add(position, topic, key, value, headers)
            except Undeliverable:
                failed.append(index)
        return failed

    def drop(self, tp: TopicPartitionKey) -> None:
        """Forget a partition's pending outputs (revoked, lost or rewound: they will be replayed)."""
        for position in [p for p in self._pending if p[0] == tp]:
            del self._pending[position]

    async def commit(self) -> None:
        """One transaction: the outputs of every record below the committable offsets, and those
        offsets. On failure everything stays pending and the next commit retries it."""
        offsets = self.tracker.to_commit()
        if not offsets:
            return
        batch = sorted(p for p in self._pending if p[0] in offsets and p[1] < offsets[p[0]])
        outputs = [output for position in batch for output in self._pending[position]]
        tps = [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        generation = self.publisher.generation
        try:
            await asyncio.to_thread(self.publisher.commit_batch, outputs, tps, self.committer.group_metadata(), 30.0)
        except KafkaException as exc:
            self.sensors.on_commit(False)
            log.warning("transaction_failed", error=str(exc), outputs=len(outputs))
            if is_fatal(exc):
                await asyncio.to_thread(self.publisher.restart, generation, str(exc))
            return
        for position in batch:
            del self._pending[position]
        self.tracker.mark_committed(offsets)
        self.sensors.on_commit(True)

    async def release(
        self, keys: Sequence[TopicPartitionKey], lost: bool, wait_s: float
    ) -> dict[TopicPartitionKey, int]:
        # Revoke: one last transaction with what finished; lost: nothing may be committed.
        if not lost:
            await self.commit()
        for key in keys:
            self.drop(key)
        return {}
