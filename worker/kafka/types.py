"""Types shared by the Kafka wrappers and the stream."""

from __future__ import annotations

# A partition as the worker names it: (topic, partition).
TopicPartitionKey = tuple[str, int]
