"""`modstream funnel fit` chooses per policy between its head and today's scoring on the calibration
split, records the choice, and the funnel follows it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from funnel import Funnel, load_thresholds
from funnel.heads import HEAD, SCORE, load_heads
from worker.cli.main import cli
from worker.policies.files import load_policy_dir
from worker.policies.screening import specs_from_policies

ROOT = Path(__file__).resolve().parents[3]


def test_fit_records_the_scorer_per_policy_and_the_funnel_follows_it(tmp_path: Path) -> None:
    out, report = tmp_path / "heads.npz", tmp_path / "fit.json"
    result = CliRunner().invoke(
        cli,
        ["funnel", "fit", "--policies", str(ROOT / "policies"),
         "--labeled", str(ROOT / "datasets" / "funnel_dev.jsonl"),
         "--labeled", str(ROOT / "datasets" / "eval_sample.jsonl"),
         "--seed", "7", "--holdout", "0.2", "--calib", "0.3", "--target-recall", "0.98",
         "--output", str(out), "--report-json", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads(report.read_text(encoding="utf-8"))
    scorers, choice = meta["scorers"], meta["scorer_choice"]
    sidecar = load_thresholds(ROOT / "policies")
    for pid, scorer in scorers.items():
        c = choice[pid]
        assert scorer == c["scorer"] and scorer in (HEAD, SCORE)
        # The rule, on the calibration figures it was chosen on.
        keeps_today = c["calib_positives"] > 0 and c["score"]["recall"] >= 0.98
        keeps_today = keeps_today and c["score"]["benign_pass"] <= c["head"]["benign_pass"]
        assert (scorer == SCORE) == (keeps_today or c["calib_positives"] == 0), (pid, c)
        # The operating point reported is the chosen one: today's threshold where today's scoring stays.
        if scorer == SCORE:
            assert meta["holdout"]["policies"][pid]["threshold"] == pytest.approx(sidecar[pid], abs=1e-6)
    assert set(scorers.values()) == {HEAD, SCORE}, "this data gives both kinds of choice"
    assert "funnel_dev.jsonl" in meta["holdout_benign_pass_per_file"]

    (tmp_path / "heads").mkdir()
    out.rename(tmp_path / "heads" / "funnel-heads.npz")
    heads = load_heads(tmp_path / "heads")
    assert heads is not None and heads.scorers == scorers
    specs = specs_from_policies(load_policy_dir(ROOT / "policies").policies, sidecar)
    funnel = Funnel.build(specs, heads=heads, languages=None)
    plain = Funnel.build(specs, languages=None)
    assert sorted(funnel.headed_policies) == sorted(p for p, s in scorers.items() if s == HEAD)
    assert sorted(funnel.kept_scoring) == sorted(p for p, s in scorers.items() if s == SCORE)
    texts = ["free v-bucks generator no survey", "new recipe for lentil soup", "I will find you and hurt you"]
    for pid in funnel.kept_scoring:
        col = funnel.policy_ids.index(pid)
        assert np.array_equal(funnel.score_matrix(texts)[:, col], plain.score_matrix(texts)[:, col])
        assert funnel.thresholds[col] == plain.thresholds[col]
