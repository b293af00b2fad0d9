"""Consume stage: a Kafka consumer-group member driven from asyncio.

Every consumer call (consume, commit, pause, resume) runs on one dedicated thread, so they never
overlap and the event loop never blocks on the network. Rebalance callbacks run on that thread
inside `consume()`; they hand the revoked partitions to the worker (which finishes or abandons
their in-flight posts) and commit what finished before ownership moves on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from worker.kafka.types import TopicPartitionKey
from worker.ops.logs import kafka_logger

log = structlog.get_logger("modstream.consume")
# How often librdkafka reports statistics (consumer lag per partition) when asked to.
STATS_INTERVAL_MS = 15000
T = TypeVar("T")

OnAssign = Callable[[list[TopicPartitionKey]], None]
# Called on the consumer thread; returns the offsets to commit for the revoked partitions.
OnRevoke = Callable[[list[TopicPartitionKey]], dict[TopicPartitionKey, int]]
# Called on the consumer thread when partitions were lost (session expired: someone else may own
# them already, so nothing is committed and in-flight work is abandoned at once).
OnLost = Callable[[list[TopicPartitionKey]], None]


def consumer_config(
    bootstrap_servers: str,
    group_id: str,
    extra: dict[str, Any],
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    assignment_strategy: str,
) -> dict[str, Any]:
    return {
        # Bound the prefetch queue so memory stays bounded while partitions are paused.
        "queued.max.messages.kbytes": 16384,
        **extra,
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": extra.get("auto.offset.reset", "earliest"),
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": heartbeat_interval_ms,
        "partition.assignment.strategy": assignment_strategy,
    }


def key_of(tp: TopicPartition) -> TopicPartitionKey:
    return (tp.topic, tp.partition)


class GroupConsumer:
    """Rebalance protocol: with `cooperative-sticky` (the default) the callbacks receive only the
    partitions that move, and librdkafka applies the incremental assign/unassign itself after
    each callback returns (we never call assign ourselves), so the same callbacks serve the
    eager strategies too. `on_lost` (session expired) is handled apart from `on_revoke`."""

    def __init__(
        self,
        config: dict[str, Any],
        topics: Sequence[str],
        on_assign: OnAssign,
        on_revoke: OnRevoke,
        on_lost: OnLost | None = None,
        on_error: Callable[[KafkaError], None] | None = None,
        on_stats: Callable[[str], None] | None = None,
    ) -> None:
        # librdkafka's log lines go through structlog (worker/ops/logs.py), not straight to stderr.
        self._config = {**config, "error_cb": self._on_client_error, "logger": kafka_logger("consumer")}
        if on_stats is not None:
            # librdkafka's statistics (JSON) every interval, on the consumer thread: per-partition lag.
            self._config["stats_cb"] = on_stats
            self._config.setdefault("statistics.interval.ms", STATS_INTERVAL_MS)
        self._topics = list(topics)
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost_cb = on_lost
        self._on_error = on_error
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")
        self._consumer = Consumer(self._config)
        self.assigned: set[TopicPartitionKey] = set()
        self.last_error: KafkaError | None = None
        self.restarts = 0

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, lambda: fn(*args, **kwargs))

    def _on_client_error(self, error: KafkaError) -> None:
        self.last_error = error
        # Debug only: the owner (on_error) logs per change of state, not per failed attempt.
        log.debug("consumer_error", error=error.name(), reason=error.str(), fatal=error.fatal())
        if self._on_error is not None:
            self._on_error(error)

    async def subscribe(self) -> None:
        await self._call(
            self._consumer.subscribe,
            self._topics,
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [key_of(tp) for tp in partitions]
        self.assigned.update(keys)
        log.info("partitions_assigned", partitions=keys)
        self._on_assign(keys)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # An exception escaping a rebalance callback would surface from consume() and could take
        # the worker down: everything here is caught and logged. The partitions go either way.
        keys = [key_of(tp) for tp in partitions]
        offsets: dict[TopicPartitionKey, int] = {}
        try:
            offsets = self._on_revoke(keys)
            if offsets:
                self._commit_now(consumer, offsets)
        except Exception as exc:  # the next owner replays from the last commit: at-least-once
            log.warning("revoke_commit_failed", partitions=keys, error=f"{type(exc).__name__}: {exc}")
        self.assigned.difference_update(keys)
        log.info("partitions_revoked", partitions=keys, committed=len(offsets))

    def _lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (session expired): another member may own them already; committing is pointless.
        keys = [key_of(tp) for tp in partitions]
        self.assigned.difference_update(keys)
        try:
            if self._on_lost_cb is not None:
                self._on_lost_cb(keys)
            else:
                self._on_revoke(keys)
        except Exception as exc:
            log.warning("lost_handler_failed", partitions=keys, error=f"{type(exc).__name__}: {exc}")
        log.warning("partitions_lost", partitions=keys)

    def group_metadata(self) -> Any:
        """For send_offsets_to_transaction (exactly-once mode)."""
        return self._consumer.consumer_group_metadata()

    async def consume(self, max_records: int, timeout_s: float) -> list[Message]:
        return await self._call(self._consumer.consume, max_records, timeout_s)

    @staticmethod
    def _commit_now(consumer: Consumer, offsets: dict[TopicPartitionKey, int]) -> None:
        tps = [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=False)

    async def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Synchronous commit of explicit offsets; raises KafkaException on failure."""
        await self._call(self._commit_now, self._consumer, offsets)

    async def pause(self, keys: Sequence[TopicPartitionKey]) -> None:
        if keys:
            await self._call(self._consumer.pause, [TopicPartition(t, p) for t, p in keys])

    async def resume(self, keys: Sequence[TopicPartitionKey]) -> None:
        if keys:
            await self._call(self._consumer.resume, [TopicPartition(t, p) for t, p in keys])

    async def seek(self, positions: dict[TopicPartitionKey, int]) -> None:
        """Move each partition's fetch position back to `offset` (it is read again from there).
        Raises KafkaException when librdkafka refuses (e.g. the partition is no longer assigned)."""

        def seek_all() -> None:
            for (topic, partition), offset in positions.items():
                self._consumer.seek(TopicPartition(topic, partition, offset))

        if positions:
            await self._call(seek_all)

    async def restart(self, reason: str) -> None:
        """Replace a consumer that hit a fatal error with a fresh member of the group. The caller
        must have released (abandoned) the partitions first: the new member starts from the
        committed offsets of whatever it is assigned."""
        old = self._consumer

        def swap() -> None:
            try:
                old.close()
            except Exception as exc:  # a fatal consumer may refuse to leave cleanly
                log.warning("old_consumer_close_failed", error=f"{type(exc).__name__}: {exc}")
            self.assigned.clear()
            self._consumer = Consumer(self._config)

        await self._call(swap)
        self.restarts += 1
        log.warning("consumer_restarted", reason=reason)
        await self.subscribe()

    async def close(self) -> None:
        """Leave the group (runs the revoke callback, which commits what finished)."""
        try:
            await self._call(self._consumer.close)
        except Exception as exc:
            log.warning("consumer_close_failed", error=f"{type(exc).__name__}: {exc}")
        self._thread.shutdown(wait=True)
