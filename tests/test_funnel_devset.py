"""The acceptance figures, from the shipped sidecar thresholds on the shipped dev set.

datasets/funnel_dev.jsonl (hand-written, see bench/make_funnel_dev.py) must keep recall of
violating posts ≥ 0.97 with at least half of the benign posts filtered out, at the
thresholds in policies/funnel-thresholds.yaml. When a policy's funnel block changes, this
test says so and asks for `modstream funnel calibrate` to be re-run.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from funnel import DEFAULT_MODEL_DIR, Funnel, load_sidecar, load_thresholds, stale_policies
from funnel.calibrate import evaluate, file_sha256, load_labeled
from worker.funnel import specs_from_policies
from worker.policies import load_policy_dir

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
DEV = ROOT / "datasets" / "funnel_dev.jsonl"
RECALCULATE = (
    "re-run: modstream funnel calibrate --policies policies --labeled datasets/funnel_dev.jsonl --target-recall 0.98"
)


def test_dev_set_composition() -> None:
    rows = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 400
    assert len({r["id"] for r in rows}) == len(rows)
    policy_ids = {p.id for p in load_policy_dir(POLICIES).policies}
    kinds = Counter(r["kind"] for r in rows)
    assert {"obvious", "implicit", "obfuscated", "benign-trigger", "benign"} <= set(kinds)
    for row in rows:
        assert set(row["labels"]) == policy_ids, row["id"]
        assert set(row["labels"].values()) <= {0, 1}
    positives = Counter(pid for r in rows for pid, v in r["labels"].items() if v)
    assert all(positives[pid] >= 20 for pid in policy_ids), positives


def test_sidecar_matches_the_shipped_data_model_and_policies() -> None:
    sidecar = load_sidecar(POLICIES)
    assert sidecar is not None, f"no sidecar; {RECALCULATE}"
    assert sidecar["data_sha256"] == file_sha256(DEV), f"dev set changed since calibration; {RECALCULATE}"
    assert sidecar["embedding_model_sha256"] == file_sha256(DEFAULT_MODEL_DIR / "model.safetensors")
    specs = specs_from_policies(load_policy_dir(POLICIES).policies)
    assert stale_policies(POLICIES, specs) == [], f"funnel blocks changed since calibration; {RECALCULATE}"


@pytest.fixture(scope="module")
def evaluation():  # type: ignore[no-untyped-def]
    specs = specs_from_policies(load_policy_dir(POLICIES).policies, load_thresholds(POLICIES))
    posts = load_labeled(DEV)
    funnel = Funnel.build(specs)
    scores = funnel.score_matrix([p.text for p in posts])
    return evaluate(scores, posts, funnel.policy_ids, [s.threshold for s in specs])


def test_recall_of_violating_posts(evaluation) -> None:  # type: ignore[no-untyped-def]
    assert evaluation.post_recall >= 0.97
    assert evaluation.pair_recall >= 0.97
    assert min(evaluation.per_policy_recall.values()) >= 0.95, evaluation.per_policy_recall


def test_at_least_half_of_benign_posts_filtered(evaluation) -> None:  # type: ignore[no-untyped-def]
    assert evaluation.benign_filtered >= 0.5
