"""The `modstream` command line."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
import orjson
from rich.console import Console

from worker import __version__
from worker.cli.eval import eval_command
from worker.cli.funnel import funnel_group
from worker.config import ConfigError, load_settings
from worker.ops.logs import configure_logging
from worker.policies.files import PolicyError
from worker.sim.cli import sim_vllm


class ConfigFailure(click.ClickException):
    """A configuration problem at start-up: exit 2 (like a usage error), the message on stderr."""

    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="modstream")
def cli() -> None:
    """modstream: a streaming moderation worker for gpt-oss-safeguard.

    Reads posts from Kafka, screens them with a cheap funnel, asks gpt-oss-safeguard-20b (vLLM,
    low effort) about candidates, escalates borderline ones to 120b (high effort), and publishes
    one verdict per post to the actions topic. Start with `modstream demo`.
    """


@cli.command()
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
    try:
        asyncio.run(run_worker(settings))
    except PolicyError as exc:
        raise click.ClickException(f"cannot load policies: {exc}") from None


@cli.command()
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
def demo(judge: str, posts_file: Path | None, policies_dir: Path | None, keep_running: bool, metrics_port: int) -> None:
    """Run the whole path on this machine, with nothing to set up.

    Starts an embedded Kafka-protocol broker (Tansu, memory only), creates the topics, starts
    the judge servers, runs the worker, publishes ~50 sample posts (benign, violating and
    malformed) and prints one row per record: funnel candidates, tier, decision, latency.
    Everything it started is stopped on exit, also on Ctrl-C.
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
    )
    sys.exit(code)


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas"),
    show_default=True,
    help="Directory to write the JSON Schemas into.",
)
def schemas(out_dir: Path) -> None:
    """Write JSON Schemas of the message contracts (Post, Verdict, AuditRecord, JudgeAnswer)."""
    from worker.contracts import AuditRecord, JudgeAnswer, Post, Verdict

    out_dir.mkdir(parents=True, exist_ok=True)
    for model in (Post, Verdict, AuditRecord, JudgeAnswer):
        path = out_dir / f"{model.__name__.lower()}.schema.json"
        path.write_bytes(
            orjson.dumps(model.model_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
        click.echo(f"wrote {path}")


@cli.group()
def policy() -> None:
    """Work with policy files: the plain-language rules the judges apply (see docs/writing-policies.md)."""


@policy.command("lint")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--tokens-warn",
    metavar="MIN-MAX",
    help="o200k token range of the body outside which the linter warns (default 400-900).",
)
@click.option(
    "--tokens-error",
    metavar="MIN-MAX",
    help="o200k token range of the body outside which it is an error (default 250-2000).",
)
def policy_lint(directory: Path, tokens_warn: str | None, tokens_error: str | None) -> None:
    """Report structural problems in a policy directory; exit 1 if any is an error.

    Checks front matter, duplicate ids, the template sections (INSTRUCTIONS, DEFINITIONS,
    VIOLATES, SAFE, OUTPUT FORMAT, EXAMPLES), the output format stated near the top and again
    before EXAMPLES, example answers the worker would reject, the body length in o200k tokens,
    examples that contradict their label, and funnel patterns that do not compile.
    """
    from worker.policies.lint import format_findings, lint_policy_dir, token_bounds

    try:
        bounds = token_bounds(tokens_warn, tokens_error)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    findings = lint_policy_dir(directory, bounds)
    click.echo(format_findings(findings))
    if any(f.severity == "error" for f in findings):
        sys.exit(1)


@policy.command("tokens")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def policy_tokens(directory: Path) -> None:
    """Print each policy's prompt length in o200k_harmony tokens (the tokenizer gpt-oss uses).

    `body` is the prompt after the front matter, exactly as the judge receives it (what `policy
    lint` checks against its bounds); `answers` is the part of it taken by the examples' JSON
    answers, which OpenAI's guide's 400-600 sweet spot does not include (its examples answer 0/1).
    """
    from worker.judges.tokens import count_tokens
    from worker.policies.files import load_policy_dir
    from worker.policies.lint import parse_examples, split_sections

    try:
        policy_set = load_policy_dir(directory)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None
    rows = []
    for p in policy_set.policies:
        # Counted with the space before the answer, as the answer is tokenized inside the body.
        answers = sum(count_tokens(" " + e.answer) for e in parse_examples(split_sections(p.prompt)))
        rows.append((p.id, count_tokens(p.prompt), answers))
    width = max(len("policy"), *(len(pid) for pid, _, _ in rows))
    click.echo(f"{'policy':<{width}}   body  answers")
    for pid, body, answers in rows:
        click.echo(f"{pid:<{width}}  {body:>5}  {answers:>7}")
    bodies = [b for _, b, _ in rows]
    rest = [b - a for _, b, a in rows]
    click.echo(
        f"{len(rows)} policies: body {min(bodies)}-{max(bodies)} o200k tokens (mean {sum(bodies) / len(rows):.0f}), "
        f"{min(rest)}-{max(rest)} without the example answers"
    )


cli.add_command(sim_vllm, "sim-vllm")
cli.add_command(eval_command, "eval")
cli.add_command(funnel_group, "funnel")


def main() -> None:
    cli()
