"""Judge faults: 10% 5xx, 5% timeouts, 5% invalid JSON and 2% truncated answers over 5,000
judged posts, plus a 20 s total judge outage in the middle. Nothing is lost: every post ends in
a verdict (allow/hide/review) or a DLQ record with a reason; the outage pauses consumption and
the same worker process recovers by itself."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import worker_env
from tests.kafka_support import (
    WorkerProcess,
    all_committed,
    committed_total,
    dlq_by_key,
    metrics,
    mixed_posts,
    post_value,
    produce,
    read_topic,
    readyz,
    verdicts_by_id,
    wait_for,
)
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

N_POSTS = 5000
N_POISON = 5
MAX_IN_FLIGHT = 256
OUTAGE_S = 20.0
FAULTS = {
    "fail_5xx_rate": 0.10,
    "timeout_rate": 0.05,
    "invalid_json_rate": 0.05,
    "truncate_rate": 0.02,
    "timeout_hold_s": 1.0,
    "timeout_then": "drop",
}


@pytest.fixture
def faulty_sims() -> Iterator[tuple[SimulatorProcess, SimulatorProcess]]:
    with (
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-20b", seed=31, speed=0.2, **FAULTS) as t1,
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-120b", seed=32, speed=0.2, **FAULTS) as t2,
    ):
        yield t1, t2


def test_5000_posts_under_judge_faults_and_a_20s_outage(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    faulty_sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    t1, t2 = faulty_sims
    records = mixed_posts(N_POSTS, 7, "f", judged_share=1.0)
    # Poison for the judge: every call about these hangs past the HTTP timeout, while other posts
    # get answers. The per-post deadline sends them to the DLQ instead of retrying forever.
    poison = [f"poison-{i}" for i in range(N_POISON)]
    records += [
        (pid.encode(), post_value(pid, f"selling aimbot [[sim: delay_ms=30000 fault=none]] {pid}")) for pid in poison
    ]
    produced = produce(broker.bootstrap_servers, "posts", records)
    env = worker_env(
        broker,
        faulty_sims,
        group="g-faults",
        MODSTREAM_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
        MODSTREAM_JUDGE_T1__TIMEOUT_S="10",
        MODSTREAM_JUDGE_T2__TIMEOUT_S="10",
        MODSTREAM_JUDGE_T1__BREAKER_COOLDOWN_S="2",
        MODSTREAM_JUDGE_T2__BREAKER_COOLDOWN_S="2",
        MODSTREAM_RECORD_DEADLINE_S="30",
        # Poison posts straight to the DLQ, as this test is about: the retry topic has tests/integration/test_retry.py.
        MODSTREAM_RETRY_MAX_ATTEMPTS="1",
    )
    started = time.monotonic()
    worker = spawn_worker(env)
    assert worker.process is not None
    pid = worker.process.pid
    wait_for(
        lambda: committed_total(broker.bootstrap_servers, "g-faults", "posts", 4) >= N_POSTS * 0.3,
        300,
        "30% of the posts committed before the outage",
        interval_s=0.5,
    )

    before_outage = time.monotonic() - started
    # ---- total outage of both judge tiers for 20 s ----
    t1.set_faults(outage=True)
    t2.set_faults(outage=True)
    outage_started = time.monotonic()
    wait_for(lambda: readyz(worker) == 503, 15, "readiness to report the judges down")
    # Consumption pauses: once the in-flight cap is reached, nothing more is read.
    wait_for(lambda: metrics(worker).get("modstream_paused_partitions", 0) >= 4, 15, "all partitions paused")
    consumed_mid = metrics(worker)["modstream_records_consumed_total"]
    committed_mid = committed_total(broker.bootstrap_servers, "g-faults", "posts", 4)
    remaining = OUTAGE_S - (time.monotonic() - outage_started)
    wait_for(lambda: time.monotonic() - outage_started >= OUTAGE_S, remaining + 1, "the outage window to pass")
    during = metrics(worker)
    t1.set_faults(outage=False)
    t2.set_faults(outage=False)
    assert during["modstream_records_consumed_total"] - consumed_mid <= MAX_IN_FLIGHT, "consumption did not pause"
    assert committed_total(broker.bootstrap_servers, "g-faults", "posts", 4) == committed_mid, "nothing judged"
    assert during["modstream_in_flight_high_water"] <= MAX_IN_FLIGHT
    assert worker.alive() and worker.process.pid == pid

    wait_for(
        lambda: (
            not worker.alive() or all_committed(broker.bootstrap_servers, "g-faults", "posts", produced.last_offsets, 4)
        ),
        400,
        "every record committed after the outage",
        interval_s=0.5,
    )
    elapsed = time.monotonic() - started
    exited = worker.process.poll()
    assert exited is None, f"the worker exited ({exited}) after the outage: {worker.log()[-3000:]}"
    assert worker.process.pid == pid, "recovered without a restart"
    assert worker.log().count('"event": "worker_started"') == 1
    assert readyz(worker) == 200
    final = metrics(worker)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()[-3000:]

    stats = t1.stats()
    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", N_POSTS, timeout_s=120))
    dead = dlq_by_key(read_topic(broker.bootstrap_servers, "dlq", N_POISON, timeout_s=60))
    ids = {f"f-{i}" for i in range(N_POSTS)} | set(poison)
    dead_ids = {k.decode() for k in dead if k is not None}
    lost = ids - set(verdicts) - dead_ids
    assert not lost, f"{len(lost)} posts have neither a verdict nor a DLQ record: {sorted(lost)[:5]}"
    assert all(v["decision"] in ("allow", "hide", "review") for vs in verdicts.values() for v in vs)
    assert all(h["error.type"] and h["error.message"] for hs in dead.values() for h in hs)
    assert set(poison) <= dead_ids and all(dead[p.encode()][0]["error.type"] == "deadline_exceeded" for p in poison)
    decisions = {d: sum(1 for vs in verdicts.values() if vs[0]["decision"] == d) for d in ("allow", "hide", "review")}
    print(
        f"\njudge faults: {len(verdicts)} posts with verdicts {decisions}, {len(dead_ids)} in the DLQ "
        f"({sorted({h['error.type'] for hs in dead.values() for h in hs})}), t1 faults {stats['by_fault']}, "
        f"judge retries {final.get('modstream_judge_retries_total', 0):.0f}, {elapsed:.0f}s "
        f"(outage began at {before_outage:.0f}s)"
    )
    assert sum(stats["by_fault"].values()) > N_POSTS * 0.1, "the faults were injected"
