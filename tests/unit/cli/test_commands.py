"""The `modstream` command tree (one module per command under worker/cli/): every command and option
the CLI had before it was split keeps its name, and `main` only assembles the group."""

from __future__ import annotations

import ast
from pathlib import Path

import click

from worker.cli.main import cli

EXPECTED = {
    "appeals serve": ["--config", "--group"],
    "audit export": ["--config", "--out", "--since", "--topic", "--until"],
    "demo": ["--judge", "--keep-running", "--metrics-port", "--policies", "--posts", "--report"],
    "eval": ["--compare", "--concurrency", "--dataset", "--judge", "--judge-mode", "--judge-t2", "--limit",
             "--logprobs", "--max-tokens", "--model", "--model-t2", "--policies", "--report", "--response-format",
             "--tier", "--timeout"],
    "funnel calibrate": ["--dry-run", "--embeddings", "--engine", "--holdout", "--labeled", "--output", "--policies",
                         "--seed", "--target-recall"],
    "funnel evaluate": ["--embeddings", "--engine", "--heads", "--labeled", "--policies", "--sidecar"],
    "funnel fit": ["--calib", "--dry-run", "--engine", "--few-positives-margin", "--from-audit", "--holdout",
                   "--labeled", "--output", "--policies", "--report-json", "--seed", "--target-recall"],
    "funnel recall": ["--from-audit", "--json", "--policies", "--rate"],
    "funnel score": ["--batch-size", "--embeddings", "--engine", "--heads", "--input", "--languages", "--output",
                     "--policies", "--readable", "--sidecar"],
    "policy lint": ["--tokens-error", "--tokens-warn", "directory"],
    "policy tokens": ["directory"],
    "review apply": ["--config", "--db", "--group"],
    "review labels": ["--config", "--out", "--since", "--until"],
    "review serve": ["--config", "--cot-reviewers", "--db", "--host", "--limit", "--origin", "--port", "--token",
                     "--trusted-header"],
    "run": ["--config"],
    "schemas": ["--out"],
    "sweep": ["--actions-slack", "--concurrency", "--config", "--dry-run", "--dry-run-topic", "--effort", "--from",
              "--funnel", "--group", "--policies", "--policies-dir", "--rate", "--report", "--state-dir", "--tier",
              "--to"],
}  # fmt: skip


def _tree(command: click.Command, path: tuple[str, ...] = ()) -> dict[str, list[str]]:
    if isinstance(command, click.Group):
        return {k: v for name, sub in command.commands.items() for k, v in _tree(sub, (*path, name)).items()}
    return {" ".join(path): sorted(opt for param in command.params for opt in param.opts)}


def test_every_command_and_option_is_where_it_was() -> None:
    tree = _tree(cli)
    assert "sim-vllm" in tree, "the simulator's own command is passed through"
    del tree["sim-vllm"]
    assert tree == EXPECTED


def test_main_only_assembles_the_group() -> None:
    source = Path(__file__).resolve().parents[3] / "worker" / "cli" / "main.py"
    functions = [n.name for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.FunctionDef)]
    assert functions == ["cli", "main"]
