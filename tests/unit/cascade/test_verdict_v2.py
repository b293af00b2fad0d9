"""Schema-2 verdicts from `judge_post`: per-policy severity/action/unresolved, supersession identity,
no funnel signals and no rationale on the public verdict (both kept on the audit record), the review
record of a `review` decision, and severe negatives (issue 10 items 1, 2 and 8)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from funnel import FunnelResult
from tests.judges_support import write_policy
from worker.cascade.pipeline import Judged, Judges, judge_post
from worker.cascade.revisions import stream_verdict_id
from worker.config import EscalationSettings
from worker.contracts import VERDICT_SCHEMA_VERSION, AuditCall, JudgeAnswer, Post, SourceRef, Verdict
from worker.judges.client import JudgeCall, TierName
from worker.policies.files import Policy, load_policy_dir
from worker.policies.screening import PolicyRuntime

SOURCE = SourceRef(topic="posts", partition=2, offset=41)
# policy id -> (t1, t2): "violation:confidence[:category]" or "none" (no valid answer).
Script = dict[str, tuple[str, str]]


@pytest.fixture
def runtime(tmp_path: Path) -> PolicyRuntime:
    write_policy(tmp_path, "spam", ["spamword"], severity="low", action="hide")
    write_policy(tmp_path, "minors", ["minorword"], severity="severe")
    write_policy(tmp_path, "nsfw", ["nsfwword"], severity="medium", action={"medium": "age_gate", "severe": "hide"},
                 escalation={"severe_categories": ["explicit-minor"]})  # fmt: skip
    write_policy(tmp_path, "fakes", ["fakeword"], severity="low", action="label")
    write_policy(tmp_path, "selfharm", ["selfword"], severity="high", action="review")
    return PolicyRuntime.build(load_policy_dir(tmp_path))


def audit(tier: TierName, policy: Policy) -> AuditCall:
    return AuditCall(
        tier=tier, policy_id=policy.id, policy_version=policy.version, model=f"m-{tier}", endpoint="e",
        reasoning_effort="low", request={}, reasoning="chain of thought", content=None, finish_reason="stop",
        error=None, latency_ms=1.0,
    )  # fmt: skip


def scripted(script: Script, rules: EscalationSettings | None = None, public_rationale: bool = False) -> Judges:
    def tier(name: TierName):  # type: ignore[no-untyped-def]
        async def judge(policy: Policy, post: Post) -> JudgeCall:
            kind = script[policy.id][0 if name == "t1" else 1]
            if kind == "none":
                return JudgeCall(name, policy, None, "invalid_json", audit(name, policy))
            violation, confidence, *category = kind.split(":")
            answer = JudgeAnswer(
                violation=int(violation),  # type: ignore[arg-type]
                confidence=confidence,  # type: ignore[arg-type]
                policy_category=category[0] if category else None,
                rationale=f"{name} says {kind}",
            )
            return JudgeCall(name, policy, answer, None, audit(name, policy))

        return judge

    return Judges(t1=tier("t1"), t2=tier("t2"), rules=rules or EscalationSettings(), public_rationale=public_rationale)


def judge(
    runtime: PolicyRuntime,
    script: Script,
    very_sure: tuple[str, ...] = (),
    post: Post | None = None,
    **kwargs: object,
) -> Judged:
    screened = FunnelResult(
        candidates=list(script),
        scores={pid: 0.99 for pid in script},
        signals={pid: [f"keyword:{pid}word"] for pid in script},
        very_sure=list(very_sure),
    )
    post = post or Post(id="post-1", text=" ".join(f"{pid}word" for pid in script))
    judges = scripted(script, **kwargs)  # type: ignore[arg-type]
    return asyncio.run(judge_post(post, screened, runtime, judges, SOURCE, time.perf_counter()))


def by_policy(verdict: Verdict) -> dict[str, dict[str, object]]:
    return {r.policy_id: r.model_dump() for r in verdict.results}


def test_a_stream_verdict_is_revision_one_with_a_deterministic_id(runtime: PolicyRuntime) -> None:
    first = judge(runtime, {"spam": ("1:high", "1:high")})
    again = judge(runtime, {"spam": ("1:high", "1:high")})
    verdict = first.verdict
    assert verdict.schema_version == VERDICT_SCHEMA_VERSION == "2"
    assert verdict.verdict_id == stream_verdict_id("post-1", SOURCE) == again.verdict.verdict_id
    assert (verdict.revision, verdict.supersedes, verdict.route) == (1, None, "stream")
    assert verdict.decision == "hide" and verdict.interim_action is None
    assert first.audit is not None
    assert (first.audit.verdict_id, first.audit.revision) == (verdict.verdict_id, 1)
    other = judge(runtime, {"spam": ("1:high", "1:high")}, post=Post(id="post-2", text="spamword"))
    assert other.verdict.verdict_id != verdict.verdict_id


def test_no_signals_and_no_rationale_on_the_verdict_both_on_the_audit(runtime: PolicyRuntime) -> None:
    judged = judge(runtime, {"spam": ("1:high", "1:high"), "fakes": ("0:high", "0:high")})
    public = judged.verdict.model_dump_json()
    assert "signals" not in public and "keyword:" not in public
    assert "says" not in public and all(r.rationale == "" for r in judged.verdict.results)
    assert judged.audit is not None
    assert judged.audit.funnel_signals == {"spam": ["keyword:spamword"], "fakes": ["keyword:fakesword"]}
    assert {r.policy_id: r.rationale for r in judged.audit.results} == {
        "spam": "t1 says 1:high",
        "fakes": "t1 says 0:high",
    }
    with_rationale = judge(runtime, {"spam": ("1:high", "1:high")}, public_rationale=True)
    assert [r.rationale for r in with_rationale.verdict.results] == ["t1 says 1:high"]
    assert "signals" not in with_rationale.verdict.model_dump_json()


def test_each_result_carries_severity_action_and_unresolved(runtime: PolicyRuntime) -> None:
    judged = judge(
        runtime,
        {
            "spam": ("1:high", "1:high"),
            "nsfw": ("1:high:nudity", "1:high"),
            "fakes": ("1:high", "1:high"),
            "selfharm": ("0:high", "0:high"),
        },
    )
    results = by_policy(judged.verdict)
    assert {k: (v["severity"], v["action"], v["unresolved"], v["violation"]) for k, v in results.items()} == {
        "spam": ("low", "hide", False, True),
        "nsfw": ("medium", "age_gate", False, True),
        "fakes": ("low", "label", False, True),
        "selfharm": ("high", "review", False, False),
    }
    assert judged.verdict.decision == "hide" and judged.review_record(Post(id="x", text="t"), "audit", NOW) is None


def test_a_severe_category_takes_the_severe_action(runtime: PolicyRuntime) -> None:
    # Tier 1 finds a severe category: tier 2 confirms it (severe_category), the action is the severe one.
    judged = judge(runtime, {"nsfw": ("1:high:explicit-minor", "1:high:explicit-minor")})
    (result,) = judged.verdict.results
    assert (result.severity, result.action, judged.verdict.decision) == ("severe", "hide", "hide")
    assert judged.verdict.escalation_reasons == ["severe_category"]


def test_no_valid_answer_is_violation_none_and_unresolved(runtime: PolicyRuntime) -> None:
    judged = judge(runtime, {"spam": ("none", "none")})
    (result,) = judged.verdict.results
    assert result.violation is None and result.unresolved
    assert (judged.verdict.decision, judged.verdict.interim_action) == ("review", "allow")


NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_spam_hide_beside_an_unresolved_severe_policy_goes_to_review(runtime: PolicyRuntime) -> None:
    post = Post(id="post-9", text="spamword minorword", created_at=NOW - timedelta(hours=2))
    judged = judge(runtime, {"spam": ("1:high", "1:high"), "minors": ("1:low", "none")}, post=post)
    verdict = judged.verdict
    assert (verdict.decision, verdict.interim_action) == ("review", "hide")
    record = judged.review_record(post, "audit-topic", NOW)
    assert record is not None
    assert (record.review_id, record.verdict_id, record.revision) == (verdict.verdict_id, verdict.verdict_id, 1)
    assert record.reasons == ["unresolved"] and record.post == post and record.source == SOURCE
    assert record.audit.model_dump() == {"topic": "audit-topic", "post_id": "post-9", "verdict_id": verdict.verdict_id}
    policies = {p.policy_id: p for p in record.policies}
    spam, minors = policies["spam"], policies["minors"]
    assert (spam.policy_id, spam.unresolved, spam.proposed_violation) == ("spam", False, True)
    assert spam.t1 is not None and spam.t2 is None and spam.t1.rationale == "t1 says 1:high"
    assert (minors.policy_id, minors.unresolved, minors.severity, minors.proposed_violation) == (
        "minors", True, "severe", True,
    )  # fmt: skip
    assert minors.t1 is not None and minors.t1.violation is True
    assert minors.t2 is not None and minors.t2.violation is None
    # severe 8 x (1 - 0) [tier 2 gave no answer] x (1 + 2 hours)
    assert record.priority == pytest.approx(8 * 1.0 * 3.0)


def test_a_policy_whose_action_is_review_produces_a_review_record(runtime: PolicyRuntime) -> None:
    judged = judge(runtime, {"selfharm": ("1:high", "1:high"), "fakes": ("1:high", "1:high")})
    assert (judged.verdict.decision, judged.verdict.interim_action) == ("review", "label")
    record = judged.review_record(Post(id="post-1", text="selfword"), "audit", NOW)
    assert record is not None and record.reasons == ["review_action"]
    assert {p.policy_id: p.unresolved for p in record.policies} == {"selfharm": True, "fakes": False}
    assert record.priority == pytest.approx(4 * 0.25)  # high, confidence "high" = 0.75, no created_at


def test_tier_two_overturning_a_severe_violation_is_a_severe_negative(runtime: PolicyRuntime) -> None:
    judged = judge(runtime, {"minors": ("1:high", "0:high")})
    (result,) = judged.verdict.results
    assert result.unresolved and result.violation is False and result.severity == "severe"
    assert (judged.verdict.decision, judged.verdict.interim_action) == ("review", "hide")
    record = judged.review_record(Post(id="post-1", text="minorword"), "audit", NOW)
    assert record is not None and record.reasons == ["severe_negative"]
    (policy,) = record.policies
    assert policy.proposed_violation is False and policy.t1 is not None and policy.t1.violation is True
    assert record.priority == pytest.approx(8.0)  # the tiers disagree: confidence 0
    off = judge(runtime, {"minors": ("1:high", "0:high")}, rules=EscalationSettings(review_severe_overturn=False))
    assert off.verdict.decision == "allow"
    # A milder policy's overturn is tier 2's call.
    assert judge(runtime, {"spam": ("1:low", "0:high")}).verdict.decision == "allow"


def test_a_severe_negative_against_a_very_sure_funnel_goes_to_tier_two(runtime: PolicyRuntime) -> None:
    judged = judge(runtime, {"minors": ("0:high", "1:high")}, very_sure=("minors",))
    assert judged.verdict.escalation_reasons == ["severe_negative"] and judged.verdict.decision == "hide"
    # Also when the general funnel-disagreement rule is off; and not when its own switch is off.
    rules = EscalationSettings(on_funnel_disagreement=False)
    assert judge(runtime, {"minors": ("0:high", "1:high")}, ("minors",), rules=rules).verdict.decision == "hide"
    rules = EscalationSettings(on_funnel_disagreement=False, on_severe_negative=False)
    assert judge(runtime, {"minors": ("0:high", "1:high")}, ("minors",), rules=rules).verdict.decision == "allow"
    # A milder policy still escalates as funnel_disagreement.
    mild = judge(runtime, {"spam": ("0:high", "1:high")}, very_sure=("spam",))
    assert mild.verdict.escalation_reasons == ["funnel_disagreement"]
