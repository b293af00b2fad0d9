"""The back-scan sweep end to end: a real broker (Tansu), the vLLM simulator as tier 2, the sweep as a
real process. Seeded stream verdicts stand for what an older policy version decided; the sweep re-judges
a timestamp range under the changed policy, publishes superseding verdicts only where the decision
changes, writes its report, and survives a SIGKILL mid-sweep: the rerun continues, and every changed
post ends with exactly one sweep verdict (none lost, none twice)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from tests.conftest import POLICIES_DIR, worker_env
from tests.kafka_support import PROJECT_ROOT, read_topic, wait_for
from worker.cascade.precedence import decide
from worker.cascade.revisions import stream_verdict_id, verdict_id
from worker.cli.main import cli
from worker.contracts import FunnelSummary, PolicyResult, SourceRef, Verdict
from worker.local.broker import EmbeddedBroker, create_topics
from worker.policies.files import load_policy_files, read_policy_files
from worker.sim.process import SimulatorProcess
from worker.sweep.state import SweepState

pytestmark = pytest.mark.integration

SWEPT = "spam-scams"
OTHER = "hate"
# What each kind of post is: (the simulator's pinned tier-2 answer, the seeded current verdict).
KINDS = {
    0: ("[[sim: violation=1 confidence=high]]", "allow"),  # changes: allow -> hide
    1: ("[[sim: violation=1 confidence=high]]", "spam"),  # unchanged: already hidden for spam
    2: ("[[sim: violation=0 confidence=high]]", "spam"),  # changes: hide -> allow
    3: ("[[sim: violation=0 confidence=high]]", "other"),  # unchanged: another policy's hide is kept
    4: ("[[sim: violation=1 confidence=low]]", "allow"),  # changes: allow -> review (unsure tier 2)
    5: ("[[sim: violation=1 confidence=high]]", "human"),  # kept: a reviewer decided
}
IN_WINDOW = 48


def result(policy: Any, violation: bool) -> PolicyResult:
    severity = policy.meta.severity
    return PolicyResult(
        policy_id=policy.id, policy_version="old", violation=violation, severity=severity,
        action=policy.meta.action_for(severity), confidence="high", rationale="",
    )  # fmt: skip


def seeded(post_id: str, seed: str, policies: dict[str, Any], offset: int) -> Verdict:
    source = SourceRef(topic="posts", partition=0, offset=offset)
    results = {
        "allow": [],
        "spam": [result(policies[SWEPT], True)],
        "other": [result(policies[SWEPT], False), result(policies[OTHER], True)],
        "human": [result(policies[SWEPT], False)],
    }[seed]
    decision, interim = decide(results)
    human = seed == "human"
    first = stream_verdict_id(post_id, source)
    return Verdict(
        post_id=post_id,
        verdict_id=verdict_id("review", post_id, 2, "decision-1") if human else first,
        revision=2 if human else 1,
        supersedes=first if human else None,
        route="review" if human else "stream",
        decision=decision,
        interim_action=interim,
        results=results,
        tier="human" if human else "t1",
        escalated=False,
        funnel=FunnelSummary(candidates=[], scores={}),
        latency_ms=1.0,
        decided_at=datetime.now(UTC),
        worker_version="test",
        source=source,
    )


def produce_at(bootstrap: str, topic: str, records: list[tuple[str, bytes, int | None]]) -> None:
    """Records with explicit timestamps (ms; None: the producer's clock), in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors: list[str] = []

    def delivered(error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            errors.append(str(error))

    for key, value, timestamp in records:
        producer.produce(topic, key=key.encode(), value=value, on_delivery=delivered, timestamp=timestamp or 0)
    assert producer.flush(30) == 0 and not errors, errors


def committed(path: Path) -> tuple[int, int]:
    """(records, changed posts) the sweep's state file holds as committed."""
    try:
        state = SweepState.model_validate_json(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return 0, 0
    return state.completed, state.counts.totals.get("changed", 0)


def ahead(path: Path, published: SweepWatcher) -> bool:
    """More sweep verdicts on the actions topic than the state file counts as committed changes."""
    return committed(path)[1] < published.count()


class SweepWatcher:
    """Counts the sweep verdicts on the actions topic as they arrive (one consumer, no group)."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watch", "enable.auto.commit": False})
        self.consumer.assign([TopicPartition("actions", p, OFFSET_BEGINNING) for p in range(4)])
        self.seen = 0

    def count(self) -> int:
        for msg in self.consumer.consume(1000, 0.2):
            if msg.error() is None and orjson.loads(msg.value())["route"] == "sweep":
                self.seen += 1
        return self.seen


def sweep_verdicts(bootstrap: str, expected: int, topic: str = "actions") -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for msg in read_topic(bootstrap, topic, expected, timeout_s=30):
        verdict = orjson.loads(msg.value())
        if verdict["route"] == "sweep":
            out.setdefault(verdict["post_id"], []).append(verdict)
    return out


def test_sweep_publishes_only_changes_and_resumes_after_sigkill(
    broker: EmbeddedBroker, topics: dict[str, int], sims: tuple[SimulatorProcess, SimulatorProcess], tmp_path: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    create_topics(bootstrap, {"review": 2, "actions-dry-run": 2})
    # The changed policy: a new version of spam-scams (the seeded verdicts carry version "old").
    policies_dir = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies_dir)
    spam = policies_dir / f"{SWEPT}.md"
    spam.write_text(spam.read_text() + "\nCrypto giveaways of any size are scams.\n")
    policies = load_policy_files(policies_dir, read_policy_files(policies_dir)).by_id()
    act = policies[SWEPT].meta.action_for(policies[SWEPT].meta.severity)  # what a spam violation gets

    since = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    until = since + timedelta(minutes=10)
    at = lambda t: int(t.timestamp() * 1000)  # noqa: E731
    posts: list[tuple[str, bytes, int | None]] = []
    verdicts: list[tuple[str, bytes, int | None]] = []
    expected: dict[str, str] = {}  # post id -> decision the sweep must publish

    def add(post_id: str, kind: int, when: datetime, with_verdict: bool = True) -> None:
        directive, seed = KINDS[kind]
        text = f"{directive} limited offer number {post_id}"
        posts.append((post_id, orjson.dumps({"id": post_id, "text": text}), at(when)))
        if with_verdict:
            verdicts.append((post_id, seeded(post_id, seed, policies, len(posts)).model_dump_json().encode(), None))

    for i in range(4):  # before the window: never swept, although they would change
        add(f"early-{i}", 0, since - timedelta(minutes=5) + timedelta(seconds=i))
    for i in range(IN_WINDOW):
        post_id = f"p-{i}"
        add(post_id, i % 6, since + timedelta(seconds=1 + i))
        if i % 6 in (0, 2, 4):
            expected[post_id] = {0: act, 2: "allow", 4: "review"}[i % 6]
    for i in range(2):  # in the window, but no verdict to supersede
        add(f"orphan-{i}", 0, since + timedelta(seconds=100 + i), with_verdict=False)
    for i in range(3):  # after the window
        add(f"late-{i}", 0, until + timedelta(seconds=i))
    produce_at(bootstrap, "posts", posts)
    produce_at(bootstrap, "actions", verdicts)

    state_dir, report = tmp_path / "state", tmp_path / "report.json"
    args = ["sweep", "--from", since.isoformat(), "--to", until.isoformat(), "--policies", SWEPT,
            "--policies-dir", str(policies_dir), "--tier", "t2", "--effort", "high", "--funnel", "off",
            "--state-dir", str(state_dir)]  # fmt: skip
    env = worker_env(broker, sims, group="modstream", policies_dir=policies_dir)

    # Dry run first: the changed verdicts go to the dry-run topic only.
    for key, value in env.items():
        os.environ[key] = value
    try:
        dry = CliRunner().invoke(cli, [*args, "--dry-run", "--rate", "200/s", "--state-dir", str(tmp_path / "dry")])
    finally:
        for key in env:
            os.environ.pop(key, None)
    assert dry.exit_code == 0, dry.output
    dry_verdicts = sweep_verdicts(bootstrap, len(expected), "actions-dry-run")
    assert {k: [v["decision"] for v in vs] for k, vs in dry_verdicts.items()} == {k: [d] for k, d in expected.items()}
    assert sweep_verdicts(bootstrap, len(verdicts)) == {}, "a dry run never writes the actions topic"

    # The real sweep, slowed by its rate limit, SIGKILLed once it committed some progress.
    command = [sys.executable, "-m", "worker", *args, "--rate", "6/s", "--concurrency", "4", "--report", str(report)]
    child_env = {**os.environ, **env, "MODSTREAM_LOG_FORMAT": "json"}
    log_path = tmp_path / "sweep.log"
    with open(log_path, "ab") as log:
        first = subprocess.Popen(command, env=child_env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
    state_files = lambda: sorted(state_dir.glob("modstream-sweep-*.json"))  # noqa: E731
    published = SweepWatcher(bootstrap)
    try:
        # Kill once progress is committed and some verdicts are published beyond the committed
        # position: the rerun must recognise those instead of publishing them again.
        wait_for(
            lambda: bool(state_files()) and committed(state_files()[0])[0] > 0 and ahead(state_files()[0], published),
            timeout_s=120,
            what=f"committed sweep progress (log: {log_path})",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        published.consumer.close()
        if first.poll() is None:
            first.kill()
    committed_records, committed_changes = committed(state_files()[0])
    published_before = sweep_verdicts(bootstrap, len(verdicts) + 1)
    assert not report.exists(), "killed before it could finish"
    assert 0 < len(published_before) < len(expected), "the kill must fall between the first and the last change"
    assert committed_records < IN_WINDOW + 2

    rerun = subprocess.run(command, env=child_env, capture_output=True, timeout=300, cwd=PROJECT_ROOT)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]

    # Exactly one sweep verdict per changed post, none for any other post.
    swept = sweep_verdicts(bootstrap, len(verdicts) + len(expected))
    assert {k: len(vs) for k, vs in swept.items()} == {k: 1 for k in expected}
    current = {post_id: orjson.loads(value) for post_id, value, _ in verdicts}
    for post_id, (verdict,) in swept.items():
        assert verdict["decision"] == expected[post_id]
        assert verdict["revision"] == 2 and verdict["supersedes"] == current[post_id]["verdict_id"]
        assert all(r["rationale"] == "" for r in verdict["results"])
        if expected[post_id] == "review":
            assert verdict["interim_action"] == "allow"

    # Each unsure post is queued for a human, with the reason "sweep".
    unsure = {k for k, d in expected.items() if d == "review"}
    reviews = read_topic(bootstrap, "review", len(unsure), timeout_s=30)
    assert {m.key().decode() for m in reviews} == unsure
    assert all(orjson.loads(m.value())["reasons"] == ["sweep"] for m in reviews)

    document = orjson.loads(report.read_bytes())
    totals = document["totals"]
    assert document["finished"] is True
    # Published before the kill but not yet committed: recognised on the rerun, counted once.
    assert totals["already_swept"] == len(published_before) - committed_changes > 0
    assert totals["read"] == IN_WINDOW + 2 and totals["no_verdict"] == 2 and totals["kept"] == IN_WINDOW // 6
    assert totals["changed"] == len(expected)
    assert totals["unchanged"] == IN_WINDOW // 6 * 2
    n = IN_WINDOW // 6
    assert document["decisions"] == {f"allow->{act}": n, f"{act}->allow": n, "allow->review(allow)": n}
    assert document["by_policy"] == {SWEPT: {f"allow->{act}": n, f"{act}->allow": n, "allow->review": n}}
    assert report.with_suffix(".txt").read_text().startswith(f"sweep {document['run_id']}")

    # The funnel on (keywords and patterns only): none of these texts is a spam candidate, so spam
    # is cleared without a judge call; a dry run against the verdicts as they now stand.
    funnel_report = tmp_path / "funnel.json"
    funnel_env = {**env, "MODSTREAM_FUNNEL_EMBEDDINGS": "false"}
    for key, value in funnel_env.items():
        os.environ[key] = value
    try:
        on = CliRunner().invoke(
            cli,
            [*args, "--funnel", "on", "--tier", "cascade", "--dry-run", "--state-dir", str(tmp_path / "funnel"),
             "--report", str(funnel_report)],
        )  # fmt: skip
    finally:
        for key in funnel_env:
            os.environ.pop(key, None)
    assert on.exit_code == 0, on.output
    funnel_totals = orjson.loads(funnel_report.read_bytes())["totals"]
    # Now hidden for spam (kinds 0 and 1) or in review (kind 4): back to allow; the rest unchanged.
    assert funnel_totals["judge_requests"] == 0
    assert (funnel_totals["changed"], funnel_totals["unchanged"]) == (3 * IN_WINDOW // 6, 2 * IN_WINDOW // 6)
