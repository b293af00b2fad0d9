"""The precedence table (docs/workflow.md, "Verdicts"): every combination of (violation, unresolved,
severity, action) for one policy, representative pairs, and the table's invariants over every pair."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest

from worker.cascade.precedence import decide, policy_call
from worker.contracts import Action, Applied, Decision, PolicyResult, Severity

VIOLATIONS: tuple[bool | None, ...] = (True, False, None)
SEVERITIES: tuple[Severity, ...] = get_args(Severity)
ACTIONS: tuple[Action, ...] = get_args(Action)
COMBINATIONS = list(itertools.product(VIOLATIONS, (False, True), SEVERITIES, ACTIONS))


def result(
    violation: bool | None,
    unresolved: bool = False,
    severity: Severity = "medium",
    action: Action = "hide",
    policy_id: str = "p",
    sampled: bool = False,
) -> PolicyResult:
    return PolicyResult(
        policy_id=policy_id,
        policy_version="v",
        violation=violation,
        unresolved=unresolved,
        severity=severity,
        action=action,
        confidence="high",
        rationale="",
        sampled=sampled,
    )


def expected_single(
    violation: bool | None, unresolved: bool, severity: Severity, action: Action
) -> tuple[Decision, Applied | None]:
    """The table as docs/workflow.md writes it, one row per case."""
    if unresolved or violation is None:  # an open question: review; severe ones are hidden meanwhile
        return "review", "hide" if severity == "severe" else "allow"
    if not violation:  # decided safe
        return "allow", None
    if action == "review":  # decided violation a human must confirm before anything is applied
        return "review", "allow"
    return action, None  # decided violation: the policy's action


def test_the_combinations_are_all_there() -> None:
    assert len(COMBINATIONS) == 3 * 2 * 4 * 4 == 96


@pytest.mark.parametrize(("violation", "unresolved", "severity", "action"), COMBINATIONS)
def test_one_policy(violation: bool | None, unresolved: bool, severity: Severity, action: Action) -> None:
    assert decide([result(violation, unresolved, severity, action)]) == expected_single(
        violation, unresolved, severity, action
    )


def test_spam_hide_with_an_unresolved_severe_policy_is_not_plain_hide() -> None:
    """The issue's example: a post hidden for spam with an unresolved sexual-minors result."""
    spam = result(True, severity="low", action="hide", policy_id="spam-scams")
    minors = result(None, unresolved=True, severity="severe", action="hide", policy_id="sexual-minors")
    assert decide([spam, minors]) == ("review", "hide")
    assert decide([minors, spam]) == ("review", "hide")


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], ("allow", None)),
        ([result(False), result(False, policy_id="q")], ("allow", None)),
        # The strongest resolved action wins: hide > age_gate > label > allow.
        ([result(True, action="label"), result(True, action="age_gate", policy_id="q")], ("age_gate", None)),
        ([result(True, action="label"), result(True, action="hide", policy_id="q")], ("hide", None)),
        ([result(True, action="label"), result(False, policy_id="q")], ("label", None)),
        # A mild open question: review, with the resolved policies' action applied meanwhile.
        ([result(True, action="label"), result(None, True, "low", policy_id="q")], ("review", "label")),
        ([result(True, action="age_gate"), result(False, True, "high", policy_id="q")], ("review", "age_gate")),
        # A severe open question raises the interim action to hide whatever the others say.
        ([result(True, action="label"), result(False, True, "severe", "label", policy_id="q")], ("review", "hide")),
        ([result(False), result(True, True, "severe", "review", policy_id="q")], ("review", "hide")),
        # A decided severe violation whose action is review: review, nothing open, so no raise.
        ([result(False), result(True, False, "severe", "review", policy_id="q")], ("review", "allow")),
        ([result(True, action="hide"), result(True, action="review", policy_id="q")], ("review", "hide")),
        # Bypass-sampled results never count.
        ([result(False), result(True, action="hide", policy_id="q", sampled=True)], ("allow", None)),
        ([result(False), result(None, True, "severe", policy_id="q", sampled=True)], ("allow", None)),
    ],
)
def test_pairs(results: list[PolicyResult], expected: tuple[Decision, Applied | None]) -> None:
    assert decide(results) == expected
    assert decide(list(reversed(results))) == expected, "the order of the policies never matters"


STRENGTH = {"allow": 0, "label": 1, "age_gate": 2, "hide": 3}


def test_invariants_over_every_pair() -> None:
    for a, b in itertools.product(COMBINATIONS, repeat=2):
        pair = [result(*a), result(*b, policy_id="q")]
        decision, interim = decide(pair)
        calls = [policy_call(r) for r in pair]
        open_severe = any((r.unresolved or r.violation is None) and r.severity == "severe" for r in pair)
        if "review" in calls:
            assert decision == "review" and interim is not None, (a, b)
            resolved = [c for c in calls if c != "review"]
            strongest = max(resolved, key=STRENGTH.__getitem__, default="allow")
            assert interim == ("hide" if open_severe else strongest), (a, b)
        else:
            assert interim is None and decision == max(calls, key=STRENGTH.__getitem__), (a, b)
        # Never a plain decision while a policy is unresolved.
        if any(r.unresolved or r.violation is None for r in pair):
            assert decision == "review", (a, b)
