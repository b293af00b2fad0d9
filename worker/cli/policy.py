"""`modstream policy lint|tokens`: static checks and token counts for a policy directory."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from worker.policies.files import PolicyError


@click.group("policy")
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
