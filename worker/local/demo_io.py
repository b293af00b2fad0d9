"""The demo's Kafka side: sample records in, topics read back (no consumer group, from the beginning)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

# The demo stops its own broker at the end: broker disconnects are expected, not worth a log line.
QUIET: dict[str, str | int | float | bool] = {"log.connection.close": False}


@dataclass(frozen=True, slots=True)
class SampleRecord:
    key: bytes | None
    value: bytes | None
    label: str


def load_sample_records(path: Path) -> list[SampleRecord]:
    """One Kafka record per line. Lines that must be malformed on the wire use a wrapper:
    `{"__raw__": "<text>"}`, `{"__raw_b64__": "<base64>"}` or `{"__empty__": true}`."""
    records: list[SampleRecord] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        data: Any = orjson.loads(line)
        label = f"line-{number}"
        if isinstance(data, dict) and isinstance(data.get("__key__"), str):
            label = data["__key__"]
        if isinstance(data, dict) and "__raw__" in data:
            records.append(SampleRecord(label.encode(), str(data["__raw__"]).encode(), label))
        elif isinstance(data, dict) and "__raw_b64__" in data:
            records.append(SampleRecord(label.encode(), base64.b64decode(data["__raw_b64__"]), label))
        elif isinstance(data, dict) and "__empty__" in data:
            records.append(SampleRecord(label.encode(), b"", label))
        else:
            post_id = data.get("id") if isinstance(data, dict) else None
            key = post_id if isinstance(post_id, str) else label
            records.append(SampleRecord(key.encode(), line.encode(), key))
    return records


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (blank lines skipped)."""
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            data = orjson.loads(line)
            if not isinstance(data, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            rows.append(data)
    return rows


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """Produce (key, value) records and wait for the broker's acknowledgement of each."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, **QUIET})
    count = 0
    for key, value in records:
        producer.produce(topic, key=key, value=value)
        count += 1
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} of {count} records to {topic} were not acknowledged by the broker")
    return count


@dataclass
class TopicReader:
    """Reads topics from the beginning with assign() (a reader needs no consumer group, and Tansu's
    joins are slow) and keeps every record, by topic, for the demo's tables and checks."""

    bootstrap: str
    topics: list[str]
    seen: dict[str, list[Message]] = field(default_factory=dict)
    _consumer: Consumer | None = None

    def __enter__(self) -> TopicReader:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"modstream-demo-reader-{time.time_ns()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                **QUIET,
            }
        )
        metadata = consumer.list_topics(timeout=10).topics
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in self.topics for p in metadata[t].partitions])
        self._consumer = consumer
        self.seen = {t: [] for t in self.topics}
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Read on until `done()` holds or the deadline passes; returns whether it holds."""
        assert self._consumer is not None, "use TopicReader as a context manager"
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() >= deadline:
                return False
            for msg in self._consumer.consume(500, 0.2):
                if msg.error() is None:
                    self.seen[str(msg.topic())].append(msg)
        return True

    def values(self, topic: str) -> list[dict[str, Any]]:
        """The JSON-object values read so far from `topic`, in arrival order (others skipped)."""
        out: list[dict[str, Any]] = []
        for msg in self.seen.get(topic, []):
            try:
                data = orjson.loads(msg.value() or b"")
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict):
                out.append(data)
        return out


def dead_letter_reason(msg: Message) -> str:
    """A DLQ record's `error.type` header."""
    value = dict(msg.headers() or []).get("error.type")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or "?"
