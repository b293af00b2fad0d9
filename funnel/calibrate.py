"""Calibration: per policy, the highest threshold that keeps the target recall on labelled
posts, and the sidecar file (`<policies dir>/funnel-thresholds.yaml`) that records them.

The sidecar is data, not code: the worker reads it with `load_thresholds(dir)` and passes
the result to `specs_from_hints(..., thresholds=...)`. It records the SHA-256 of the data it
was fitted on, the embedding model's SHA-256 and each policy's spec fingerprint, so a stale
calibration (other keywords, exemplars or model) can be detected with `stale_policies`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from funnel.spec import PolicySpec

SIDECAR_NAME = "funnel-thresholds.yaml"
FloatMatrix = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class LabeledPost:
    id: str
    text: str
    labels: dict[str, int]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_labeled(path: Path) -> list[LabeledPost]:
    """`{"id", "text", "labels": {policy_id: 0|1}}` per line. A policy missing from
    `labels` means "not labelled" (the post is left out of that policy's figures), not 0."""
    posts: list[LabeledPost] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                labels = {str(k): int(v) for k, v in (row.get("labels") or {}).items()}
                posts.append(LabeledPost(id=str(row.get("id", number)), text=str(row["text"]), labels=labels))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{number}: not a labelled post ({exc})") from exc
    return posts


def threshold_for_recall(positive_scores: Sequence[float], target_recall: float) -> float:
    """The highest threshold at which at least `target_recall` of the positives score ≥ it.

    Rounded *down* to 4 decimals, so the rounded threshold written to the sidecar still
    admits every positive that the exact one did."""
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {target_recall}")
    if not positive_scores:
        raise ValueError("no positive posts to calibrate on")
    ranked = sorted(positive_scores, reverse=True)
    needed = math.ceil(target_recall * len(ranked) - 1e-9)
    return math.floor(ranked[needed - 1] * 10_000) / 10_000


@dataclass(frozen=True, slots=True)
class PolicyCalibration:
    policy_id: str
    threshold: float
    positives: int
    negatives: int
    recall: float
    # Fraction of posts labelled 0 for this policy that still reach the threshold.
    benign_pass_rate: float
    fingerprint: str
    calibrated: bool  # False: no positives, the policy's own threshold was kept


@dataclass(frozen=True, slots=True)
class Evaluation:
    posts: int
    violating_posts: int
    benign_posts: int
    # Over (post, violated policy) pairs: is the post a candidate for that policy?
    pair_recall: float
    # Over violating posts: a candidate for at least one of the policies it violates.
    post_recall: float
    # Over posts violating nothing: share that is a candidate for no policy at all.
    benign_filtered: float
    per_policy_recall: dict[str, float] = field(default_factory=dict)


def _label_matrices(
    posts: Sequence[LabeledPost], policy_ids: Sequence[str]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(violates, labelled): both (posts, policies)."""
    shape = (len(posts), len(policy_ids))
    violates = np.array([[p.labels.get(pid) == 1 for pid in policy_ids] for p in posts], dtype=bool).reshape(shape)
    known = np.array([[pid in p.labels for pid in policy_ids] for p in posts], dtype=bool).reshape(shape)
    return violates, known


def evaluate(
    scores: FloatMatrix, posts: Sequence[LabeledPost], policy_ids: Sequence[str], thresholds: Sequence[float]
) -> Evaluation:
    """How a set of thresholds does on labelled posts, given the (posts, policies) scores.

    "Benign" posts are those labelled 0 for every policy they carry a label for."""
    violates, _known = _label_matrices(posts, policy_ids)
    passed = (scores >= np.asarray(thresholds, dtype=np.float32)) & (scores > 0.0)
    violating = violates.any(axis=1)
    benign = ~violating & np.array([bool(p.labels) for p in posts], dtype=bool)
    pairs = int(violates.sum())
    per_policy = {
        pid: float(passed[violates[:, j], j].mean()) for j, pid in enumerate(policy_ids) if violates[:, j].any()
    }
    return Evaluation(
        posts=len(posts),
        violating_posts=int(violating.sum()),
        benign_posts=int(benign.sum()),
        pair_recall=float((passed & violates).sum() / pairs) if pairs else 1.0,
        post_recall=float(np.asarray((passed & violates).any(axis=1))[violating].mean()) if violating.any() else 1.0,
        benign_filtered=float(np.mean(~np.asarray(passed[benign]).any(axis=1))) if benign.any() else 1.0,
        per_policy_recall=per_policy,
    )


def calibrate(
    scores: FloatMatrix, posts: Sequence[LabeledPost], specs: Sequence[PolicySpec], target_recall: float
) -> list[PolicyCalibration]:
    """Per policy, the threshold for `target_recall` on the posts labelled for it (scores in
    `specs` order). A policy with no positive post keeps its own threshold."""
    policy_ids = [s.id for s in specs]
    violates, known = _label_matrices(posts, policy_ids)
    out: list[PolicyCalibration] = []
    for j, spec in enumerate(specs):
        positive = scores[violates[:, j], j]
        negative = scores[known[:, j] & ~violates[:, j], j]
        calibrated = len(positive) > 0
        threshold = threshold_for_recall(positive.tolist(), target_recall) if calibrated else spec.threshold
        passes_pos = (positive >= threshold) & (positive > 0.0)
        passes_neg = (negative >= threshold) & (negative > 0.0)
        out.append(
            PolicyCalibration(
                policy_id=spec.id,
                threshold=threshold,
                positives=len(positive),
                negatives=len(negative),
                recall=float(passes_pos.mean()) if len(positive) else 1.0,
                benign_pass_rate=float(passes_neg.mean()) if len(negative) else 0.0,
                fingerprint=spec.fingerprint(),
                calibrated=calibrated,
            )
        )
    return out


def write_sidecar(
    policies_dir: Path,
    calibrations: Sequence[PolicyCalibration],
    *,
    data_file: Path,
    data_sha256: str,
    target_recall: float,
    evaluation: Evaluation,
    model_sha256: str | None,
    path: Path | None = None,
) -> Path:
    target = path or policies_dir / SIDECAR_NAME
    document: dict[str, Any] = {
        "generated_by": "modstream funnel calibrate",
        "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "data_file": data_file.name if data_file.is_absolute() else data_file.as_posix(),
        "data_sha256": data_sha256,
        "target_recall": target_recall,
        "embedding_model_sha256": model_sha256,
        "summary": {
            "posts": evaluation.posts,
            "violating_posts": evaluation.violating_posts,
            "benign_posts": evaluation.benign_posts,
            "pair_recall": round(evaluation.pair_recall, 4),
            "post_recall": round(evaluation.post_recall, 4),
            "benign_filtered": round(evaluation.benign_filtered, 4),
        },
        "policies": {
            c.policy_id: {
                "threshold": c.threshold,
                "calibrated": c.calibrated,
                "positives": c.positives,
                "recall": round(c.recall, 4),
                "benign_pass_rate": round(c.benign_pass_rate, 4),
                "fingerprint": c.fingerprint,
            }
            for c in calibrations
        },
    }
    header = (
        "# Funnel thresholds calibrated on labelled posts; written by `modstream funnel calibrate`.\n"
        "# The worker applies them over each policy's front-matter `threshold` (funnel.load_thresholds).\n"
    )
    tmp = target.with_suffix(".tmp")
    tmp.write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    tmp.replace(target)
    return target


def load_sidecar(policies_dir: Path) -> dict[str, Any] | None:
    """The parsed sidecar, or None when the directory has none."""
    path = Path(policies_dir) / SIDECAR_NAME
    if not path.is_file():
        return None
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("policies"), dict):
        raise ValueError(f"{path}: expected a mapping with a 'policies' mapping")
    return document


def load_thresholds(policies_dir: Path) -> dict[str, float]:
    """Calibrated thresholds by policy id ({} when there is no sidecar).

    A malformed sidecar raises ValueError: silently falling back to defaults would change
    how many posts reach the judge without anyone noticing."""
    document = load_sidecar(policies_dir)
    if document is None:
        return {}
    thresholds: dict[str, float] = {}
    for policy_id, entry in document["policies"].items():
        value = entry.get("threshold") if isinstance(entry, Mapping) else entry
        try:
            if value is None or isinstance(value, bool):
                raise TypeError("missing")
            threshold = float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{SIDECAR_NAME}: policy {policy_id!r} has no numeric threshold") from exc
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"{SIDECAR_NAME}: policy {policy_id!r} threshold {threshold} is outside [0, 1]")
        thresholds[str(policy_id)] = threshold
    return thresholds


def stale_policies(policies_dir: Path, specs: Sequence[PolicySpec]) -> list[str]:
    """Policies whose keywords/patterns/exemplars changed since calibration (or that were
    never calibrated): their sidecar threshold may no longer give the target recall."""
    document = load_sidecar(policies_dir)
    recorded = (document or {}).get("policies", {})
    return [
        s.id
        for s in specs
        if not isinstance(recorded.get(s.id), Mapping) or recorded[s.id].get("fingerprint") != s.fingerprint()
    ]
