"""Scoring: combine a policy's signals into one score in [0, 1]. Pure functions, no I/O.

Each signal is turned into a piece of evidence in [0, 1] and the pieces are combined with a
noisy-OR, `1 - Π(1 - e)`: any strong signal alone can make a post a candidate, weak
signals add up, and the score never leaves [0, 1].

* keyword: a single word ("kill") is weak evidence — "kill the process" is everywhere —
  a phrase ("kill yourself") is stronger; repeated distinct hits add up.
* pattern: a policy author's regex is a deliberate, specific signal.
* embedding: the similarity to the policy's exemplars (embed.py: centred, blend of best
  exemplar and centroid), rescaled so that what an unrelated post typically reaches maps
  to 0 and what violating posts typically reach maps to 1.

The weights were set by a coarse grid search: benign posts filtered out on
datasets/funnel_dev.jsonl and on Davidson "neither" tweets, at thresholds calibrated for
recall 0.98 on the dev set (docs/funnel.md). Thresholds, not weights, are what `modstream
funnel calibrate` tunes per policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Weights:
    word: float = 0.55
    phrase: float = 0.6
    pattern: float = 0.5
    # Centred cosine (embed.py) at or below `embedding_floor` is no evidence; at
    # `embedding_ceiling` and above it is full evidence.
    embedding_floor: float = 0.2
    embedding_ceiling: float = 0.55
    # Share of the policy-centroid cosine in the similarity (the rest: best single exemplar).
    centroid_weight: float = 0.5


DEFAULT_WEIGHTS = Weights()


def lexical_evidence(words: int, phrases: int, patterns: int, weights: Weights = DEFAULT_WEIGHTS) -> float:
    """Evidence from keyword and pattern hits (counts of distinct hits)."""
    miss = (1.0 - weights.word) ** words * (1.0 - weights.phrase) ** phrases * (1.0 - weights.pattern) ** patterns
    return 1.0 - miss


def embedding_evidence(similarity: FloatArray, weights: Weights = DEFAULT_WEIGHTS) -> FloatArray:
    """Cosine similarity → evidence, linearly between floor and ceiling, clipped to [0, 1]."""
    span = weights.embedding_ceiling - weights.embedding_floor
    scaled = (similarity - weights.embedding_floor) / span
    evidence: FloatArray = np.clip(scaled, 0.0, 1.0).astype(np.float32)
    return evidence


def combine(lexical: FloatArray, embedding: FloatArray) -> FloatArray:
    """Noisy-OR of two evidence matrices of the same shape."""
    combined: FloatArray = (1.0 - (1.0 - lexical) * (1.0 - embedding)).astype(np.float32)
    return combined


def decide(score: float, threshold: float, very_sure: float) -> tuple[bool, bool]:
    """(candidate, very sure). A score of 0 is never a candidate, even at threshold 0,
    so a policy with no signal at all cannot flood the judge; "very sure" implies candidate."""
    candidate = score > 0.0 and score >= threshold
    return candidate, candidate and score >= very_sure
