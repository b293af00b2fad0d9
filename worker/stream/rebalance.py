"""Partitions coming and going: assign, revoke, lost (called on the consumer thread, run on the
event loop), and a rewind (the log went back under us). Each departing partition's posts are
finished within a bound or abandoned (the next owner replays them), its outputs settled through
`Outputs.release`, and its bookkeeping forgotten."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from worker.ops.sensors import Sensors
from worker.stream.backpressure import Backpressure
from worker.stream.flow import FlowControl
from worker.stream.offsets import OffsetTracker, TopicPartitionKey
from worker.stream.outputs import Outputs
from worker.stream.records import Consumed
from worker.stream.tasks import PostTasks, finish_or_abandon

log = structlog.get_logger("modstream.worker")


class Rebalance:
    def __init__(
        self,
        tracker: OffsetTracker,
        flow: FlowControl[Consumed],
        tasks: PostTasks,
        outputs: Outputs,
        backpressure: Backpressure,
        sensors: Sensors,
        rebalance_timeout_s: float,
    ) -> None:
        self.tracker = tracker
        self.flow = flow
        self.tasks = tasks
        self.outputs = outputs
        self.backpressure = backpressure
        self.sensors = sensors
        self.rebalance_timeout_s = rebalance_timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the loop starts
        # Routes the batches still being screened (dispatch.py) so their posts are tasks by the
        # time a release looks; wiring sets it.
        self.settle: Callable[[], Awaitable[None]] | None = None

    # ---- consumer-thread callbacks ---------------------------------------------------------------

    def on_assign(self, keys: list[TopicPartitionKey]) -> None:
        # librdkafka starts each newly assigned partition at its committed offset.
        self.sensors.on_rebalance("assigned", len(keys))
        for key in keys:
            self.tracker.forget(key)
            self.flow.drop(key)
        self.backpressure.assigned(keys)

    def on_revoke(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        assert self.loop is not None
        self.sensors.on_rebalance("revoked", len(keys))
        future = asyncio.run_coroutine_threadsafe(self.release(keys), self.loop)
        return future.result(timeout=self.rebalance_timeout_s + 15)

    def on_lost(self, keys: list[TopicPartitionKey]) -> None:
        assert self.loop is not None
        self.sensors.on_rebalance("lost", len(keys))
        future = asyncio.run_coroutine_threadsafe(self.release(keys, lost=True), self.loop)
        future.result(timeout=15)

    # ---- on the event loop -----------------------------------------------------------------------

    async def release(self, keys: Sequence[TopicPartitionKey], lost: bool = False) -> dict[TopicPartitionKey, int]:
        """Finish (within `rebalance_timeout_s`) or abandon the revoked partitions' posts, then hand
        back the offsets to commit. Abandoned posts are replayed by the next owner. Lost partitions
        (and those of a consumer being replaced) are abandoned at once: another member may own
        them already, and nothing is committed for them."""
        bound = 0.0 if lost else self.rebalance_timeout_s
        started = asyncio.get_running_loop().time()
        if self.settle is not None:
            await self.settle()
        for key in keys:
            self.sensors.on_abandoned("revoked_parked", self.flow.drop(key))
            self.sensors.on_partition_gone(key)
        abandoned = await finish_or_abandon(self.tasks.of(keys), bound)
        self.sensors.on_abandoned("lost" if lost else "revoked", abandoned)
        left = bound - (asyncio.get_running_loop().time() - started)
        offsets = await self.outputs.release(keys, lost, left)
        for key in keys:
            self.tracker.forget(key)
        self.backpressure.forget(keys)
        return offsets

    async def rewind(self, record: Consumed) -> None:
        """The partition went back to an offset we already read (log truncated or reset under us,
        e.g. auto.offset.reset after a broker lost its data). Start it over from here: the old
        in-flight work of that partition is cancelled and its offsets no longer count."""
        tp = record.tp
        stale = await finish_or_abandon(self.tasks.of([tp]), 0.0)
        self.sensors.on_abandoned("rewind", stale + self.flow.drop(tp))
        self.tracker.forget(tp)
        self.outputs.drop(tp)
        log.warning("offset_rewind", topic=tp[0], partition=tp[1], offset=record.offset, cancelled=stale)
