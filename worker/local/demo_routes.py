"""The demo's routes after the stream: a scripted reviewer (review), the author's appeals (appeal), a
back-scan with a changed policy (sweep), and the platform's table (examples/autohide).

Each route runs the project's own code (worker/review, worker/appeals, worker/sweep, the autohide
example) against the demo's broker; the demo only supplies the inputs a person would: the
reviewer's calls, the appeal statements, the policy change. Nothing here decides a post.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from worker.config import Settings
from worker.contracts import Appeal, Post, ReviewDecision, ReviewerCall, ReviewRecord
from worker.kafka.clients import client_configs
from worker.local.demo_expect import newest
from worker.local.demo_io import QUIET, TopicReader, produce

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUTE_TIMEOUT_S = 300.0


def route_timeout(settings: Settings) -> float:
    """How long a route may wait: 15 minutes with a real small model on llama.cpp (json_object), else 5."""
    return 900.0 if settings.judge_t1.response_format == "json_object" else ROUTE_TIMEOUT_S


DEMO_NAMESPACE = uuid.UUID("6f1c2a4e-3b1d-5e7a-9c0f-2d4b6a8e0c13")


@dataclass
class RouteRun:
    """What one route did: table rows, and the decision expected per post it touched."""

    rows: list[tuple[str, ...]] = field(default_factory=list)
    expected: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def verdicts(reader: TopicReader, topic: str) -> list[dict[str, Any]]:
    return [v for v in reader.values(topic) if "post_id" in v and "decision" in v]


def _count_route(reader: TopicReader, topic: str, route: str, posts: set[str]) -> int:
    return len({v["post_id"] for v in verdicts(reader, topic) if v.get("route") == route and v["post_id"] in posts})


# ---- review: the scripted reviewer -------------------------------------------------------------


def review_decisions(script: list[dict[str, Any]], records: Mapping[str, ReviewRecord]) -> list[ReviewDecision]:
    """The reviewer's calls (examples/demo_reviews.jsonl) for the posts waiting in the queue."""
    out: list[ReviewDecision] = []
    for row in script:
        record = records.get(str(row["post_id"]))
        if record is None:
            continue
        reviewer = str(row.get("reviewer", "demo-reviewer"))
        out.append(
            ReviewDecision(
                decision_id=str(uuid.uuid5(DEMO_NAMESPACE, f"{record.review_id}/{reviewer}")),
                review_id=record.review_id,
                post_id=record.post.id,
                verdict_id=record.verdict_id,
                revision=record.revision,
                reviewer=reviewer,
                calls=[ReviewerCall.model_validate(c) for c in row["calls"]],
                decided_at=datetime.now(UTC),
            )
        )
    return out


def run_review(settings: Settings, reader: TopicReader, script: list[dict[str, Any]]) -> RouteRun:
    topics = settings.topics
    run = RouteRun()
    waiting = {p for p, v in newest(verdicts(reader, topics.actions)).items() if v["decision"] == "review"}
    reader.until(lambda: waiting <= {r.get("post", {}).get("id") for r in reader.values(topics.review)}, 60)
    records = {r.post.id: r for r in (ReviewRecord.model_validate(v) for v in reader.values(topics.review))}
    decisions = review_decisions(script, records)
    for row in script:
        if str(row["post_id"]) not in records:
            run.notes.append(f"no review record for {row['post_id']}: its scripted call was not sent")
        else:
            run.expected[str(row["post_id"])] = str(row["expect"])
    if not decisions:
        return _queue_rows(run, records, {})
    produce(
        settings.kafka.bootstrap_servers,
        topics.review_decisions,
        ((d.post_id.encode(), d.model_dump_json().encode()) for d in decisions),
    )
    from worker.review.apply import ApplyTopics, ReviewApplier
    from worker.review.store import ReviewStore

    consumer, producer = client_configs(settings.kafka, "modstream-demo-review-apply")
    stop = threading.Event()
    applier = ReviewApplier(
        consumer, producer, ReviewStore(":memory:"),
        ApplyTopics(review=topics.review, decisions=topics.review_decisions, actions=topics.actions, dlq=topics.dlq),
    )  # fmt: skip
    thread = threading.Thread(target=applier.run, args=(stop,), name="demo-review-apply", daemon=True)
    thread.start()
    decided = {d.post_id for d in decisions}
    try:
        reader.until(
            lambda: _count_route(reader, topics.actions, "review", decided) >= len(decided), route_timeout(settings)
        )
    finally:
        stop.set()
        thread.join(30)
    return _queue_rows(run, records, {d.post_id: d for d in decisions})


def _queue_rows(run: RouteRun, records: Mapping[str, ReviewRecord], decided: Mapping[str, ReviewDecision]) -> RouteRun:
    for post_id, record in sorted(records.items()):
        unresolved = ", ".join(p.policy_id for p in record.policies if p.unresolved) or "-"
        decision = decided.get(post_id)
        calls = ", ".join(f"{c.policy_id}: {c.outcome}" for c in decision.calls) if decision else "waiting"
        run.rows.append((post_id, ", ".join(record.reasons), unresolved, f"{record.priority:.3f}", calls))
    return run


