"""The acceptance figures of the shipped funnel, on posts nothing was fitted to.

The shipped heads (policies/funnel-heads.npz, `modstream funnel fit`) were fitted on the train
split and their thresholds picked on the calibration split of the deduplicated labelled data;
the split is a seeded hash of each post's normalised text (funnel.calibrate.split_labeled), so
the held-out split of the project's own sets is rebuilt here from those files alone. The test
prints the figures (recall and benign pass rate with Wilson 95 % intervals) and asserts recall
≥ 0.95 of violating posts on that held-out split. Public-set figures are in docs/funnel.md.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from funnel import DEFAULT_MODEL_DIR, Funnel
from funnel.calibrate import Rate, check_policy_ids, load_labeled, split_labeled
from funnel.heads import load_heads, model_sha256
from worker.policies.files import load_policy_dir
from worker.policies.screening import specs_from_policies

ROOT = Path(__file__).resolve().parents[3]
POLICIES = ROOT / "policies"
DEV = ROOT / "datasets" / "funnel_dev.jsonl"
EVAL = ROOT / "datasets" / "eval_sample.jsonl"
REFIT = "re-run `modstream funnel fit` (the command is in docs/funnel.md)"


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


def test_shipped_heads_fit_the_shipped_policies_and_model() -> None:
    heads = load_heads(POLICIES)
    assert heads is not None, f"no heads; {REFIT}"
    assert heads.model_sha256 == model_sha256(DEFAULT_MODEL_DIR), f"embedding model changed; {REFIT}"
    specs = specs_from_policies(load_policy_dir(POLICIES).policies)
    funnel = Funnel(specs, embedder=None, heads=heads)  # no embedder: only the fingerprints are compared
    fingerprints = dict(zip(heads.policy_ids, heads.fingerprints, strict=True))
    stale = [s.id for s in specs if s.id in fingerprints and fingerprints[s.id] != s.fingerprint()]
    assert stale == [], f"funnel blocks changed since the fit: {stale}; {REFIT}"
    assert funnel.stale_heads  # without the embedding model every head is stale: the fallback path
    for name in (DEV.name, EVAL.name):
        assert name in heads.meta["data_files"], f"{name} was not part of the fit; {REFIT}"


@pytest.fixture(scope="module")
def held_out():  # type: ignore[no-untyped-def]
    heads = load_heads(POLICIES)
    assert heads is not None
    policy_set = load_policy_dir(POLICIES)
    specs = specs_from_policies(policy_set.policies)
    posts = [*load_labeled(DEV), *load_labeled(EVAL)]
    check_policy_ids(posts, [s.id for s in specs])
    meta = heads.meta
    split = split_labeled(posts, int(meta["seed"]), float(meta["split"]["calib"]), float(meta["split"]["holdout"]))
    funnel = Funnel.build(specs, heads=heads, languages=None)
    # The shipped operating point: each policy's head where the fit chose it, today's scoring elsewhere.
    assert sorted(funnel.headed_policies) == sorted(p for p in heads.policy_ids if heads.uses_head(p))
    assert funnel.stale_heads == []
    scores = funnel.score_matrix([p.text for p in split.test])
    return split.test, funnel, scores


def test_recall_on_the_held_out_split(held_out) -> None:  # type: ignore[no-untyped-def]
    posts, funnel, scores = held_out
    ids = funnel.policy_ids
    thresholds = funnel.thresholds  # the operating point: the heads' thresholds where fitted
    passed = (scores >= thresholds) & (scores > 0.0)
    violates = np.array([[p.labels.get(pid) == 1 for pid in ids] for p in posts], dtype=bool)
    violating = violates.any(axis=1)
    benign = ~violating
    post_recall = Rate.of(int((passed & violates).any(axis=1)[violating].sum()), int(violating.sum()))
    pair_recall = Rate.of(int((passed & violates).sum()), int(violates.sum()))
    benign_pass = Rate.of(int(passed[benign].any(axis=1).sum()), int(benign.sum()))
    print(f"\nheld-out split of funnel_dev + eval_sample: {len(posts)} posts")
    print(f"recall of violating posts {post_recall}; of (post, policy) pairs {pair_recall}")
    print(f"benign posts passed to a judge {benign_pass}")
    for j, pid in enumerate(ids):
        neg = np.array([p.labels.get(pid) == 0 for p in posts], dtype=bool)
        recall = Rate.of(int(passed[violates[:, j], j].sum()), int(violates[:, j].sum()))
        print(f"  {pid:18} recall {recall}  benign pass {Rate.of(int(passed[neg, j].sum()), int(neg.sum()))}")
    assert violating.sum() >= 40, "the held-out split is too small to say anything"
    assert post_recall.value >= 0.95
    assert pair_recall.value >= 0.95
