"""The demo's checks (worker.local.demo_expect): every kind of difference is reported, nothing else."""

from __future__ import annotations

from typing import Any

from worker.local.demo_expect import check_final, check_stream, check_superseding, newest

EXPECTED = [
    {"id": "a", "expect": "allow"},
    {"id": "b", "expect": "violation", "policies": ["spam"], "decision": "hide"},
    {"id": "c", "expect": "dead-letter"},
]


def verdict(post_id: str, decision: str, *flagged: str, revision: int = 1, **extra: Any) -> dict[str, Any]:
    results = [{"policy_id": p, "violation": True} for p in flagged]
    return {"post_id": post_id, "decision": decision, "results": results, "revision": revision,
            "verdict_id": f"{post_id}-{revision}", **extra}  # fmt: skip


def test_the_expected_stream_passes() -> None:
    assert check_stream(EXPECTED, {"a": verdict("a", "allow"), "b": verdict("b", "hide", "spam")}, {"c": "x"}) == []


def test_every_stream_difference_is_named() -> None:
    got = check_stream(
        EXPECTED,
        {"a": verdict("a", "hide", "hate"), "b": verdict("b", "hide", "hate"), "c": verdict("c", "allow")},
        {},
    )
    assert [m.line() for m in got] == [
        "stream a: expected allow, got hide (flagged: hate)",
        "stream b: expected hide flagged by spam, got hide (flagged: hate)",
        "stream c: expected dead-letter, got allow",
    ]
    missing = check_stream(EXPECTED, {"b": verdict("b", "review", "spam")}, {})
    assert [m.line() for m in missing] == [
        "stream a: expected allow, got nothing",
        "stream b: expected hide flagged by spam, got review (flagged: spam)",
        "stream c: expected dead-letter, got nothing",
    ]


def test_newest_keeps_the_greatest_revision_whatever_the_order() -> None:
    one, two = verdict("a", "hide"), verdict("a", "allow", revision=2)
    assert newest([two, one])["a"] is two and newest([one, two])["a"] is two


def test_a_superseding_verdict_must_name_the_one_it_replaces() -> None:
    before = {"a": verdict("a", "hide")}
    good = verdict("a", "allow", revision=2, route="appeal", supersedes="a-1")
    assert check_superseding("appeal", {"a": "allow"}, before, [good]) == []
    wrong = verdict("a", "hide", revision=3, route="appeal", supersedes="other")
    lines = [m.line() for m in check_superseding("appeal", {"a": "allow"}, before, [wrong])]
    assert lines == ["appeal a: expected allow, got hide",
                     "appeal a: expected revision 2 superseding a-1, got revision 3 superseding other"]  # fmt: skip
    assert [m.line() for m in check_superseding("appeal", {"a": "allow"}, before, [])] == [
        "appeal a: expected allow, got no appeal verdict"
    ]
    extra = verdict("b", "hide", revision=2, route="appeal")
    assert [m.line() for m in check_superseding("appeal", {}, before, [extra])] == [
        "appeal b: expected no appeal verdict, got hide"
    ]


def test_the_platform_table_must_hold_every_post_and_nothing_else() -> None:
    assert check_final({"a": "hide"}, {"a": "hide"}) == []
    lines = [m.line() for m in check_final({"a": "hide", "b": "allow"}, {"a": "allow", "z": "hide"})]
    assert lines == ["platform a: expected hide, got allow", "platform b: expected allow, got no row",
                     "platform z: expected no row, got hide"]  # fmt: skip
