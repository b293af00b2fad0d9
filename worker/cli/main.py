"""The `modstream` command line: the group and its commands, one module per command (worker/cli/*)."""

from __future__ import annotations

import click

from worker import __version__
from worker.cli.appeals import appeals_group
from worker.cli.audit import audit_group
from worker.cli.demo import demo
from worker.cli.eval import eval_command
from worker.cli.funnel import funnel_group
from worker.cli.policy import policy
from worker.cli.review import review_group
from worker.cli.run import run
from worker.cli.schemas import schemas
from worker.cli.sweep import sweep
from worker.sim.cli import sim_vllm


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="modstream")
def cli() -> None:
    """modstream: a streaming moderation worker for gpt-oss-safeguard.

    Reads posts from Kafka, screens them with a cheap funnel, asks gpt-oss-safeguard-20b (vLLM,
    low effort) about candidates, escalates borderline ones to 120b (high effort), and publishes
    one verdict per post to the actions topic. Start with `modstream demo`.
    """


cli.add_command(run)
cli.add_command(demo)
cli.add_command(schemas)
cli.add_command(policy)
cli.add_command(sim_vllm, "sim-vllm")
cli.add_command(eval_command, "eval")
cli.add_command(funnel_group, "funnel")
cli.add_command(audit_group, "audit")
cli.add_command(review_group, "review")
cli.add_command(appeals_group, "appeals")
cli.add_command(sweep, "sweep")


def main() -> None:
    cli()
