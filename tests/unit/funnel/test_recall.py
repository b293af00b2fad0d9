"""Bypass sampling and the funnel-recall estimate (funnel/recall.py): pure logic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from funnel.recall import (
    RecallTracker,
    bypass_policies,
    bypass_sampled,
    tracker_from_verdicts,
    wilson_interval,
)
from funnel.spec import FunnelResult
from worker.cli.main import cli


def test_wilson_interval_known_values() -> None:
    # Textbook value: 8 of 10 → [0.490, 0.943]
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.69 < low < 0.73


def test_bypass_sampling_is_deterministic_and_near_its_rate() -> None:
    ids = [f"post-{i}" for i in range(20_000)]
    first = [bypass_sampled(i, "hate", 0.05) for i in ids]
    assert first == [bypass_sampled(i, "hate", 0.05) for i in ids]
    assert 0.045 < np.mean(first) < 0.055
    # independent across policies (its own hash input), and the extremes are exact
    other = [bypass_sampled(i, "violence", 0.05) for i in ids]
    assert first != other
    assert not any(bypass_sampled(i, "hate", 0.0) for i in ids[:100])
    assert all(bypass_sampled(i, "hate", 1.0) for i in ids[:100])


def test_bypass_policies_only_cleared_ones_with_per_policy_rates() -> None:
    result = FunnelResult(candidates=["hate"], scores={"hate": 0.9, "spam": 0.1, "violence": 0.0})
    chosen = bypass_policies("p1", result, {"spam": 1.0, "hate": 1.0}, default=0.0)
    assert chosen == ["spam"]  # hate is a candidate already; violence's rate is the default 0
    assert bypass_policies("p1", result, {}, default=1.0) == ["spam", "violence"]


def test_estimate_covers_the_true_recall_in_a_seeded_simulation() -> None:
    """40 seeded streams of 3,000 violations at true recall 0.9, sampled at 0.2: the 95 % interval
    holds the achieved recall in at least 85 % of them."""
    rng = np.random.default_rng(7)
    covered = 0
    runs = 40
    for run in range(runs):
        tracker = RecallTracker()
        true_recall = 0.9
        violations = 3000
        caught = rng.random(violations) < true_recall
        rate = 0.2
        for i, hit in enumerate(caught):
            if hit:
                tracker.observe("hate", True, sampled=False, rate=None)
            elif bypass_sampled(f"{run}-{i}", "hate", rate):
                tracker.observe("hate", True, sampled=True, rate=rate)
        for i in range(2000):  # benign cleared posts sampled: counted as sampled, not violating
            if bypass_sampled(f"{run}-b{i}", "hate", rate):
                tracker.observe("hate", False, sampled=True, rate=rate)
        [estimate] = tracker.estimates()
        assert estimate.recall is not None
        achieved = caught.mean()
        covered += estimate.low <= achieved <= estimate.high
    assert covered >= 0.85 * runs, covered


def _verdict(post_id: str, results: list[dict[str, object]]) -> dict[str, object]:
    return {"post_id": post_id, "results": results}


def test_tracker_from_verdicts_and_unknown_policy() -> None:
    records = [
        _verdict("a", [{"policy_id": "hate", "violation": True}]),
        _verdict("b", [{"policy_id": "hate", "violation": True, "sampled": True, "sample_rate": 0.5}]),
        _verdict("c", [{"policy_id": "hate", "violation": False, "sampled": True, "sample_rate": 0.5}]),
    ]
    [estimate] = tracker_from_verdicts(records).estimates()
    assert estimate.candidate_violations == 1 and estimate.sampled_violations == 1
    assert estimate.recall == pytest.approx(1 / 3)  # 1 caught, ~2 missed (1 / 0.5)
    with pytest.raises(ValueError, match="unknown policy id 'hat'"):
        tracker_from_verdicts([_verdict("d", [{"policy_id": "hat", "violation": True}])], known=["hate"])
    with pytest.raises(ValueError, match="sampling rate"):
        tracker_from_verdicts([_verdict("e", [{"policy_id": "hate", "violation": True, "sampled": True}])])


def test_recall_cli(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    rows = [_verdict(str(i), [{"policy_id": "hate", "violation": True}]) for i in range(90)]
    rows += [_verdict(f"s{i}", [{"policy_id": "hate", "violation": True, "sampled": True}]) for i in range(1)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = CliRunner().invoke(cli, ["funnel", "recall", "--from-audit", str(path), "--rate", "0.1", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.splitlines()[0])
    assert row["policy_id"] == "hate" and row["recall"] == pytest.approx(90 / 100)
    assert row["ci95"][0] < 0.9 < row["ci95"][1]


def test_worker_bypass_and_recall_metrics() -> None:
    from funnel.recall import RecallTracker
    from worker.contracts import PolicyResult
    from worker.ops.metrics import Metrics
    from worker.policies.screening import count_recall, with_bypass

    result = FunnelResult(candidates=["hate"], scores={"hate": 0.9, "spam": 0.1})
    assert with_bypass(result, "p", {"spam": 1.0, "hate": 1.0}).sampled == ["spam"]
    assert with_bypass(result, "p", {"spam": 0.0}) is result  # nothing sampled: unchanged

    metrics, tracker = Metrics(), RecallTracker()

    def judged(policy: str, violation: bool, sampled: bool = False) -> PolicyResult:
        rate = 0.5 if sampled else None
        return PolicyResult(
            policy_id=policy,
            policy_version="v",
            violation=violation,
            confidence="high",
            rationale="",
            sampled=sampled,
            sample_rate=rate,
        )

    count_recall(metrics, tracker, [judged("spam", True), judged("spam", True), judged("spam", False)])
    count_recall(metrics, tracker, [judged("spam", True, sampled=True), judged("spam", False, sampled=True)])
    value = metrics.registry.get_sample_value
    assert value("modstream_funnel_candidate_violations_total", {"policy_id": "spam"}) == 2
    assert value("modstream_funnel_sampled_violations_total", {"policy_id": "spam"}) == 1
    assert value("modstream_funnel_sampled_total", {"policy_id": "spam"}) == 2
    # 2 caught, 1 / 0.5 = 2 missed → 0.5
    assert value("modstream_funnel_recall_estimate", {"policy_id": "spam"}) == pytest.approx(0.5)
