"""Exactly-once mode (`exactly_once: true`): verdicts, audit and DLQ records go out in Kafka
transactions together with the consumed offsets (send_offsets_to_transaction).

What is verified here: the API flow end to end on Tansu (one transaction per commit, one verdict
per post in a clean run, offsets committed through the transaction) and crash behaviour (SIGKILL
mid-transaction, restart with the same transactional.id, nothing lost). What is not: transaction
isolation (a `read_committed` consumer never sees aborted records) — Tansu shows aborted data
to `read_committed` readers and the mock cluster has no isolation, so that check is marked
expected-to-fail here; it must pass on real Kafka (docs/reliability.md)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from tests.conftest import worker_env
from tests.kafka_support import (
    WorkerProcess,
    all_committed,
    committed_total,
    dlq_by_key,
    mixed_posts,
    produce,
    read_topic,
    verdicts_by_id,
    wait_for,
)
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration


def eos_env(broker: EmbeddedBroker, sims: tuple[SimulatorProcess, SimulatorProcess], group: str) -> dict[str, str]:
    return worker_env(
        broker, sims, group=group, MODSTREAM_EXACTLY_ONCE="true", MODSTREAM_TRANSACTIONAL_ID=f"modstream-{group}-0"
    )


def test_exactly_once_flow_one_verdict_per_post(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    records = mixed_posts(1000, 5, "x", judged_share=0.2)
    records += [(f"xbad-{i}".encode(), b"not json") for i in range(20)]
    produced = produce(broker.bootstrap_servers, "posts", records)
    worker = spawn_worker(eos_env(broker, sims, "g-eos"))
    wait_for(lambda: all_committed(broker.bootstrap_servers, "g-eos", "posts", produced.last_offsets, 4), 120, "done")
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()[-3000:]
    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", 1000))
    assert set(verdicts) == {f"x-{i}" for i in range(1000)}
    assert all(len(v) == 1 for v in verdicts.values()), "a clean exactly-once run publishes each verdict once"
    assert len(dlq_by_key(read_topic(broker.bootstrap_servers, "dlq", 20))) == 20
    assert "transaction_failed" not in worker.log()


def test_exactly_once_sigkill_mid_transaction_then_restart_loses_nothing(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    n = 3000
    produced = produce(broker.bootstrap_servers, "posts", mixed_posts(n, 9, "k", judged_share=0.2))
    env = eos_env(broker, sims, "g-eos-kill")
    first = spawn_worker(env)
    wait_for(lambda: committed_total(broker.bootstrap_servers, "g-eos-kill", "posts", 4) >= n // 3, 120, "progress")
    first.signal(signal.SIGKILL)
    first.wait(10)
    started = time.monotonic()
    second = spawn_worker(env)  # same transactional.id: init_transactions fences the dead one
    wait_for(
        lambda: all_committed(broker.bootstrap_servers, "g-eos-kill", "posts", produced.last_offsets, 4), 180, "done"
    )
    second.signal(signal.SIGTERM)
    assert second.wait(60) == 0, second.log()[-3000:]
    # read_uncommitted: aborted records of the killed transaction show up as duplicates here.
    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", n, timeout_s=60))
    missing = {f"k-{i}" for i in range(n)} - set(verdicts)
    assert not missing, f"{len(missing)} posts lost"
    duplicates = sum(len(v) - 1 for v in verdicts.values())
    took = time.monotonic() - started
    print(f"\nexactly-once crash: {duplicates} duplicates visible to read_uncommitted, restart to done {took:.0f}s")


def read_committed(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"rc-{time.time_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen: list[Message] = []
    deadline = time.monotonic() + timeout_s
    empty = 0
    try:
        while time.monotonic() < deadline and empty < 4:
            batch = [m for m in consumer.consume(100, 0.5) if m.error() is None]
            seen.extend(batch)
            empty = 0 if batch else empty + 1
    finally:
        consumer.close()
    return seen


@pytest.mark.xfail(
    reason="transaction isolation cannot be verified on the brokers available: Tansu shows aborted "
    "transactional records to read_committed consumers (docs/reliability.md); must pass on real Kafka",
    strict=False,
)
def test_read_committed_never_sees_an_aborted_verdict(broker: EmbeddedBroker, topics: dict[str, int]) -> None:
    """What a worker killed mid-transaction leaves behind: its records are in the log (flushed) but
    the transaction never commits (here: aborted, as the next instance's fencing does), while
    another transaction commits after them."""
    bootstrap = broker.bootstrap_servers
    dead = Producer({"bootstrap.servers": bootstrap, "transactional.id": "isolation-dead"})
    live = Producer({"bootstrap.servers": bootstrap, "transactional.id": "isolation-live"})
    dead.init_transactions(30)
    live.init_transactions(30)
    dead.begin_transaction()
    live.begin_transaction()
    dead.produce("dlq", key=b"aborted", value=b"must stay invisible", partition=0)
    assert dead.flush(10) == 0  # written to the log, inside the open transaction
    live.produce("dlq", key=b"committed", value=b"visible", partition=0)
    assert live.flush(10) == 0
    dead.abort_transaction(30)
    live.commit_transaction(30)
    del dead, live  # no client may outlive the broker (they would log refused connections)
    keys = [m.key() for m in read_committed(bootstrap, "dlq")]
    assert b"committed" in keys
    assert b"aborted" not in keys
