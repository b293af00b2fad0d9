"""Publish stage: an idempotent Kafka producer whose `send` returns only once the broker acknowledged.

librdkafka calls delivery reports from whichever thread calls `poll()`; one background thread
polls and hands each report to the event loop, resolving the future `send` awaits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

log = structlog.get_logger("modstream.publish")

Headers = Sequence[tuple[str, bytes]]


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


class DeliveryFailed(Exception):
    def __init__(self, error: KafkaError) -> None:
        super().__init__(f"{error.name()}: {error.str()}")
        self.error = error


class Publisher:
    def __init__(self, config: dict[str, Any], on_error: Callable[[KafkaError], None] | None = None) -> None:
        self._config = {**config, "error_cb": self._on_client_error}
        self._on_error = on_error
        self._producer = Producer(self._config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_forever, name="kafka-producer-poll", daemon=True)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _on_client_error(self, error: KafkaError) -> None:
        log.warning("producer_error", error=error.name(), reason=error.str(), fatal=error.fatal())
        if self._on_error is not None:
            self._on_error(error)

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers = ()) -> None:
        """Produce one record and wait for the broker's acknowledgement (raises DeliveryFailed)."""
        assert self._loop is not None, "Publisher.start() was not called"
        loop = self._loop
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(_resolve, done, error)

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=on_delivery)
                break
            except BufferError:
                # Local queue full: let delivery reports drain it, then try again.
                await asyncio.sleep(0.05)
        await done

    def flush(self, timeout_s: float) -> int:
        """Block until queued records are delivered or the timeout passes; returns how many remain."""
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 10.0) -> int:
        remaining = self.flush(timeout_s)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        return remaining


def _resolve(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(DeliveryFailed(error))


__all__ = ["DeliveryFailed", "KafkaException", "Publisher", "producer_config"]
