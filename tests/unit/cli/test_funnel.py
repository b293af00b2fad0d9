"""`modstream funnel score|calibrate|evaluate` through click, on small files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from funnel import load_thresholds
from worker.cli.funnel import funnel_group
from worker.policies.files import load_policy_dir
from worker.policies.screening import specs_from_policies

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    target.mkdir()
    for path in (ROOT / "policies").glob("*.md"):
        shutil.copy(path, target / path.name)
    return target


def test_specs_from_policies_applies_thresholds(policy_dir: Path) -> None:
    policy_set = load_policy_dir(policy_dir)
    plain = specs_from_policies(policy_set.policies)
    assert [s.id for s in plain] == [p.id for p in policy_set.policies]
    assert plain[0].keywords == tuple(policy_set.policies[0].meta.funnel.keywords)
    override = specs_from_policies(policy_set.policies, {plain[0].id: 0.01})
    assert override[0].threshold == 0.01 and override[1].threshold == plain[1].threshold


def test_score_writes_one_line_per_post(policy_dir: Path, tmp_path: Path) -> None:
    posts = tmp_path / "posts.jsonl"
    lines = [
        json.dumps({"id": "a", "text": "I will k1ll you tomorrow", "lang": "en"}),
        "not json",
        json.dumps({"id": "b", "text": "lovely weather for a picnic"}),
        json.dumps({"id": "c"}),
        json.dumps({"id": "d", "text": "Free robux generator, no verification, link in bio"}),
    ]
    posts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        funnel_group, ["score", "--policies", str(policy_dir), "--input", str(posts), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "d"]
    assert set(rows[0]) >= {"id", "candidate", "policies", "scores", "signals"}
    assert rows[0]["candidate"] and "violence" in rows[0]["policies"]
    assert not rows[1]["candidate"] and rows[1]["policies"] == []
    assert "game-cheating" in rows[2]["policies"]
    assert "2 malformed lines skipped" in result.output


def test_score_stdin_to_stdout(policy_dir: Path) -> None:
    stdin = "\n".join(json.dumps({"id": str(i), "text": f"post number {i}"}) for i in range(1200))
    result = CliRunner().invoke(
        funnel_group, ["score", "--policies", str(policy_dir), "--no-embeddings", "--batch-size", "100"], input=stdin
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1200


def test_calibrate_writes_sidecar_that_score_applies(policy_dir: Path) -> None:
    labeled = ROOT / "datasets" / "funnel_dev.jsonl"
    result = CliRunner().invoke(
        funnel_group,
        [
            "calibrate",
            "--policies",
            str(policy_dir),
            "--labeled",
            str(labeled),
            "--target-recall",
            "0.98",
            "--holdout",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "benign posts filtered out" in result.output
    thresholds = load_thresholds(policy_dir)
    assert set(thresholds) == {p.id for p in load_policy_dir(policy_dir).policies}
    # The shipped sidecar was produced by this very command on the same inputs.
    assert thresholds == load_thresholds(ROOT / "policies")


def test_calibrate_dry_run_writes_nothing(policy_dir: Path) -> None:
    labeled = ROOT / "datasets" / "funnel_dev.jsonl"
    result = CliRunner().invoke(
        funnel_group, ["calibrate", "--policies", str(policy_dir), "--labeled", str(labeled), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert load_thresholds(policy_dir) == {}


def test_calibrate_reports_on_a_held_out_split_and_rejects_unknown_ids(policy_dir: Path, tmp_path: Path) -> None:
    labeled = ROOT / "datasets" / "funnel_dev.jsonl"
    args = ["calibrate", "--policies", str(policy_dir), "--labeled", str(labeled), "--dry-run", "--holdout", "0.3"]
    result = CliRunner().invoke(funnel_group, args)
    assert result.exit_code == 0, result.output
    assert "held-out split" in result.output and "filtered @0.98" in result.output
    assert "too few for target recall 0.98" in result.output  # ≤ 42 positives per policy, 50 needed
    misspelt = tmp_path / "misspelt.jsonl"
    misspelt.write_text(json.dumps({"id": "x", "text": "hello", "labels": {"spam-scam": 1}}) + "\n")
    args = ["calibrate", "--policies", str(policy_dir), "--labeled", str(misspelt), "--dry-run"]
    result = CliRunner().invoke(funnel_group, args)
    assert result.exit_code != 0
    assert "unknown policy ids 'spam-scam'" in result.output


def test_evaluate(policy_dir: Path) -> None:
    labeled = ROOT / "datasets" / "funnel_dev.jsonl"
    result = CliRunner().invoke(funnel_group, ["evaluate", "--policies", str(policy_dir), "--labeled", str(labeled)])
    assert result.exit_code == 0, result.output
    assert "front-matter thresholds" in result.output


def test_missing_policy_dir_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(funnel_group, ["score", "--policies", str(tmp_path / "nope")], input="")
    assert result.exit_code != 0
    assert "does not exist" in result.output
