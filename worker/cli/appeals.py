"""`modstream appeals serve`: the appeals consumer (worker/appeals/, docs/workflow.md "Appeals")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from worker.cli.run import ConfigFailure
from worker.config import ConfigError, load_settings
from worker.ops.logs import configure_logging


@click.group("appeals")
def appeals_group() -> None:
    """Appeals: re-judge contested verdicts at tier 2, high effort, with the author's statement."""


@appeals_group.command("serve")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML config file (also MODSTREAM_CONFIG_FILE). Env vars MODSTREAM_* override it.",
)
@click.option("--group", "group_id", default=None, help="Consumer group (default: <kafka.group_id>-appeals).")
def serve_command(config_file: Path | None, group_id: str | None) -> None:
    """Consume the appeals topic until SIGTERM/SIGINT; publish superseding verdicts (route `appeal`) to
    the actions topic, audit records, and review records when tier 2 is unsure."""
    from worker.appeals.service import serve

    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings, group_id or f"{settings.kafka.group_id}-appeals"))
