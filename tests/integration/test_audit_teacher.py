"""The judge as teacher end to end: a worker's audit records through a real broker, exported by
`modstream audit export` for a time range, turned into labelled posts by `funnel fit --from-audit`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from tests.conftest import POLICIES_DIR, worker_env
from tests.kafka_support import WorkerProcess, post_value, produce, read_topic
from worker.cli.main import cli
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

TEXTS = [
    "Had a lovely walk by the river this morning",
    "FREE MONEY!!! crypto giveaway, send 1 BTC and get 2 back",
    "selling aimbot and wallhack, undetected, dm me",
    "Does anyone know a good recipe for lentil soup?",
    "paid review: 5 stars for anyone who buys, we pay per review",
]


def test_audit_export_then_fit_from_audit(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bootstrap = broker.bootstrap_servers
    posts = [(f"t-{i}".encode(), post_value(f"t-{i}", f"{TEXTS[i % len(TEXTS)]} #{i}")) for i in range(60)]
    produce(bootstrap, "posts", posts)
    # Bypass sample everything: every post is judged, so every post has an audit record.
    env = worker_env(broker, sims, group="g-teacher", MODSTREAM_ESCALATION__BYPASS_SAMPLE_RATE="1.0")
    worker = spawn_worker(env)
    audit = read_topic(bootstrap, "audit", len(posts), timeout_s=120, producer_alive=worker.alive)
    assert len({m.key() for m in audit}) == len(posts)

    monkeypatch.setenv("MODSTREAM_KAFKA__BOOTSTRAP_SERVERS", bootstrap)
    out = tmp_path / "audit.jsonl"
    exported = CliRunner().invoke(cli, ["audit", "export", "--since", "1h", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sorted(r["post_id"] for r in records) == sorted(m.key().decode() for m in audit)

    # A window that ends before anything was written exports nothing.
    empty = tmp_path / "empty.jsonl"
    before = CliRunner().invoke(
        cli, ["audit", "export", "--since", "2020-01-01", "--until", "2020-01-02", "--out", str(empty)]
    )
    assert before.exit_code == 0, before.output
    assert empty.read_bytes() == b""

    fit = CliRunner().invoke(
        cli,
        ["funnel", "fit", "--policies", str(POLICIES_DIR), "--from-audit", str(out), "--dry-run", "--holdout", "0.3"],
    )
    assert f"audit: {len(records)} records -> {len(posts)} labelled posts" in fit.output, fit.output
    assert fit.exit_code == 0, fit.output


def test_audit_export_explains_a_bad_time() -> None:
    result = CliRunner().invoke(cli, ["audit", "export", "--since", "yesterday"])
    assert result.exit_code == 2
    assert "RFC 3339" in result.output
