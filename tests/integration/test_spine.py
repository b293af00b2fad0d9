"""The spine end to end: real Tansu broker, real simulator HTTP judges, the worker as a process."""

from __future__ import annotations

import random
import signal
from collections.abc import Callable

import httpx
import orjson
import pytest

from tests.conftest import POLICIES_DIR, worker_env
from tests.kafka_support import (
    WorkerProcess,
    committed_offsets,
    post_value,
    produce,
    read_topic,
    verdicts_by_id,
    wait_for,
)
from worker.config import Settings
from worker.local.broker import EmbeddedBroker
from worker.policies.files import load_policy_dir
from worker.policies.screening import PolicyRuntime
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

BENIGN = [
    "Had a lovely walk by the river this morning",
    "Does anyone know a good recipe for lentil soup?",
    "kill the process with ctrl-c and restart the server",
    "this patch is sick, great work on the release",
    "Our team won the match last night, so proud",
]
TRIGGERING = [
    "FREE MONEY!!! crypto giveaway, send 1 BTC and get 2 back",
    "selling aimbot and wallhack, undetected, dm me",
    "I will find you and kill you",
    "paid review: 5 stars for anyone who buys, we pay per review",
    "join the group, we hate them all",
]
MALFORMED: list[tuple[str, bytes | None]] = [
    ("invalid_json", b'{"id": "x", "text": '),
    ("invalid_post", b'{"id": "no-text"}'),
    ("invalid_post", b'{"id": "wrong-type", "text": 42}'),
    ("invalid_utf8", b'{"id": "bad-bytes", "text": "\xff\xfe"}'),
    ("empty_value", b""),
]


def make_input(n_valid: int, n_bad: int, seed: int) -> tuple[list[tuple[bytes | None, bytes | None]], dict[str, str]]:
    """Shuffled records; returns them and the expected DLQ error type per bad record key."""
    rng = random.Random(seed)
    records: list[tuple[bytes | None, bytes | None]] = []
    for i in range(n_valid):
        text = rng.choice(TRIGGERING if rng.random() < 0.3 else BENIGN)
        records.append((f"post-{i}".encode(), post_value(f"post-{i}", f"{text} #{i}", author_id=f"u{i % 37}")))
    bad: dict[str, str] = {}
    for i in range(n_bad):
        error_type, value = MALFORMED[i % len(MALFORMED)]
        key = f"bad-{i}"
        bad[key] = error_type
        records.append((key.encode(), value))
    rng.shuffle(records)
    return records, bad


def test_1000_posts_50_malformed_all_accounted_for(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    records, bad = make_input(950, 50, seed=1)
    produced = produce(broker.bootstrap_servers, "posts", records)
    worker = spawn_worker(worker_env(broker, sims, group="g-1000"))

    def all_committed() -> bool:
        committed = committed_offsets(broker.bootstrap_servers, "g-1000", "posts", topics["posts"])
        return all(committed.get(p) == last + 1 for p, last in produced.last_offsets.items())

    wait_for(all_committed, 120, "committed offsets to cover every record")
    # Readiness: assigned and both judges list their model.
    response = httpx.get(f"{worker.metrics_url}/readyz", timeout=5)
    assert response.status_code == 200, response.text
    metrics = httpx.get(f"{worker.metrics_url}/metrics", timeout=5).text
    assert "modstream_verdicts_total" in metrics and "modstream_judge_latency_seconds_bucket" in metrics
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]

    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", 950))
    assert len(verdicts) == 950
    assert all(len(v) == 1 for v in verdicts.values()), "a clean run must not duplicate verdicts"
    assert set(verdicts) == {f"post-{i}" for i in range(950)}
    decisions = {v[0]["decision"] for v in verdicts.values()}
    assert "allow" in decisions and "hide" in decisions
    funnel_only = [v[0] for v in verdicts.values() if v[0]["tier"] == "funnel"]
    assert funnel_only and all(v["decision"] == "allow" and v["results"] == [] for v in funnel_only)
    # Every verdict, funnel-only or judged, names the policy versions and the fit it was screened
    # under (the shipped heads: `funnel_heads` is on by default).
    shipped = load_policy_dir(POLICIES_DIR)
    versions = {p.id: p.version for p in shipped.live}
    fit_id = PolicyRuntime.build(shipped, use_heads=Settings().funnel_heads).fit_id
    assert fit_id is not None
    assert all(v[0]["funnel"]["policy_versions"] == versions for v in verdicts.values())
    assert all(v[0]["funnel"]["fit"] == fit_id for v in verdicts.values())

    dead = read_topic(broker.bootstrap_servers, "dlq", 50)
    assert len(dead) == 50
    original = dict(records)
    for msg in dead:
        headers = {k: v.decode() for k, v in msg.headers() or []}
        key = msg.key().decode()
        assert headers["error.type"] == bad[key], (key, headers)
        assert headers["error.message"]
        assert headers["source.topic"] == "posts"
        assert int(headers["source.partition"]) in range(topics["posts"])
        assert int(headers["source.offset"]) >= 0
        assert msg.value() == original[key.encode()], "DLQ keeps the original bytes untouched"


def test_reasoning_never_reaches_the_actions_topic(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    texts = [f"{TRIGGERING[i % len(TRIGGERING)]} [[sim: confidence=low]] marker{i}" for i in range(40)]
    records: list[tuple[bytes | None, bytes | None]] = [
        (f"r-{i}".encode(), post_value(f"r-{i}", text)) for i, text in enumerate(texts)
    ]
    produce(broker.bootstrap_servers, "posts", records)
    worker = spawn_worker(worker_env(broker, sims, group="g-cot"))
    actions = read_topic(broker.bootstrap_servers, "actions", 40, timeout_s=90)
    judged = [m for m in actions if orjson.loads(m.value())["tier"] != "funnel"]
    audit = read_topic(broker.bootstrap_servers, "audit", len(judged), timeout_s=30)
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert len(actions) == 40 and len(judged) >= 24
    assert sorted(m.key() for m in audit) == sorted(m.key() for m in judged), "one audit record per judged post"
    reasonings = [
        call["reasoning"] for msg in audit for call in orjson.loads(msg.value())["calls"] if call["reasoning"]
    ]
    assert len(reasonings) >= len(judged), "the simulator always reasons; the audit topic must keep it"
    assert any(c["tier"] == "t2" for msg in audit for c in orjson.loads(msg.value())["calls"]), (
        "low confidence escalates"
    )
    for msg in actions:
        raw = msg.value().decode()
        verdict = orjson.loads(raw)
        assert '"reasoning":' not in raw and '"messages":' not in raw
        for reasoning in reasonings:
            assert reasoning not in raw
        assert not any(field in verdict for field in ("reasoning", "reasoning_content", "request", "calls"))
