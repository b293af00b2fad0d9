"""Flow control (backpressure): how many records the worker holds, and which partitions to pause.

Two caps bound what a worker holds, whatever the judge latency:

- `max_in_flight` per worker: records consumed and not yet committable (running, or finished
  but waiting behind a slower offset of the same partition), plus records parked (below).
  `consume()` is never asked for more than the room left, so this cap is never exceeded.
- `max_in_flight_per_partition`: how far ahead of its committed offset one partition may run.
  It bounds the replay after a crash to that many records per partition, and keeps one hot
  partition from taking the whole worker cap. A batch can bring more records of one partition
  than its room: the excess is *parked* here (a bounded FIFO: it counts against the worker cap)
  and, once that has lasted `pause_grace_s`, the partition is paused until its room frees.

A partition is paused when it has been at its cap or had parked records for `pause_grace_s`;
every assigned partition is paused when the worker is at its cap; everything else is resumed.
Pure logic, no Kafka.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar

from worker.stream.offsets import TopicPartitionKey


class HasPosition(Protocol):
    @property
    def tp(self) -> TopicPartitionKey: ...

    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=HasPosition)


class FlowControl(Generic[R]):
    def __init__(self, max_in_flight: int, max_in_flight_per_partition: int, pause_grace_s: float = 0.0) -> None:
        self.max_in_flight = max_in_flight
        self.max_per_partition = min(max_in_flight_per_partition, max_in_flight)
        # A partition at its own cap is paused only once it has stayed there this long: pausing
        # drops librdkafka's prefetched records, and a re-fetch on every brief cap hit cut a fast
        # worker's throughput 3x. Parking still holds its excess within the worker cap meanwhile.
        self.pause_grace_s = pause_grace_s
        self._full_since: dict[TopicPartitionKey, float] = {}
        # The same grace at the worker cap (see cap_grace_left); None while there is room.
        self._at_cap_since: float | None = None
        self._parked: dict[TopicPartitionKey, deque[R]] = {}
        # Highest offset seen per partition (parked or dispatched): a lower one means a rewind.
        self._last_seen: dict[TopicPartitionKey, int] = {}
        self.high_water = 0

    @property
    def parked(self) -> int:
        return sum(len(q) for q in self._parked.values())

    def parked_of(self, tp: TopicPartitionKey) -> int:
        q = self._parked.get(tp)
        return len(q) if q else 0

    def is_rewind(self, record: R) -> bool:
        """True when `record` is not after the last offset seen for its partition (the log was
        reset or truncated under us, or a record was delivered twice)."""
        last = self._last_seen.get(record.tp)
        return last is not None and record.offset <= last

    def admit(self, records: Iterable[R], in_flight_of: Callable[[TopicPartitionKey], int]) -> list[R]:
        """Records to start now, in order; the rest are parked behind earlier records of their
        partition. `in_flight_of(tp)` is the tracker's count for the partition."""
        ready: list[R] = []
        started: dict[TopicPartitionKey, int] = {}
        for record in records:
            tp = record.tp
            self._last_seen[tp] = record.offset
            queue = self._parked.get(tp)
            count = in_flight_of(tp) + started.get(tp, 0)
            if queue or count >= self.max_per_partition:
                self._parked.setdefault(tp, deque()).append(record)
                continue
            started[tp] = started.get(tp, 0) + 1
            ready.append(record)
        return ready

    def admit_one(self, record: R, in_flight: int) -> bool:
        """`admit` for one record whose partition has `in_flight` records started: True = start it
        now, False = it was parked."""
        return bool(self.admit([record], lambda _tp: in_flight))

    def admit_batch(
        self,
        records: Sequence[R],
        start: int,
        in_flight_of: Callable[[TopicPartitionKey], int],
        ready: list[R],
        started: dict[TopicPartitionKey, int],
        rewound: int = -1,
    ) -> int:
        """`admit` for a fetched batch, from `records[start]` on, with rewind detection in the same
        pass: admitted records are appended to `ready` (and counted in `started`, per partition,
        on top of `in_flight_of(tp)`), the rest parked. Stops at the first record that is a
        rewind (`is_rewind`) and returns its index: the caller handles the rewind and calls again
        from there with `rewound` = that index. Returns `len(records)` when the batch is done."""
        last_seen = self._last_seen
        parked = self._parked
        cap = self.max_per_partition
        base: dict[TopicPartitionKey, int] = {}
        for i in range(start, len(records)):
            record = records[i]
            tp = record.tp
            offset = record.offset
            last = last_seen.get(tp)
            if last is not None and offset <= last and i != rewound:
                return i
            last_seen[tp] = offset
            count = base.get(tp)
            if count is None:
                count = base[tp] = in_flight_of(tp)
            now = started.get(tp, 0)
            if parked.get(tp) or count + now >= cap:
                parked.setdefault(tp, deque()).append(record)
                continue
            started[tp] = now + 1
            ready.append(record)
        return len(records)

    def release(self, in_flight_of: Callable[[TopicPartitionKey], int]) -> list[R]:
        """Parked records that fit now (oldest first per partition)."""
        ready: list[R] = []
        for tp in list(self._parked):
            queue = self._parked[tp]
            room = self.max_per_partition - in_flight_of(tp)
            while queue and room > 0:
                ready.append(queue.popleft())
                room -= 1
            if not queue:
                del self._parked[tp]
        return ready

    def drop(self, tp: TopicPartitionKey) -> int:
        """Forget a partition (revoked, lost, rewound): its parked records are abandoned and the
        next owner (or the re-fetch) reads them again from the committed offset."""
        self._last_seen.pop(tp, None)
        queue = self._parked.pop(tp, None)
        return len(queue) if queue else 0

    def over_cap(self, records: Iterable[R], room: int) -> tuple[list[R], dict[TopicPartitionKey, int]]:
        """Split a fetched batch at the worker cap: the records that fit in `room`, and per partition
        the first offset that did not fit (the caller seeks back there, so nothing is skipped).
        Once a partition overflows, its later records in the batch overflow too (order kept).
        Only a partition we believed paused but that was not can deliver beyond the room."""
        if not isinstance(records, Sequence) or len(records) > room:
            return self._split_at_room(records, room)
        return list(records), {}

    def _split_at_room(self, records: Iterable[R], room: int) -> tuple[list[R], dict[TopicPartitionKey, int]]:
        fits: list[R] = []
        overflow: dict[TopicPartitionKey, int] = {}
        for record in records:
            if record.tp in overflow or room <= 0:
                overflow.setdefault(record.tp, record.offset)
                continue
            room -= 1
            fits.append(record)
        return fits, overflow

    def room(self, held: int) -> int:
        """How many records `consume()` may return now; `held` = tracker in-flight (parked excluded)."""
        return max(0, self.max_in_flight - held - self.parked)

    def cap_grace_left(self, now: float) -> float:
        """At the worker cap: how much longer the worker may wait for a post to finish before every
        partition is paused (<= 0: pause now). The clock restarts once there is room again, which
        `want_paused` notices."""
        if self._at_cap_since is None:
            self._at_cap_since = now
        return self.pause_grace_s - (now - self._at_cap_since)

    def observe(self, held: int) -> int:
        total = held + self.parked
        self.high_water = max(self.high_water, total)
        return total

    def want_paused(
        self,
        assigned: Iterable[TopicPartitionKey],
        in_flight_of: Callable[[TopicPartitionKey], int],
        held: int,
        pause_all: bool = False,
        now: float = 0.0,
    ) -> set[TopicPartitionKey]:
        """`now` (a monotonic clock) only matters with a `pause_grace_s`."""
        assigned = set(assigned)
        full = {tp for tp in assigned if self._parked.get(tp) or in_flight_of(tp) >= self.max_per_partition}
        self._full_since = {tp: self._full_since.get(tp, now) for tp in full}
        at_worker_cap = held + self.parked >= self.max_in_flight
        if not at_worker_cap:
            self._at_cap_since = None
        if pause_all or at_worker_cap:
            return assigned
        return {tp for tp in full if now - self._full_since[tp] >= self.pause_grace_s}


def pause_changes(
    want: set[TopicPartitionKey],
    believed: set[TopicPartitionKey],
    unknown: set[TopicPartitionKey],
    assigned: set[TopicPartitionKey],
) -> tuple[list[TopicPartitionKey], list[TopicPartitionKey]]:
    """The pause and resume calls that take the assigned partitions from the state we believe they
    are in to `want`. For `unknown` ones (just assigned, or one that delivered records while we
    believed it paused) both calls are made as needed: pause and resume are idempotent, and
    assuming their state let a worker read past its cap."""
    unknown = unknown & assigned
    to_pause = sorted(want - (believed - unknown))
    to_resume = sorted(((believed | unknown) & assigned) - want)
    return to_pause, to_resume
