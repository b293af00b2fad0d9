"""Read one topic's records between two timestamps, all partitions, without joining a group.

Used by `modstream audit export` (and meant for back-scans): offsets come from the broker's
time index (`offsets_for_times`), partitions are assigned directly (no consumer group, nothing
committed), and reading stops per partition at the first record at or after `until`, or when
the topic is caught up — so a busy topic cannot keep an export running past its window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from worker.kafka.errors import classify


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("since and until need a time zone (e.g. 2026-12-01T00:00:00Z)")
        if self.until <= self.since:
            raise ValueError(f"until ({self.until.isoformat()}) must be after since ({self.since.isoformat()})")

    @property
    def since_ms(self) -> int:
        return int(self.since.timestamp() * 1000)

    @property
    def until_ms(self) -> int:
        return int(self.until.timestamp() * 1000)


def read_range(
    config: dict[str, Any], topic: str, window: TimeRange, timeout_s: float = 10.0, idle_polls: int = 3
) -> Iterator[Message]:
    """Records of `topic` with since <= timestamp < until (in offset order within a partition).

    A partition is done at its first record at or after `until`; the read ends when every
    partition is done or nothing arrived for `idle_polls` polls in a row (caught up). The end is
    not taken from the high watermark: some Kafka-protocol brokers (Tansu) report it wrong."""
    consumer = Consumer({**config, "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise KafkaException(metadata.error if metadata is not None else f"topic {topic!r} not found")
        wanted = [TopicPartition(topic, p, window.since_ms) for p in sorted(metadata.partitions)]
        starts = [tp for tp in consumer.offsets_for_times(wanted, timeout=timeout_s) if tp.offset >= 0]
        if not starts:
            return  # nothing at or after `since` anywhere
        consumer.assign(starts)
        open_partitions = {tp.partition for tp in starts}
        idle = 0
        while open_partitions and idle < idle_polls:
            batch = consumer.consume(500, 1.0)
            idle = 0 if batch else idle + 1
            for msg in batch:
                error = msg.error()
                if error is not None:
                    if classify(error) in ("fatal", "config"):
                        raise KafkaException(error)
                    continue
                partition = int(msg.partition() or 0)
                if partition not in open_partitions:
                    continue
                _, timestamp = msg.timestamp()
                if timestamp >= window.until_ms:
                    open_partitions.discard(partition)
                    consumer.pause([TopicPartition(topic, partition)])
                elif timestamp >= window.since_ms:  # the time index may start a little early
                    yield msg
    finally:
        consumer.close()
