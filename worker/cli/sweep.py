"""`modstream sweep`: the back-scan (docs/workflow.md, "Back-scan sweep")."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson
from confluent_kafka import KafkaException
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from worker.cli.audit import parse_when
from worker.cli.run import ConfigFailure
from worker.config import ConfigError, load_settings
from worker.ops.logs import configure_logging
from worker.policies.files import PolicyError
from worker.sweep.bucket import parse_rate
from worker.sweep.report import Counts, summary_text
from worker.sweep.state import StateMismatch, SweepState


def when(value: str, now: datetime) -> datetime:
    """`parse_when`, plus `today` / `yesterday`: that day's midnight UTC (the nightly CronJob's range)."""
    days = {"today": 0, "yesterday": 1}.get(value.strip().lower())
    if days is None:
        return parse_when(value, now)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=days)


def default_state_dir() -> Path:
    return Path(os.environ.get("MODSTREAM_CACHE", Path.home() / ".cache" / "modstream")) / "sweep"


def _rate(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _ids(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    return sorted({part.strip() for item in value for part in item.split(",") if part.strip()})


class Display:
    """A rich progress bar on a terminal; a log line every `every_s` seconds otherwise."""

    def __init__(self, console: Console, every_s: float = 10.0) -> None:
        self.console = console
        self.every_s = every_s
        self.progress: Progress | None = None
        self.task: Any = None
        self.done = 0
        self.total = 0
        self.changed = 0
        self._last = time.monotonic()

    def start(self, state: SweepState) -> None:
        self.total, self.done = state.total, state.completed
        self.changed = state.counts.totals.get("changed", 0)
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]sweep"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[changed]} changed"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.progress.add_task("sweep", total=self.total, completed=self.done, changed=self.changed)
            self.progress.start()
        else:
            self._line("start")

    def advance(self, n: int, counts: Counts) -> None:
        self.done += n
        self.changed += counts.totals.get("changed", 0)
        if self.progress is not None:
            self.progress.update(self.task, advance=n, changed=self.changed)
        elif time.monotonic() - self._last >= self.every_s:
            self._line("progress")

    def _line(self, what: str) -> None:
        self._last = time.monotonic()
        click.echo(f"sweep {what}: {self.done}/{self.total} records, {self.changed} changed", err=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@click.command("sweep")
@click.option(
    "--from",
    "since",
    required=True,
    help="Start (inclusive): RFC 3339, an age (1d, 36h), or today / yesterday (midnight UTC).",
)
@click.option("--to", "until", required=True, help="End (exclusive): RFC 3339 time or an age.")
@click.option(
    "--policies",
    "policy_ids",
    multiple=True,
    callback=_ids,
    help="Policy ids to re-judge (comma-separated or repeated) [default: every live policy].",
)
@click.option(
    "--policies-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Policy directory [default: the configured policies_dir].",
)
@click.option(
    "--tier",
    type=click.Choice(["cascade", "t1", "t2"]),
    default="cascade",
    show_default=True,
    help="cascade: tier 1, escalations to tier 2, as the worker; t1 / t2: that tier alone.",
)
@click.option(
    "--effort",
    type=click.Choice(["low", "medium", "high"]),
    default=None,
    help="Reasoning effort of the tier(s) used [default: the configured one].",
)
@click.option(
    "--funnel",
    type=click.Choice(["on", "off"]),
    default="on",
    show_default=True,
    help="off: every post is judged under every re-judged policy (the funnel is bypassed).",
)
@click.option(
    "--rate",
    default="5/s",
    show_default=True,
    callback=_rate,
    help="Judge requests per second at most (N/s, N/m, N/h): protects the live tier.",
)
@click.option(
    "--concurrency", default=16, show_default=True, type=click.IntRange(1, 4096), help="Posts in flight at once."
)
@click.option(
    "--dry-run", is_flag=True, help="Publish the changed verdicts to --dry-run-topic only (no audit, no review)."
)
@click.option("--dry-run-topic", default="actions-dry-run", show_default=True, help="Where --dry-run publishes.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the JSON report here (the summary goes to standard error).",
)
@click.option("--group", default=None, help="The sweep's consumer group [default: <group_id>-sweep-<run id>].")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the resumable state is kept [default: $MODSTREAM_CACHE/sweep].",
)
@click.option(
    "--actions-slack",
    default="1h",
    show_default=True,
    help="Read the actions topic from this long before --from (m/h/d).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The worker's YAML config (also MODSTREAM_CONFIG_FILE).",
)
def sweep(
    since: str,
    until: str,
    policy_ids: list[str],
    policies_dir: Path | None,
    tier: str,
    effort: str | None,
    funnel: str,
    rate: float,
    concurrency: int,
    dry_run: bool,
    dry_run_topic: str,
    report_path: Path | None,
    group: str | None,
    state_dir: Path | None,
    actions_slack: str,
    config_file: Path | None,
) -> None:
    """Re-judge the posts published between --from and --to (all partitions) and publish a
    superseding verdict (route `sweep`) for each post whose decision changes; write a report of
    the changes by policy. Rerun with the same arguments to resume an interrupted sweep."""
    from worker.sweep.orchestrate import SweepError, SweepOptions, execute

    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    now = datetime.now(UTC)
    start, end = when(since, now), when(until, now)
    if end <= start:
        raise click.BadParameter(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    slack = parse_when(actions_slack, now)
    options = SweepOptions(
        since=start,
        until=end,
        policy_ids=policy_ids,
        policies_dir=policies_dir or settings.policies_dir,
        tier=tier,  # type: ignore[arg-type]  # click.Choice guarantees the literal
        effort=effort,  # type: ignore[arg-type]
        funnel=funnel == "on",
        rate=rate,
        dry_run=dry_run,
        dry_run_topic=dry_run_topic,
        group=group,
        state_dir=state_dir or default_state_dir(),
        concurrency=concurrency,
        actions_slack=max(now - slack, timedelta()),
    )
    display = Display(Console(stderr=True))
    try:
        document = asyncio.run(execute(settings, options, display.advance, display.start))
    except (SweepError, StateMismatch, PolicyError) as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaException as exc:
        raise click.ClickException(f"Kafka at {settings.kafka.bootstrap_servers}: {exc}") from None
    finally:
        display.stop()
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        report_path.with_suffix(".txt").write_text(summary_text(document) + "\n")
    click.echo(summary_text(document), err=True)
    if not document["finished"]:
        click.echo("sweep not finished (a partition stayed silent): run the same command again", err=True)
        sys.exit(1)
