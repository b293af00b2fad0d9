"""Audit records as labelled posts (worker/eval/teacher.py): the deciding tier's answer per policy."""

from __future__ import annotations

from typing import Any

import orjson

from worker.contracts import AuditCall, AuditRecord, Post, SourceRef
from worker.eval.teacher import TeacherReport, labelled_from_audit, post_text
from worker.judges.protocol import user_message


def answer(violation: int) -> str:
    return orjson.dumps(
        {"violation": violation, "policy_category": None, "rule_ids": [], "confidence": "high", "rationale": "r"}
    ).decode()


def call(tier: str, policy_id: str, content: str | None, text: str = "buy followers now", **extra: Any) -> AuditCall:
    return AuditCall(
        tier=tier,  # type: ignore[arg-type]
        policy_id=policy_id,
        policy_version="1",
        model="m",
        endpoint="http://judge/v1",
        reasoning_effort="low" if tier == "t1" else "high",
        request={"messages": [{"role": "system", "content": "POLICY"}, {"role": "user", "content": text}]},
        reasoning=None,
        content=content,
        latency_ms=1.0,
        **{"finish_reason": "stop", "error": None, **extra},
    )


def record(post_id: str, *calls: AuditCall) -> dict[str, Any]:
    source = SourceRef(topic="posts", partition=0, offset=1)
    return orjson.loads(
        AuditRecord(post_id=post_id, decision="hide", calls=list(calls), source=source).model_dump_json()
    )


def test_tier_2_overrides_tier_1_whatever_the_order_of_calls() -> None:
    rec = record(
        "p1", call("t2", "spam", answer(0)), call("t1", "spam", answer(1)), call("t1", "harassment", answer(1))
    )
    [post] = labelled_from_audit([rec])
    assert (post.id, post.text, post.labels) == ("p1", "buy followers now", {"spam": 0, "harassment": 1})


def test_invalid_answers_and_errors_give_no_label_and_are_counted() -> None:
    report = TeacherReport()
    bad = record("p2", call("t1", "spam", "not json"), call("t1", "violence", None, error="timeout"))
    no_calls = record("p3")
    good = record("p4", call("t1", "spam", "{oops"), call("t2", "spam", answer(1)))
    posts = labelled_from_audit([bad, no_calls, good], report)
    assert [(p.id, p.labels) for p in posts] == [("p4", {"spam": 1})]
    assert report.records == 3 and report.posts == 1
    assert report.dropped == {"no valid answer": 1, "no judge calls": 1}
    assert report.positives["spam"] == 1


def test_multi_policy_call_labels_each_policy() -> None:
    answers = {"spam": orjson.loads(answer(1)), "harassment": orjson.loads(answer(0))}
    content = orjson.dumps({"results": answers}).decode()
    multi = call("t1", "spam+harassment", content, policy_versions={"spam": "1", "harassment": "2"})
    [post] = labelled_from_audit([record("p5", multi)])
    assert post.labels == {"spam": 1, "harassment": 0}


def test_the_post_text_is_unwrapped_from_a_conversation() -> None:
    post = Post.model_validate(
        {"id": "p6", "text": "and you too", "context": [{"role": "user", "text": "earlier message"}]}
    )
    wrapped = user_message(post)
    assert wrapped != post.text
    assert post_text({"messages": [{"role": "user", "content": wrapped}]}) == "and you too"
    [labelled] = labelled_from_audit([record("p6", call("t1", "spam", answer(0), text=wrapped))])
    assert labelled.text == "and you too"
