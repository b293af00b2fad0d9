"""Client configurations from the worker's Kafka settings, for the commands that run their own
consumer and producer beside the stream (review apply/serve, the demo's routes)."""

from __future__ import annotations

from typing import Any

from worker.config import KafkaSettings
from worker.kafka.consumer import consumer_config
from worker.kafka.producer import producer_config


def client_configs(kafka: KafkaSettings, group: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(consumer config for `group`, producer config), both with the settings' extra client options."""
    consumer = consumer_config(
        kafka.bootstrap_servers, group, dict(kafka.extra), kafka.session_timeout_ms, kafka.heartbeat_interval_ms,
        kafka.partition_assignment_strategy,
    )  # fmt: skip
    return consumer, producer_config(kafka.bootstrap_servers, dict(kafka.extra))
