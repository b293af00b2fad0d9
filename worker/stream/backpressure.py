"""Backpressure against the consumer: wait for room at the worker cap, pause and resume partitions
as flow.py decides, push back records that arrived past the cap, and report the flow gauges.

Keeps what we believe each partition's pause flag is, and which flags are unknown (just assigned,
or a partition that delivered records while we believed it paused): those are set explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

import structlog
from confluent_kafka import KafkaException

from worker.kafka.consumer import GroupConsumer
from worker.ops.sensors import Sensors
from worker.stream.flow import FlowControl, pause_changes
from worker.stream.offsets import OffsetTracker, TopicPartitionKey
from worker.stream.records import Consumed

log = structlog.get_logger("modstream.worker")


class Backpressure:
    def __init__(
        self,
        consumer: GroupConsumer,
        flow: FlowControl[Consumed],
        tracker: OffsetTracker,
        sensors: Sensors,
        judges_down: Callable[[], bool],
        running: Callable[[], int],
        judging: Callable[[], int],
        held: Callable[[TopicPartitionKey], int],
        held_total: Callable[[], int],
    ) -> None:
        self.consumer = consumer
        self.flow = flow
        self.tracker = tracker
        self.sensors = sensors
        self.judges_down = judges_down
        self.running = running  # posts being judged or published now
        self.judging = judging  # per-post tasks: the posts that may still call a judge
        # Records charged to the caps, per partition and in all (PostTasks.held: the tracker's
        # counts less the fast-path allowance); the gauges report the tracker's full counts.
        self.held = held
        self.held_total = held_total
        self.paused: set[TopicPartitionKey] = set()
        self.unknown: set[TopicPartitionKey] = set()
        self._changed = asyncio.Event()  # set whenever a post starts or finishes

    def observe(self) -> None:
        """A post started or finished: wake `wait_for_room` and refresh the flow gauges."""
        self._changed.set()
        held = self.flow.observe(self.tracker.total_in_flight)
        self.sensors.on_flow(held, self.flow.high_water, self.flow.parked, self.running())

    async def wait_for_room(self) -> bool:
        """At the worker cap. Pausing now would make librdkafka drop the records it prefetched, and
        every cap hit would cost a re-fetch round trip (measured: 8x lower throughput with a fast
        judge). So wait up to the flow's grace for a post to finish instead. True: go round again
        (room may be free now); False: the cap has lasted the grace period, pause everything and
        keep calling consume() (rebalance callbacks, max.poll.interval.ms). A judge outage does
        not wait: everything is paused at once."""
        left = self.flow.cap_grace_left(time.monotonic())
        if left <= 0 or self.judges_block():
            return False
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), left)
        return True

    def judges_block(self) -> bool:
        return pause_for_judges(self.judges_down(), self.judging())

    async def apply(self) -> None:
        """Pause and resume partitions to match what flow control wants now."""
        assigned = self.consumer.assigned
        want = self.flow.want_paused(
            assigned,
            self.held,
            self.held_total(),
            pause_all=self.judges_block(),
            now=time.monotonic(),
        )
        to_pause, to_resume = pause_changes(want, self.paused, self.unknown, assigned)
        try:
            if to_pause:
                await self.consumer.pause(to_pause)
            if to_resume:
                await self.consumer.resume(to_resume)
        except KafkaException as exc:  # e.g. a partition revoked meanwhile: retried next pass
            log.warning("pause_resume_failed", error=str(exc))
            return
        self.paused = want
        self.unknown.clear()
        self.sensors.on_paused(len(self.paused), {tp: self.tracker.in_flight(tp) for tp in self.consumer.assigned})
        self.observe()

    async def push_back(self, overflow: dict[TopicPartitionKey, int], count: int) -> bool:
        """Records beyond the worker cap arrived: their partitions were not really paused (our view
        of the pause state was wrong). Seek them back so they are read again later, and re-apply
        the pause state of those partitions explicitly on the next backpressure pass."""
        log.warning("over_cap_records_pushed_back", positions={f"{t}[{p}]": o for (t, p), o in overflow.items()})
        self.sensors.on_abandoned("over_cap", count)
        keys = sorted(overflow)
        self.unknown.update(keys)
        try:
            # Pause before seeking: librdkafka < 1.9 let a pause after a seek resume from the old
            # position (librdkafka#3471); this order is safe everywhere.
            await self.consumer.pause(keys)
            self.paused.update(keys)
            await self.consumer.seek(overflow)
        except KafkaException as exc:
            log.warning("push_back_failed", error=str(exc))
            return False
        return True

    def assigned(self, keys: Iterable[TopicPartitionKey]) -> None:
        # librdkafka keeps a partition's pause flag across unassign/assign (one paused when it was
        # lost or revoked comes back paused: found by the broker-outage test, a stalled worker),
        # while a fresh consumer starts unpaused. Either way, the next backpressure pass sets the
        # state explicitly; assuming one of them let a worker read past its cap.
        self.unknown.update(keys)

    def forget(self, keys: Iterable[TopicPartitionKey]) -> None:
        self.paused.difference_update(keys)

    def reset(self) -> None:
        """A fresh consumer: no partition, no pause flag."""
        self.paused.clear()
        self.unknown.clear()


def pause_for_judges(down: bool, judging: int) -> bool:
    """Pause every partition for a judge tier that is down (`down`: every endpoint's breaker open
    or probing) while posts wait on it (`judging` per-post tasks). Those posts carry the probes
    that close a breaker again: a half-open breaker closes only on a request that succeeds. With
    none left (the last ones dead-lettered at their deadline), a pause would last forever, so
    consumption goes on and the next posts carry the probe (found by CI: a worker sat paused with
    one tier half-open and nothing in flight)."""
    return down and judging > 0
