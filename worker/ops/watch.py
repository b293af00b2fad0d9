"""Background checks beside the consume loop: are the judges and the cluster there, and is the
producer still delivering? They feed `/readyz`, the judge-uptime clock of the per-record deadline
(deadline.py), and a watchdog that recreates a wedged producer.

Readiness: the cluster answers a metadata request (a client error callback turns it false at once;
only a successful probe turns it true again), partitions are assigned, and every judge endpoint is
ready (`JudgeClient.ready`: vLLM's `/health` answers 200, 503 once the engine is dead, and
`/v1/models` lists the configured model).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection

import structlog

from worker.judges.client import JudgeClient
from worker.kafka.producer import Publisher
from worker.ops.logs import KafkaReachability
from worker.ops.sensors import Sensors
from worker.stream.deadline import JudgeUptimeClock

log = structlog.get_logger("modstream.watch")

JUDGES_EVERY_S = 5.0
BROKER_EVERY_S = 2.0
CLOCK_EVERY_S = 0.5


class Watch:
    def __init__(
        self,
        judges: Collection[JudgeClient],
        publisher: Publisher,
        sensors: Sensors,
        assigned: Callable[[], Collection[object]],
        judge_clock: JudgeUptimeClock,
        *,
        producer_stall_s: float,
        watch_producer: bool = True,
    ) -> None:
        self.judges = judges
        self.publisher = publisher
        self.sensors = sensors
        self.assigned = assigned
        self.producer_stall_s = producer_stall_s
        # Transactions flush at commit; a stuck one fails and is retried instead.
        self.watch_producer = watch_producer
        self.judge_clock = judge_clock
        self.broker_ok = True
        self.judges_ready = False
        # Logs the cluster's reachability once per change of state, with failure counts.
        self.reachability = KafkaReachability()

    def broker_trouble(self, client: str = "client", error: str = "", reason: str = "") -> None:
        """A client reported that the cluster is unreachable: not ready until a probe succeeds."""
        self.broker_ok = False
        self.reachability.failure(client, error, reason)

    def readiness(self) -> tuple[bool, str]:
        if not self.broker_ok:
            return False, "the Kafka cluster is unreachable (retrying; nothing is dropped)"
        if not self.assigned():
            return False, "no partitions assigned"
        if not self.judges_ready:
            return False, "a judge endpoint is not ready (/health not 200, or its model not on /v1/models)"
        return True, "ok"

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(self._watch_judges(stop), self._watch_broker(stop), self._tick_judge_clock(stop))

    async def _watch_judges(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            answers = await asyncio.gather(*(judge.ready() for judge in self.judges))
            self.judges_ready = all(answers)
            self._publish_readiness()
            await _pause(stop, JUDGES_EVERY_S)

    async def _watch_broker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            ok = await asyncio.to_thread(self.publisher.probe, 3.0)
            if ok:
                self.reachability.recovered()
            else:
                self.reachability.failure("probe", "metadata_request_failed", "no metadata answer within 3 s")
            self.broker_ok = ok
            self.sensors.on_broker_probe(ok)
            self._publish_readiness()
            if ok and self.watch_producer:
                await self._unstick_producer()
            await _pause(stop, BROKER_EVERY_S)

    async def _unstick_producer(self) -> None:
        """The cluster answers, records wait, yet nothing was acknowledged for `producer_stall_s`.
        An idempotent producer can stay wedged after an outage (waiting on the fate of requests in
        flight when the connection dropped, up to message.timeout.ms). Recreating it purges those
        records; their senders re-send them (at-least-once)."""
        stalled_for = time.monotonic() - self.publisher.last_delivered
        if stalled_for > self.producer_stall_s and self.publisher.queued() > 0:
            log.warning("producer_stalled", seconds=round(stalled_for), queued=self.publisher.queued())
            await asyncio.to_thread(self.publisher.restart, self.publisher.generation, "deliveries stalled")

    async def _tick_judge_clock(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.judge_clock.tick(time.monotonic(), healthy=self.judges_ready)
            await _pause(stop, CLOCK_EVERY_S)

    def _publish_readiness(self) -> None:
        self.sensors.on_readiness(self.readiness()[0])


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait for the next round, or less if the worker stops."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
