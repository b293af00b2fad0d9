"""`modstream review apply` through a real broker: reviewer decisions become superseding verdicts on
the actions topic, the downstream auto-hide table follows them, bad decisions go to the DLQ, and a
restart neither re-reads committed decisions nor re-publishes a replayed one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.test_autohide import autohide, rows
from tests.kafka_support import FAST_GROUP, PROJECT_ROOT, produce, read_topic, running_in_thread, wait_for
from tests.review_support import policy, result, review_decision, review_record, stream_verdict
from worker.cascade.revisions import verdict_id
from worker.contracts import ReviewDecision, ReviewRecord
from worker.eval.scoring import load_dataset
from worker.kafka.producer import producer_config
from worker.local.broker import EmbeddedBroker, create_topics
from worker.review.apply import ApplyCounts, ReviewApplier
from worker.review.store import ReviewStore

pytestmark = pytest.mark.integration

TOPICS = {"actions": 4, "audit": 2, "dlq": 1, "review": 2, "review-decisions": 2}


@pytest.fixture
def review_topics(broker: EmbeddedBroker) -> dict[str, int]:
    create_topics(broker.bootstrap_servers, TOPICS)
    return TOPICS


@contextmanager
def applier(bootstrap: str, db: Path, group: str = "review-apply") -> Iterator[ApplyCounts]:
    consumer = {
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "session.timeout.ms": FAST_GROUP["session_timeout_ms"],
        "heartbeat.interval.ms": FAST_GROUP["heartbeat_interval_ms"],
    }  # fmt: skip
    counts = ApplyCounts()
    service = ReviewApplier(consumer, producer_config(bootstrap, {}), ReviewStore(str(db)), counts=counts)
    with running_in_thread(service.run, "review apply"):
        yield counts


def publish(bootstrap: str, topic: str, items: list[tuple[str, bytes]]) -> None:
    produce(bootstrap, topic, [(key.encode(), value) for key, value in items])


def decisions(bootstrap: str, items: list[ReviewDecision]) -> None:
    publish(bootstrap, "review-decisions", [(d.post_id, d.model_dump_json().encode()) for d in items])


def superseding(bootstrap: str, expected: int) -> dict[str, list[dict[str, Any]]]:
    by_post: dict[str, list[dict[str, Any]]] = {}
    for msg in read_topic(bootstrap, "actions", expected, timeout_s=60):
        verdict = orjson.loads(msg.value())
        assert msg.key() == verdict["post_id"].encode()
        by_post.setdefault(verdict["post_id"], []).append(verdict)
    return {pid: sorted(vs, key=lambda v: v["revision"]) for pid, vs in by_post.items()}


def test_decisions_supersede_verdicts_downstream_and_bad_ones_are_dead_lettered(
    broker: EmbeddedBroker, review_topics: dict[str, int], tmp_path: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    a = review_record("rv-a", [policy("spam", True, t1=result("spam", None))], offset=1)
    b = review_record("rv-b", [policy("spam", True, t1=result("spam", None))], offset=2)
    c = review_record(
        "rv-c",
        [policy("spam", True, action="label", unresolved=False), policy("minors", False, severity="severe")],
        offset=3,
    )
    records: list[ReviewRecord] = [a, b, c]
    publish(bootstrap, "actions", [(r.post.id, stream_verdict(r).model_dump_json().encode()) for r in records])
    publish(bootstrap, "review", [(r.post.id, r.model_dump_json().encode()) for r in records])
    d_a = review_decision(a, {"spam": "confirm"}, decision_id="d-a")
    d_c1 = review_decision(c, {"spam": "confirm"}, decision_id="d-c1")
    unknown_policy = review_decision(b, {"nope": "confirm"}, decision_id="d-x")
    unknown_review = review_decision(b, {"spam": "confirm"}, decision_id="d-y").model_copy(update={"review_id": "nope"})
    decisions(bootstrap, [d_a, review_decision(b, {"spam": "overturn"}, decision_id="d-b"), d_a, d_c1,
                          unknown_policy, unknown_review])  # fmt: skip
    publish(bootstrap, "review-decisions", [("rv-b", b"{not json")])
    apply_db = tmp_path / "apply.sqlite3"
    with applier(bootstrap, apply_db) as counts:
        wait_for(lambda: counts.read >= 7, 90, "the first seven decisions")
        # A correction on post C, after its first decision was applied: severe minors overturned.
        decisions(bootstrap, [review_decision(c, {"minors": "overturn"}, decision_id="d-c2",
                                              after=timedelta(minutes=9))])  # fmt: skip
        wait_for(lambda: counts.read >= 8, 60, "the correction")
    assert (counts.published, counts.dead_lettered, counts.replays) == (4, 3, 1)
    assert sorted(counts.reasons) == ["bad_json", "unknown_policy", "unknown_review"]

    verdicts = superseding(bootstrap, len(records) + 4)
    assert [v["revision"] for v in verdicts["rv-a"]] == [1, 2]
    human_a = verdicts["rv-a"][1]
    assert (human_a["decision"], human_a["tier"], human_a["route"]) == ("hide", "human", "review")
    assert human_a["supersedes"] == a.verdict_id and human_a["verdict_id"] == verdict_id("review", "rv-a", 2, "d-a")
    assert verdicts["rv-b"][1]["decision"] == "allow" and verdicts["rv-b"][1]["results"][0]["violation"] is False
    c2, c3 = verdicts["rv-c"][1:]
    assert (c2["decision"], c2["interim_action"]) == ("review", "hide"), "severe minors still open: hidden meanwhile"
    assert (c3["revision"], c3["supersedes"], c3["decision"]) == (3, c2["verdict_id"], "hide")

    dlq = read_topic(bootstrap, "dlq", 3, timeout_s=30)
    kinds = sorted(dict(m.headers() or [])["error.type"].decode() for m in dlq)
    assert kinds == ["bad_json", "unknown_policy", "unknown_review"]
    assert all(dict(m.headers() or [])["source.topic"] == b"review-decisions" for m in dlq)

    posts_db = tmp_path / "posts.sqlite3"
    with autohide(bootstrap, posts_db, "autohide") as seen:
        wait_for(lambda: seen.read >= len(records) + 4, 60, "autohide read every verdict")
    assert rows(posts_db) == {
        "rv-a": ("hidden", "hide", 2),
        "rv-b": ("visible", "allow", 2),
        "rv-c": ("hidden", "hide", 3),
    }

    # Restart with the same group and store: committed decisions are not read again, and a
    # replayed decision (same decision id) is recognised and publishes nothing.
    with applier(bootstrap, apply_db) as again:
        decisions(bootstrap, [d_a])
        wait_for(lambda: again.read >= 1, 60, "the replayed decision")
    assert (again.read, again.replays, again.published) == (1, 1, 0)
    assert len(read_topic(bootstrap, "actions", len(records) + 4, timeout_s=30)) == len(records) + 4

    # The decisions are the label stream: `modstream audit export --topic review-decisions` writes them.
    labels = tmp_path / "labels.jsonl"
    subprocess.run(
        [sys.executable, "-m", "worker", "audit", "export", "--topic", "review-decisions", "--since", "1d",
         "--out", str(labels)],
        env={**os.environ, "MODSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap}, cwd=PROJECT_ROOT, check=True,
        capture_output=True,
    )  # fmt: skip
    exported = [orjson.loads(line) for line in labels.read_bytes().splitlines()]
    # ... and `modstream review labels` joins them with the review records into the labelled
    # dataset `modstream eval` and `funnel fit` read.
    dataset = tmp_path / "reviewed.jsonl"
    subprocess.run(
        [sys.executable, "-m", "worker", "review", "labels", "--since", "1d", "--out", str(dataset)],
        env={**os.environ, "MODSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap}, cwd=PROJECT_ROOT, check=True,
        capture_output=True,
    )  # fmt: skip
    rows_read = load_dataset(dataset, ["spam", "minors"])
    assert {item.post.id: item.labels for item in rows_read} == {
        "rv-a": {"spam": 1}, "rv-b": {"spam": 0}, "rv-c": {"spam": 1, "minors": 1},
    }  # fmt: skip
    assert len(exported) == 8, "nine decisions produced, one of them not JSON"
    assert {(d["post_id"], d["calls"][0]["outcome"]) for d in exported if d.get("reviewer") == "alice"} >= {
        ("rv-a", "confirm"), ("rv-b", "overturn"), ("rv-c", "confirm"), ("rv-c", "overturn"),
    }  # fmt: skip
