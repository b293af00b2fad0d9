"""Broker outage: every broker of the cluster goes down for 15 s mid-run and comes back. The worker
stays up, reports not-ready meanwhile, recovers by itself, and nothing the broker acknowledged
(input posts, verdicts, committed offsets) is lost. Then the broker rejects the worker's
idempotent producer state (the error a broker that lost its producer state answers) while more
posts arrive, and the worker recreates its producer and carries on.

Broker: librdkafka's mock cluster in its own process (tests/mock_cluster.py), not Tansu: Tansu is
memory-only, so a restart would erase the very data whose survival this test checks (see
docs/reliability.md, "Why the mock cluster for the outage test")."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from tests.conftest import worker_env
from tests.kafka_support import (
    MockKafkaCluster,
    WorkerProcess,
    all_committed,
    committed_offsets,
    committed_total,
    metrics,
    mixed_posts,
    produce,
    read_topic,
    readyz,
    verdicts_by_id,
    wait_for,
)
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

N_POSTS = 4000
N_AFTER = 1000
OUTAGE_S = 15.0
SLOW_JUDGE = " [[sim: delay_ms=300]]"


@pytest.fixture
def mock_cluster(tmp_path: Path) -> Iterator[MockKafkaCluster]:
    with MockKafkaCluster(brokers=3, log_path=tmp_path / "mock-cluster.log") as cluster:
        cluster.create_topics({"posts": 4, "actions": 4, "audit": 4, "dlq": 1})
        yield cluster


def test_15s_total_broker_outage_then_a_fenced_producer(
    mock_cluster: MockKafkaCluster,
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    bootstrap = mock_cluster.bootstrap_servers
    # 30 % judged at 300 ms each keeps the worker busy for a while: the outage hits mid-run.
    produced = produce(bootstrap, "posts", mixed_posts(N_POSTS, 3, "b", judged_share=0.3, suffix=SLOW_JUDGE))
    env = worker_env(mock_cluster, sims, group="g-outage", MODSTREAM_PRODUCER_STALL_S="20")  # type: ignore[arg-type]
    started = time.monotonic()
    worker = spawn_worker(env)
    assert worker.process is not None
    pid = worker.process.pid
    wait_for(lambda: committed_total(bootstrap, "g-outage", "posts", 4) >= N_POSTS * 0.25, 180, "25% committed")
    wait_for(lambda: readyz(worker) == 200, 30, "ready before the outage")

    # What the broker has acknowledged before the outage must all be there after it.
    acked_verdicts = {m.key() for m in read_topic(bootstrap, "actions", 0, timeout_s=5)}
    committed_before = committed_offsets(bootstrap, "g-outage", "posts", 4)
    assert acked_verdicts, "some verdicts were acknowledged before the outage"

    mock_cluster.down()
    down_at = time.monotonic()
    wait_for(lambda: readyz(worker) == 503, OUTAGE_S - 2, "readiness to report the broker outage")
    assert worker.alive()
    wait_for(lambda: time.monotonic() - down_at >= OUTAGE_S, OUTAGE_S + 1, "the outage window to pass")
    assert worker.alive() and worker.process.pid == pid, "the worker must not exit on a broker outage"
    mock_cluster.up()
    wait_for(lambda: readyz(worker) == 200, 90, "readiness to recover after the outage")

    # A broker that lost its producer state rejects the idempotent producer's sequence numbers
    # (librdkafka makes that a fatal error): the worker recreates its producer.
    # More posts arrive after the outage (all judged: seconds of work), so the worker has verdicts
    # to produce into that error even if it had finished the first batch. (The injected error hits
    # any producer, so the test publishes first.)
    later = produce(bootstrap, "posts", mixed_posts(N_AFTER, 4, "c", judged_share=1.0, suffix=SLOW_JUDGE))
    mock_cluster.fail_produce(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, 3)
    last_offsets = {p: max(o, later.last_offsets.get(p, -1)) for p, o in produced.last_offsets.items()}
    wait_for(
        lambda: all_committed(bootstrap, "g-outage", "posts", last_offsets, 4),
        240,
        "every record committed after the outage",
        interval_s=0.5,
    )
    elapsed = time.monotonic() - started
    after = metrics(worker)
    assert worker.alive() and worker.process.pid == pid, "recovered without a restart"
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()[-3000:]

    committed_after = committed_offsets(bootstrap, "g-outage", "posts", 4)
    assert all(committed_after[p] >= o for p, o in committed_before.items()), "commits never go backwards"
    verdicts = verdicts_by_id(read_topic(bootstrap, "actions", N_POSTS + N_AFTER, timeout_s=120))
    assert acked_verdicts <= {k.encode() for k in verdicts}, "an acknowledged verdict was lost"
    missing = ({f"b-{i}" for i in range(N_POSTS)} | {f"c-{i}" for i in range(N_AFTER)}) - set(verdicts)
    assert not missing, f"{len(missing)} posts without a verdict, e.g. {sorted(missing)[:5]}"
    log = worker.log()
    restarts = after.get("modstream_kafka_client_restarts_total", 0)
    duplicates = sum(len(v) - 1 for v in verdicts.values())
    print(
        f"\nbroker outage: {N_POSTS}+{N_AFTER} posts, {OUTAGE_S:.0f}s outage, "
        f"{len(acked_verdicts)} verdicts acked before it all kept, {duplicates} duplicates, "
        f"producer restarts {restarts:.0f}, "
        f"lost partitions {log.count('partitions_lost')}, {elapsed:.0f}s"
    )
    assert '"event": "producer_restarted"' in log and restarts >= 1
