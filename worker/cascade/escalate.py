"""Escalate stage: pure rules deciding which tier-1 results tier 2 must re-judge (docs/judges.md §2),
and how tier 2's answer settles a policy (decided, or left to human review)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from funnel import FunnelResult
from worker.config import EscalationSettings
from worker.contracts import Confidence, JudgeAnswer
from worker.judges.protocol import JudgeCall
from worker.policies.files import Policy

Reason = Literal[
    "low_confidence", "invalid_answer", "severe_category", "funnel_disagreement", "audit_sample",
    "uncertain_probability", "severe_negative",
]  # fmt: skip
REASONS: tuple[Reason, ...] = (
    "low_confidence",
    "invalid_answer",
    "severe_category",
    "funnel_disagreement",
    "audit_sample",
    "uncertain_probability",
    "severe_negative",
)
_CONFIDENCE_RANK: dict[Confidence, int] = {"low": 0, "medium": 1, "high": 2}


def below(confidence: Confidence, bar: Confidence) -> bool:
    return _CONFIDENCE_RANK[confidence] < _CONFIDENCE_RANK[bar]


def uncertain(p_violation: float | None, band: tuple[float, float]) -> bool:
    """p_violation strictly inside the band (open interval: [0.5, 0.5] never fires). No p, no opinion."""
    low, high = band
    return p_violation is not None and low < p_violation < high


def in_audit_sample(post_id: str, policy_id: str, rate: float) -> bool:
    """Deterministic sampling: the same post is sampled on every replay."""
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(f"{post_id}\0{policy_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def escalation_reasons(call: JudgeCall, funnel: FunnelResult, post_id: str, rules: EscalationSettings) -> list[Reason]:
    policy = call.policy
    answer = call.answer
    reasons: list[Reason] = []
    if answer is None:
        if rules.on_invalid_answer:
            reasons.append("invalid_answer")
        return reasons
    if rules.on_low_confidence and below(answer.confidence, policy.meta.escalation.min_confidence):
        reasons.append("low_confidence")
    band = policy.meta.escalation.p_violation_band or rules.p_violation_band
    if rules.on_uncertain_probability and uncertain(call.p_violation, band):
        reasons.append("uncertain_probability")
    if rules.on_severe and answer.violation == 1 and is_severe(policy, answer):
        reasons.append("severe_category")
    # A shadow policy is screened with its live twin's funnel result (see PolicyRuntime).
    screened_as = policy.meta.shadow_of or policy.id
    sure_but_safe = answer.violation == 0 and screened_as in funnel.very_sure
    # A severe policy's "safe" against a very sure funnel gets a second look even when the general
    # funnel-disagreement rule is off (a missed severe violation costs most).
    if sure_but_safe and rules.on_severe_negative and policy.meta.severity == "severe":
        reasons.append("severe_negative")
    elif sure_but_safe and rules.on_funnel_disagreement:
        reasons.append("funnel_disagreement")
    if in_audit_sample(post_id, policy.id, rules.audit_sample_rate):
        reasons.append("audit_sample")
    return reasons


def is_severe(policy: Policy, answer: JudgeAnswer) -> bool:
    """A severe `hide` is confirmed by tier 2 before it is published."""
    return policy.meta.severity_of(answer.policy_category) == "severe"


@dataclass(frozen=True, slots=True)
class PolicyOutcome:
    """How one policy ended for one post: the deciding call, or unresolved (human review).
    `severe_negative`: unresolved because tier 2 overturned tier 1's violation on a severe policy."""

    policy: Policy
    deciding: JudgeCall
    escalation_reasons: list[Reason] = field(default_factory=list)
    unresolved: bool = False
    severe_negative: bool = False
    # Tier 1's call when the policy escalated (then `deciding` is tier 2's, or tier 1's if tier 2 never ran).
    first: JudgeCall | None = None

    @property
    def escalated(self) -> bool:
        return bool(self.escalation_reasons)

    @property
    def t1(self) -> JudgeCall:
        return self.first if self.first is not None else self.deciding

    @property
    def t2(self) -> JudgeCall | None:
        return self.deciding if self.deciding.tier == "t2" else None


def settle(t1: JudgeCall, reasons: list[Reason], t2: JudgeCall | None, rules: EscalationSettings) -> PolicyOutcome:
    """Tier 2 decides an escalated policy; if it fails or is unsure, a human reviews it. Tier 2
    clearing what tier 1 found violating on a severe policy (or category) is not an allow either:
    two judges disagree on the worst kind of content, so a human decides (`review_severe_overturn`)."""
    if not reasons:
        return PolicyOutcome(t1.policy, t1)
    if t2 is None or t2.answer is None or below(t2.answer.confidence, rules.t2_min_confidence):
        return PolicyOutcome(t1.policy, t2 or t1, reasons, unresolved=True, first=t1)
    first = t1.answer
    if (
        rules.review_severe_overturn
        and first is not None
        and first.violation == 1
        and t2.answer.violation == 0
        and is_severe(t1.policy, first)
    ):
        return PolicyOutcome(t1.policy, t2, reasons, unresolved=True, severe_negative=True, first=t1)
    return PolicyOutcome(t1.policy, t2, reasons, first=t1)
