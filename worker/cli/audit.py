"""`modstream audit export`: a time range of the audit (or actions) topic as JSONL."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import click
import orjson
from confluent_kafka import KafkaException

from worker.cli.run import ConfigFailure
from worker.config import ConfigError, load_settings
from worker.kafka.consumer import consumer_config
from worker.kafka.ranges import TimeRange, read_range


def parse_when(value: str, now: datetime) -> datetime:
    """RFC 3339 (`2026-12-01T00:00:00Z`; a date alone is midnight UTC) or an age: `36h`, `7d`, `90m`."""
    units = {"m": "minutes", "h": "hours", "d": "days"}
    if value[-1:] in units and value[:-1].isdigit():
        return now - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: use RFC 3339 (2026-12-01T00:00:00Z) or an age (36h, 7d)") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# `--out`: where a command writing JSONL (audit export, review labels) puts it.
jsonl_out_option = click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="JSONL file to write (- for standard output).",
)


@click.group("audit")
def audit_group() -> None:
    """Read the audit trail: what the judges were asked and answered, per post."""


@audit_group.command("export")
@click.option("--since", required=True, help="Start (inclusive): RFC 3339 time or an age like 7d, 36h.")
@click.option("--until", default=None, help="End (exclusive): RFC 3339 time or an age [default: now].")
@click.option("--topic", default=None, help="Topic to read [default: the configured audit topic].")
@jsonl_out_option
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The worker's YAML config (also MODSTREAM_CONFIG_FILE): broker address and client settings.",
)
def export_command(since: str, until: str | None, topic: str | None, out_path: Path, config_file: Path | None) -> None:
    """Write the records of the audit topic between SINCE and UNTIL, one JSON object per line,
    in offset order within each partition (no consumer group is joined, nothing is committed). The export is
    restricted data: audit records quote posts and the judges' reasoning.

    Feed it to `modstream funnel fit --from-audit` to fit the funnel on your own traffic, with
    the judges as teachers (docs/funnel.md, "The judge as teacher")."""
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None
    now = datetime.now(UTC)
    try:
        window = TimeRange(parse_when(since, now), parse_when(until, now) if until else now)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    kafka = settings.kafka
    config = consumer_config(
        kafka.bootstrap_servers,
        f"{kafka.group_id}-audit-export",  # required by the client; never joined (partitions are assigned)
        dict(kafka.extra),
        kafka.session_timeout_ms,
        kafka.heartbeat_interval_ms,
        kafka.partition_assignment_strategy,
    )
    name = topic or settings.topics.audit
    written = skipped = 0
    out: IO[bytes] = sys.stdout.buffer if str(out_path) == "-" else out_path.open("wb")
    try:
        for msg in read_range(config, name, window):
            value = msg.value()
            try:
                record = orjson.loads(value or b"")
            except orjson.JSONDecodeError:
                skipped += 1
                continue
            out.write(orjson.dumps(record) + b"\n")
            written += 1
    except KafkaException as exc:
        raise click.ClickException(f"reading {name!r} from {kafka.bootstrap_servers}: {exc}") from None
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    click.echo(
        f"{written} records from {name!r} between {window.since.isoformat()} and {window.until.isoformat()}"
        + (f" ({skipped} not JSON, skipped)" if skipped else ""),
        err=True,
    )
