"""Backpressure: a backlog of large posts is available at once (input rate unbounded) while the
judge serves ~40 posts/s, far more than 100x slower than the input. The worker holds at most
`max_in_flight` posts (and `max_in_flight_per_partition` per partition), pauses partitions at
the cap, and its memory stays under the stated bound: RSS after warm-up + 128 MiB (the backlog is
160 MB of post text: buffering it would break the bound several times over)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import worker_env
from tests.kafka_support import (
    WorkerProcess,
    metric_samples,
    metrics,
    post_value,
    produce,
    readyz,
    rss_bytes,
    wait_for,
)
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

N_POSTS = 8000
POST_BYTES = 20_000
MAX_IN_FLIGHT = 64
PER_PARTITION = 24
OBSERVE_S = 25.0
MIN_SAMPLES = 21
RSS_GROWTH_BOUND = 128 * 1024 * 1024


@pytest.fixture
def slow_sims() -> Iterator[tuple[SimulatorProcess, SimulatorProcess]]:
    # 8 requests at a time, each held 200 ms: ~40 judged posts/s at best.
    with (
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-20b", seed=41, speed=0.2, max_num_seqs=8) as t1,
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-120b", seed=42, speed=0.2, max_num_seqs=8) as t2,
    ):
        yield t1, t2


def test_slow_judge_bounded_in_flight_and_memory(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    slow_sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    t1, _ = slow_sims
    env = worker_env(
        broker,
        slow_sims,
        group="g-bp",
        MODSTREAM_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT),
        MODSTREAM_MAX_IN_FLIGHT_PER_PARTITION=str(PER_PARTITION),
        MODSTREAM_DRAIN_TIMEOUT_S="5",
    )
    worker = spawn_worker(env)
    assert worker.process is not None
    wait_for(lambda: readyz(worker) == 200, 60, "the worker to be assigned and ready")
    # Warm up (first funnel and judge calls load lazily), then take the baseline.
    warm_up = [(f"w-{i}".encode(), post_value(f"w-{i}", "warm up")) for i in range(20)]
    produce(broker.bootstrap_servers, "posts", warm_up)
    wait_for(lambda: metrics(worker).get("modstream_verdicts_total", 0) >= 20, 60, "the warm-up verdicts")
    idle_rss = rss_bytes(worker.process.pid)

    padding = "lorem ipsum dolor sit amet " * (POST_BYTES // 27)
    produce_started = time.monotonic()
    produce(
        broker.bootstrap_servers,
        "posts",
        (
            (f"bp-{i}".encode(), post_value(f"bp-{i}", f"selling aimbot [[sim: delay_ms=200]] {padding} #{i}"))
            for i in range(N_POSTS)
        ),
    )
    input_rate = N_POSTS / (time.monotonic() - produce_started)  # reported, not asserted
    judged_while_producing = metrics(worker).get("modstream_verdicts_total", 0) - 20

    peak_rss, peak_in_flight, peak_partition, peak_judge = idle_rss, 0.0, 0.0, 0
    paused_seen = 0.0
    samples = 0
    observe_started = time.monotonic()
    deadline = observe_started + OBSERVE_S
    # Sampling, not synchronisation: each pass reads live state. At least OBSERVE_S and at least
    # MIN_SAMPLES passes (a loaded machine makes a pass slower; the count must not depend on that).
    hang_guard = observe_started + 8 * OBSERVE_S
    while (time.monotonic() < deadline or samples < MIN_SAMPLES) and time.monotonic() < hang_guard:
        m = metrics(worker)
        if m:
            samples += 1
            peak_in_flight = max(peak_in_flight, m.get("modstream_in_flight_posts", 0))
            paused_seen = max(paused_seen, m.get("modstream_paused_partitions", 0))
            per_partition = metric_samples(worker, "modstream_partition_in_flight")
            peak_partition = max([peak_partition, *(v for _, v in per_partition)])
        stats = t1.stats()
        peak_judge = max(peak_judge, stats["running"] + stats["waiting"])
        peak_rss = max(peak_rss, rss_bytes(worker.process.pid))
        time.sleep(0.25)  # the sampling period
    final = metrics(worker)
    verdicts = final.get("modstream_verdicts_total", 0) - 20
    judge_rate = verdicts / (time.monotonic() - observe_started)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()[-3000:]

    print(
        f"\nbackpressure: input {input_rate:.0f} posts/s (a backlog of {N_POSTS} x {POST_BYTES // 1000} kB), "
        f"judged {judge_rate:.0f} posts/s ({input_rate / max(judge_rate, 0.1):.0f}x slower); "
        f"in-flight peak {peak_in_flight:.0f} (high-water {final['modstream_in_flight_high_water']:.0f}, "
        f"cap {MAX_IN_FLIGHT}), partition peak {peak_partition:.0f} (cap {PER_PARTITION}), judge queue peak "
        f"{peak_judge}; RSS idle {idle_rss / 2**20:.0f} MiB, peak {peak_rss / 2**20:.0f} MiB "
        f"(bound {(idle_rss + RSS_GROWTH_BOUND) / 2**20:.0f} MiB); {samples} samples; "
        f"{judged_while_producing:.0f} verdicts while producing"
    )
    assert samples >= MIN_SAMPLES
    # The input outran the judge 100x (counts, not rates: under load both slow down): the whole
    # backlog was on the topic before the judge had answered 1 % of it.
    assert judged_while_producing <= N_POSTS // 100, f"{judged_while_producing} verdicts while producing"
    assert final["modstream_in_flight_high_water"] <= MAX_IN_FLIGHT
    assert peak_in_flight <= MAX_IN_FLIGHT and peak_judge <= MAX_IN_FLIGHT
    assert peak_partition <= PER_PARTITION
    assert paused_seen >= 1, "partitions must be paused at the cap"
    consumed = final["modstream_records_consumed_total"]
    assert consumed <= final["modstream_verdicts_total"] + MAX_IN_FLIGHT, "consumed far ahead of the verdicts"
    assert peak_rss <= idle_rss + RSS_GROWTH_BOUND, f"RSS grew {(peak_rss - idle_rss) / 2**20:.0f} MiB"
