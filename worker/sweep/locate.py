"""The sweep's reads that happen before judging: the offset range of each partition of the posts
topic, and every post's current verdict from the actions topic.

The range is found by reading, not from ListOffsets: some Kafka-protocol brokers (Tansu) answer a
time lookup with offset 0 and report high watermarks wrong. `offsets_for_times` is still asked
for a starting point (a real broker's time index skips most of a long topic), and reading from
there fixes, per partition, `start` = the first record at or after `since` and `end` = the first
record at or after `until`, or one past the last record when the partition is caught up. The
first run stores these (worker/sweep/state.py): records appended later never enter the sweep.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from worker.kafka.errors import classify
from worker.kafka.ranges import TimeRange, read_range
from worker.sweep.current import CurrentVerdicts


def partitions_of(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise KafkaException(metadata.error if metadata is not None else f"topic {topic!r} not found")
    return sorted(metadata.partitions)


def usable(msg: Message) -> bool:
    """A record to handle (False: a transient client error event); raises on a fatal one."""
    error = msg.error()
    if error is None:
        return True
    if classify(error) in ("fatal", "config"):
        raise KafkaException(error)
    return False


def _until_idle(consumer: Consumer, open_partitions: set[int], idle_polls: int) -> Iterator[Message]:
    """Records while some partition is open, until `idle_polls` polls in a row bring nothing."""
    idle = 0
    while open_partitions and idle < idle_polls:
        batch = [msg for msg in consumer.consume(500, 1.0) if usable(msg)]
        idle = idle + 1 if not batch else 0
        yield from batch


def locate(
    config: dict[str, Any], topic: str, window: TimeRange, timeout_s: float = 10.0, idle_polls: int = 3
) -> dict[int, tuple[int, int]]:
    """(start, end) offsets per partition of `topic` (start == end: nothing in the window)."""
    consumer = Consumer({**config, "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        partitions = partitions_of(consumer, topic, timeout_s)
        wanted = [TopicPartition(topic, p, window.since_ms) for p in partitions]
        hints = {tp.partition: tp.offset for tp in consumer.offsets_for_times(wanted, timeout=timeout_s)}
        found: dict[int, tuple[int, int]] = {}
        start: dict[int, int] = {}
        last: dict[int, int] = {}
        reading = [TopicPartition(topic, p, hints[p]) for p in partitions if hints.get(p, -1) >= 0]
        # No record at or after `since` anywhere in a partition: nothing of it is in the range.
        found.update({p: (0, 0) for p in partitions if hints.get(p, -1) < 0})
        if reading:
            consumer.assign(reading)
        open_partitions = {tp.partition for tp in reading}
        for msg in _until_idle(consumer, open_partitions, idle_polls):
            partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
            if partition not in open_partitions:
                continue
            last[partition] = offset
            _, timestamp = msg.timestamp()
            if timestamp >= window.until_ms:
                found[partition] = (start.get(partition, offset), offset)
                open_partitions.discard(partition)
                consumer.pause([TopicPartition(topic, partition)])
            elif timestamp >= window.since_ms and partition not in start:
                start[partition] = offset
        for partition in open_partitions:  # caught up before reaching `until`
            end = last.get(partition, hints[partition] - 1) + 1
            found[partition] = (start.get(partition, end), end)
        return found
    finally:
        consumer.close()


def read_current(
    config: dict[str, Any],
    index: CurrentVerdicts,
    actions_topic: str,
    output_topic: str,
    window: TimeRange,
    slack: timedelta,
) -> int:
    """Fold the actions topic from `slack` before the range up to now into `index` (and, when the
    sweep writes elsewhere, this run's own verdicts from `output_topic`). Returns records read."""
    read = 0
    span = TimeRange(window.since - slack, max(window.until, datetime.now(UTC)) + timedelta(minutes=1))
    for msg in read_range(config, actions_topic, span):
        index.observe_bytes(msg.value())
        read += 1
    if output_topic != actions_topic:
        try:
            for msg in read_range(config, output_topic, span):
                index.observe_bytes(msg.value(), own_only=True)
                read += 1
        except KafkaException as exc:
            if "not found" not in str(exc) and "UNKNOWN_TOPIC" not in str(exc):
                raise
            # The dry-run topic does not exist yet: nothing of this run is there.
    return read
