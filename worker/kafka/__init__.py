"""Kafka I/O: thin confluent-kafka wrappers (the group consumer, the acknowledging producer, time-range
reads) and the one place Kafka errors are classified. No moderation logic here."""
