"""Stopping the worker, gently (SIGTERM) and not (SIGKILL), mid-stream: nothing is lost."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from tests.conftest import worker_env
from tests.judges_support import metric, scrape
from tests.kafka_support import (
    WorkerProcess,
    committed_offsets,
    post_value,
    produce,
    read_topic,
    verdicts_by_id,
    wait_for,
)
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

N_POSTS = 2000
# Every post is a judge candidate and each judge call holds ~20 ms, so the run takes a while
# and a stop lands mid-stream.
TEXT = "crypto giveaway free money scam [[sim: delay_ms=20]] #"


def verdict_count(worker: WorkerProcess) -> float:
    return metric(scrape(worker.metrics_url), "modstream_verdicts_total")


def all_committed(broker: EmbeddedBroker, group: str, last_offsets: dict[int, int]) -> Callable[[], bool]:
    def check() -> bool:
        committed = committed_offsets(broker.bootstrap_servers, group, "posts", 4)
        return all(committed.get(p) == last + 1 for p, last in last_offsets.items())

    return check


def test_sigkill_mid_stream_then_restart_loses_nothing(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    produced = produce(
        broker.bootstrap_servers,
        "posts",
        ((f"k-{i}".encode(), post_value(f"k-{i}", f"{TEXT}{i}")) for i in range(N_POSTS)),
    )
    env = worker_env(broker, sims, group="g-kill", MODSTREAM_MAX_IN_FLIGHT="64")
    first = spawn_worker(env)
    wait_for(lambda: verdict_count(first) >= 300, 120, "some verdicts before the kill")
    first.signal(signal.SIGKILL)
    first.wait(10)
    # The dead worker's last commit: only records at or after it may be judged again.
    last_commit = {p: max(o, 0) for p, o in committed_offsets(broker.bootstrap_servers, "g-kill", "posts", 4).items()}
    replayable = sum(last + 1 - last_commit.get(p, 0) for p, last in produced.last_offsets.items())
    assert replayable < N_POSTS, "the first worker committed nothing before it was killed"

    second = spawn_worker(env)
    wait_for(all_committed(broker, "g-kill", produced.last_offsets), 180, "the restarted worker to finish")
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0

    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", N_POSTS, timeout_s=60))
    assert set(verdicts) == {f"k-{i}" for i in range(N_POSTS)}, "every valid post has a verdict"
    duplicates = sum(len(v) - 1 for v in verdicts.values())
    assert duplicates <= replayable, f"{duplicates} duplicates, but only {replayable} records were after the commit"
    before_commit = [
        post_id
        for post_id, copies in verdicts.items()
        if len(copies) > 1 and copies[0]["source"]["offset"] < last_commit.get(copies[0]["source"]["partition"], 0)
    ]
    assert not before_commit, f"duplicates of records before the last commit: {before_commit[:5]}"
    print(f"SIGKILL test: {duplicates} duplicate verdicts (bound {replayable})")


def test_sigterm_under_load_exits_0_in_time_and_loses_nothing(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    produced = produce(
        broker.bootstrap_servers,
        "posts",
        ((f"t-{i}".encode(), post_value(f"t-{i}", f"{TEXT}{i}")) for i in range(N_POSTS)),
    )
    drain_timeout_s = 10
    env = worker_env(
        broker, sims, group="g-term", MODSTREAM_MAX_IN_FLIGHT="64", MODSTREAM_DRAIN_TIMEOUT_S=str(drain_timeout_s)
    )
    first = spawn_worker(env)
    wait_for(lambda: verdict_count(first) >= 300, 120, "some verdicts before SIGTERM")
    first.signal(signal.SIGTERM)
    # A deadline on the exit, not a timing assertion: the drain ends by itself (drain_timeout_s).
    assert first.wait(drain_timeout_s + 20) == 0, first.log()[-3000:]
    assert '"event": "worker_stopped"' in first.log()
    committed = committed_offsets(broker.bootstrap_servers, "g-term", "posts", 4)
    assert sum(max(o, 0) for o in committed.values()) >= 300, "the drain must commit what finished"

    second = spawn_worker(env)
    wait_for(all_committed(broker, "g-term", produced.last_offsets), 180, "the restarted worker to finish")
    second.signal(signal.SIGTERM)
    assert second.wait(30) == 0
    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", N_POSTS, timeout_s=60))
    assert set(verdicts) == {f"t-{i}" for i in range(N_POSTS)}
    duplicates = sum(len(v) - 1 for v in verdicts.values())
    # A graceful stop commits everything that finished: replays are only posts abandoned at the deadline.
    assert duplicates <= 64, f"{duplicates} duplicates after a graceful stop (in-flight cap is 64)"


def test_a_draining_worker_still_answers_rebalances(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    """After SIGTERM the worker drains with every partition paused but keeps polling, so a worker
    joining meanwhile is assigned partitions while the drain still runs. Here the judges never
    answer in time, so without that polling the newcomer would wait out the whole drain."""
    hanging = "crypto giveaway free money scam [[sim: delay_ms=3600000]] #"
    produce(
        broker.bootstrap_servers,
        "posts",
        ((f"d-{i}".encode(), post_value(f"d-{i}", f"{hanging}{i}")) for i in range(40)),
    )
    env = worker_env(broker, sims, group="g-drain", MODSTREAM_DRAIN_TIMEOUT_S="900", MODSTREAM_REBALANCE_TIMEOUT_S="1")
    leaving = spawn_worker(env)
    in_flight = "modstream_in_flight_posts"
    wait_for(lambda: metric(scrape(leaving.metrics_url), in_flight) >= 40, 120, "every post in flight")
    leaving.signal(signal.SIGTERM)
    wait_for(lambda: '"event": "draining"' in leaving.log(), 60, "the drain to start")
    joining = spawn_worker(env)
    wait_for(
        lambda: (
            metric(scrape(joining.metrics_url), "modstream_rebalances_total", event="assigned") > 0
            or not leaving.alive()
        ),
        120,
        "partitions for the newcomer (or the leaver's exit)",
    )
    assert leaving.alive(), "the newcomer got no partition until the draining worker had left"
    assert '"event": "worker_stopped"' not in leaving.log()
    revoked = metric(scrape(leaving.metrics_url), "modstream_rebalances_total", event="revoked")
    assert revoked > 0, "the draining worker handed partitions over"
