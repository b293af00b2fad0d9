"""Real-broker helpers for integration tests: produce posts, read topics back, run the worker
as a real process (so it can be SIGTERMed and SIGKILLed), wait on conditions with deadlines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from worker.local.broker import free_port

# Tansu's group join waits session.timeout.ms/2: keep it short in tests (docs/reliability.md).
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class Produced:
    """What the test published: keys/values in order and the highest offset per partition."""

    ids: list[str] = field(default_factory=list)
    last_offsets: dict[int, int] = field(default_factory=dict)
    count: int = 0


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]]) -> Produced:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    produced = Produced()
    errors: list[str] = []

    def on_delivery(err: Any, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))
            return
        partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
        produced.last_offsets[partition] = max(offset, produced.last_offsets.get(partition, -1))

    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        produced.count += 1
        producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0 and not errors, f"producing test input failed: {remaining} left, errors {errors[:3]}"
    return produced


def post_value(post_id: str, text: str, **extra: Any) -> bytes:
    return orjson.dumps({"id": post_id, "text": text, **extra})


def read_topic(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 60.0,
    settle_polls: int = 2,
    producer_alive: Callable[[], bool] | None = None,
) -> list[Message]:
    """Read a whole topic from the beginning: until `expected` records arrived (deadline), then
    a couple more polls to catch extras (duplicates) that would break an exact count.
    `producer_alive` (e.g. `worker.alive`) ends the wait early if what should write is gone."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    # assign(), not subscribe(): no group join (Tansu makes joins wait session.timeout.ms/2).
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen: list[Message] = []
    deadline = time.monotonic() + timeout_s
    empty_polls = 0
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(1000, 0.5) if m.error() is None]
            seen.extend(batch)
            if not batch and len(seen) < expected and producer_alive is not None and not producer_alive():
                break
            if len(seen) >= expected:
                empty_polls = 0 if batch else empty_polls + 1
                if empty_polls >= settle_polls:
                    break
    finally:
        consumer.close()
    return seen


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def verdicts_by_id(messages: list[Message]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for msg in messages:
        verdict = orjson.loads(msg.value())
        assert msg.key() == verdict["post_id"].encode(), "verdict key must be the post id"
        out.setdefault(verdict["post_id"], []).append(verdict)
    return out


class WorkerProcess:
    """`modstream run` as a child process, configured through MODSTREAM_* env vars."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env, "MODSTREAM_LOG_FORMAT": "json"}
        self.env.setdefault("MODSTREAM_METRICS_PORT", str(free_port()))
        self.env.setdefault("MODSTREAM_METRICS_HOST", "127.0.0.1")
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['MODSTREAM_METRICS_PORT']}"

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
            )
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# ---- reliability test support (docs/reliability.md) -----------------------------------------


class MockKafkaCluster:
    """librdkafka's mock cluster in its own process (tests/mock_cluster.py): a second, independent
    broker implementation whose brokers can be taken down and brought back with their data."""

    def __init__(self, brokers: int = 3, log_path: Path | None = None) -> None:
        self.brokers = brokers
        self.log_path = log_path
        self.process: subprocess.Popen[str] | None = None
        self.bootstrap_servers = ""

    def __enter__(self) -> MockKafkaCluster:
        err = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.mock_cluster", str(self.brokers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=PROJECT_ROOT,
        )
        self.bootstrap_servers = self._reply()
        return self

    def _reply(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"mock cluster exited ({self.process.poll()})")
        return line

    def command(self, text: str) -> str:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        reply = self._reply()
        assert reply.startswith("ok"), reply
        return reply

    def create_topics(self, topics: dict[str, int]) -> None:
        for name, partitions in topics.items():
            self.command(f"topic {name} {partitions}")

    def down(self) -> None:
        self.command("down")

    def up(self) -> None:
        self.command("up")

    def fail_produce(self, error_code: int, count: int) -> None:
        self.command(f"produce_error {error_code} {count}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def metrics(worker: WorkerProcess) -> dict[str, float]:
    """The worker's Prometheus metrics, each name summed over its labels ({} if unreachable)."""
    import httpx

    try:
        text = httpx.get(f"{worker.metrics_url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def readyz(worker: WorkerProcess) -> int:
    """HTTP status of the worker's /readyz (0 if unreachable)."""
    import httpx

    try:
        return httpx.get(f"{worker.metrics_url}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    return sum(max(o, 0) for o in committed_offsets(bootstrap, group, topic, partitions).values())


def all_committed(bootstrap: str, group: str, topic: str, last_offsets: dict[int, int], partitions: int) -> bool:
    committed = committed_offsets(bootstrap, group, topic, partitions)
    return all(committed.get(p) == last + 1 for p, last in last_offsets.items())


def dlq_by_key(messages: list[Message]) -> dict[bytes | None, list[dict[str, str]]]:
    out: dict[bytes | None, list[dict[str, str]]] = {}
    for msg in messages:
        headers = {k: v.decode(errors="replace") for k, v in msg.headers() or []}
        out.setdefault(msg.key(), []).append(headers)
    return out


BENIGN_TEXTS = [
    "Had a lovely walk by the river this morning",
    "Does anyone know a good recipe for lentil soup?",
    "kill the process with ctrl-c and restart the server",
    "Our team won the match last night, so proud",
    "New blog post about sourdough starters is up",
]
TRIGGERING_TEXTS = [
    "FREE MONEY!!! crypto giveaway, send 1 BTC and get 2 back",
    "selling aimbot and wallhack, undetected, dm me",
    "I will find you and kill you",
    "paid review: 5 stars for anyone who buys, we pay per review",
]


def mixed_posts(
    n: int, seed: int, prefix: str, judged_share: float = 0.05, suffix: str = ""
) -> list[tuple[bytes | None, bytes | None]]:
    """`n` valid posts with unique ids `{prefix}-{i}`: mostly benign, a seeded share of judge
    candidates (real judge calls through the simulator). The benign texts get funnel verdicts with
    today's scoring (`MODSTREAM_FUNNEL_HEADS=false`); with the shipped heads, the default, many of
    them are judge candidates too."""
    import random

    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None]] = []
    for i in range(n):
        pool = TRIGGERING_TEXTS if rng.random() < judged_share else BENIGN_TEXTS
        post_id = f"{prefix}-{i}"
        out.append((post_id.encode(), post_value(post_id, f"{rng.choice(pool)}{suffix} #{i}")))
    return out


def metric_samples(worker: WorkerProcess, name: str) -> list[tuple[str, float]]:
    """Every sample of one metric as (label text, value); [] if unreachable."""
    import httpx

    try:
        text = httpx.get(f"{worker.metrics_url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return []
    out: list[tuple[str, float]] = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            name_labels, _, value = line.rpartition(" ")
            out.append((name_labels[len(name) :], float(value)))
    return out


@contextmanager
def running_in_thread(service: Callable[[threading.Event], None], what: str) -> Iterator[None]:
    """`service(stop)` on a daemon thread for the with-block (a consumer service under test: its own
    consumer, its own store connection); on exit `stop` is set, the thread joined, and a failure of
    the service fails the test."""
    stop = threading.Event()
    failed: list[BaseException] = []

    def target() -> None:
        try:
            service(stop)
        except BaseException as exc:
            failed.append(exc)
            raise

    thread = threading.Thread(target=target, name=what, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), f"{what} did not stop"
        assert not failed, f"{what} failed: {failed}"
