"""What the stream keeps of a consumed Kafka message, and where it came from."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Message

from worker.contracts import SourceRef
from worker.ops.tracing import Header
from worker.stream.offsets import TopicPartitionKey

# A consumed record's place: its partition and offset. Outputs are filed and committed by it.
Position = tuple[TopicPartitionKey, int]


@dataclass(frozen=True, slots=True)
class Consumed:
    """Enough of a Kafka message to publish results and commit."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    started: float
    # The allow-listed input headers (headers.passthrough), copied onto every derived record.
    headers: tuple[Header, ...] = ()

    @property
    def tp(self) -> TopicPartitionKey:
        return (self.topic, self.partition)

    @property
    def position(self) -> Position:
        return ((self.topic, self.partition), self.offset)

    @property
    def source(self) -> SourceRef:
        return SourceRef(topic=self.topic, partition=self.partition, offset=self.offset)

    @property
    def where(self) -> dict[str, object]:
        """Log fields naming the record (never its content)."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    @classmethod
    def of(cls, msg: Message, headers: tuple[Header, ...] = (), started: float | None = None) -> Consumed:
        return cls(
            str(msg.topic()),
            int(msg.partition() or 0),
            int(msg.offset() or 0),
            msg.key(),
            msg.value(),
            time.perf_counter() if started is None else started,
            headers,
        )
