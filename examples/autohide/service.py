"""A downstream auto-hide service: apply modstream verdicts from the actions topic to a posts table.

    python -m examples.autohide --bootstrap localhost:9092 --db posts.sqlite3   # from the repository root

The reference for what a team consuming verdicts should do (see README.md beside this file):
- at-least-once: offsets are committed only after the batch they came from is in the database;
- idempotent and order-independent: a verdict changes a row only if its (revision, verdict_id)
  is newer than the row's (store.py), so replays and duplicates are harmless;
- a record it cannot read is logged and skipped (it never stops the service), and counted.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass, field

import orjson
from confluent_kafka import Consumer, KafkaException, Message

from .store import Applied, BadVerdict, apply, fallback_id, reduce_verdict

log = logging.getLogger("autohide")


@dataclass
class Counts:
    """What the service did so far (a real deployment would export these as metrics)."""

    read: int = 0
    changed: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)


def rows_of(messages: list[Message], counts: Counts) -> list[Applied]:
    rows: list[Applied] = []
    for msg in messages:
        error = msg.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            continue  # informational (e.g. partition EOF); librdkafka retries on its own
        counts.read += 1
        try:
            rows.append(reduce_verdict(orjson.loads(msg.value() or b""), fallback_id(int(msg.offset() or 0))))
        except (orjson.JSONDecodeError, BadVerdict) as exc:
            counts.skipped += 1
            counts.reasons.append(str(exc))
            log.warning("skipped unreadable verdict at %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), exc)
    return rows


def run(
    bootstrap: str,
    db: sqlite3.Connection,
    stop: threading.Event,
    *,
    topic: str = "actions",
    group: str = "autohide",
    extra: dict[str, str | int] | None = None,
    counts: Counts | None = None,
) -> Counts:
    """Consume until `stop` is set. `counts` (yours to read from another thread) is updated per batch."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **(extra or {}),
        }
    )
    consumer.subscribe([topic])
    counts = counts if counts is not None else Counts()
    try:
        while not stop.is_set():
            messages = consumer.consume(500, 0.5)
            if not messages:
                continue
            counts.changed += apply(db, rows_of(messages, counts))
            # Only now is the batch durable: commit its offsets (synchronously, so a crash after
            # this line cannot replay it, and a crash before it replays it harmlessly).
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return counts
