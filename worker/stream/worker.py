"""The worker: consume (batch) -> decode -> funnel -> judge/escalate -> publish -> commit.

A thin handle over the parts wiring.py builds and the loop (loop.py) that runs them. The module map
(records, dispatch, fastpath, tasks, judging, outputs / transactions, offsets, flow / backpressure,
rebalance, clients, deadline) is in docs/reliability.md, "Where it lives in the code".
"""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError

from worker.config import Settings
from worker.kafka.consumer import GroupConsumer
from worker.kafka.producer import Publisher
from worker.ops.metrics import Metrics
from worker.ops.sensors import Sensors
from worker.ops.watch import Watch
from worker.policies.reload import PolicyReloader
from worker.policies.screening import PolicyRuntime
from worker.stream.flow import FlowControl
from worker.stream.loop import StreamLoop
from worker.stream.offsets import OffsetTracker
from worker.stream.records import Consumed
from worker.stream.wiring import Parts, wire

__all__ = ["Consumed", "Worker"]


class Worker:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.parts: Parts = wire(settings, metrics)
        self._loop = StreamLoop(self.parts)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain within `drain_timeout_s`, commit, and return."""
        await self._loop.run(stop)

    @property
    def metrics_port(self) -> int | None:
        """The bound metrics port once running (0 in the settings picks a free one)."""
        return self._loop.metrics_port

    @property
    def sensors(self) -> Sensors:
        return self.parts.sensors

    @property
    def metrics(self) -> Metrics:
        return self.parts.sensors.metrics

    @property
    def consumer(self) -> GroupConsumer:
        return self.parts.consumer

    @property
    def publisher(self) -> Publisher:
        return self.parts.publisher

    @property
    def flow(self) -> FlowControl[Consumed]:
        return self.parts.flow

    @property
    def tracker(self) -> OffsetTracker:
        return self.parts.tracker

    @property
    def watch(self) -> Watch:
        return self.parts.watch

    @property
    def reloader(self) -> PolicyReloader:
        return self.parts.reloader

    @property
    def runtime(self) -> PolicyRuntime:
        """The policy version new batches are judged under."""
        return self.parts.reloader.runtime

    def _on_client_error(self, client: str, error: KafkaError) -> None:
        self.parts.trouble.on_client_error(client, error)
