"""Learned per-policy scoring: a small logistic-regression head per policy over the funnel's own signals.

Each policy's head reads, for one post:

* the post's static embedding (the centred, unit vector of embed.py; `dim` values),
* that policy's exemplar similarity, its single-word and phrase keyword hit counts, its pattern
  hit count, and today's noisy-OR score for it (score.py) — the `SIGNALS` below.

It is one dot product per (post, policy): `sigmoid(v · w_emb + s · w_sig + b)`, a (posts × dim) @
(dim × policies) matrix product for a batch, so inference is numpy only and costs next to nothing
beside the tokenizer. Only the signals of the head's own policy are used, so a head depends on
its policy's funnel block alone: when that block changes (`PolicySpec.fingerprint`), or the
embedding model is another one, the head is *stale* and the funnel falls back to today's scoring
for that policy (`Funnel.stale_heads`).

The heads live beside the thresholds, in `<policies dir>/funnel-heads.npz` (`HEADS_NAME`),
written by `modstream funnel fit` with the SHA-256 of the training data, each policy's version
(hash of its file) and fingerprint, the embedding model's SHA-256, the seed and the held-out
figures. Fitting is plain numpy too (L2-regularised Newton / IRLS, class-balanced, seeded split);
see `fit_heads`.

Per policy the file also records which scorer the fit chose on the calibration split
(`meta["scorers"]`: `"head"` or `"score"`, see `choose_scorer`): a policy whose head let more
benign calibration posts through at the target recall than today's scoring keeps today's
scoring and its calibrated threshold, and its head is not used. Files written before the choice
existed have no `scorers`: every head is used, as then.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

HEADS_NAME = "funnel-heads.npz"
# Per-policy signals a head reads, in this order (the last axis of `Features.signals`).
SIGNALS = ("similarity", "words", "phrases", "patterns", "score")
FloatMatrix = npt.NDArray[np.float32]
BoolMatrix = npt.NDArray[np.bool_]
SPLITS = ("train", "calib", "test")
# What a policy is scored with, as chosen by `fit` on the calibration split (meta["scorers"]).
HEAD = "head"
SCORE = "score"  # today's noisy-OR score at the policy's calibrated threshold; the head is not used
SCORERS = (HEAD, SCORE)


@dataclass(frozen=True, slots=True)
class Features:
    """What the heads read for a batch: `vectors` (posts, dim) and raw `signals` (posts, policies,
    len(SIGNALS)), policies in the funnel's `policy_ids` order (`signal_features` transforms them)."""

    vectors: FloatMatrix
    signals: FloatMatrix


@dataclass(frozen=True, slots=True)
class HeadSet:
    """Fitted heads for some policies. Arrays are float32; column j is `policy_ids[j]`."""

    policy_ids: tuple[str, ...]
    emb_weights: FloatMatrix  # (dim, k)
    sig_weights: FloatMatrix  # (len(SIGNALS), k)
    bias: FloatMatrix  # (k,)
    thresholds: FloatMatrix  # (k,)
    fingerprints: tuple[str, ...]
    model_sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fit_id(self) -> str:
        """Short hash of the weights (and of the scorer choice, when recorded): names the fit a
        post was screened under."""
        digest = hashlib.sha256()
        for array in (self.emb_weights, self.sig_weights, self.bias, self.thresholds):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(json.dumps(list(self.policy_ids)).encode())
        if "scorers" in self.meta:  # absent in files from before the choice: their fit id is unchanged
            digest.update(json.dumps(self.scorers, sort_keys=True).encode())
        return digest.hexdigest()[:16]

    @property
    def scorers(self) -> dict[str, str]:
        """Per fitted policy, the scorer the fit chose (`HEAD` or `SCORE`); `HEAD` for every
        policy of a file that records no choice."""
        recorded = self.meta.get("scorers") or {}
        return {pid: str(recorded.get(pid, HEAD)) for pid in self.policy_ids}

    def uses_head(self, policy_id: str) -> bool:
        return self.scorers.get(policy_id) == HEAD

    def probabilities(self, features: Features, columns: Sequence[int], heads: Sequence[int]) -> FloatMatrix:
        """(posts, len(heads)): head `heads[i]` applied to funnel policy column `columns[i]`."""
        h = np.asarray(heads, dtype=np.int64)
        cols = np.asarray(columns, dtype=np.int64)
        logits = features.vectors @ self.emb_weights[:, h]
        signals = signal_features(features.signals[:, cols, :])
        logits += np.einsum("nks,sk->nk", signals, self.sig_weights[:, h])
        logits += self.bias[h]
        out: FloatMatrix = _sigmoid(logits).astype(np.float32)
        return out


