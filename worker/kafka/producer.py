"""Publish stage: an idempotent Kafka producer whose `send` returns only once the broker acknowledged.

librdkafka calls delivery reports from whichever thread calls `poll()`; one background thread
polls and hands each report to the event loop, resolving the future `send` awaits.

A producer that hit a fatal error (e.g. an idempotent producer whose sequence state a restarted
broker no longer knows) is unusable: `restart()` replaces it with a fresh instance. Records still
queued in the old one are purged, which fails their `send` with `DeliveryFailed`; the caller
(`AtLeastOnceOutputs.send`, worker/stream/outputs.py) sends them again through the new instance,
so none is dropped (a purged in-flight record may have landed: at-least-once, a duplicate at worst).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from worker.kafka.errors import describe, error_of, is_fatal
from worker.ops.logs import kafka_logger

log = structlog.get_logger("modstream.publish")

Headers = Sequence[tuple[str, bytes]]
# One record to produce: topic, key, value, headers.
Output = tuple[str, bytes | None, bytes | None, Headers]


def producer_config(bootstrap_servers: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        **extra,
        "bootstrap.servers": bootstrap_servers,
        # Idempotent: retries never duplicate or reorder within a partition.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": extra.get("linger.ms", 5),
        "compression.type": extra.get("compression.type", "lz4"),
    }


class Undeliverable(Exception):
    """The broker can never accept this record as it is (e.g. larger than message.max.bytes)."""


class DeliveryFailed(Exception):
    def __init__(self, error: KafkaError, generation: int = -1) -> None:
        super().__init__(describe(error))
        self.error = error
        # The producer generation the record was sent with (-1: unknown).
        self.generation = generation


class Publisher:
    def __init__(
        self,
        config: dict[str, Any],
        on_error: Callable[[KafkaError], None] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        # librdkafka's log lines go through structlog (worker/ops/logs.py), not straight to stderr.
        self._config = {**config, "error_cb": self._on_client_error, "logger": kafka_logger("producer")}
        self._on_error = on_error
        self._on_restart = on_restart
        # Exactly-once mode: a transactional producer (outputs go through commit_batch()).
        self.transactional = "transactional.id" in config
        self._producer = Producer(self._config)
        # Bumped by every restart(): a failure seen under an older generation is already handled.
        self.generation = 0
        # monotonic time of the last successful delivery report (or of start/restart).
        self.last_delivered = time.monotonic()
        self.restarts = 0
        self._swap = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_forever, name="kafka-producer-poll", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            producer, generation = self._producer, self.generation
            try:
                producer.poll(0.05)
            except KafkaException as exc:
                # confluent-kafka raises a fatal error out of poll(). The instance is unusable:
                # replace it here, or no delivery report would ever arrive again.
                error = error_of(exc)
                if error is not None and error.fatal():
                    self.restart(generation, describe(error))
                else:
                    log.warning("producer_poll_failed", error=str(exc))
            except Exception as exc:  # e.g. an exception escaping a callback: keep polling
                log.warning("producer_poll_failed", error=f"{type(exc).__name__}: {exc}")

    def _on_client_error(self, error: KafkaError) -> None:
        # Debug only: the owner (on_error) logs per change of state, not per failed attempt.
        log.debug("producer_error", error=error.name(), reason=error.str(), fatal=error.fatal())
        if self._on_error is not None:
            self._on_error(error)

    def restart(self, seen_generation: int, reason: str) -> bool:
        """Replace the producer if it is still the one that failed (generation `seen_generation`).
        Blocking (purges and briefly flushes the old instance): call it from a thread."""
        with self._swap:
            if seen_generation != self.generation:
                return False
            old = self._producer
            self._producer = Producer(self._config)
            if self.transactional:
                self._producer.init_transactions(30)
            self.generation += 1
            self.restarts += 1
            self.last_delivered = time.monotonic()
        log.warning("producer_restarted", reason=reason, generation=self.generation)
        if self._on_restart is not None:
            self._on_restart()
        try:
            old.purge(in_queue=True, in_flight=True)
            old.flush(2.0)  # serves the purged records' delivery reports: their senders retry
        except KafkaException as exc:
            log.warning("old_producer_cleanup_failed", error=str(exc))
        return True

    def init_transactions(self, timeout_s: float) -> None:
        """Exactly-once mode: register the transactional id (fences an earlier instance's open
        transaction). Blocking."""
        self._producer.init_transactions(timeout_s)

    def commit_batch(
        self, outputs: Sequence[Output], offsets: list[TopicPartition], group_metadata: Any, timeout_s: float
    ) -> None:
        """Exactly-once mode: one transaction holding `outputs` and the consumed `offsets`.
        Blocking; raises KafkaException (the caller aborts or restarts and retries)."""
        producer = self._producer
        producer.begin_transaction()
        try:
            for topic, key, value, headers in outputs:
                while True:
                    try:
                        producer.produce(topic, value=value, key=key, headers=list(headers))
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.send_offsets_to_transaction(offsets, group_metadata, timeout_s)
            producer.commit_transaction(timeout_s)
        except KafkaException as exc:
            if error_of(exc) is not None and not is_fatal(exc):
                try:
                    producer.abort_transaction(timeout_s)
                except KafkaException as abort_exc:
                    log.warning("abort_transaction_failed", error=str(abort_exc))
            raise

    def queued(self) -> int:
        """Records produced and not yet acknowledged (or failed)."""
        return len(self._producer)

    def probe(self, timeout_s: float) -> bool:
        """Can we reach the cluster now? (A metadata request; used by readiness.)"""
        try:
            self._producer.list_topics(timeout=timeout_s)
            return True
        except KafkaException:
            return False

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()) -> None:
        """Produce one record and wait for the broker's acknowledgement (raises DeliveryFailed)."""
        assert self._loop is not None, "Publisher.start() was not called"
        loop = self._loop
        done: asyncio.Future[None] = loop.create_future()

        generation = self.generation

        def on_delivery(error: KafkaError | None, _msg: Message) -> None:
            if error is None:
                self.last_delivered = time.monotonic()
            loop.call_soon_threadsafe(_resolve, done, error, generation)

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=on_delivery)
                break
            except BufferError:
                # Local queue full: let delivery reports drain it, then try again.
                await asyncio.sleep(0.05)
            except KafkaException as exc:
                # Refused before it was queued (too large, fatal producer, unknown topic...).
                raise DeliveryFailed(error_of(exc) or KafkaError(KafkaError._FAIL, str(exc)), self.generation) from None
        await done

    async def send_many(self, outputs: Sequence[Output]) -> list[tuple[int, DeliveryFailed]]:
        """Produce many records and wait until the broker answered for every one of them: one
        future and one loop wake-up for the whole group instead of one per record, one delivery
        callback shared by its records, and a group of one topic without headers (the fast path's
        verdicts) queued in one `produce_batch` call. Returns the failures (index into `outputs`,
        error); an empty list means every record was acknowledged."""
        assert self._loop is not None, "Publisher.start() was not called"
        loop = self._loop
        count = len(outputs)
        if not count:
            return []
        done: asyncio.Future[None] = loop.create_future()
        generation = self.generation
        # Delivery reports run on whichever thread serves them (the poll thread, or a flush from a
        # revoke or restart): `next()` on an itertools.count is atomic under the GIL, a `+= 1` is not.
        answered = itertools.count(1)
        failed: list[tuple[Message | int, KafkaError]] = []

        def report(error: KafkaError | None, msg: Message) -> None:
            if error is None:
                self.last_delivered = time.monotonic()
            else:
                failed.append((msg, error))
            if next(answered) == count:  # the last report wakes the loop once
                loop.call_soon_threadsafe(_resolve, done, None, generation)

        def refused(index: int, error: KafkaError) -> None:  # not queued: no report will come
            failed.append((index, error))
            if next(answered) == count:
                _resolve(done, None, generation)

        one_by_one: Sequence[int] = range(count)
        if _batchable(outputs):
            one_by_one = self._produce_batch(outputs, report, refused)
        produce = self._producer.produce
        for index in one_by_one:
            topic, key, value, headers = outputs[index]
            while True:
                try:
                    produce(topic, value=value, key=key, headers=list(headers) if headers else None, on_delivery=report)
                    break
                except BufferError:
                    await asyncio.sleep(0.05)  # local queue full: let delivery reports drain it
                    produce = self._producer.produce  # a restart may have replaced the producer
                except KafkaException as exc:
                    refused(index, error_of(exc) or KafkaError(KafkaError._FAIL, str(exc)))
                    break
        await done
        return _failure_indices(outputs, failed, generation)

    def _produce_batch(
        self,
        outputs: Sequence[Output],
        report: Callable[[KafkaError | None, Message], None],
        refused: Callable[[int, KafkaError], None],
    ) -> list[int]:
        """`send_many`'s records of one topic without headers in one `produce_batch` call (one call
        into librdkafka instead of one `produce()` each; keyed records go through the configured
        partitioner one by one, as `produce()` sends them). Returns the indices to produce one by
        one after all: the whole group if the call raised (it raises only before queueing
        anything), and records refused because the local queue was full."""
        messages = [{"key": key, "value": value} for _topic, key, value, _headers in outputs]
        try:
            queued = self._producer.produce_batch(outputs[0][0], messages, on_delivery=report)
        except Exception as exc:  # argument or state errors, raised before anything was queued
            log.debug("produce_batch_failed", error=f"{type(exc).__name__}: {exc}")
            return list(range(len(outputs)))
        if queued == len(messages):
            return []
        again: list[int] = []
        for index, message in enumerate(messages):
            error = message.get("_error")
            if error is None:
                continue
            if isinstance(error, KafkaError) and error.code() == KafkaError._QUEUE_FULL:
                again.append(index)
            else:
                refused(index, error if isinstance(error, KafkaError) else KafkaError(KafkaError._FAIL, str(error)))
        return again

    def flush(self, timeout_s: float) -> int:
        """Block until queued records are delivered or the timeout passes; returns how many remain."""
        producer, generation = self._producer, self.generation
        try:
            return int(producer.flush(timeout_s))
        except KafkaException as exc:
            error = error_of(exc)
            if error is not None and error.fatal():
                self.restart(generation, describe(error))
            else:
                log.warning("producer_flush_failed", error=str(exc))
            return len(self._producer)

    def close(self, timeout_s: float = 10.0) -> int:
        remaining = self.flush(timeout_s)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        return remaining


