"""What the demo expects (examples/demo_*.jsonl) against what it got: every decision, allows included."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.cascade.revisions import newer


@dataclass(frozen=True, slots=True)
class Mismatch:
    route: str
    post_id: str
    expected: str
    got: str

    def line(self) -> str:
        return f"{self.route} {self.post_id}: expected {self.expected}, got {self.got}"


def violated(verdict: Mapping[str, Any]) -> list[str]:
    """The policies a verdict found violated (resolved or not)."""
    return sorted(str(r.get("policy_id")) for r in verdict.get("results", []) if r.get("violation"))


def check_stream(
    expected: Iterable[Mapping[str, Any]], verdicts: Mapping[str, Mapping[str, Any]], dead: Mapping[str, str]
) -> list[Mismatch]:
    """The stream route: `allow` rows must be allowed, `violation` rows must not be allowed and must
    be flagged by their policy (and have the row's exact `decision` when it names one), `dead-letter`
    rows must be on the DLQ with no verdict."""
    out: list[Mismatch] = []
    for row in expected:
        post_id, expect = str(row["id"]), str(row["expect"])
        verdict = verdicts.get(post_id)
        got = "dead-letter" if post_id in dead else str(verdict["decision"]) if verdict else "nothing"
        if expect == "dead-letter":
            if got != "dead-letter" or verdict is not None:
                out.append(Mismatch("stream", post_id, "dead-letter", got))
            continue
        if verdict is None:
            out.append(Mismatch("stream", post_id, expect, got))
            continue
        if expect == "allow":
            if got != "allow":
                out.append(Mismatch("stream", post_id, "allow", f"{got} (flagged: {', '.join(violated(verdict))})"))
            continue
        wanted = [str(p) for p in row.get("policies", [])]
        missing = [p for p in wanted if p not in violated(verdict)]
        exact = row.get("decision")
        if got == "allow" or missing or (exact is not None and got != exact):
            want = f"{exact or 'not allow'} flagged by {', '.join(wanted)}"
            out.append(Mismatch("stream", post_id, want, f"{got} (flagged: {', '.join(violated(verdict)) or '-'})"))
    return out


def newest(verdicts: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The verdict that wins per post: the greatest (revision, verdict_id), whatever the order."""
    best: dict[str, Mapping[str, Any]] = {}
    for v in verdicts:
        post_id = str(v["post_id"])
        held = best.get(post_id)
        mine = (int(v.get("revision", 1)), str(v.get("verdict_id", "")))
        if held is None or newer(mine, (int(held.get("revision", 1)), str(held.get("verdict_id", "")))):
            best[post_id] = v
    return best


def check_superseding(
    route: str, expected: Mapping[str, str], before: Mapping[str, Mapping[str, Any]], after: Iterable[Mapping[str, Any]]
) -> list[Mismatch]:
    """A route's verdicts: one per expected post, with the expected decision, one revision above the
    verdict it replaced and naming it in `supersedes`."""
    out: list[Mismatch] = []
    found = {str(v["post_id"]): v for v in after if v.get("route") == route}
    for post_id, decision in sorted(expected.items()):
        verdict, previous = found.get(post_id), before.get(post_id)
        if verdict is None:
            out.append(Mismatch(route, post_id, decision, f"no {route} verdict"))
            continue
        if verdict["decision"] != decision:
            out.append(Mismatch(route, post_id, decision, str(verdict["decision"])))
        if previous is not None and (
            verdict.get("revision") != int(previous.get("revision", 1)) + 1
            or verdict.get("supersedes") != previous.get("verdict_id")
        ):
            out.append(
                Mismatch(
                    route,
                    post_id,
                    f"revision {int(previous.get('revision', 1)) + 1} superseding {previous.get('verdict_id')}",
                    f"revision {verdict.get('revision')} superseding {verdict.get('supersedes')}",
                )
            )
    for post_id in sorted(set(found) - set(expected)):
        out.append(Mismatch(route, post_id, f"no {route} verdict", str(found[post_id]["decision"])))
    return out


def check_final(expected: Mapping[str, str], table: Mapping[str, str]) -> list[Mismatch]:
    """The platform's table (examples/autohide) after every route: one decision per valid post."""
    out = [
        Mismatch("platform", post_id, decision, table.get(post_id, "no row"))
        for post_id, decision in sorted(expected.items())
        if table.get(post_id) != decision
    ]
    out.extend(Mismatch("platform", p, "no row", table[p]) for p in sorted(set(table) - set(expected)))
    return out