def _sigmoid(z: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))
    return out


def signal_features(raw: FloatMatrix) -> FloatMatrix:
    """Hit counts enter as log1p (a tenth hit adds less than the second)."""
    out = raw.astype(np.float32, copy=True)
    out[..., 1:4] = np.log1p(out[..., 1:4])
    return out


# --- files -------------------------------------------------------------------------------------


def save_heads(path: Path, heads: HeadSet) -> Path:
    meta = dict(heads.meta)
    meta.update(
        policy_ids=list(heads.policy_ids),
        fingerprints=list(heads.fingerprints),
        model_sha256=heads.model_sha256,
        signals=list(SIGNALS),
        fit_id=heads.fit_id,
    )
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        np.savez_compressed(
            handle,
            emb_weights=heads.emb_weights.astype(np.float32),
            sig_weights=heads.sig_weights.astype(np.float32),
            bias=heads.bias.astype(np.float32),
            thresholds=heads.thresholds.astype(np.float32),
            meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
        )
    tmp.replace(path)
    return path


def load_heads(policies_dir: Path | None) -> HeadSet | None:
    """The fitted heads in `<policies_dir>/funnel-heads.npz`, or None when there are none.
    A malformed file raises ValueError (silently dropping the heads would change the judge's load)."""
    if policies_dir is None:
        return None
    path = Path(policies_dir) / HEADS_NAME
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            heads = HeadSet(
                policy_ids=tuple(meta["policy_ids"]),
                emb_weights=np.asarray(data["emb_weights"], dtype=np.float32),
                sig_weights=np.asarray(data["sig_weights"], dtype=np.float32),
                bias=np.asarray(data["bias"], dtype=np.float32),
                thresholds=np.asarray(data["thresholds"], dtype=np.float32),
                fingerprints=tuple(meta["fingerprints"]),
                model_sha256=str(meta["model_sha256"]),
                meta=meta,
            )
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a funnel heads file ({exc})") from exc
    k = len(heads.policy_ids)
    if (
        heads.emb_weights.ndim != 2
        or heads.emb_weights.shape[1] != k
        or heads.sig_weights.shape != (len(SIGNALS), k)
        or heads.bias.shape != (k,)
        or heads.thresholds.shape != (k,)
        or len(heads.fingerprints) != k
        or list(meta.get("signals", [])) != list(SIGNALS)
    ):
        raise ValueError(f"{path}: inconsistent shapes or signals")
    scorers = meta.get("scorers", {})
    if not isinstance(scorers, dict) or any(
        pid not in heads.policy_ids or value not in SCORERS for pid, value in scorers.items()
    ):
        raise ValueError(f"{path}: 'scorers' must map fitted policy ids to one of {', '.join(SCORERS)}")
    return heads


@lru_cache(maxsize=8)
def model_sha256(model_dir: Path) -> str:
    """SHA-256 of the embedding model's weights (what a head's `emb_weights` were fitted to)."""
    digest = hashlib.sha256()
    with (Path(model_dir) / "model.safetensors").open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- data: deduplication and seeded splits ----------------------------------------------------


def dedup_key(text: str) -> str:
    """Exact duplicates up to case and whitespace."""
    return " ".join(text.casefold().split())


