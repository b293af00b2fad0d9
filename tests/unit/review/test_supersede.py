"""A reviewer's decision -> the superseding verdict (worker/review/supersede.py)."""

from __future__ import annotations

import orjson
import pytest

from tests.review_support import policy, result, review_decision, review_record
from worker.cascade.revisions import verdict_id
from worker.contracts import SourceRef
from worker.review.supersede import InvalidDecision, supersede

SOURCE = SourceRef(topic="review-decisions", partition=0, offset=7)


def test_confirm_keeps_the_proposed_violation_and_applies_its_action() -> None:
    record = review_record("p1", [policy("spam", True, t1=result("spam", True), t2=result("spam", None))])
    out = supersede(record, review_decision(record, {"spam": "confirm"}), None, SOURCE)
    v = out.verdict
    assert (v.decision, v.interim_action, v.tier, v.route) == ("hide", None, "human", "review")
    assert v.revision == 2 and v.supersedes == record.verdict_id
    assert v.verdict_id == verdict_id("review", "p1", 2, "d-1")
    [r] = v.results
    assert (r.violation, r.unresolved, r.confidence, r.rationale) == (True, False, "high", "")
    assert v.source == SOURCE and v.decided_at == record.created_at.replace(minute=5)
    assert out.applied.outcomes == {"spam": "confirm"} and out.applied.revision == 2


def test_overturn_flips_the_proposed_violation() -> None:
    record = review_record("p2", [policy("spam", True, action="label")])
    v = supersede(record, review_decision(record, {"spam": "overturn"}), None, SOURCE).verdict
    assert v.decision == "allow" and v.results[0].violation is False
    record = review_record("p3", [policy("spam", False, action="label")])
    v = supersede(record, review_decision(record, {"spam": "overturn"}), None, SOURCE).verdict
    assert v.decision == "label" and v.results[0].violation is True


def test_a_policy_left_open_keeps_the_post_in_review_hidden_when_severe() -> None:
    record = review_record(
        "p4",
        [policy("spam", True, action="label"), policy("minors", False, severity="severe", t1=result("minors", None))],
    )
    v = supersede(record, review_decision(record, {"spam": "confirm"}), None, SOURCE).verdict
    assert (v.decision, v.interim_action) == ("review", "hide")
    assert v.results[1].unresolved and v.results[1].rationale == "", "no rationale on the public verdict"


def test_the_same_decision_always_gives_the_same_verdict() -> None:
    record = review_record("p5", [policy("spam", True)])
    decision = review_decision(record, {"spam": "confirm"})
    assert supersede(record, decision, None, SOURCE) == supersede(record, decision, None, SOURCE)


def test_a_correction_supersedes_the_first_decisions_verdict_and_keeps_its_other_outcomes() -> None:
    record = review_record("p6", [policy("spam", True, action="label"), policy("scam", True)])
    first = supersede(record, review_decision(record, {"spam": "confirm", "scam": "confirm"}), None, SOURCE)
    assert first.verdict.decision == "hide"
    fix = review_decision(record, {"scam": "overturn"}, decision_id="d-2")
    second = supersede(record, fix, first.applied, SOURCE)
    assert second.verdict.revision == 3 and second.verdict.supersedes == first.verdict.verdict_id
    assert second.verdict.decision == "label"
    assert second.applied.outcomes == {"spam": "confirm", "scam": "overturn"}


@pytest.mark.parametrize(
    ("calls", "post_id", "kind"),
    [({"nope": "confirm"}, "p7", "unknown_policy"), ({"spam": "confirm"}, "other", "post_mismatch")],
)
def test_invalid_decisions_are_refused_with_a_kind(calls: dict[str, str], post_id: str, kind: str) -> None:
    record = review_record("p7", [policy("spam", True)])
    decision = review_decision(record, calls).model_copy(update={"post_id": post_id})
    with pytest.raises(InvalidDecision) as caught:
        supersede(record, decision, None, SOURCE)
    assert caught.value.kind == kind


def test_a_confirmed_review_action_violation_is_hidden_not_sent_back_to_review() -> None:
    record = review_record("p8", [policy("self-harm", True, action="review", unresolved=True)])
    v = supersede(record, review_decision(record, {"self-harm": "confirm"}), None, SOURCE).verdict
    assert (v.decision, v.results[0].action) == ("hide", "hide")
    v = supersede(record, review_decision(record, {"self-harm": "overturn"}), None, SOURCE).verdict
    assert v.decision == "allow"


def test_decisions_become_labelled_rows_for_eval_and_funnel_fit() -> None:
    from datetime import timedelta

    from funnel.labelled import parse_labelled
    from worker.review.labels import label_row

    record = review_record("p9", [policy("spam", True), policy("scam", False), policy("other", True)])
    first = review_decision(record, {"spam": "confirm", "scam": "confirm"})
    later = review_decision(record, {"scam": "overturn"}, decision_id="d-2", after=timedelta(minutes=9))
    row = label_row(record, [later, first])
    assert row is not None and row["labels"] == {"spam": 1, "scam": 1}, "later wins; `other` not labelled"
    [parsed] = parse_labelled([orjson.dumps(row).decode()], "labels.jsonl", ["spam", "scam", "other"])
    assert (parsed.data["id"], parsed.data["text"], parsed.labels) == ("p9", record.post.text, {"spam": 1, "scam": 1})
    assert label_row(record, []) is None