def _batchable(outputs: Sequence[Output]) -> bool:
    """One topic and no headers (`produce_batch` carries no headers)."""
    topic = outputs[0][0]
    return all(output[0] == topic and not output[3] for output in outputs)


def _failure_indices(
    outputs: Sequence[Output], failed: list[tuple[Message | int, KafkaError]], generation: int
) -> list[tuple[int, DeliveryFailed]]:
    """`send_many`'s failures by index into `outputs`. A delivery report names its record by the
    message only, so failed messages are matched back by (topic, key, value), in order among equal
    records; failures are rare, so the lookup is built only when there are some."""
    if not failed:
        return []
    where: dict[tuple[str, bytes | None, bytes | None], list[int]] = {}
    for index, (topic, key, value, _headers) in enumerate(outputs):
        where.setdefault((topic, key, value), []).append(index)
    taken: set[int] = {item for item, _ in failed if isinstance(item, int)}
    result: list[tuple[int, DeliveryFailed]] = []
    for item, error in failed:
        if isinstance(item, int):
            index = item
        else:
            candidates = [i for i in where.get((str(item.topic()), item.key(), item.value()), []) if i not in taken]
            if not candidates:  # never seen: every report is of a record of this group. Fail them all
                return [(i, DeliveryFailed(error, generation)) for i in range(len(outputs))]
            index = candidates[0]
            taken.add(index)
        result.append((index, DeliveryFailed(error, generation)))
    return sorted(result, key=lambda f: f[0])


def _resolve(future: asyncio.Future[None], error: KafkaError | None, generation: int) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(DeliveryFailed(error, generation))


__all__ = ["DeliveryFailed", "KafkaException", "Publisher", "producer_config"]