# ---- appeal: the authors' statements ------------------------------------------------------------


def appeals_of(
    script: list[dict[str, Any]], posts: Mapping[str, Post], current: Mapping[str, Mapping[str, Any]]
) -> list[Appeal]:
    """Appeals (examples/demo_appeals.jsonl) against the verdict each post has now."""
    out: list[Appeal] = []
    for row in script:
        post_id = str(row["post_id"])
        verdict = current[post_id]
        out.append(
            Appeal(
                appeal_id=str(row["appeal_id"]),
                post=posts[post_id],
                statement=str(row["statement"]),
                verdict_id=str(verdict["verdict_id"]),
                revision=int(verdict.get("revision", 1)),
                policies=row.get("policies"),
                created_at=datetime.now(UTC),
            )
        )
    return out


async def run_appeals(
    settings: Settings, reader: TopicReader, script: list[dict[str, Any]], posts: Mapping[str, Post]
) -> RouteRun:
    from worker.appeals.service import serve

    topics = settings.topics
    run = RouteRun(expected={str(r["post_id"]): str(r["expect"]) for r in script})
    appeals = appeals_of(script, posts, newest(verdicts(reader, topics.actions)))
    produce(settings.kafka.bootstrap_servers, topics.appeals,
            ((a.post.id.encode(), a.model_dump_json().encode()) for a in appeals))  # fmt: skip
    stop = asyncio.Event()
    service = asyncio.create_task(serve(settings, "modstream-demo-appeals", stop))
    appealed = {a.post.id for a in appeals}

    def done() -> bool:
        return _count_route(reader, topics.actions, "appeal", appealed) >= len(appealed)

    try:
        await asyncio.to_thread(reader.until, done, route_timeout(settings))
    finally:
        stop.set()
        await service
    for appeal in appeals:
        run.rows.append((appeal.post.id, appeal.appeal_id, appeal.statement))
    return run


# ---- sweep: a changed policy over the demo's time range -----------------------------------------


def changed_policies(source: Path, target: Path, change: Mapping[str, Any]) -> str:
    """A copy of the policy directory with one policy's front matter changed; returns its id."""
    shutil.copytree(source, target)
    policy_id = str(change["policy"])
    path = target / f"{policy_id}.md"
    text = path.read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    meta.update(change["front_matter"])
    path.write_text(f"---\n{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)}---\n{body}", encoding="utf-8")
    return policy_id


async def run_sweep(
    settings: Settings, reader: TopicReader, change: Mapping[str, Any], since: datetime, workdir: Path
) -> tuple[RouteRun, dict[str, Any]]:
    from worker.sweep.orchestrate import SweepOptions, execute

    policy_id = changed_policies(settings.policies_dir, workdir / "policies", change)
    run = RouteRun(expected={str(k): str(v) for k, v in change.get("expect", {}).items()})
    options = SweepOptions(
        since=since,
        until=datetime.now(UTC) + timedelta(seconds=1),
        policy_ids=[policy_id],
        policies_dir=workdir / "policies",
        tier="cascade",
        effort=None,
        funnel=True,
        rate=1000.0,
        dry_run=False,
        dry_run_topic="actions-dry-run",
        group="modstream-demo-sweep",
        state_dir=workdir / "sweep-state",
        concurrency=8,
        actions_slack=timedelta(minutes=10),
    )
    document = await execute(settings, options)
    await asyncio.to_thread(
        reader.until,
        lambda: _count_route(reader, settings.topics.actions, "sweep", set(run.expected)) >= len(run.expected),
        route_timeout(settings),
    )
    for v in verdicts(reader, settings.topics.actions):
        if v.get("route") == "sweep":
            interim = f" ({v['interim_action']} meanwhile)" if v.get("interim_action") else ""
            run.rows.append((str(v["post_id"]), policy_id, f"{v['decision']}{interim}", str(v.get("revision"))))
    return run, document


# ---- the platform: the autohide example applies every verdict -----------------------------------


def autohide_table(bootstrap: str, topic: str, expected_reads: int, workdir: Path) -> dict[str, tuple[str, ...]]:
    """Run examples/autohide (the reference downstream consumer) until it read `expected_reads`
    verdicts; returns its posts table: post id -> (state, decision, revision)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))  # examples/ is not an installed package: the checkout's copy
    service: Any = importlib.import_module("examples.autohide.service")
    store: Any = importlib.import_module("examples.autohide.store")
    path = str(workdir / "platform.sqlite3")
    counts = service.Counts()
    stop = threading.Event()

    def consume() -> None:
        service.run(bootstrap, store.open_store(path), stop, topic=topic, group="modstream-demo-autohide",
                    extra=dict(QUIET), counts=counts)  # fmt: skip

    thread = threading.Thread(target=consume, name="demo-autohide", daemon=True)
    thread.start()
    deadline = time.monotonic() + ROUTE_TIMEOUT_S
    try:
        while counts.read < expected_reads and thread.is_alive() and time.monotonic() < deadline:
            stop.wait(0.2)
    finally:
        stop.set()
        thread.join(30)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT post_id, state, decision, revision FROM posts ORDER BY post_id").fetchall()
    return {str(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in rows}
