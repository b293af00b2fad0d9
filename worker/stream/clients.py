"""Kafka client trouble as the stream handles it: both clients' errors (error_cb, consume errors,
exceptions from consume) are counted, flag broker trouble for readiness, are logged once per change
or once a minute, and a consumer that hit a fatal error is replaced by the loop's first step."""

from __future__ import annotations

import asyncio
import logging

import structlog
from confluent_kafka import KafkaError, KafkaException

from worker.kafka.consumer import GroupConsumer
from worker.kafka.errors import classify, describe, error_of, is_broker_down
from worker.ops.logs import RepeatThrottle
from worker.ops.metrics import consumer_lag_from_stats
from worker.ops.sensors import Sensors
from worker.ops.watch import Watch
from worker.stream.backpressure import Backpressure
from worker.stream.rebalance import Rebalance

log = structlog.get_logger("modstream.worker")


class ClientTrouble:
    def __init__(self, sensors: Sensors) -> None:
        self.sensors = sensors
        self._throttle = RepeatThrottle()
        self.consumer_fatal: str | None = None
        # Wired after construction (the clients report errors to this object from the start).
        self.watch: Watch | None = None
        self.consumer: GroupConsumer | None = None

    def on_client_error(self, client: str, error: KafkaError) -> None:
        """Count, flag broker trouble, and schedule a restart of a consumer that hit a fatal error.
        Never raises: the worker rides out outages."""
        kind = classify(error)
        self.sensors.on_kafka_error(client, kind, error.name())
        if kind == "fatal" and client == "consumer":
            self.consumer_fatal = describe(error)
        if is_broker_down(error):
            # Logged once per change of reachability (watch.reachability), not per attempt.
            if self.watch is not None:
                self.watch.broker_trouble(client, error.name(), error.str())
            if kind != "fatal":
                return
        # Others (auth, config...) repeat on every reconnect: once a minute per error, with a count.
        repeated = 0 if kind == "fatal" else self._throttle.admit((client, error.name()))
        if repeated >= 0:
            level = logging.ERROR if kind in ("fatal", "config") else logging.WARNING
            fields = {"client": client, "kind": kind, "error": error.name(), "reason": error.str()}
            log.log(level, "kafka_error", repeated=repeated, **fields)

    def on_consume_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        self.on_client_error("consumer", error)

    async def on_consume_exception(self, exc: KafkaException) -> None:
        error = error_of(exc)
        if error is not None:
            self.on_client_error("consumer", error)
        else:
            log.warning("consume_failed", error=str(exc))
        await asyncio.sleep(0.2)  # not a synchronisation: a back-off before polling a failing client again

    def on_consumer_stats(self, stats: str) -> None:
        """librdkafka statistics (consumer thread): the lag of each partition this worker owns."""
        assigned = self.consumer.assigned if self.consumer is not None else set()
        self.sensors.on_consumer_lag({tp: lag for tp, lag in consumer_lag_from_stats(stats).items() if tp in assigned})

    async def restart_consumer(self, consumer: GroupConsumer, rebalance: Rebalance, backpressure: Backpressure) -> None:
        """Replace a consumer that hit a fatal error (no-op when none did)."""
        if self.consumer_fatal is None:
            return
        reason, self.consumer_fatal = self.consumer_fatal, None
        await rebalance.release(sorted(consumer.assigned), lost=True)  # the old member's partitions are gone with it
        await consumer.restart(reason)
        backpressure.reset()
        self.sensors.on_client_restart("consumer")
