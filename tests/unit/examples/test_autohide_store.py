"""The auto-hide example's pure half: the newest (revision, verdict_id) wins, in any order, any number of times."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.autohide.store import BadVerdict, apply, fallback_id, open_store, reduce_verdict

DECISIONS = ["allow", "hide", "review"]


def table(db: sqlite3.Connection) -> dict[str, tuple[str, int, str]]:
    return {r[0]: (r[1], r[2], r[3]) for r in db.execute("SELECT post_id, state, revision, verdict_id FROM posts")}


verdicts = st.lists(
    st.fixed_dictionaries(
        {
            "post_id": st.sampled_from(["p1", "p2", "p3"]),
            "decision": st.sampled_from(DECISIONS),
            "revision": st.integers(0, 3),
            "verdict_id": st.sampled_from(["a", "b", "c"]),
        }
    ),
    min_size=1,
    max_size=12,
    # A verdict id names one verdict: two different verdicts never share (post, revision, id).
    unique_by=lambda v: (v["post_id"], v["revision"], v["verdict_id"]),
)


@settings(max_examples=150, deadline=None)
@given(verdicts, st.randoms(use_true_random=False), st.integers(1, 4))
def test_any_order_and_duplicates_give_the_newest_verdict(batch: list[dict[str, object]], rng, split: int) -> None:  # type: ignore[no-untyped-def]
    # Expected: per post, the verdict with the greatest (revision, verdict_id) (ties: same key, same row).
    expected: dict[str, tuple[str, int, str]] = {}
    for v in batch:
        row = reduce_verdict(v, "unused")
        best = expected.get(row.post_id)
        if best is None or (row.revision, row.verdict_id) > (best[1], best[2]):
            expected[row.post_id] = (row.state, row.revision, row.verdict_id)
    # Same verdicts, shuffled, each delivered twice, in several batches.
    delivered = [*batch, *batch]
    rng.shuffle(delivered)
    db = open_store(":memory:")
    for i in range(0, len(delivered), split):
        apply(db, [reduce_verdict(v, "unused") for v in delivered[i : i + split]])
    assert table(db) == expected


def test_a_replayed_batch_changes_nothing() -> None:
    db = open_store(":memory:")
    rows = [reduce_verdict({"post_id": f"p{i}", "decision": "hide", "verdict_id": f"v{i}"}, "x") for i in range(5)]
    assert apply(db, rows) == 5
    assert apply(db, rows) == 0
    assert {state for state, _, _ in table(db).values()} == {"hidden"}


def test_schema_1_verdicts_are_revision_0_named_by_offset() -> None:
    old = reduce_verdict({"post_id": "p", "decision": "review"}, fallback_id(9))
    newer = reduce_verdict({"post_id": "p", "decision": "hide"}, fallback_id(10))
    assert (old.revision, old.verdict_id) < (newer.revision, newer.verdict_id), "offset 10 sorts after offset 9"
    assert old.state == "visible", "review keeps the post up until a reviewer decides"


def test_review_applies_the_interim_action_meanwhile() -> None:
    severe = {"post_id": "p", "decision": "review", "interim_action": "hide", "revision": 1, "verdict_id": "v"}
    assert reduce_verdict(severe, fallback_id(1)).state == "hidden"
    labelled = {**severe, "interim_action": "label"}
    assert reduce_verdict(labelled, fallback_id(1)).state == "labelled"
    assert reduce_verdict({**severe, "interim_action": None}, fallback_id(1)).state == "visible"


@pytest.mark.parametrize(
    ("verdict", "why"),
    [
        ([], "JSON object"),
        ({"decision": "hide"}, "post_id"),
        ({"post_id": "p", "decision": "delete"}, "unknown decision"),
        ({"post_id": "p", "decision": "hide", "revision": -1}, "revision"),
        ({"post_id": "p", "decision": "hide", "revision": True}, "revision"),
    ],
)
def test_unreadable_verdicts_are_refused_with_a_reason(verdict: object, why: str) -> None:
    with pytest.raises(BadVerdict, match=why):
        reduce_verdict(verdict, "x")
