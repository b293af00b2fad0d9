from typing import Any

import pytest
from pydantic import ValidationError

from funnel import FunnelResult
from tests.helpers_policies import make_policy
from worker.cascade.escalate import escalation_reasons, in_audit_sample, settle
from worker.cascade.precedence import decide
from worker.cascade.verdict import all_results, assemble_verdict, policy_decision
from worker.config import EscalationSettings
from worker.contracts import AuditCall, JudgeAnswer, SourceRef
from worker.judges.client import Failure, JudgeCall, TierName
from worker.policies.files import Policy, PolicyError

RULES = EscalationSettings()
QUIET = FunnelResult(candidates=["spam"], scores={"spam": 0.6}, signals={}, very_sure=[])
SURE = FunnelResult(candidates=["spam"], scores={"spam": 0.99}, signals={}, very_sure=["spam"])


def call(
    policy: Policy,
    tier: TierName = "t1",
    failure: Failure | None = None,
    p: float | None = None,
    **answer: Any,
) -> JudgeCall:
    parsed = None
    if failure is None:
        parsed = JudgeAnswer.model_validate(
            {"violation": 0, "confidence": "high", "rationale": "r", "policy_category": None, **answer}
        )
    audit = AuditCall(
        tier=tier,
        policy_id=policy.id,
        policy_version=policy.version,
        model=f"m-{tier}",
        endpoint="e",
        reasoning_effort="low" if tier == "t1" else "high",
        request={},
        reasoning="cot",
        content=None,
        finish_reason="stop",
        error=None,
        latency_ms=1.0,
    )
    return JudgeCall(tier, policy, parsed, failure, audit, p)


def test_confident_safe_answer_is_not_escalated() -> None:
    assert escalation_reasons(call(make_policy()), QUIET, "p1", RULES) == []


@pytest.mark.parametrize(
    ("policy_front", "answer", "funnel", "reason"),
    [
        ({}, {"confidence": "medium"}, QUIET, "low_confidence"),
        ({"escalation": {"min_confidence": "medium"}}, {"confidence": "low"}, QUIET, "low_confidence"),
        ({"severity": "severe"}, {"violation": 1}, QUIET, "severe_category"),
        (
            {"escalation": {"severe_categories": ["threat"]}},
            {"violation": 1, "policy_category": "Threat"},
            QUIET,
            "severe_category",
        ),
        ({}, {"violation": 0}, SURE, "funnel_disagreement"),
    ],
)
def test_each_reason(policy_front: dict[str, Any], answer: dict[str, Any], funnel: FunnelResult, reason: str) -> None:
    assert escalation_reasons(call(make_policy(**policy_front), **answer), funnel, "p1", RULES) == [reason]


def test_medium_is_fine_when_the_policy_bar_is_medium() -> None:
    policy = make_policy(escalation={"min_confidence": "medium"})
    assert escalation_reasons(call(policy, confidence="medium"), QUIET, "p1", RULES) == []


@pytest.mark.parametrize("failure", ["truncated", "empty", "invalid_json", "invalid_answer", "rejected"])
def test_no_answer_escalates(failure: Failure) -> None:
    assert escalation_reasons(call(make_policy(), failure=failure), QUIET, "p1", RULES) == ["invalid_answer"]


def test_switches_turn_reasons_off() -> None:
    off = EscalationSettings(
        on_low_confidence=False, on_invalid_answer=False, on_severe=False, on_funnel_disagreement=False
    )
    severe = make_policy(severity="severe")
    assert escalation_reasons(call(severe, violation=1, confidence="low"), SURE, "p", off) == []
    assert escalation_reasons(call(severe, failure="empty"), SURE, "p", off) == []


def test_audit_sample_is_deterministic_and_near_its_rate() -> None:
    picked = [in_audit_sample(f"post-{i}", "spam", 0.1) for i in range(5000)]
    assert picked == [in_audit_sample(f"post-{i}", "spam", 0.1) for i in range(5000)]
    assert 400 < sum(picked) < 600
    sampled = EscalationSettings(audit_sample_rate=1.0)
    assert escalation_reasons(call(make_policy()), QUIET, "p1", sampled) == ["audit_sample"]


