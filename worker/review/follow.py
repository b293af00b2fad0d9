"""Follow whole topics from the beginning without a consumer group (nothing joined, nothing committed).

The review store is rebuilt from the `review`, `review-decisions` and `audit` topics this way: every
partition is assigned at offset 0 and read on. "Caught up" is a few empty polls in a row, not the high
watermark (some Kafka-protocol brokers, Tansu among them, report it wrong). A topic that does not
exist yet is looked up again on later polls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from worker.kafka.errors import classify

Handler = Callable[[Message], None]
RECHECK_S = 5.0


class Follower:
    def __init__(self, config: dict[str, Any], handlers: dict[str, Handler]) -> None:
        self._consumer = Consumer({**config, "enable.auto.commit": False, "enable.partition.eof": False})
        self._handlers = handlers
        self._assigned: set[str] = set()
        self._checked = 0.0

    def _assign_new(self) -> None:
        missing = [t for t in self._handlers if t not in self._assigned]
        if not missing or time.monotonic() - self._checked < RECHECK_S:
            return
        self._checked = time.monotonic()
        found = []
        for topic in missing:
            metadata = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
            if metadata is not None and metadata.error is None and metadata.partitions:
                found += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(metadata.partitions)]
                self._assigned.add(topic)
        if found:
            self._consumer.incremental_assign(found)

    def poll(self, timeout_s: float) -> int:
        """One poll: hands each record to its topic's handler; returns how many arrived."""
        self._assign_new()
        if not self._assigned:
            time.sleep(timeout_s)  # nothing to read from yet (topics not created)
            return 0
        batch = self._consumer.consume(500, timeout_s)
        for msg in batch:
            error = msg.error()
            if error is not None:
                if classify(error) in ("fatal", "config"):
                    raise KafkaException(error)
                continue
            self._handlers[str(msg.topic())](msg)
        return len(batch)

    def catch_up(self, idle_polls: int = 2, timeout_s: float = 0.5) -> int:
        """Read until `idle_polls` polls in a row bring nothing; returns how many records arrived."""
        self._checked = 0.0  # look for topics created since
        total = idle = 0
        while idle < idle_polls:
            got = self.poll(timeout_s)
            total += got
            idle = 0 if got else idle + 1
        return total

    def close(self) -> None:
        self._consumer.close()
