"""The pure half of the auto-hide example: which verdict wins, and the SQLite table it lands in.

A verdict is applied to a post only if it is newer than what the table holds, where "newer" is
the pair (revision, verdict_id) compared as a tuple. So the table ends in the same state whatever
order the verdicts arrive in and however often each one arrives (replays after a crash, duplicate
deliveries, a reviewer's later decision read before the original): applying is idempotent and
commutative. Verdicts without a `revision` (schema_version 1) count as revision 0.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

State = Literal["visible", "hidden", "labelled"]

# What the platform does with a post for each verdict decision. `review` applies the verdict's
# `interim_action` while a reviewer decides (their decision arrives as a later revision): `hide`
# when the open question is severe; without one (schema 1) the post stays visible.
STATE_BY_DECISION: dict[str, State] = {
    "allow": "visible",
    "hide": "hidden",
    "label": "labelled",
    "age_gate": "labelled",
    "review": "visible",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS posts (
    post_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('visible', 'hidden', 'labelled')),
    decision TEXT NOT NULL,
    revision INTEGER NOT NULL,
    verdict_id TEXT NOT NULL,
    decided_at TEXT
)
"""


class BadVerdict(ValueError):
    """A record on the actions topic this consumer cannot read (counted and skipped, never fatal)."""


@dataclass(frozen=True, slots=True)
class Applied:
    """One verdict reduced to what the table keeps."""

    post_id: str
    state: State
    decision: str
    revision: int
    verdict_id: str
    decided_at: str | None


def fallback_id(offset: int) -> str:
    """Names a verdict from before verdict ids existed by its actions-topic offset (zero-padded, so
    string order is offset order: a post's verdicts share a partition, as they share a key)."""
    return f"offset-{offset:020d}"


def reduce_verdict(verdict: Any, fallback: str) -> Applied:
    """The table row a verdict asks for. `fallback` (see fallback_id) names verdicts without a
    verdict_id, so two different old verdicts for one post never tie silently."""
    if not isinstance(verdict, dict):
        raise BadVerdict("a verdict is a JSON object")
    post_id, decision = verdict.get("post_id"), verdict.get("decision")
    if not isinstance(post_id, str) or not post_id:
        raise BadVerdict("verdict without post_id")
    if decision not in STATE_BY_DECISION:
        raise BadVerdict(f"unknown decision {decision!r}")
    revision = verdict.get("revision", 0)
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise BadVerdict(f"revision must be a non-negative integer, not {revision!r}")
    verdict_id = verdict.get("verdict_id") or fallback
    decided_at = verdict.get("decided_at")
    state = STATE_BY_DECISION[decision]
    interim = verdict.get("interim_action")
    if decision == "review" and isinstance(interim, str) and interim != "review" and interim in STATE_BY_DECISION:
        state = STATE_BY_DECISION[interim]
    return Applied(post_id, state, decision, revision, str(verdict_id), decided_at)


def open_store(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)  # transactions are explicit (BEGIN/COMMIT)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(SCHEMA)
    return db


def apply(db: sqlite3.Connection, rows: list[Applied]) -> int:
    """Apply a batch in one transaction; returns how many rows changed. Older or equal verdicts
    are no-ops (the upsert's WHERE compares (revision, verdict_id) as a tuple)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        before = db.total_changes
        db.executemany(
            """
            INSERT INTO posts (post_id, state, decision, revision, verdict_id, decided_at)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT (post_id) DO UPDATE SET
                state = excluded.state, decision = excluded.decision, revision = excluded.revision,
                verdict_id = excluded.verdict_id, decided_at = excluded.decided_at
            WHERE (excluded.revision, excluded.verdict_id) > (posts.revision, posts.verdict_id)
            """,
            [(r.post_id, r.state, r.decision, r.revision, r.verdict_id, r.decided_at) for r in rows],
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return db.total_changes - before
