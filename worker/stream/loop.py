"""The consume loop as a list of named steps, each one call into a collaborator (Confluent Parallel
Consumer's controlLoop, Quix Streams' Application._run_dataframe):

    restart a failed consumer -> start released records -> wait for room -> apply backpressure
    -> poll and dispatch -> commit if due

"Poll and dispatch" routes the batch screened meanwhile first: a batch's funnel call runs in a
thread while the loop commits and fetches the next one (dispatch.py).

Concurrency model: one asyncio loop. The consumer runs on its own thread (worker/kafka/consumer.py);
posts with judge work are asyncio tasks (tasks.py), cleared posts go in groups (fastpath.py); an
offset becomes committable only once every record derived from it was acknowledged (or, exactly-
once, filed for the transaction that commits it). Everything is built in wiring.py.
"""

from __future__ import annotations

import asyncio
import gc
import time

import structlog
from aiohttp import web
from confluent_kafka import KafkaException

from worker.ops.health import build_health_app, start_health_server
from worker.stream.tasks import finish_or_abandon
from worker.stream.wiring import Parts

log = structlog.get_logger("modstream.worker")


class StreamLoop:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.metrics_port: int | None = None
        self._last_commit = time.monotonic()
        self._health: web.AppRunner | None = None
        self._background: list[asyncio.Task[None]] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain within `drain_timeout_s`, commit, and return."""
        p = self.parts
        await self._start_up(stop)
        try:
            while not stop.is_set():
                await p.trouble.restart_consumer(p.consumer, p.rebalance, p.backpressure)
                await p.dispatcher.start(p.flow.release(p.tasks.held))
                room = p.flow.room(p.tasks.held_total)
                if room == 0:
                    # Routing the screened batch moves its cleared posts off the caps at once: go
                    # round again rather than wait for an acknowledgement that room already exists.
                    await p.dispatcher.finish_screened()
                    if p.flow.room(p.tasks.held_total) or await p.backpressure.wait_for_room():
                        continue
                await p.backpressure.apply()
                await self.poll_and_dispatch(room)
                await self.commit_if_due()
        finally:
            await self._shut_down()

    async def poll_and_dispatch(self, room: int) -> None:
        p = self.parts
        busy = bool(p.tracker.total_in_flight or p.flow.parked)
        size, timeout = poll_size_and_timeout(room, busy, p.settings.kafka.batch_size)
        try:
            messages = await p.consumer.consume(size, timeout)
        except KafkaException as exc:
            await p.trouble.on_consume_exception(exc)
            messages = []
        # The previous batch was screened (a funnel thread) while this one was fetched.
        await p.dispatcher.finish_screened()
        if messages:
            await p.dispatcher.dispatch(messages)

    async def commit_if_due(self) -> None:
        if time.monotonic() - self._last_commit >= self.parts.settings.kafka.commit_interval_s:
            await self.parts.outputs.commit()
            self._last_commit = time.monotonic()

    async def _start_up(self, stop: asyncio.Event) -> None:
        p = self.parts
        loop = asyncio.get_running_loop()
        p.rebalance.loop = loop
        p.publisher.start(loop)
        await p.outputs.start(stop)
        self._health, self.metrics_port = await start_health_server(
            build_health_app(p.sensors.metrics, p.watch.readiness), p.settings.metrics_host, p.settings.metrics_port
        )
        self._background = [
            asyncio.create_task(p.watch.run(stop)),
            asyncio.create_task(p.reloader.watch(p.settings.policy_reload_interval_s)),
        ]
        await p.consumer.subscribe()
        freeze_start_up_garbage()
        log.info(
            "worker_started",
            posts_topic=p.settings.topics.posts,
            group=p.settings.kafka.group_id,
            policies=[f"{q.id}@{q.version}" for q in p.reloader.runtime.policies.policies],
            metrics_port=self.metrics_port,
            kafka_extra=p.settings.kafka.redacted_extra(),
        )

    async def _shut_down(self) -> None:
        p = self.parts
        await self.drain()
        for task in self._background:
            task.cancel()
        await p.consumer.close()
        remaining = p.publisher.close(timeout_s=10)
        await p.close_http()
        if self._health is not None:
            await self._health.cleanup()
        log.info("worker_stopped", unflushed=remaining)

    async def drain(self) -> None:
        p = self.parts
        for key in list(p.consumer.assigned):
            p.sensors.on_abandoned("drain_parked", p.flow.drop(key))
        await p.dispatcher.finish_screened()
        pending = p.tasks.all()
        log.info("draining", in_flight=len(pending), deadline_s=p.settings.drain_timeout_s)
        drained = asyncio.Event()
        serving = asyncio.create_task(self.serve_group_until(drained))
        try:
            abandoned = await finish_or_abandon(pending, p.settings.drain_timeout_s)
        finally:
            drained.set()
            await serving
        if abandoned:
            p.sensors.on_abandoned("drain_deadline", abandoned)
            log.warning("drain_deadline_passed", abandoned=abandoned)
        await asyncio.to_thread(p.publisher.flush, 10)
        await p.outputs.commit()

    async def serve_group_until(self, drained: asyncio.Event) -> None:
        """While draining, keep polling with every partition paused. A member that stops polling
        answers no rebalance: the whole group (a newcomer included) would wait for the drain, up to
        `drain_timeout_s`. Records fetched before a pause took effect are not started (nor
        committed): the next owner reads them again."""
        p = self.parts
        while not drained.is_set():
            try:
                await p.consumer.pause(list(p.consumer.assigned))  # newly assigned ones too
                messages = await p.consumer.consume(p.settings.kafka.batch_size, DRAIN_POLL_S)
            except KafkaException as exc:
                await p.trouble.on_consume_exception(exc)
                continue
            p.sensors.on_abandoned("drain_parked", sum(1 for msg in messages if msg.error() is None))


# How long one poll waits while draining: a revoke or assignment is answered within about this.
DRAIN_POLL_S = 0.1


def poll_size_and_timeout(room: int, busy: bool, batch_size: int) -> tuple[int, float]:
    """How many records to ask `consume()` for, and how long it may wait. It waits its whole
    timeout unless the batch fills: keep it short while posts are in flight, or freed room is only
    noticed a timeout later. At the cap (room 0, after the grace) every partition is paused and
    consume() still runs, for one record, for rebalance callbacks and max.poll.interval.ms."""
    timeout = (0.01 if room else 0.05) if busy else 0.2
    return max(1, min(batch_size, room)), timeout


# The cyclic collector's first-generation threshold (CPython's default: 700 allocations). A post's
# objects are freed by reference counting, not by the collector, but every 700 allocations it
# still walked what the batches in flight hold: ~2,100 collections per 100,000 posts, 0.31 s of
# GIL time (measured with gc.callbacks, bench/worker_bench.py --candidate-share 0), against
# ~0.05 s at 10,000. The older generations keep their defaults.
GEN0_THRESHOLD = 10_000


def freeze_start_up_garbage() -> None:
    """Move everything alive after start-up (policies, the funnel's model and vocabularies, clients)
    out of the cyclic collector's reach (`gc.freeze`): those objects never become garbage, and
    every full collection would walk them again. Per-post objects are still collected, less often
    (`GEN0_THRESHOLD`)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
