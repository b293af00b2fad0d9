"""The review store: what the console and `modstream review apply` read off the topics.

One SQLite database (a file, so `review apply` remembers what it applied across restarts; or
":memory:" for a console that rebuilds it from the topics at start). Every table is filled
idempotently from a topic, so re-reading a topic from the beginning changes nothing:

- reviews:   `review` topic records, by review_id (pending = no row in `decisions`);
- decisions: `review-decisions` records seen (the console's "done" list, and the label stream);
- audits:    the chain of thought of the audit records whose verdict is under review, by verdict_id;
- applied:   per review, the last decision `review apply` turned into a verdict (the chain a later
             correcting decision on the same review supersedes).

Thread-safe: one connection behind a lock (the console's reader thread and its HTTP handlers share it).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from worker.cascade.priority import age_seconds, review_priority
from worker.contracts import AuditRecord, ReviewDecision, ReviewRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS reviews (
    review_id TEXT PRIMARY KEY, post_id TEXT NOT NULL, verdict_id TEXT NOT NULL,
    created_ts REAL NOT NULL, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS reviews_verdict ON reviews (verdict_id);
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY, review_id TEXT NOT NULL, reviewer TEXT NOT NULL, record BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS decisions_review ON decisions (review_id);
CREATE TABLE IF NOT EXISTS audits (verdict_id TEXT PRIMARY KEY, post_id TEXT NOT NULL, calls BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS applied (
    review_id TEXT PRIMARY KEY, decision_id TEXT NOT NULL, revision INTEGER NOT NULL,
    verdict_id TEXT NOT NULL, outcomes BLOB NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class AppliedDecision:
    """The newest verdict `review apply` published for a review, and the per-policy outcomes in it."""

    decision_id: str
    revision: int
    verdict_id: str
    outcomes: dict[str, str]  # policy id -> "confirm" | "overturn"


@dataclass(frozen=True, slots=True)
class QueueStats:
    pending: int
    oldest_age_s: float  # 0 when nothing is pending


def current_priority(record: ReviewRecord, now: datetime) -> float:
    """The record's priority now (worker/cascade/priority.py, aged to `now`); the priority it was
    written with when no policy of it is unresolved."""
    created = record.post.created_at or record.created_at
    return review_priority(record.policies, age_seconds(created, now)) or record.priority


def reasoning_of(record: AuditRecord) -> list[dict[str, Any]]:
    """What the console shows of an audit record: per judge call, the tier, policy, model, effort,
    the chain of thought and the final answer (restricted: only for authorised reviewers)."""
    return [
        {
            "tier": call.tier,
            "policy_id": call.policy_id,
            "model": call.model,
            "reasoning_effort": call.reasoning_effort,
            "reasoning": call.reasoning,
            "content": call.content,
            "error": call.error,
        }
        for call in record.calls
    ]


class ReviewStore:
    def __init__(self, path: str = ":memory:") -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args))

    # -- filled from the topics (idempotent) -------------------------------------------------------

    def add_review(self, record: ReviewRecord) -> None:
        self._write(
            "INSERT OR REPLACE INTO reviews (review_id, post_id, verdict_id, created_ts, record) "
            "VALUES (?, ?, ?, ?, ?)",
            (record.review_id, record.post.id, record.verdict_id, record.created_at.timestamp(),
             record.model_dump_json().encode()),
        )  # fmt: skip

    def add_decision(self, decision: ReviewDecision) -> None:
        self._write(
            "INSERT OR IGNORE INTO decisions (decision_id, review_id, reviewer, record) VALUES (?, ?, ?, ?)",
            (decision.decision_id, decision.review_id, decision.reviewer, decision.model_dump_json().encode()),
        )

    def add_audit(self, record: AuditRecord) -> None:
        if not record.verdict_id:
            return
        self._write(
            "INSERT OR REPLACE INTO audits (verdict_id, post_id, calls) VALUES (?, ?, ?)",
            (record.verdict_id, record.post_id, orjson.dumps(reasoning_of(record))),
        )

    # -- reads -------------------------------------------------------------------------------------

    def review(self, review_id: str) -> ReviewRecord | None:
        rows = self._rows("SELECT record FROM reviews WHERE review_id = ?", (review_id,))
        return ReviewRecord.model_validate_json(rows[0][0]) if rows else None

    def has_verdict(self, verdict_id: object) -> bool:
        """Is `verdict_id` under review (a review record names it)?"""
        if not isinstance(verdict_id, str):
            return False
        return bool(self._rows("SELECT 1 FROM reviews WHERE verdict_id = ? LIMIT 1", (verdict_id,)))

    def decisions_for(self, review_id: str) -> list[ReviewDecision]:
        rows = self._rows("SELECT record FROM decisions WHERE review_id = ? ORDER BY rowid", (review_id,))
        return [ReviewDecision.model_validate_json(row[0]) for row in rows]

    def pending(self, now: datetime, limit: int = 100) -> list[ReviewRecord]:
        """Records without a decision, highest current priority first (ties: oldest first)."""
        rows = self._rows(
            "SELECT record FROM reviews WHERE review_id NOT IN (SELECT review_id FROM decisions) ORDER BY created_ts"
        )
        records = [ReviewRecord.model_validate_json(row[0]) for row in rows]
        records.sort(key=lambda r: current_priority(r, now), reverse=True)  # stable: ties stay oldest first
        return records[:limit]

    def stats(self, now: datetime) -> QueueStats:
        rows = self._rows(
            "SELECT COUNT(*), MIN(created_ts) FROM reviews WHERE review_id NOT IN (SELECT review_id FROM decisions)"
        )
        count, oldest = rows[0]
        age = max(0.0, now.timestamp() - float(oldest)) if oldest is not None else 0.0
        return QueueStats(int(count), age)

    def audit(self, verdict_id: str) -> list[dict[str, Any]] | None:
        rows = self._rows("SELECT calls FROM audits WHERE verdict_id = ?", (verdict_id,))
        calls: list[dict[str, Any]] | None = orjson.loads(rows[0][0]) if rows else None
        return calls

    # -- what `review apply` published ---------------------------------------------------------------

    def applied(self, review_id: str) -> AppliedDecision | None:
        rows = self._rows(
            "SELECT decision_id, revision, verdict_id, outcomes FROM applied WHERE review_id = ?", (review_id,)
        )
        if not rows:
            return None
        decision_id, revision, verdict_id, outcomes = rows[0]
        return AppliedDecision(decision_id, int(revision), verdict_id, orjson.loads(outcomes))

    def seen(self, decision_id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM decisions WHERE decision_id = ?", (decision_id,)))

    def record_applied(self, decision: ReviewDecision, applied: AppliedDecision) -> None:
        """Once its verdict is acknowledged: the decision is applied (replays of it are skipped) and
        is the newest of its review (a later correcting decision supersedes its verdict)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO applied (review_id, decision_id, revision, verdict_id, outcomes) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (decision.review_id, applied.decision_id, applied.revision, applied.verdict_id,
                     orjson.dumps(applied.outcomes)),
                )  # fmt: skip
                self._db.execute(
                    "INSERT OR IGNORE INTO decisions (decision_id, review_id, reviewer, record) VALUES (?, ?, ?, ?)",
                    (decision.decision_id, decision.review_id, decision.reviewer, decision.model_dump_json().encode()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
