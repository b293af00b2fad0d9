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


@dataclass(slots=True, init=False)
class Consumed:
    """Enough of a Kafka message to publish results and commit. Treated as immutable (not frozen:
    a frozen dataclass sets each field through `object.__setattr__`, which the hot path of a fast
    worker notices; `tp` is kept rather than rebuilt on every use for the same reason)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    started: float
    # The allow-listed input headers (headers.passthrough), copied onto every derived record.
    headers: tuple[Header, ...]
    tp: TopicPartitionKey

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        started: float,
        headers: tuple[Header, ...] = (),
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.started = started
        self.headers = headers
        self.tp = (topic, partition)

    @property
    def position(self) -> Position:
        return (self.tp, self.offset)

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
            msg.partition() or 0,
            msg.offset() or 0,
            msg.key(),
            msg.value(),
            time.perf_counter() if started is None else started,
            headers,
        )