def test_settle_paths() -> None:
    policy = make_policy()
    t1 = call(policy, confidence="low", violation=1)
    assert settle(t1, [], None, RULES).deciding is t1
    sure = call(policy, tier="t2", violation=1, confidence="high")
    decided = settle(t1, ["low_confidence"], sure, RULES)
    assert decided.deciding is sure and not decided.unresolved
    unsure = call(policy, tier="t2", violation=1, confidence="low")
    assert settle(t1, ["low_confidence"], unsure, RULES).unresolved
    failed = call(policy, tier="t2", failure="truncated")
    assert settle(t1, ["low_confidence"], failed, RULES).unresolved


def test_decision_rules_and_verdict_assembly() -> None:
    spam, hate = make_policy("spam"), make_policy("hate")
    hide = settle(call(spam, violation=1), [], None, RULES)
    allow = settle(call(hate), [], None, RULES)
    review = settle(call(hate), ["low_confidence"], call(hate, tier="t2", failure="empty"), RULES)
    assert [policy_decision(o) for o in (hide, allow, review)] == ["hide", "allow", "review"]
    assert decide(all_results([allow])) == ("allow", None)
    assert decide(all_results([allow, review])) == ("review", "allow")
    # A decided hide no longer masks an open question: review, with the hide applied meanwhile.
    assert decide(all_results([hide, review])) == ("review", "hide")
    source = SourceRef(topic="posts", partition=0, offset=5)
    verdict = assemble_verdict("p1", [hide, review], QUIET, source, 12.5)
    assert verdict.decision == "review" and verdict.interim_action == "hide"
    assert verdict.tier == "t2" and verdict.escalated
    assert verdict.model == "m-t2" and verdict.reasoning_effort == "high"
    assert verdict.escalation_reasons == ["low_confidence"]
    assert [r.policy_id for r in verdict.results] == ["spam", "hate"]
    assert "cot" not in verdict.model_dump_json()
    funnel_only = assemble_verdict("p2", [], FunnelResult([], {"spam": 0.0}), source, 1.0)
    assert funnel_only.decision == "allow" and funnel_only.tier == "funnel" and funnel_only.model is None


@pytest.mark.parametrize(
    ("band", "p", "escalates"),
    [
        (None, 0.55, True),
        (None, 0.26, True),
        (None, 0.25, False),  # the band is open: its ends do not escalate
        (None, 0.99, False),
        (None, 0.01, False),
        (None, None, False),  # no logprobs: no opinion
        ([0.1, 0.9], 0.15, True),  # a policy's own band replaces the worker's
        ([0.4, 0.6], 0.3, False),
        ([0.5, 0.5], 0.5, False),  # an empty band turns the rule off for that policy
    ],
)
def test_uncertain_probability(band: list[float] | None, p: float | None, escalates: bool) -> None:
    front = {"escalation": {"p_violation_band": band}} if band else {}
    reasons = escalation_reasons(call(make_policy(**front), p=p, violation=1), QUIET, "p1", RULES)
    assert reasons == (["uncertain_probability"] if escalates else [])


def test_uncertain_probability_switch_and_global_band() -> None:
    assert (
        escalation_reasons(call(make_policy(), p=0.5), QUIET, "p1", EscalationSettings(on_uncertain_probability=False))
        == []
    )
    wide = EscalationSettings(p_violation_band=(0.01, 0.99))
    assert escalation_reasons(call(make_policy(), p=0.9), QUIET, "p1", wide) == ["uncertain_probability"]


@pytest.mark.parametrize("band", [(0.8, 0.2), (-0.1, 0.5), (0.5, 1.5)])
def test_bands_are_validated(band: tuple[float, float]) -> None:
    with pytest.raises(ValidationError, match="p_violation band"):
        EscalationSettings(p_violation_band=band)
    with pytest.raises(PolicyError, match="p_violation band"):
        make_policy(escalation={"p_violation_band": list(band)})


def test_p_violation_and_truncation_reach_the_verdict() -> None:
    policy = make_policy()
    t1 = call(policy, p=0.123456, violation=1)
    t1 = JudgeCall(t1.tier, t1.policy, t1.answer, None, t1.audit, t1.p_violation, truncated=True)
    verdict = assemble_verdict(
        "p1", [settle(t1, [], None, RULES)], QUIET, SourceRef(topic="t", partition=0, offset=0), 1
    )
    (result,) = verdict.results
    assert result.p_violation == 0.1235 and result.truncated
    failed = call(policy, failure="rejected")
    review = settle(failed, ["invalid_answer"], call(policy, tier="t2", failure="empty"), RULES)
    (result,) = assemble_verdict("p2", [review], QUIET, SourceRef(topic="t", partition=0, offset=0), 1).results
    assert result.p_violation is None and not result.truncated
