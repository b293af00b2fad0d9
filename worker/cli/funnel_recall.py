"""`modstream funnel recall`: estimated funnel recall from verdict records."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from funnel.recall import tracker_from_verdicts
from worker.cli.funnel_common import load_policies, read_json_lines


@click.command("recall")
@click.option(
    "--from-audit",
    "audit_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="JSONL export of verdict records (results with `sampled` and `sample_rate`).",
)
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Check the records' policy ids against this policy set.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=None,
    help="Bypass sample rate for sampled results that do not carry their `sample_rate`.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per policy instead of a table.")
def recall_command(audit_path: Path, policies_dir: Path | None, rate: float | None, as_json: bool) -> None:
    """Estimated funnel recall per policy from the judge's verdicts on candidates and on
    bypass-sampled cleared posts, with a Wilson 95 % interval."""
    known = [p.id for p in load_policies(policies_dir).policies] if policies_dir is not None else None
    records = read_json_lines(audit_path)
    try:
        estimates = tracker_from_verdicts(records, rate, known).estimates()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for e in estimates:
            click.echo(
                orjson.dumps(
                    {
                        "policy_id": e.policy_id,
                        "recall": e.recall,
                        "ci95": [e.low, e.high],
                        "candidate_violations": e.candidate_violations,
                        "sampled_violations": e.sampled_violations,
                        "sampled_posts": e.sampled_posts,
                        "rate": e.rate,
                    }
                )
            )
        return
    table = Table(title=f"estimated funnel recall ({audit_path.name})")
    for column in ("policy", "candidates judged violating", "sampled cleared", "of which violating", "rate", "recall"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for e in estimates:
        shown = "- (no sample)" if e.recall is None else f"{e.recall:.3f} [{e.low:.3f}, {e.high:.3f}]"
        table.add_row(
            e.policy_id,
            str(e.candidate_violations),
            str(e.sampled_posts),
            str(e.sampled_violations),
            f"{e.rate:g}",
            shown,
        )
    Console().print(table)
