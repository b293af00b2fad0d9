"""`Publisher.send_many` queues a headerless group in one `produce_batch` call: on a real broker
every keyed record lands on the partition `produce()` picks for the same key (the configured
partitioner runs per record), and every record arrives once."""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import Producer

from tests.kafka_support import read_topic
from worker.kafka.producer import Output, Publisher, producer_config
from worker.local.broker import EmbeddedBroker, create_topics

pytestmark = pytest.mark.integration

N = 400


async def send_in_batches(bootstrap: str, outputs: list[Output]) -> None:
    publisher = Publisher(producer_config(bootstrap, {}))
    publisher.start(asyncio.get_running_loop())
    try:
        for start in range(0, len(outputs), 128):  # the fast path's group size
            assert await publisher.send_many(outputs[start : start + 128]) == []
    finally:
        publisher.close()


def test_a_batched_group_lands_where_produce_puts_each_key(broker: EmbeddedBroker) -> None:
    create_topics(broker.bootstrap_servers, {"batched": 6, "single": 6})
    keys = [f"post-{i}".encode() for i in range(N)]
    asyncio.run(send_in_batches(broker.bootstrap_servers, [("batched", key, b"v" + key, ()) for key in keys]))
    producer = Producer(producer_config(broker.bootstrap_servers, {}))
    for key in keys:
        producer.produce("single", key=key, value=b"v" + key)
    assert producer.flush(30) == 0
    batched_records = read_topic(broker.bootstrap_servers, "batched", N)
    single_records = read_topic(broker.bootstrap_servers, "single", N)
    assert len(batched_records) == len(single_records) == N  # nothing lost, nothing twice
    batched = {m.key(): (m.partition(), m.value()) for m in batched_records}
    single = {m.key(): (m.partition(), m.value()) for m in single_records}
    assert batched == single
    assert len({partition for partition, _ in batched.values()}) == 6
