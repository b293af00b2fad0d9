"""`modstream demo`: the whole path on this machine (embedded broker, judge servers, worker, sample posts)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from worker.ops.logs import configure_logging


@click.command("demo")
@click.option(
    "--judge",
    type=click.Choice(["sim", "llama"]),
    default="sim",
    show_default=True,
    help="sim: the bundled vLLM simulator (fast). llama: a real 135M model on llama.cpp "
    "(needs the local-llm extra; slow, ~seconds per judged post).",
)
@click.option(
    "--posts",
    "posts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSONL of sample records to publish [default: examples/demo_posts.jsonl].",
)
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Policy directory [default: the repository's policies/].",
)
@click.option(
    "--keep-running", is_flag=True, help="After the table, keep everything up (metrics endpoint) until Ctrl-C."
)
@click.option("--metrics-port", default=9464, show_default=True, help="Metrics/health port with --keep-running.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every route's decisions and the differences from the expected ones as JSON here.",
)
def demo(
    judge: str,
    posts_file: Path | None,
    policies_dir: Path | None,
    keep_running: bool,
    metrics_port: int,
    report_path: Path | None,
) -> None:
    """Run the whole moderation loop on this machine, with nothing to set up.

    Starts an embedded Kafka-protocol broker (Tansu, memory only), creates the topics, starts
    the judge servers and the worker, publishes 50 sample posts (benign, violating and
    malformed) and shows each route: the stream (one row per record: funnel candidates, tier,
    decision), the review queue with a scripted reviewer's calls, appeals re-judged at tier 2,
    a back-scan sweep with a changed policy, and the platform's table (examples/autohide).
    Every decision is checked against examples/demo_* and each difference is listed; with the
    simulator a difference makes the exit status 1. Everything it started is stopped on exit,
    also on Ctrl-C.
    """
    from worker.local.demo import DEFAULT_POLICIES, DEFAULT_POSTS, run_demo

    configure_logging("warning", "console")
    console = Console()
    code = run_demo(
        "llama" if judge == "llama" else "sim",
        posts_file or DEFAULT_POSTS,
        policies_dir or DEFAULT_POLICIES,
        keep_running,
        metrics_port,
        console,
        report_path,
    )
    sys.exit(code)
