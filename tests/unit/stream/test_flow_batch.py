"""`FlowControl.admit_batch` (the dispatcher's one pass over a fetched batch) decides exactly what
record-by-record admission with rewind checks decides."""

from __future__ import annotations

import random
from dataclasses import dataclass

from worker.stream.flow import FlowControl
from worker.stream.offsets import TopicPartitionKey


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int

    @property
    def tp(self) -> TopicPartitionKey:
        return (self.topic, self.partition)


def one_by_one(
    flow: FlowControl[Rec], batch: list[Rec], held: dict[TopicPartitionKey, int]
) -> tuple[list[Rec], list[int]]:
    """The per-record admission the dispatcher used before: rewind check, then admit_one."""
    ready: list[Rec] = []
    rewinds: list[int] = []
    started: dict[TopicPartitionKey, int] = {}
    for i, record in enumerate(batch):
        if flow.is_rewind(record):
            rewinds.append(i)
            ready = [r for r in ready if r.tp != record.tp]
            started[record.tp] = 0
            flow.drop(record.tp)
            held[record.tp] = 0
        if flow.admit_one(record, held.get(record.tp, 0) + started.get(record.tp, 0)):
            ready.append(record)
            started[record.tp] = started.get(record.tp, 0) + 1
    return ready, rewinds


def batched(
    flow: FlowControl[Rec], batch: list[Rec], held: dict[TopicPartitionKey, int]
) -> tuple[list[Rec], list[int]]:
    """What Dispatcher.dispatch does with admit_batch (a rewind drops the partition, as Rebalance.rewind)."""
    ready: list[Rec] = []
    rewinds: list[int] = []
    started: dict[TopicPartitionKey, int] = {}

    def held_of(tp: TopicPartitionKey) -> int:
        return held.get(tp, 0)

    at = flow.admit_batch(batch, 0, held_of, ready, started)
    while at < len(batch):
        record = batch[at]
        rewinds.append(at)
        ready = [r for r in ready if r.tp != record.tp]
        started[record.tp] = 0
        flow.drop(record.tp)
        held[record.tp] = 0
        at = flow.admit_batch(batch, at, held_of, ready, started, rewound=at)
    return ready, rewinds


def parked(flow: FlowControl[Rec]) -> dict[TopicPartitionKey, list[int]]:
    return {tp: [r.offset for r in q] for tp, q in flow._parked.items()}


def test_batch_admission_matches_record_by_record_admission() -> None:
    rng = random.Random(11)
    compared = rewound = 0
    for _ in range(300):
        cap_p = rng.randint(1, 6)
        a: FlowControl[Rec] = FlowControl(64, cap_p)
        b: FlowControl[Rec] = FlowControl(64, cap_p)
        next_offset = dict.fromkeys(range(3), 0)
        for _ in range(6):
            held = {("p", p): rng.randint(0, cap_p) for p in range(3)}
            held_a, held_b = dict(held), dict(held)
            batch: list[Rec] = []
            for _ in range(rng.randint(0, 12)):
                p = rng.randrange(3)
                if rng.random() < 0.05:  # the log went back under us
                    next_offset[p] = max(0, next_offset[p] - rng.randint(1, 5))
                batch.append(Rec("p", p, next_offset[p]))
                next_offset[p] += 1
            expected = one_by_one(a, batch, held_a)
            got = batched(b, batch, held_b)
            assert got == expected
            assert parked(b) == parked(a)
            assert b._last_seen == a._last_seen
            compared += len(batch)
            rewound += len(expected[1])
    assert compared > 1000 and rewound > 5  # the schedule exercised parking and rewinds


def test_a_rewind_stops_the_pass_at_that_record() -> None:
    flow: FlowControl[Rec] = FlowControl(16, 8)
    ready: list[Rec] = []
    started: dict[TopicPartitionKey, int] = {}
    batch = [Rec("p", 0, 5), Rec("p", 1, 0), Rec("p", 0, 2), Rec("p", 0, 3)]
    assert flow.admit_batch(batch, 0, lambda tp: 0, ready, started) == 2
    assert ready == batch[:2] and started == {("p", 0): 1, ("p", 1): 1}
    flow.drop(("p", 0))
    ready = [r for r in ready if r.tp != ("p", 0)]
    started[("p", 0)] = 0
    assert flow.admit_batch(batch, 2, lambda tp: 0, ready, started, rewound=2) == 4
    assert ready == [batch[1], batch[2], batch[3]]
