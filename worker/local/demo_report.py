"""The demo's tables (one per route, then the platform's) and its check against the expected outcomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Message
from rich.console import Console
from rich.table import Table

from worker.local.demo_expect import Mismatch
from worker.local.demo_io import dead_letter_reason

STYLE = {"allow": "green", "label": "cyan", "age_gate": "cyan", "hide": "red", "review": "yellow"}


def styled(decision: str, interim: str | None = None) -> str:
    shown = f"{decision} ({interim} meanwhile)" if decision == "review" and interim else decision
    return f"[{STYLE.get(decision, 'white')}]{shown}[/]"


def stream_table(verdicts: Mapping[str, Mapping[str, Any]], dead: Sequence[Message], console: Console) -> None:
    table = Table(title="stream: one row per record (auto-hide on the live stream)")
    for column in ("post id", "funnel candidates", "tier", "decision", "latency ms"):
        table.add_column(column)
    rows: list[tuple[str, ...]] = []
    for post_id, verdict in verdicts.items():
        rows.append(
            (
                post_id,
                ", ".join(verdict["funnel"]["candidates"]) or "-",
                str(verdict["tier"]),
                styled(str(verdict["decision"]), verdict.get("interim_action")),
                f"{verdict['latency_ms']:.0f}",
            )
        )
    for msg in dead:
        rows.append(((msg.key() or b"").decode(), "-", "-", f"[red]DLQ: {dead_letter_reason(msg)}[/]", "-"))
    for row in sorted(rows):
        table.add_row(*row)
    console.print(table)


def route_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], console: Console) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def decided_rows(
    rows: Sequence[tuple[str, ...]], after: Mapping[str, Mapping[str, Any]], route: str
) -> list[tuple[str, ...]]:
    """A route's rows, each followed by the superseding verdict it produced (or `-`)."""
    out: list[tuple[str, ...]] = []
    for row in rows:
        verdict = after.get(row[0])
        if verdict is not None and verdict.get("route") == route:
            shown = f"{styled(str(verdict['decision']), verdict.get('interim_action'))} (rev {verdict.get('revision')})"
        else:
            shown = "-"
        out.append((*row, shown))
    return out


def platform_table(
    table_rows: Mapping[str, tuple[str, ...]], after: Mapping[str, Mapping[str, Any]], console: Console
) -> None:
    table = Table(title="platform: examples/autohide's posts table after every route")
    for column in ("post id", "state", "decision", "revision", "route"):
        table.add_column(column)
    for post_id, (state, decision, revision) in sorted(table_rows.items()):
        route = str(after.get(post_id, {}).get("route", "?"))
        table.add_row(post_id, state, styled(decision), revision, route)
    console.print(table)


def print_check(checked: Mapping[str, int], mismatches: Sequence[Mismatch], console: Console) -> None:
    """How many expected decisions held per route, and every one that did not."""
    bad: dict[str, int] = {}
    for m in mismatches:
        bad[m.route] = bad.get(m.route, 0) + 1
    parts = [f"{route} {n - bad.get(route, 0)}/{n}" for route, n in checked.items()]
    if not mismatches:
        console.print(f"[bold green]every expected decision held[/]: {', '.join(parts)}")
        return
    console.print(f"[bold red]{len(mismatches)} decisions differ from the expected ones[/]: {', '.join(parts)}")
    for m in mismatches:
        console.print(f"  [red]✗[/] {m.line()}", markup=True, highlight=False)
