"""Scoring and decision logic: pure functions, then the whole `Funnel` with the real model."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from funnel import DEFAULT_MODEL_DIR, Funnel, FunnelResult, PolicySpec, Weights
from funnel.embed import load_embedder
from funnel.score import combine, decide, embedding_evidence, lexical_evidence

W = Weights(word=0.3, phrase=0.5, pattern=0.5, embedding_floor=0.2, embedding_ceiling=0.6)


def test_lexical_evidence_is_noisy_or() -> None:
    assert lexical_evidence(0, 0, 0, W) == 0.0
    assert lexical_evidence(1, 0, 0, W) == pytest.approx(0.3)
    assert lexical_evidence(0, 1, 0, W) == pytest.approx(0.5)
    assert lexical_evidence(2, 0, 0, W) == pytest.approx(1 - 0.7**2)
    assert lexical_evidence(1, 1, 1, W) == pytest.approx(1 - 0.7 * 0.5 * 0.5)
    assert lexical_evidence(50, 50, 50, W) <= 1.0


def test_embedding_evidence_is_linear_between_floor_and_ceiling() -> None:
    sims = np.array([-0.5, 0.2, 0.4, 0.6, 0.9], dtype=np.float32)
    assert embedding_evidence(sims, W).tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_combine_never_leaves_unit_interval_and_is_monotone() -> None:
    grid = np.linspace(0, 1, 11, dtype=np.float32)
    a, b = np.meshgrid(grid, grid)
    combined = combine(a, b)
    assert combined.min() >= 0.0 and combined.max() <= 1.0
    assert (combined >= np.maximum(a, b) - 1e-6).all()


@pytest.mark.parametrize(
    ("score", "threshold", "very_sure", "expected"),
    [
        (0.5, 0.5, 0.9, (True, False)),  # at the threshold is a candidate
        (0.4999, 0.5, 0.9, (False, False)),
        (0.95, 0.5, 0.9, (True, True)),
        (0.0, 0.0, 0.9, (False, False)),  # no signal never passes, even at threshold 0
        (0.7, 0.8, 0.6, (False, False)),  # very sure implies candidate
    ],
)
def test_decide(score: float, threshold: float, very_sure: float, expected: tuple[bool, bool]) -> None:
    assert decide(score, threshold, very_sure) == expected


SPECS = [
    PolicySpec(
        "violence",
        keywords=("kill you", "shoot up"),
        patterns=(r"\bi('ll| will) (kill|stab)\b",),
        exemplars=("I am going to kill you tomorrow", "someone should shoot up the school"),
        threshold=0.5,
        very_sure=0.9,
    ),
    PolicySpec(
        "spam",
        keywords=("free money",),
        exemplars=("Congratulations you won a free iPhone, click the link to claim your prize",),
        threshold=0.5,
    ),
    PolicySpec("keywords-only", keywords=("banana",), threshold=0.2),
]


@pytest.fixture(scope="module")
def funnel() -> Funnel:
    return Funnel.build(SPECS, weights=W)


def test_result_shape(funnel: Funnel) -> None:
    [result] = funnel.score_batch(["I will kill you, k1ll y0u"])
    assert isinstance(result, FunnelResult)
    assert set(result.scores) == {"violence", "spam", "keywords-only"}
    assert all(0.0 <= s <= 1.0 for s in result.scores.values())
    assert "violence" in result.candidates and result.is_candidate
    fired = result.signals["violence"]
    assert "keyword:kill you" in fired
    assert any(s.startswith("pattern:") for s in fired)
    assert any(s.startswith("embedding:") for s in fired)


def test_candidate_iff_score_reaches_threshold(funnel: Funnel) -> None:
    texts = ["I will kill you", "free money!!", "banana bread", "the weather is nice", "", "🙂🙂🙂"]
    by_id = {s.id: s for s in SPECS}
    for result in funnel.score_batch(texts):
        for policy_id, score in result.scores.items():
            candidate, sure = decide(score, by_id[policy_id].threshold, by_id[policy_id].very_sure)
            assert (policy_id in result.candidates) == candidate
            assert (policy_id in result.very_sure) == sure


def test_benign_post_scores_below_violating_post(funnel: Funnel) -> None:
    benign, violating = funnel.score_batch(["kill the process and restart the server", "I'm going to kill you"])
    assert violating.scores["violence"] > benign.scores["violence"]


def test_empty_and_symbol_only_posts(funnel: Funnel) -> None:
    for result in funnel.score_batch(["", "   ", "🙂🙂🙂", "\u200b"]):
        assert result.candidates == [] and set(result.scores.values()) == {0.0}


def test_keywords_only_policy_without_exemplars(funnel: Funnel) -> None:
    [result] = funnel.score_batch(["b4n4n4 smoothie"])
    assert result.scores["keywords-only"] == pytest.approx(W.word, abs=1e-4)
    assert result.candidates == ["keywords-only"]


def test_thresholds_change_candidates_not_scores() -> None:
    strict = Funnel.build([replace(s, threshold=1.0) for s in SPECS], weights=W)
    loose = Funnel.build(SPECS, weights=W)
    text = ["I will kill you"]
    assert strict.score_batch(text)[0].scores == loose.score_batch(text)[0].scores
    assert strict.score_batch(text)[0].candidates == []


def test_without_embeddings_only_lexical_signals() -> None:
    lexical = Funnel.build(SPECS, model_dir=None, weights=W)
    [result] = lexical.score_batch(["I'm going to murder you tomorrow"])  # no keyword, no pattern
    assert result.scores["violence"] == 0.0
    assert lexical.describe()["embedding_model"] is None


def test_deterministic_and_batch_independent(funnel: Funnel) -> None:
    texts = ["I will kill you", "free money at bit.ly/x", "nice day"] * 5
    one_by_one = [funnel.score(t).scores for t in texts]
    batched = [r.scores for r in funnel.score_batch(texts)]
    assert one_by_one == batched


def test_concurrent_callers_are_serialised(funnel: Funnel) -> None:
    expected = funnel.score_batch(["I will kill you"] * 50)
    outputs: list[list[FunnelResult]] = []

    def call() -> None:
        outputs.append(funnel.score_batch(["I will kill you"] * 50))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(out == expected for out in outputs)


def test_duplicate_policy_ids_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate policy ids"):
        Funnel.build([PolicySpec("a"), PolicySpec("a")], model_dir=None)


def test_embedder_is_loaded_once_and_unit_length() -> None:
    assert load_embedder(DEFAULT_MODEL_DIR) is load_embedder(DEFAULT_MODEL_DIR)
    vectors = load_embedder(DEFAULT_MODEL_DIR).encode(["hello world", "", "k i l l"])
    norms = np.linalg.norm(vectors, axis=1)
    assert norms[0] == pytest.approx(1.0, abs=1e-5) and norms[1] == 0.0


def test_embedding_similarity_ranks_the_right_policy(funnel: Funnel) -> None:
    [result] = funnel.score_batch(["you won a free gift card, click here to claim the prize"])
    assert result.scores["spam"] > result.scores["violence"]
