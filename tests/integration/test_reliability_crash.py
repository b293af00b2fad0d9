"""Crash test: 20,000 posts, the worker SIGKILLed at 5 seeded random moments and restarted each
time. Every valid post ends with at least one verdict, every bad record in the DLQ; the number
of duplicate verdicts (replays of uncommitted work) is reported."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable

import pytest

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

N_POSTS = 20_000
N_BAD = 200
KILLS = 5
SEED = 20261122
MAX_IN_FLIGHT = 256


def test_20000_posts_5_sigkills_nothing_lost(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    rng = random.Random(SEED)
    records = mixed_posts(N_POSTS, SEED, "c")
    bad = {f"bad-{i}".encode(): b'{"id": "bad", "text": ' for i in range(N_BAD)}
    records.extend(bad.items())
    rng.shuffle(records)
    produced = produce(broker.bootstrap_servers, "posts", records)
    total = len(records)
    # Five moments, as fractions of the committed input, at least 8% apart.
    moments: list[float] = []
    while len(moments) < KILLS:
        candidate = rng.uniform(0.05, 0.9)
        if all(abs(candidate - m) >= 0.08 for m in moments):
            moments.append(candidate)
    moments.sort()

    env = worker_env(broker, sims, group="g-crash", MODSTREAM_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT))
    started = time.monotonic()
    worker = spawn_worker(env)
    progress_at_kill: list[int] = []
    for moment in moments:
        target = int(moment * total)
        wait_for(
            lambda t=target: committed_total(broker.bootstrap_servers, "g-crash", "posts", 4) >= t,  # type: ignore[misc]
            240,
            f"{target} committed records before a kill",
            interval_s=0.2,
        )
        progress_at_kill.append(committed_total(broker.bootstrap_servers, "g-crash", "posts", 4))
        worker.signal(signal.SIGKILL)
        worker.wait(10)
        worker = spawn_worker(env)

    wait_for(
        lambda: all_committed(broker.bootstrap_servers, "g-crash", "posts", produced.last_offsets, 4),
        300,
        "the last worker to commit every record",
        interval_s=0.5,
    )
    elapsed = time.monotonic() - started
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()[-3000:]

    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", N_POSTS, timeout_s=120))
    missing = {f"c-{i}" for i in range(N_POSTS)} - set(verdicts)
    assert not missing, f"{len(missing)} valid posts have no verdict, e.g. {sorted(missing)[:5]}"
    duplicates = sum(len(v) - 1 for v in verdicts.values())
    dead = dlq_by_key(read_topic(broker.bootstrap_servers, "dlq", N_BAD, timeout_s=60))
    assert set(bad) <= set(dead), "every bad record is in the DLQ"
    assert all(h["error.type"] == "invalid_json" for hs in dead.values() for h in hs)
    # Replays after a kill are the records consumed but not committed: at most the in-flight cap
    # plus what finished since the last commit (commit interval 0.2 s). A loose bound, reported.
    bound = KILLS * 2 * MAX_IN_FLIGHT
    print(
        f"\ncrash test: {N_POSTS} posts + {N_BAD} bad, {KILLS} SIGKILLs at committed "
        f"{progress_at_kill}, {duplicates} duplicate verdicts (bound {bound}), "
        f"{sum(len(h) for h in dead.values()) - N_BAD} duplicate DLQ records, {elapsed:.0f}s"
    )
    assert duplicates <= bound
