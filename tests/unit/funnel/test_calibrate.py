"""Calibration: threshold picking, the sidecar file, and the figures on the shipped dev set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from funnel import PolicySpec, load_thresholds, stale_policies
from funnel.calibrate import (
    SIDECAR_NAME,
    LabeledPost,
    calibrate,
    evaluate,
    file_sha256,
    load_labeled,
    load_sidecar,
    threshold_for_recall,
    write_sidecar,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("scores", "target", "expected"),
    [
        ([0.9, 0.8, 0.7, 0.6], 1.0, 0.6),
        ([0.9, 0.8, 0.7, 0.6], 0.75, 0.7),
        ([0.9, 0.8, 0.7, 0.6], 0.76, 0.6),  # 0.76 * 4 = 3.04 → all four needed
        ([0.5], 0.98, 0.5),
        ([0.123456], 1.0, 0.1234),  # rounded down, so the rounded threshold still admits it
    ],
)
def test_threshold_for_recall(scores: list[float], target: float, expected: float) -> None:
    assert threshold_for_recall(scores, target) == pytest.approx(expected)


def test_threshold_for_recall_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        threshold_for_recall([], 0.9)
    with pytest.raises(ValueError):
        threshold_for_recall([0.5], 0.0)


def test_threshold_reaches_target_on_random_scores() -> None:
    rng = np.random.default_rng(42)
    for _ in range(200):
        scores = rng.random(rng.integers(1, 60)).astype(np.float32).tolist()
        target = float(rng.uniform(0.5, 1.0))
        threshold = threshold_for_recall(scores, target)
        achieved = np.mean(np.asarray(scores) >= threshold)
        assert achieved >= target - 1e-9
        # and it is the highest such threshold: one step up loses recall
        assert np.mean(np.asarray(scores) >= threshold + 1e-3) < target or threshold >= max(scores) - 1e-3


SPECS = [PolicySpec("a", threshold=0.5), PolicySpec("b", threshold=0.3)]
POSTS = [
    LabeledPost("1", "x", {"a": 1, "b": 0}),
    LabeledPost("2", "x", {"a": 1, "b": 0}),
    LabeledPost("3", "x", {"a": 0, "b": 0}),
    LabeledPost("4", "x", {"a": 0}),  # not labelled for b
    LabeledPost("5", "x", {"a": 0, "b": 0}),
]
SCORES = np.array([[0.8, 0.1], [0.6, 0.0], [0.7, 0.9], [0.2, 0.95], [0.0, 0.0]], dtype=np.float32)


def test_calibrate_and_evaluate() -> None:
    calibrations = calibrate(SCORES, POSTS, SPECS, 1.0)
    a, b = calibrations
    assert a.threshold == pytest.approx(0.6) and a.recall == 1.0 and a.positives == 2
    assert a.benign_pass_rate == pytest.approx(1 / 3)  # post 3 of posts 3, 4, 5
    assert not b.calibrated and b.threshold == 0.3  # no positives: the policy's own threshold stays
    assert b.negatives == 4  # post 4 carries no label for b
    result = evaluate(SCORES, POSTS, ["a", "b"], [c.threshold for c in calibrations])
    assert result.pair_recall == 1.0 and result.post_recall == 1.0
    assert result.violating_posts == 2 and result.benign_posts == 3
    assert result.benign_filtered == pytest.approx(1 / 3)  # only post 5 passes nowhere


def test_sidecar_roundtrip_and_staleness(tmp_path: Path) -> None:
    data = tmp_path / "labels.jsonl"
    data.write_text("\n".join(json.dumps({"id": p.id, "text": p.text, "labels": p.labels}) for p in POSTS))
    calibrations = calibrate(SCORES, load_labeled(data), SPECS, 1.0)
    evaluation = evaluate(SCORES, POSTS, ["a", "b"], [c.threshold for c in calibrations])
    path = write_sidecar(
        tmp_path,
        calibrations,
        data_file=data,
        data_sha256=file_sha256(data),
        target_recall=1.0,
        evaluation=evaluation,
        model_sha256=None,
    )
    assert path == tmp_path / SIDECAR_NAME
    assert load_thresholds(tmp_path) == {"a": pytest.approx(0.6), "b": 0.3}
    document = load_sidecar(tmp_path)
    assert document is not None and document["data_sha256"] == file_sha256(data)
    assert stale_policies(tmp_path, SPECS) == []
    changed = [PolicySpec("a", keywords=("new",)), SPECS[1], PolicySpec("c")]
    assert stale_policies(tmp_path, changed) == ["a", "c"]


def test_no_sidecar_means_no_overrides(tmp_path: Path) -> None:
    assert load_thresholds(tmp_path) == {}


@pytest.mark.parametrize(
    "content",
    ["policies: [1, 2]", "not: yaml: [", "policies:\n  a:\n    threshold: high", "policies:\n  a: 1.5"],
)
def test_malformed_sidecar_raises(tmp_path: Path, content: str) -> None:
    (tmp_path / SIDECAR_NAME).write_text(content)
    with pytest.raises(ValueError):
        load_thresholds(tmp_path)


def test_load_labeled_reports_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "ok", "labels": {"a": 1}}\n{"id": "2"}\n')
    with pytest.raises(ValueError, match=":2:"):
        load_labeled(bad)
