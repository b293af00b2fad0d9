"""Each post's current verdict, read from the actions topic (keyed by post id): the newest
(revision, verdict_id) wins, as for every consumer (worker/cascade/revisions.py). Pure fold.

Verdicts this sweep run published itself (route `sweep`, the run's verdict id) are kept apart: a
rerun after a crash recognises a post it already superseded and publishes nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from worker.cascade.revisions import newer, verdict_id
from worker.contracts import Applied, Decision, PolicyResult, Route, Verdict


@dataclass(frozen=True, slots=True)
class Known:
    """The parts of a verdict the sweep needs."""

    revision: int
    verdict_id: str
    route: Route
    decision: Decision
    interim_action: Applied | None
    supersedes: str | None
    results: tuple[PolicyResult, ...]

    @property
    def key(self) -> tuple[int, str]:
        return (self.revision, self.verdict_id)

    @classmethod
    def of(cls, verdict: Verdict) -> Known:
        return cls(
            verdict.revision,
            verdict.verdict_id,
            verdict.route,
            verdict.decision,
            verdict.interim_action,
            verdict.supersedes,
            tuple(verdict.results),
        )


def is_own(verdict: Verdict, run_id: str) -> bool:
    return verdict.route == "sweep" and verdict.verdict_id == verdict_id(
        "sweep", verdict.post_id, verdict.revision, run_id
    )


class CurrentVerdicts:
    """`base`: per post, the newest verdict not published by this run; `own`: this run's."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.base: dict[str, Known] = {}
        self.own: dict[str, Known] = {}
        self.unreadable = 0

    def observe(self, verdict: Verdict, own_only: bool = False) -> None:
        """`own_only`: a topic other than the actions topic (the dry-run topic): only this run's
        verdicts there count."""
        own = is_own(verdict, self.run_id)
        if own_only and not own:
            return
        table = self.own if own else self.base
        known = Known.of(verdict)
        held = table.get(verdict.post_id)
        if held is None or newer(known.key, held.key):
            table[verdict.post_id] = known

    def observe_bytes(self, value: bytes | None, own_only: bool = False) -> None:
        try:
            verdict = Verdict.model_validate_json(value or b"")
        except ValidationError:
            self.unreadable += 1
            return
        self.observe(verdict, own_only)

    def swept_by_us(self, post_id: str) -> Known | None:
        """This run's verdict for the post when it is still the newest (an earlier, interrupted
        run of this sweep published it); None when there is none or something newer replaced it."""
        base, own = self.base.get(post_id), self.own.get(post_id)
        if own is None or (base is not None and newer(base.key, own.key)):
            return None
        return own
