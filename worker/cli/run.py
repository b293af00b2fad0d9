"""`modstream run`: the worker, until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from worker.config import ConfigError, load_settings
from worker.ops.logs import configure_logging
from worker.ops.tracing import configure_tracing
from worker.policies.files import PolicyError


class ConfigFailure(click.ClickException):
    """A configuration problem at start-up: exit 2 (like a usage error), the message on stderr."""

    exit_code = 2


@click.command("run")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML config file (also MODSTREAM_CONFIG_FILE). Env vars MODSTREAM_* override it.",
)
def run(config_file: Path | None) -> None:
    """Run the worker until SIGTERM/SIGINT, then drain in-flight posts, commit and exit 0.

    Every setting comes from MODSTREAM_* env vars or the YAML file; nested ones use `__`, e.g.
    MODSTREAM_KAFKA__BOOTSTRAP_SERVERS, MODSTREAM_JUDGE_T1__BASE_URLS='["http://vllm:8000/v1"]'.
    See docs/configuration.md for the full list.
    """
    from worker.stream.serve import run_worker

    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    configure_tracing(settings.tracing.otel_enabled)
    try:
        asyncio.run(run_worker(settings))
    except PolicyError as exc:
        raise click.ClickException(f"cannot load policies: {exc}") from None
