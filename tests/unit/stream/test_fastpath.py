"""The fast path over the in-memory outputs: a group's verdicts go out together, their offsets
finish in bulk, the counters move as the per-post path's would, and a refused record (or a group
that cannot be encoded) falls back to the per-post path for exactly those posts."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest

from funnel import FunnelResult
from tests.unit.stream.memory import MemoryOutputs
from worker.contracts import Post
from worker.ops.metrics import Metrics
from worker.ops.sensors import Sensors
from worker.policies.screening import PolicyRuntime
from worker.stream.deadline import JudgeUptimeClock
from worker.stream.fastpath import FastPath
from worker.stream.offsets import OffsetTracker
from worker.stream.records import Consumed
from worker.stream.tasks import PostTasks, Topics

TP = ("posts", 2)
RUNTIME = cast(PolicyRuntime, SimpleNamespace(versions={"spam": "v1"}, fit_id=None))


def group(n: int) -> list[tuple[Consumed, Post, FunnelResult]]:
    return [
        (
            Consumed("posts", 2, 10 + i, f"p{i}".encode(), b"{}", 0.0, (("tenant-id", b"t"),)),
            Post(id=f"p{i}", text="hello"),
            FunnelResult(candidates=[], scores={"spam": 0.1}),
        )
        for i in range(n)
    ]


class Harness:
    def __init__(self, refuse: frozenset[bytes] = frozenset()) -> None:
        self.tracker = OffsetTracker()
        self.outputs = MemoryOutputs(self.tracker, refuse)
        self.sensors = Sensors(Metrics())
        self.tasks = PostTasks(
            Topics("actions", "audit", "dlq"),
            self.outputs,
            self.tracker,
            self.sensors,
            JudgeUptimeClock(),
            max_attempts=1,
            record_deadline_s=10,
            on_change=lambda: None,
        )
        self.fell_back: list[str] = []
        self.fast = FastPath(
            self.outputs,
            self.tracker,
            self.tasks,
            self.sensors,
            "actions",
            lambda r, p, s, rt: self.fell_back.append(p.id),
        )

    async def publish(self, posts: list[tuple[Consumed, Post, FunnelResult]]) -> None:
        for record, _, _ in posts:
            self.tracker.start(record.tp, record.offset)
        self.fast.publish(TP, posts, RUNTIME)
        assert self.tasks.running == len(posts)
        await asyncio.gather(*self.tasks.all())

    def verdicts(self) -> float:
        value = self.sensors.metrics.registry.get_sample_value(
            "modstream_verdicts_total", {"decision": "allow", "tier": "funnel"}
        )
        return value or 0.0


async def test_a_group_is_sent_together_and_finishes_in_bulk() -> None:
    h = Harness()
    await h.publish(group(5))
    assert h.tracker.to_commit() == {TP: 15}
    assert h.tracker.total_in_flight == 0
    assert h.tasks.running == 0
    assert [(pos, topic, key) for pos, (topic, key, _, _) in h.outputs.sent] == [
        ((TP, 10 + i), "actions", f"p{i}".encode()) for i in range(5)
    ]
    first = orjson.loads(h.outputs.sent[0][1][2] or b"")
    assert first["source"] == {"topic": "posts", "partition": 2, "offset": 10}
    assert (first["decision"], first["tier"], first["results"]) == ("allow", "funnel", [])
    assert all(list(headers) == [("tenant-id", b"t")] for _, (_, _, _, headers) in h.outputs.sent)
    assert h.verdicts() == 5
    assert h.sensors.metrics.registry.get_sample_value("modstream_post_latency_seconds_count") == 5
    assert h.fell_back == []


async def test_a_refused_record_goes_the_per_post_way_alone() -> None:
    h = Harness(refuse=frozenset({b"p1"}))
    await h.publish(group(3))
    assert h.fell_back == ["p1"]
    assert h.tracker.to_commit() == {TP: 11}, "offset 11 waits for its per-post task"
    assert h.tracker.in_flight(TP) == 2
    assert h.verdicts() == 2


async def test_a_group_that_cannot_be_encoded_goes_the_per_post_way(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> list[bytes]:
        raise ValueError("cannot encode")

    monkeypatch.setattr("worker.stream.fastpath.encode_cleared_batch", broken)
    h = Harness()
    for record, _, _ in group(2):
        h.tracker.start(record.tp, record.offset)
    h.fast.publish(TP, group(2), RUNTIME)
    assert h.fell_back == ["p0", "p1"]
    assert h.tasks.running == 0 and h.outputs.sent == []


async def test_a_cancelled_group_finishes_nothing() -> None:
    h = Harness()
    posts = group(3)
    for record, _, _ in posts:
        h.tracker.start(record.tp, record.offset)
    h.fast.publish(TP, posts, RUNTIME)
    for task in h.tasks.all():
        task.cancel()
    await asyncio.gather(*h.tasks.all(), return_exceptions=True)
    assert h.tracker.to_commit() == {}
    assert h.tracker.in_flight(TP) == 3
    assert h.verdicts() == 0
