"""The post-level decision from per-policy results: one pure rule, used by the stream, reviews,
appeals and the sweep alike (docs/workflow.md, "Verdicts", has the table).

Per policy (bypass-sampled results never count):
  - unresolved (or no valid answer, `violation` None)  -> needs review
  - resolved violation, action `review`                -> needs review
  - resolved violation, action hide / age_gate / label -> that action
  - otherwise                                          -> allow

Per post: if any policy needs review, the decision is `review` and the interim action (what to apply
while a human decides) is the strongest action of the resolved policies (hide > age_gate > label >
allow), raised to `hide` when an unresolved policy is severe, so a severe open question is never
shown while it waits and never hidden behind another policy's plain `hide`. Otherwise the decision
is the strongest resolved action, with no interim action.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from worker.contracts import Applied, Decision, PolicyResult

# Strength of what is applied to a post; the strongest policy wins.
STRENGTH: dict[Applied, int] = {"allow": 0, "label": 1, "age_gate": 2, "hide": 3}

PolicyCall = Applied | Literal["review"]


def policy_call(result: PolicyResult) -> PolicyCall:
    """What one policy asks for on its own."""
    if result.unresolved or result.violation is None:
        return "review"
    if result.violation:
        return result.action
    return "allow"


def strongest(actions: Iterable[Applied]) -> Applied:
    return max(actions, key=STRENGTH.__getitem__, default="allow")


def decide(results: Iterable[PolicyResult]) -> tuple[Decision, Applied | None]:
    """(decision, interim_action); interim_action is set exactly when decision is `review`."""
    applied: list[Applied] = []
    needs_review = False
    severe_open = False
    for result in results:
        if result.sampled:
            continue
        call = policy_call(result)
        if call == "review":
            needs_review = True
            unresolved = result.unresolved or result.violation is None
            severe_open = severe_open or (unresolved and result.severity == "severe")
        else:
            applied.append(call)
    best = strongest(applied)
    if needs_review:
        return "review", "hide" if severe_open else best
    return best, None
