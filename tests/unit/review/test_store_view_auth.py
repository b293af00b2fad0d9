"""The review store, what the console shows, and who may see and decide (worker/review/)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.review_support import T0, policy, result, review_decision, review_record
from worker.contracts import AuditCall, AuditRecord, SourceRef
from worker.review.auth import Auth, csrf_ok, csrf_token, parse_tokens, same_origin
from worker.review.store import AppliedDecision, ReviewStore
from worker.review.view import BadForm, calls_from_form, card, questioned

TOKEN = "alice-token-0123456789"


def audit(verdict_id: str, reasoning: str) -> AuditRecord:
    call = AuditCall(
        tier="t1", policy_id="spam", policy_version="1", model="m", endpoint="e", reasoning_effort="low",
        request={}, reasoning=reasoning, content='{"violation": 1}', finish_reason="stop", error=None, latency_ms=1.0,
    )  # fmt: skip
    return AuditRecord(post_id="p", verdict_id=verdict_id, decision="review", calls=[call],
                       source=SourceRef(topic="posts", partition=0, offset=0))  # fmt: skip


def test_pending_is_ordered_by_priority_and_leaves_with_a_decision() -> None:
    store = ReviewStore()
    low = review_record("low", [policy("spam", True, severity="low", t1=result("spam", None))], offset=1)
    severe = review_record("severe", [policy("m", False, severity="severe", t1=result("m", None))], offset=2)
    older = review_record("older", [policy("spam", True, severity="low", t1=result("spam", None))], offset=3,
                          created_at=T0 - timedelta(hours=1))  # fmt: skip
    for record in (low, severe, older, low):  # a replayed record changes nothing
        store.add_review(record)
    now = T0 + timedelta(minutes=10)
    assert [r.post.id for r in store.pending(now)] == ["severe", "older", "low"]
    stats = store.stats(now)
    assert stats.pending == 3 and stats.oldest_age_s == pytest.approx(70 * 60)
    store.add_decision(review_decision(severe, {"m": "confirm"}))
    assert [r.post.id for r in store.pending(now)] == ["older", "low"] and store.stats(now).pending == 2
    store.add_decision(review_decision(older, {"spam": "confirm"}, decision_id="d-2"))
    store.add_decision(review_decision(low, {"spam": "confirm"}, decision_id="d-3"))
    assert store.stats(now).pending == 0 and store.stats(now).oldest_age_s == 0.0


def test_applied_decisions_are_remembered_for_replays_and_corrections(tmp_path: object) -> None:
    path = str(tmp_path) + "/store.sqlite3"
    store = ReviewStore(path)
    record = review_record("p", [policy("spam", True)])
    decision = review_decision(record, {"spam": "confirm"})
    assert store.applied(record.review_id) is None and not store.seen("d-1")
    store.record_applied(decision, AppliedDecision("d-1", 2, "v2", {"spam": "confirm"}))
    store.close()
    reopened = ReviewStore(path)
    assert reopened.seen("d-1")
    assert reopened.applied(record.review_id) == AppliedDecision("d-1", 2, "v2", {"spam": "confirm"})


def test_chain_of_thought_only_for_authorised_reviewers() -> None:
    store = ReviewStore()
    record = review_record("p", [policy("spam", True, t1=result("spam", None))])
    store.add_review(record)
    store.add_audit(audit(record.verdict_id, "thinking about spam"))
    calls = store.audit(record.verdict_id)
    assert calls is not None and calls[0]["reasoning"] == "thinking about spam"
    shown = card(record, T0, calls)
    assert shown["reasoning"] == calls and shown["policies"][0]["rationale"] == "rationale of spam"
    hidden = card(record, T0, None)
    assert hidden["reasoning"] is None and hidden["policies"][0]["rationale"] is None
    auth = Auth(tokens=parse_tokens([f"alice={TOKEN}"]), cot_reviewers=frozenset({"bob"}))
    assert not auth.may_see_reasoning("alice") and not auth.may_see_reasoning(None)
    assert Auth().may_see_reasoning("alice")


def test_one_click_rules_on_the_policies_in_question_per_policy_form_on_any() -> None:
    record = review_record("p", [policy("spam", True), policy("scam", False, unresolved=False)])
    assert [p.policy_id for p in questioned(record)] == ["spam"]
    [call] = calls_from_form(record, {"all": "overturn", "reason": " nope "})
    assert (call.policy_id, call.outcome, call.reason) == ("spam", "overturn", "nope")
    calls = calls_from_form(record, {"all": "choices", "outcome:spam": "confirm", "outcome:scam": "overturn"})
    assert [(c.policy_id, c.outcome) for c in calls] == [("spam", "confirm"), ("scam", "overturn")]
    for bad in ({"all": "choices"}, {"all": "x"}, {"all": "choices", "outcome:other": "confirm"},
                {"all": "choices", "outcome:spam": "maybe"}):  # fmt: skip
        with pytest.raises(BadForm):
            calls_from_form(record, bad)


def test_tokens_headers_and_csrf() -> None:
    auth = Auth(tokens=parse_tokens([f"alice={TOKEN},bob=bob-token-0123456789"]), trusted_header="X-Forwarded-User")
    assert auth.reviewer({"Authorization": f"Bearer {TOKEN}"}, {}) == "alice"
    assert auth.reviewer({"Authorization": "Bearer wrong-token-0123456"}, {}) is None
    assert auth.reviewer({}, {"modstream_review": "bob-token-0123456789"}) == "bob"
    assert auth.reviewer({"X-Forwarded-User": "carol"}, {}) == "carol"
    assert auth.reviewer({}, {}) is None
    assert Auth(tokens=parse_tokens([f"alice={TOKEN}"])).reviewer({"X-Forwarded-User": "carol"}, {}) is None
    for bad in ("alice", "=x" * 10, "alice=short"):
        with pytest.raises(ValueError):
            parse_tokens([bad])
    secret = b"s" * 32
    assert csrf_ok(secret, "alice", csrf_token(secret, "alice"))
    assert not csrf_ok(secret, "bob", csrf_token(secret, "alice")) and not csrf_ok(secret, "alice", "")
    assert same_origin({"Origin": "http://127.0.0.1:8090"}, "http", "127.0.0.1:8090")
    assert same_origin({"Referer": "http://127.0.0.1:8090/"}, "http", "127.0.0.1:8090")
    assert not same_origin({"Origin": "http://evil.example"}, "http", "127.0.0.1:8090")
    assert not same_origin({}, "http", "127.0.0.1:8090")


def test_waiting_times_read_as_people_write_them() -> None:
    from worker.review.console import age_text

    assert [age_text(s) for s in (0, 59, 60, 3599, 3600, 7500, 86400, 90000 + 1800)] == [
        "0 s", "59 s", "1 min", "59 min", "1 h", "2 h 5 min", "1 d", "1 d 1 h",
    ]  # fmt: skip
