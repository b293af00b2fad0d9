"""End-to-end worker throughput on a real broker, against a baseline measured in the same run.

    .venv/bin/python bench/worker_bench.py [--posts 5000] [--candidate-share 0.3]

Baseline: a hand-rolled confluent-kafka loop that consumes the same posts and produces one
record per post with at-least-once commits (what a team would write before adding any
moderation). Then modstream itself (worker process, funnel, simulator judges at speed 0, so
the judge costs only HTTP). Both on embedded Tansu, both timed from first record to last commit.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import worker_env
from tests.kafka_support import WorkerProcess, committed_offsets, post_value, produce, wait_for
from worker.local.broker import EmbeddedBroker, create_topics
from worker.sim.process import SimulatorProcess

PARTITIONS = 4
BENIGN = ["Had a lovely walk by the river", "kill the process and restart", "new recipe for lentil soup"]
VIOLATING = ["crypto giveaway, send 1 BTC get 2 back", "selling aimbot undetected", "paid review 5 stars"]


def make_posts(n: int, candidate_share: float, seed: int = 3) -> list[tuple[bytes | None, bytes | None]]:
    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None]] = []
    for i in range(n):
        text = rng.choice(VIOLATING if rng.random() < candidate_share else BENIGN)
        out.append((f"b-{i}".encode(), post_value(f"b-{i}", f"{text} #{i}")))
    return out


def baseline(bootstrap: str, n: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "baseline",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    consumer.subscribe(["posts"])
    done = 0
    started: float | None = None
    while done < n:
        batch = [m for m in consumer.consume(500, 0.2) if m.error() is None]
        if not batch:
            continue
        started = started or time.perf_counter()
        for msg in batch:
            producer.produce("actions", key=msg.key(), value=b'{"decision":"allow"}')
        producer.flush(30)  # acknowledged before commit: the same guarantee modstream gives
        consumer.commit(asynchronous=False)
        done += len(batch)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return elapsed


def modstream(
    broker: EmbeddedBroker, sims: tuple[SimulatorProcess, SimulatorProcess], produced_last: dict[int, int], log: Path
) -> float:
    worker = WorkerProcess(worker_env(broker, sims, group="bench", MODSTREAM_LOG_LEVEL="warning"), log).start()
    first = time.perf_counter()

    def started() -> bool:
        return any(o > 0 for o in committed_offsets(broker.bootstrap_servers, "bench", "posts", PARTITIONS).values())

    wait_for(started, 120, "first commit", interval_s=0.05)
    first = time.perf_counter()

    def finished() -> bool:
        committed = committed_offsets(broker.bootstrap_servers, "bench", "posts", PARTITIONS)
        return all(committed.get(p) == last + 1 for p, last in produced_last.items())

    wait_for(finished, 600, "all posts committed", interval_s=0.05)
    elapsed = time.perf_counter() - first
    worker.signal(signal.SIGTERM)
    worker.wait(60)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--candidate-share", type=float, default=0.3)
    args = parser.parse_args()
    posts = make_posts(args.posts, args.candidate_share)
    with (
        EmbeddedBroker() as broker,
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-20b", speed=0) as t1,
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-120b", speed=0) as t2,
    ):
        create_topics(
            broker.bootstrap_servers, {"posts": PARTITIONS, "actions": PARTITIONS, "audit": PARTITIONS, "dlq": 1}
        )
        produced = produce(broker.bootstrap_servers, "posts", posts)
        base = baseline(broker.bootstrap_servers, args.posts)
        ours = modstream(broker, (t1, t2), produced.last_offsets, Path("/tmp/modstream-bench-worker.log"))
        calls = t1.stats().get("requests", 0) + t2.stats().get("requests", 0)
    print(f"posts: {args.posts}, judge candidates ~{args.candidate_share:.0%}, partitions {PARTITIONS}")
    print(f"baseline consume->produce->commit : {args.posts / base:8.0f} posts/s")
    print(
        f"modstream (funnel + {calls} judge calls): {args.posts / ours:8.0f} posts/s "
        f"(the baseline is {ours / base:.0f}x faster: its loop does no decoding, funnel or judging)"
    )


if __name__ == "__main__":
    main()
