"""Reviewer decisions as a labelled dataset: the rows `modstream eval --dataset` and `modstream funnel
fit --labeled` read (funnel/labelled.py: {"id", "text", ..., "labels": {policy_id: 0|1}}). Pure.

A post's label for a policy is what the reviewer found: `confirm` -> the cascade's proposed call,
`overturn` -> its opposite. Several decisions on one review: the later one wins per policy. Policies
the reviewer did not rule on are left out (not labelled, which is not "safe").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from worker.contracts import ReviewDecision, ReviewRecord


def label_row(record: ReviewRecord, decisions: Iterable[ReviewDecision]) -> dict[str, Any] | None:
    """One dataset row for a reviewed post (None: no ruling on any of its policies)."""
    proposed = {p.policy_id: p.proposed_violation for p in record.policies}
    labels: dict[str, int] = {}
    for decision in sorted(decisions, key=lambda d: d.decided_at):
        for call in decision.calls:
            if call.policy_id in proposed:
                violated = proposed[call.policy_id] == (call.outcome == "confirm")
                labels[call.policy_id] = int(violated)
    if not labels:
        return None
    return {**record.post.model_dump(mode="json", exclude_none=True), "labels": labels}
