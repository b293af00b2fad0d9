"""The sweep's report: counts of what it read, judged and changed, post decisions by transition
(`allow->hide`) and each policy's own call by transition. Pure.

Counts are exact across restarts: a post's counts are held per (partition, offset) in a `Ledger`
until that offset is committed, and stored with the committed position (worker/sweep/state.py);
a post swept by this run before a crash is recognised on the rerun and counted once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

# `totals` keys, in the order the summary lists them.
TOTALS = (
    "read",  # records of the posts topic in the range's offsets
    "out_of_window",  # timestamp outside [from, to) (the time index may start early)
    "invalid",  # not a valid post
    "no_verdict",  # no verdict on the actions topic to supersede: skipped
    "kept",  # current verdict by a reviewer or an appeal: a sweep never overrides a person
    "swept",  # posts re-judged (or recognised as already swept by this run)
    "unchanged",
    "changed",  # decision differs: a superseding verdict was published
    "already_swept",  # changed posts whose verdict an earlier, interrupted run of this sweep published
    "review_records",
    "judge_requests",
)


class Counts(BaseModel):
    totals: dict[str, int] = Field(default_factory=dict)
    decisions: dict[str, int] = Field(default_factory=dict)
    by_policy: dict[str, dict[str, int]] = Field(default_factory=dict)

    def bump(self, key: str, n: int = 1) -> None:
        self.totals[key] = self.totals.get(key, 0) + n

    def transition(self, old: str, new: str) -> None:
        key = f"{old}->{new}"
        self.decisions[key] = self.decisions.get(key, 0) + 1

    def policy_transition(self, policy_id: str, old: str, new: str) -> None:
        table = self.by_policy.setdefault(policy_id, {})
        key = f"{old}->{new}"
        table[key] = table.get(key, 0) + 1

    def add(self, other: Counts) -> None:
        for key, n in other.totals.items():
            self.bump(key, n)
        for key, n in other.decisions.items():
            self.decisions[key] = self.decisions.get(key, 0) + n
        for policy_id, table in other.by_policy.items():
            mine = self.by_policy.setdefault(policy_id, {})
            for key, n in table.items():
                mine[key] = mine.get(key, 0) + n


class Ledger:
    """Counts per (partition, offset) until the offset is committed, then moved into `settled`."""

    def __init__(self, settled: Counts) -> None:
        self.settled = settled
        self._pending: dict[int, dict[int, Counts]] = {}

    def record(self, partition: int, offset: int, counts: Counts) -> None:
        self._pending.setdefault(partition, {})[offset] = counts

    def settle(self, partition: int, upto: int) -> None:
        """The partition's offsets below `upto` are committed: their counts become final."""
        pending = self._pending.get(partition, {})
        for offset in sorted(o for o in pending if o < upto):
            self.settled.add(pending.pop(offset))

    def preview(self) -> Counts:
        """Settled plus pending (for progress output; not stored)."""
        view = self.settled.model_copy(deep=True)
        for pending in self._pending.values():
            for counts in pending.values():
                view.add(counts)
        return view


def report_document(counts: Counts, header: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **header,
        "totals": {key: counts.totals.get(key, 0) for key in TOTALS},
        "decisions": dict(sorted(counts.decisions.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_policy": {
            pid: dict(sorted(table.items(), key=lambda kv: (-kv[1], kv[0])))
            for pid, table in sorted(counts.by_policy.items())
        },
    }


def summary_text(document: Mapping[str, Any]) -> str:
    """The human summary of `report_document`'s output."""
    totals: Mapping[str, int] = document["totals"]
    lines = [
        f"sweep {document.get('run_id', '?')} over {document.get('since')} .. {document.get('until')}"
        + (" (dry run)" if document.get("dry_run") else ""),
        "  " + ", ".join(f"{key} {totals.get(key, 0)}" for key in TOTALS),
    ]
    decisions: Mapping[str, int] = document["decisions"]
    lines.append("  decisions changed: " + (", ".join(f"{k} {n}" for k, n in decisions.items()) or "none"))
    by_policy: Mapping[str, Mapping[str, int]] = document["by_policy"]
    for policy_id, table in by_policy.items():
        lines.append(f"  {policy_id}: " + ", ".join(f"{k} {n}" for k, n in table.items()))
    return "\n".join(lines)