def split_of(group_key: str, seed: int, calib: float, test: float) -> str:
    """Deterministic split by a hash of (seed, key): a post lands in the same split whatever
    else is in the data, so a held-out split can be rebuilt from one file alone."""
    if not (calib >= 0.0 and test >= 0.0 and calib + test < 1.0):
        raise ValueError(f"bad split fractions calib={calib} test={test}")
    digest = hashlib.sha256(f"{seed}\0{group_key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test:
        return "test"
    if u < test + calib:
        return "calib"
    return "train"


# --- fitting ----------------------------------------------------------------------------------


def _newton_logistic(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], weight: npt.NDArray[np.float64], lam: float
) -> npt.NDArray[np.float64]:
    """Weighted L2-regularised logistic regression (last column of `x` is the unpenalised
    intercept), by Newton's method. Deterministic: no random initialisation."""
    d = x.shape[1]
    w = np.zeros(d)
    penalty = np.full(d, lam)
    penalty[-1] = 0.0
    for _ in range(50):
        p = _sigmoid(x @ w)
        grad = x.T @ (weight * (p - y)) + penalty * w
        hess = (x.T * (weight * p * (1.0 - p))) @ x + np.diag(penalty + 1e-8)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-6:
            break
    return w


def roc_auc(scores: npt.NDArray[np.floating[Any]], positive: BoolMatrix) -> float:
    """Mann-Whitney AUC with ties counted half."""
    pos, neg = int(positive.sum()), int((~positive).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = np.asarray(scores)[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


@dataclass(frozen=True, slots=True)
class FitReport:
    policy_id: str
    train_positives: int
    train_negatives: int
    lam: float
    calib_auc: float


def fit_heads(
    features: Features,
    violates: BoolMatrix,
    known: BoolMatrix,
    splits: Sequence[str],
    policy_ids: Sequence[str],
    fingerprints: Mapping[str, str],
    model_hash: str,
    *,
    lambdas: Sequence[float] = (1.0, 10.0, 100.0, 1000.0),
    min_positives: int = 5,
    auc_tolerance: float = 0.002,
) -> tuple[HeadSet, list[FitReport]]:
    """One head per policy with at least `min_positives` training positives, fitted on the
    `train` rows labelled for it; the L2 strength is picked by ROC AUC on the `calib` rows
    (the strongest within `auc_tolerance` of the best).
    Thresholds are left at 0.5 here: `calibrate_heads` picks them on the calib split.

    Features are standardised on the training rows and the scaling is folded back into the
    weights, so inference needs no scaler."""
    split = np.asarray(splits)
    signals = signal_features(features.signals)
    dim = features.vectors.shape[1]
    emb_cols: list[npt.NDArray[np.float64]] = []
    sig_cols: list[npt.NDArray[np.float64]] = []
    biases: list[float] = []
    fitted: list[str] = []
    reports: list[FitReport] = []
    for j, pid in enumerate(policy_ids):
        rows_train = known[:, j] & (split == "train")
        rows_calib = known[:, j] & (split == "calib")
        y_all = violates[:, j]
        pos = int((y_all & rows_train).sum())
        neg = int((~y_all & rows_train).sum())
        if pos < min_positives or neg < min_positives:
            continue
        x_all = np.concatenate([features.vectors, signals[:, j, :]], axis=1).astype(np.float64)
        x = x_all[rows_train]
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std[std < 1e-6] = 1.0
        z = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
        y = y_all[rows_train].astype(np.float64)
        n = len(y)
        # Class-balanced: positives and negatives weigh half each, so the L2 strength means the
        # same whatever the class ratio.
        weight = np.where(y > 0, 1.0 / (2.0 * pos), 1.0 / (2.0 * neg))
        tried: list[tuple[float, float, npt.NDArray[np.float64]]] = []
        for lam in lambdas:
            w = _newton_logistic(z, y, weight, lam / n)
            if rows_calib.any() and (y_all & rows_calib).any() and (~y_all & rows_calib).any():
                zc = np.concatenate([(x_all[rows_calib] - mean) / std, np.ones((int(rows_calib.sum()), 1))], axis=1)
                auc = roc_auc(zc @ w, y_all[rows_calib])
            else:
                auc = float("nan")
            tried.append((lam, auc, w))
        # The strongest L2 whose calibration AUC is within `auc_tolerance` of the best (with few
        # positives the AUC differences are noise, and the simpler head transfers better).
        aucs = [a for _, a, _ in tried if not math.isnan(a)]
        top = max(aucs) if aucs else float("nan")
        lam, auc, w = max(
            (t for t in tried if math.isnan(top) or (not math.isnan(t[1]) and t[1] >= top - auc_tolerance)),
            key=lambda t: t[0],
        )
        coef = w[:-1] / std
        emb_cols.append(coef[:dim])
        sig_cols.append(coef[dim:])
        biases.append(float(w[-1] - (mean / std) @ w[:-1]))
        fitted.append(pid)
        reports.append(FitReport(pid, pos, neg, lam, auc))
    k = len(fitted)
    heads = HeadSet(
        policy_ids=tuple(fitted),
        emb_weights=(np.stack(emb_cols, axis=1) if k else np.zeros((dim, 0))).astype(np.float32),
        sig_weights=(np.stack(sig_cols, axis=1) if k else np.zeros((len(SIGNALS), 0))).astype(np.float32),
        bias=np.asarray(biases, dtype=np.float32),
        thresholds=np.full(k, 0.5, dtype=np.float32),
        fingerprints=tuple(fingerprints[pid] for pid in fitted),
        model_sha256=model_hash,
    )
    return heads, reports


def with_thresholds(heads: HeadSet, thresholds: Mapping[str, float], meta: Mapping[str, Any]) -> HeadSet:
    """The same heads with operating thresholds and metadata (what `fit` writes)."""
    values = np.array([thresholds.get(pid, 0.5) for pid in heads.policy_ids], dtype=np.float32)
    return replace(heads, thresholds=values, meta=dict(meta))


@dataclass(frozen=True, slots=True)
class ScorerChoice:
    """One policy's choice between its head and today's scoring, made on the calibration split."""

    policy_id: str
    scorer: str  # HEAD or SCORE
    calib_positives: int
    head_recall: float
    head_benign_pass: float
    score_recall: float
    score_benign_pass: float
    reason: str


def choose_scorer(
    policy_id: str,
    head_passed: BoolMatrix,
    score_passed: BoolMatrix,
    positive: BoolMatrix,
    negative: BoolMatrix,
    target_recall: float,
) -> ScorerChoice:
    """Head or today's scoring for one policy, from calibration posts only (never the held-out split).

    `head_passed` / `score_passed`: calibration posts that are candidates with the head at its
    picked threshold / with today's score at the policy's calibrated threshold; `positive` /
    `negative`: posts labelled 1 / 0 for the policy. The rule: today's scoring is kept when it
    reaches `target_recall` on the calibration positives and lets through no more of the
    calibration negatives than the head (a tie keeps today's scoring: nothing new to ship);
    otherwise the head. With few calibration positives (< 1 / (1 - target)) the same rule
    applies: reaching the target then means missing none of them, and the head's threshold has
    already been lowered by the few-positives margin."""
    n_pos, n_neg = int(positive.sum()), int(negative.sum())

    def rate(passed: BoolMatrix, rows: BoolMatrix, n: int) -> float:
        return float(passed[rows].sum() / n) if n else float("nan")

    head_recall, score_recall = rate(head_passed, positive, n_pos), rate(score_passed, positive, n_pos)
    head_bp, score_bp = rate(head_passed, negative, n_neg), rate(score_passed, negative, n_neg)
    if not n_pos:
        scorer, reason = SCORE, "no calibration positives"
    elif score_recall < target_recall - 1e-12:
        scorer, reason = HEAD, f"today's scoring reaches recall {score_recall:.3f} < {target_recall:g}"
    elif n_neg and score_bp <= head_bp:
        scorer, reason = SCORE, f"today's scoring reaches the target with benign pass {score_bp:.3f} <= {head_bp:.3f}"
    elif not n_neg:
        scorer, reason = SCORE, "today's scoring reaches the target; no calibration negatives to compare"
    else:
        scorer, reason = HEAD, f"head's benign pass {head_bp:.3f} < today's {score_bp:.3f} at the target"
    return ScorerChoice(policy_id, scorer, n_pos, head_recall, head_bp, score_recall, score_bp, reason)
