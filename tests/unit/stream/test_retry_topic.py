"""The retry topic's headers and timing (worker/stream/deadline.py): pure."""

from __future__ import annotations

import asyncio
from pathlib import Path

from worker.cascade.revisions import stream_verdict_id
from worker.contracts import SourceRef
from worker.policies.files import Policy, PolicyFrontMatter
from worker.stream.deadline import (
    RETRY_ATTEMPT,
    RETRY_NOT_BEFORE,
    RETRY_ORIGIN,
    attempt_of,
    due_in,
    give_up_verdict,
    not_before_of,
    origin_of,
    retry_headers,
    retry_state,
    wait_until_due,
)


def test_retry_headers_replace_old_ones_and_keep_the_rest() -> None:
    first = retry_headers([("traceparent", b"00-ab")], 2, 1000.5, "posts/3/17")
    assert first == [
        ("traceparent", b"00-ab"),
        (RETRY_ATTEMPT, b"2"),
        (RETRY_NOT_BEFORE, b"1000500"),
        (RETRY_ORIGIN, b"posts/3/17"),
    ]
    second = retry_headers(first, 3, 2000.0, origin_of(first, "retry/0/4"))
    assert attempt_of(second) == 3 and not_before_of(second) == 2000.0
    assert origin_of(second, "retry/0/9") == "posts/3/17", "the first position is kept"
    assert [k for k, _ in second].count(RETRY_ATTEMPT) == 1


def test_missing_or_bad_headers_mean_first_attempt_and_no_wait() -> None:
    assert attempt_of([]) == 1 and attempt_of([(RETRY_ATTEMPT, b"x")]) == 1 and attempt_of([(RETRY_ATTEMPT, b"0")]) == 1
    assert not_before_of([(RETRY_NOT_BEFORE, b"soon")]) is None
    assert due_in([], 50.0) == 0.0
    assert due_in([(RETRY_NOT_BEFORE, b"60000")], 50.0) == 10.0
    assert due_in([(RETRY_NOT_BEFORE, b"60000")], 70.0) == 0.0


def test_retry_state_keeps_only_retry_headers_from_any_header_shape() -> None:
    raw = [("a", b"1"), (RETRY_ATTEMPT, "2"), (RETRY_ORIGIN, None), (RETRY_NOT_BEFORE, b"5")]
    assert retry_state(raw) == ((RETRY_ATTEMPT, b"2"), (RETRY_NOT_BEFORE, b"5"))
    assert retry_state({RETRY_ATTEMPT: b"3"}) == ((RETRY_ATTEMPT, b"3"),)
    assert retry_state(None) == ()


def test_wait_until_due_returns_at_once_when_due() -> None:
    asyncio.run(asyncio.wait_for(wait_until_due([(RETRY_NOT_BEFORE, b"1000")], clock=lambda: 5.0), 5))


def _policy(policy_id: str, severity: str, **extra: object) -> Policy:
    meta = PolicyFrontMatter.model_validate({"id": policy_id, "title": policy_id, "severity": severity, **extra})
    return Policy(meta=meta, prompt="Rules.", version="v1", path=Path(f"{policy_id}.md"))


def test_the_give_up_verdict_leaves_every_candidate_unresolved_under_the_stream_verdict_id() -> None:
    source = SourceRef(topic="retry", partition=0, offset=2)
    candidates = [_policy("spam", "low"), _policy("csam", "severe"), _policy("csam-v2", "severe", shadow=True)]
    verdict = give_up_verdict("p-1", source, 3, 12.0, candidates)
    # A severe candidate nobody judged is hidden while a person decides (the precedence rule).
    assert (verdict.decision, verdict.interim_action, verdict.route, verdict.revision) == (
        "review",
        "hide",
        "stream",
        1,
    )
    assert [(r.policy_id, r.violation, r.unresolved) for r in verdict.results] == [
        ("spam", None, True),
        ("csam", None, True),
    ], "shadow policies never decide"
    assert verdict.verdict_id == stream_verdict_id("p-1", source)
    assert verdict.escalation_reasons == ["deadline_exceeded_after_3_attempts"]
    mild = give_up_verdict("p-1", source, 3, 12.0, candidates[:1])
    assert (mild.decision, mild.interim_action) == ("review", "allow")
    # Only a bypass sample timed out: the funnel cleared the post.
    assert give_up_verdict("p-1", source, 1, 12.0, []).decision == "allow"
