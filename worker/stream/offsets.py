"""Commit stage: which offsets are safe to commit when posts finish out of order.

Judge calls finish in any order, so per partition we keep the offsets in consumption order and
commit only up to the highest *contiguous* finished one (Confluent Parallel Consumer's idea).
"Finished" means the broker acknowledged every record derived from that offset. Pure logic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from worker.kafka.types import TopicPartitionKey

__all__ = ["OffsetTracker", "TopicPartitionKey"]


@dataclass(slots=True)
class _PartitionState:
    started: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    # Next offset to consume after everything contiguous is done (Kafka's commit convention).
    committable: int | None = None
    committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, _PartitionState] = {}

    def start(self, tp: TopicPartitionKey, offset: int) -> None:
        state = self._partitions.get(tp)
        if state is None:  # not setdefault: that would build a state (a deque, a set) per record
            state = self._partitions[tp] = _PartitionState()
        if state.started and offset <= state.started[-1]:
            raise ValueError(f"{tp}: offset {offset} started after {state.started[-1]}: offsets must increase")
        state.started.append(offset)

    def finish(self, tp: TopicPartitionKey, offset: int) -> None:
        state = self._partitions.get(tp)
        if state is None:
            return  # partition was revoked meanwhile; its work no longer counts here
        state.finished.add(offset)
        while state.started and state.started[0] in state.finished:
            done = state.started.popleft()
            state.finished.discard(done)
            state.committable = done + 1

    def finish_many(self, tp: TopicPartitionKey, offsets: list[int]) -> None:
        """`finish` for a group of offsets of one partition (the fast path's batch): one pass over
        the partition's queue however many there are."""
        state = self._partitions.get(tp)
        if state is None:
            return
        finished = state.finished
        finished.update(offsets)
        started = state.started
        done = None
        while started and started[0] in finished:
            done = started.popleft()
            finished.discard(done)
        if done is not None:
            state.committable = done + 1

    def to_commit(self) -> dict[TopicPartitionKey, int]:
        """Offsets that advanced since the last `mark_committed` (next offset to read, per partition)."""
        return {
            tp: s.committable
            for tp, s in self._partitions.items()
            if s.committable is not None and s.committable != s.committed
        }

    def mark_committed(self, offsets: dict[TopicPartitionKey, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._partitions:
                self._partitions[tp].committed = offset

    def epoch(self, tp: TopicPartitionKey) -> object | None:
        """A token that changes whenever the partition is forgotten (revoke, lost, rewind, assign):
        work started under one epoch must not finish or publish under another."""
        return self._partitions.get(tp)

    def in_flight(self, tp: TopicPartitionKey) -> int:
        state = self._partitions.get(tp)
        return len(state.started) if state else 0

    @property
    def total_in_flight(self) -> int:
        return sum(len(s.started) for s in self._partitions.values())

    def partitions(self) -> list[TopicPartitionKey]:
        return list(self._partitions)

    def forget(self, tp: TopicPartitionKey) -> None:
        """After a revoke: the new owner resumes from the committed offset."""
        self._partitions.pop(tp, None)
