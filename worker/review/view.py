"""What the console shows and what a click means. Pure (the aiohttp app is console.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from worker.contracts import PolicyResult, ReviewerCall, ReviewPolicy, ReviewRecord
from worker.review.store import current_priority

Outcome = Literal["confirm", "overturn"]
OUTCOMES: tuple[Outcome, ...] = ("confirm", "overturn")


class BadForm(ValueError):
    """A decision form the console cannot turn into a ReviewDecision (answered 400)."""


def in_question(policy: ReviewPolicy) -> bool:
    """A policy the reviewer is asked about: unresolved, or violated with the action `review`."""
    return policy.unresolved or (policy.action == "review" and policy.proposed_violation)


def questioned(record: ReviewRecord) -> list[ReviewPolicy]:
    """What a one-click confirm / overturn rules on: the policies in question (all when none is)."""
    return [p for p in record.policies if in_question(p)] or list(record.policies)


def calls_from_form(record: ReviewRecord, form: Mapping[str, str]) -> list[ReviewerCall]:
    """`all=confirm|overturn`: one click for every policy in question. `all=choices`: the per-policy
    fields `outcome:<policy id>` (confirm / overturn; empty = no ruling). `reason` applies to each."""
    reason = form.get("reason", "").strip()[:2000]
    choice = form.get("all", "")
    if choice in OUTCOMES:
        return [ReviewerCall(policy_id=p.policy_id, outcome=choice, reason=reason) for p in questioned(record)]
    if choice != "choices":
        raise BadForm("choose confirm, overturn, or per-policy choices")
    known = {p.policy_id for p in record.policies}
    calls = []
    for name, value in form.items():
        if not name.startswith("outcome:") or not value:
            continue
        policy_id = name.removeprefix("outcome:")
        if policy_id not in known or value not in OUTCOMES:
            raise BadForm(f"no ruling {value!r} on policy {policy_id!r} in this review")
        calls.append(ReviewerCall(policy_id=policy_id, outcome="confirm" if value == "confirm" else "overturn",
                                  reason=reason))  # fmt: skip
    if not calls:
        raise BadForm("no policy ruled on")
    return calls


def describe(result: PolicyResult | None) -> str:
    if result is None:
        return "—"
    answer = {True: "violation", False: "no violation", None: "no valid answer"}[result.violation]
    p = f", p={result.p_violation:.2f}" if result.p_violation is not None else ""
    return f"{answer} ({result.confidence}{p})"


def rationale(policy: ReviewPolicy) -> str:
    deciding = policy.t2 if policy.t2 is not None else policy.t1
    return deciding.rationale if deciding is not None else ""


def card(record: ReviewRecord, now: datetime, reasoning: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One post of the queue as the template shows it. `reasoning` is None unless the reviewer may
    see the chain of thought (then it lists the audit record's judge calls, possibly empty)."""
    return {
        "review_id": record.review_id,
        "post": record.post,
        "priority": round(current_priority(record, now), 3),
        "waiting_s": int(max(0.0, (now - record.created_at).total_seconds())),
        "decision": record.decision,
        "interim_action": record.interim_action,
        "reasons": record.reasons,
        "verdict_id": record.verdict_id,
        "revision": record.revision,
        "policies": [
            {
                "id": p.policy_id,
                "version": p.policy_version,
                "severity": p.severity,
                "action": p.action,
                "unresolved": p.unresolved,
                "proposed": "violation" if p.proposed_violation else "no violation",
                "in_question": in_question(p),
                "t1": describe(p.t1),
                "t2": describe(p.t2),
                # The judges' free-text rationale is restricted like the chain of thought.
                "rationale": rationale(p) if reasoning is not None else None,
            }
            for p in record.policies
        ],
        "reasoning": reasoning,
    }
