"""Learned per-policy heads (funnel/heads.py): fitting, the file, the fallback, and learning in-domain."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from funnel import DEFAULT_MODEL_DIR, Funnel, PolicySpec
from funnel.calibrate import LabeledPost, split_labeled, threshold_for_recall
from funnel.heads import (
    HEAD,
    HEADS_NAME,
    SCORE,
    SIGNALS,
    Features,
    choose_scorer,
    fit_heads,
    load_heads,
    model_sha256,
    roc_auc,
    save_heads,
    split_of,
    with_thresholds,
)
from worker.policies.files import load_policy_dir
from worker.policies.screening import specs_from_policies

ROOT = Path(__file__).resolve().parents[3]


def _synthetic(n: int, seed: int) -> tuple[Features, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.2
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors[:, 0] += 2.0 * y  # one informative embedding direction
    signals = np.zeros((n, 2, len(SIGNALS)), dtype=np.float32)
    signals[:, 0, 1] = rng.poisson(0.2 + 1.5 * y)  # keyword hits for policy "a"
    signals[:, 0, 4] = rng.random(n)
    return Features(vectors, signals), y


def test_fit_learns_a_separable_signal_and_is_deterministic() -> None:
    features, y = _synthetic(3000, 1)
    violates = np.stack([y, np.zeros_like(y)], axis=1)
    known = np.ones_like(violates)
    splits = [split_of(str(i), 3, 0.2, 0.2) for i in range(len(y))]
    heads, reports = fit_heads(features, violates, known, splits, ["a", "b"], {"a": "fa", "b": "fb"}, "m")
    assert heads.policy_ids == ("a",)  # "b" has no positives: no head
    test = np.array([s == "test" for s in splits])
    probs = heads.probabilities(features, [0], [0])[:, 0]
    assert roc_auc(probs[test], y[test]) > 0.9
    again, _ = fit_heads(features, violates, known, splits, ["a", "b"], {"a": "fa", "b": "fb"}, "m")
    assert np.array_equal(again.emb_weights, heads.emb_weights)
    assert reports[0].train_positives == int((y & (np.array(splits) == "train")).sum())


def test_heads_file_roundtrip_and_malformed(tmp_path: Path) -> None:
    features, y = _synthetic(500, 2)
    violates = np.stack([y, y], axis=1)
    heads, _ = fit_heads(
        features, violates, np.ones_like(violates), ["train"] * 500, ["a", "b"], {"a": "1", "b": "2"}, "m"
    )
    heads = with_thresholds(heads, {"a": 0.25}, {"seed": 5})
    path = save_heads(tmp_path / HEADS_NAME, heads)
    loaded = load_heads(tmp_path)
    assert loaded is not None
    assert loaded.policy_ids == ("a", "b") and loaded.fingerprints == ("1", "2")
    assert loaded.thresholds.tolist() == pytest.approx([0.25, 0.5])
    assert loaded.fit_id == heads.fit_id and loaded.meta["seed"] == 5
    assert np.allclose(loaded.probabilities(features, [0, 1], [0, 1]), heads.probabilities(features, [0, 1], [0, 1]))
    assert load_heads(tmp_path / "nowhere") is None
    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a funnel heads file"):
        load_heads(tmp_path)


def test_the_recorded_scorer_choice_roundtrips_and_old_files_use_every_head(tmp_path: Path) -> None:
    features, y = _synthetic(500, 4)
    violates = np.stack([y, y], axis=1)
    heads, _ = fit_heads(
        features, violates, np.ones_like(violates), ["train"] * 500, ["a", "b"], {"a": "1", "b": "2"}, "m"
    )
    old = with_thresholds(heads, {}, {"seed": 5})  # a file from before the choice: no "scorers"
    assert old.scorers == {"a": HEAD, "b": HEAD} and old.uses_head("a") and old.uses_head("b")
    chosen = with_thresholds(heads, {}, {"seed": 5, "scorers": {"a": HEAD, "b": SCORE}})
    assert chosen.fit_id != old.fit_id, "the choice changes what a post is scored with: another fit"
    save_heads(tmp_path / HEADS_NAME, chosen)
    loaded = load_heads(tmp_path)
    assert loaded is not None and loaded.scorers == {"a": HEAD, "b": SCORE} and not loaded.uses_head("b")
    assert loaded.fit_id == chosen.fit_id
    save_heads(tmp_path / HEADS_NAME, old)
    again = load_heads(tmp_path)
    assert again is not None and again.fit_id == old.fit_id and again.scorers == {"a": HEAD, "b": HEAD}
    for bad in ({"a": "maybe"}, {"zz": HEAD}):
        save_heads(tmp_path / HEADS_NAME, with_thresholds(heads, {}, {"scorers": bad}))
        with pytest.raises(ValueError, match="scorers"):
            load_heads(tmp_path)


def test_choose_scorer_keeps_todays_scoring_only_when_it_reaches_the_target_with_fewer_benign() -> None:
    pos = np.array([True] * 60 + [False] * 100)
    neg = ~pos

    def passed(missed: int, benign: int) -> np.ndarray:
        out = pos.copy()
        out[:missed] = False
        out[60 : 60 + benign] = True
        return out

    # today's scoring misses too many positives: the head, whatever the benign pass
    c = choose_scorer("p", passed(0, 50), passed(5, 0), pos, neg, 0.98)
    assert c.scorer == HEAD and c.score_recall == pytest.approx(55 / 60) and c.head_benign_pass == 0.5
    # both reach the target: the fewer benign posts passed wins; a tie keeps today's scoring
    assert choose_scorer("p", passed(0, 50), passed(1, 10), pos, neg, 0.98).scorer == SCORE
    assert choose_scorer("p", passed(0, 5), passed(0, 10), pos, neg, 0.98).scorer == HEAD
    assert choose_scorer("p", passed(0, 10), passed(0, 10), pos, neg, 0.98).scorer == SCORE
    # few positives: reaching the target means missing none of them
    few = np.array([True] * 4 + [False] * 100)
    today = few.copy()
    today[0] = False
    assert choose_scorer("p", few.copy(), today, few, ~few, 0.98).scorer == HEAD
    # no calibration positives: nothing to choose the head on
    none = np.zeros(10, dtype=bool)
    assert choose_scorer("p", none, none, none, ~none, 0.98).scorer == SCORE


def _posts_for(specs: list[PolicySpec]) -> list[str]:
    return ["free v-bucks generator no survey", "kill the process with kill -9", "I will find you and hurt you"]


@pytest.fixture(scope="module")
def shipped_specs() -> list[PolicySpec]:
    return specs_from_policies(load_policy_dir(ROOT / "policies").policies)


def test_funnel_uses_heads_and_falls_back_when_a_policy_changed(shipped_specs: list[PolicySpec]) -> None:
    heads = load_heads(ROOT / "policies")
    assert heads is not None
    texts = _posts_for(shipped_specs)
    plain = Funnel.build(shipped_specs, languages=None)
    headed = Funnel.build(shipped_specs, languages=None, heads=heads)
    assert headed.stale_heads == [] and headed.fit_id == heads.fit_id
    # The fit's choice per policy: a head where it was chosen, today's scoring and threshold elsewhere.
    assert sorted(headed.headed_policies) == sorted(p for p, s in heads.scorers.items() if s == HEAD)
    assert sorted(headed.kept_scoring) == sorted(p for p, s in heads.scorers.items() if s == SCORE)
    for pid in headed.kept_scoring:
        col = headed.policy_ids.index(pid)
        assert np.array_equal(plain.score_matrix(texts)[:, col], headed.score_matrix(texts)[:, col])
        assert headed.thresholds[col] == plain.thresholds[col]
    first = next(s for s in shipped_specs if heads.uses_head(s.id))
    col = headed.policy_ids.index(first.id)
    assert not np.allclose(plain.score_matrix(texts)[:, col], headed.score_matrix(texts)[:, col])
    # Edit one policy's funnel block: its head is stale, it is scored the old way, the others keep theirs.
    edited = [
        PolicySpec(s.id, (*s.keywords, "brand new keyword"), s.patterns, s.exemplars, s.threshold, s.very_sure)
        if s.id == first.id
        else s
        for s in shipped_specs
    ]
    fallback = Funnel.build(edited, languages=None, heads=heads)
    assert fallback.stale_heads == [first.id]
    assert first.id not in fallback.headed_policies
    assert np.allclose(
        fallback.score_matrix(texts)[:, col], Funnel.build(edited, languages=None).score_matrix(texts)[:, col]
    )
    assert fallback.thresholds[col] == pytest.approx(first.threshold)
    # another embedding model: every head is stale
    assert heads.model_sha256 == model_sha256(DEFAULT_MODEL_DIR)


def _load_toxigen(root: Path) -> list[LabeledPost]:
    spec = importlib.util.spec_from_file_location("funnel_public_sets", ROOT / "bench" / "funnel_public_sets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [LabeledPost(r["id"], r["text"], r["labels"]) for r in module.toxigen(root)]


# Not MODSTREAM_*: the worker settings reject unknown variables with that prefix.
PUBLIC = os.environ.get("FUNNEL_PUBLIC_DATA")


@pytest.mark.skipif(not PUBLIC, reason="set FUNNEL_PUBLIC_DATA to the folder of public labelled sets")
def test_in_domain_learning_beats_the_unfitted_funnel(shipped_specs: list[PolicySpec]) -> None:
    """Fit the hate head on half of ToxiGen's seed sentences (a set the shipped heads never saw),
    evaluate on the other half: at recall 0.95 on that half, fewer benign posts pass than with
    today's scoring (and than with the shipped head)."""
    assert PUBLIC is not None
    posts = _load_toxigen(Path(PUBLIC))
    split = split_labeled(posts, seed=11, calib=0.0, test=0.5)
    train, test = split.train, split.test
    funnel = Funnel.build(shipped_specs, languages=None)
    col = funnel.policy_ids.index("hate")
    ordered = [*train, *test]
    features, old = funnel.features([p.text for p in ordered])
    y = np.array([p.labels["hate"] == 1 for p in ordered])
    names = ["train"] * len(train) + ["test"] * len(test)
    ids = funnel.policy_ids
    violates = np.zeros((len(ordered), len(ids)), dtype=bool)
    violates[:, col] = y
    known = np.zeros_like(violates)
    known[:, col] = True
    fps = {s.id: s.fingerprint() for s in shipped_specs}
    heads, _ = fit_heads(features, violates, known, names, ids, fps, model_sha256(DEFAULT_MODEL_DIR))
    learned = heads.probabilities(features, [col], [heads.policy_ids.index("hate")])[:, 0]
    shipped = load_heads(ROOT / "policies")
    assert shipped is not None
    shipped_scores = shipped.probabilities(features, [col], [shipped.policy_ids.index("hate")])[:, 0]
    held = np.array(names) == "test"

    def benign_pass_at(scores: np.ndarray, target: float = 0.95) -> float:
        pos, neg = scores[held & y], scores[held & ~y]
        threshold = threshold_for_recall(pos.tolist(), target)
        return float(np.mean(neg >= threshold))

    unfitted, before, after = benign_pass_at(old[:, col]), benign_pass_at(shipped_scores), benign_pass_at(learned)
    print(
        f"\nToxiGen seed sentences, held-out half ({int((held & y).sum())} hate, {int((held & ~y).sum())} neutral): "
        f"benign pass rate at recall 0.95: today's scoring {unfitted:.3f}, shipped head {before:.3f}, "
        f"head fitted in-domain {after:.3f}"
    )
    assert after <= unfitted - 0.10


def test_clip_keeps_head_and_tail_of_long_posts() -> None:
    from funnel.embed import clip

    assert clip("short post", 256) == "short post"
    assert clip("x" * 300, None) == "x" * 300
    words = " ".join(f"w{i}" for i in range(200))
    clipped = clip(words, 60)
    assert len(clipped) <= 60
    assert clipped.startswith("w0 w1 ") and clipped.endswith("w199")
    assert " w100 " not in clipped  # the middle goes
    assert all(part in words.split() for part in clipped.split())  # cut at spaces, no broken words
