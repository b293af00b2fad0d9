"""An in-process implementation of the `Outputs` contract (worker/stream/outputs.py) for unit tests
of the stream's pure parts: records are kept in lists, commits advance from the real tracker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from worker.kafka.producer import Headers, Output, Undeliverable
from worker.stream.offsets import OffsetTracker, TopicPartitionKey
from worker.stream.records import Position


class MemoryOutputs:
    watch_producer = False

    def __init__(self, tracker: OffsetTracker, refuse: frozenset[bytes] = frozenset()) -> None:
        self.tracker = tracker
        self.refuse = refuse  # keys whose records the "broker" refuses
        self.sent: list[tuple[Position, Output]] = []
        self.committed: dict[TopicPartitionKey, int] = {}

    async def start(self, stop: asyncio.Event) -> None:
        return None

    async def send(
        self, position: Position, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        await asyncio.sleep(0)
        if key in self.refuse:
            raise Undeliverable(f"refused {key!r}")
        self.sent.append((position, (topic, key, value, headers)))

    async def send_batch(self, items: Sequence[tuple[Position, Output]]) -> list[int]:
        await asyncio.sleep(0)
        failed = [i for i, (_, (_, key, _, _)) in enumerate(items) if key in self.refuse]
        self.sent.extend(item for i, item in enumerate(items) if i not in failed)
        return failed

    async def commit(self) -> None:
        offsets = self.tracker.to_commit()
        self.committed.update(offsets)
        self.tracker.mark_committed(offsets)

    async def release(
        self, keys: Sequence[TopicPartitionKey], lost: bool, wait_s: float
    ) -> dict[TopicPartitionKey, int]:
        pending = {} if lost else self.tracker.to_commit()
        return {key: pending[key] for key in keys if key in pending}

    def drop(self, tp: TopicPartitionKey) -> None:
        self.sent = [item for item in self.sent if item[0][0] != tp]
