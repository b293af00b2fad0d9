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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from funnel.heads import dedup_key, split_of
from funnel.labelled import LabeledPost as LabeledPost  # re-exported: the one labelled-set reader
from funnel.labelled import load_labeled as load_labeled
from funnel.normalise import normalise
from funnel.recall import wilson_interval
from funnel.spec import PolicySpec

SIDECAR_NAME = "funnel-thresholds.yaml"
FloatMatrix = npt.NDArray[np.float32]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


# --- honest calibration: thresholds on one split, figures on another -------------------------

FRONTIER_TARGETS = (0.90, 0.95, 0.98, 0.99)


def check_policy_ids(posts: Sequence[LabeledPost], policy_ids: Sequence[str], source: str = "labels") -> None:
    """A label naming a policy that is not in the set is an error (a misspelt id would
    otherwise make its posts look unlabelled, or benign)."""
    known = set(policy_ids)
    unknown: dict[str, str] = {}
    for post in posts:
        for pid in post.labels:
            if pid not in known:
                unknown.setdefault(pid, post.id)
    if unknown:
        listed = ", ".join(f"{pid!r} (first in post {post_id!r})" for pid, post_id in sorted(unknown.items()))
        raise ValueError(f"{source}: unknown policy ids {listed}; known: {', '.join(sorted(known))}")


def positives_needed(target_recall: float) -> int:
    """Positives below which a threshold for `target_recall` is guesswork: with fewer than
    1 / (1 - target) of them, a single positive is worth more than the allowed miss rate."""
    return math.ceil(1.0 / max(1.0 - target_recall, 1e-9) - 1e-9)


@dataclass(frozen=True, slots=True)
class Rate:
    """A proportion with its Wilson 95 % interval."""

    value: float
    low: float
    high: float
    hits: int
    n: int

    @classmethod
    def of(cls, hits: int, n: int) -> Rate:
        low, high = wilson_interval(hits, n)
        return cls(hits / n if n else float("nan"), low, high, hits, n)

    def __str__(self) -> str:
        if not self.n:
            return "-"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.hits}/{self.n})"


@dataclass(frozen=True, slots=True)
class HoldoutPolicy:
    policy_id: str
    threshold: float
    calib_positives: int
    recall: Rate  # on the report split
    benign_pass: Rate  # on the report split, posts labelled 0 for this policy
    # target recall → (recall, benign filtered) on the report split at the threshold picked on
    # the calibration split for that target.
    frontier: dict[float, tuple[float, float]]
    warning: str | None


@dataclass(frozen=True, slots=True)
class HoldoutReport:
    policies: list[HoldoutPolicy]
    post_recall: Rate  # violating posts that are a candidate for at least one policy they violate
    pair_recall: Rate
    benign_pass: Rate  # posts violating nothing that are a candidate for any policy


def pick_thresholds(
    scores: FloatMatrix,
    posts: Sequence[LabeledPost],
    policy_ids: Sequence[str],
    target_recall: float,
    few_positives_margin: float = 0.0,
) -> dict[str, float]:
    """Per policy with positives in `posts`: the threshold for `target_recall` on them.

    With fewer positives than `positives_needed(target_recall)` the threshold only says where
    the lowest-scoring positive happened to fall; `few_positives_margin` (for probabilities)
    then lowers it by that much in log-odds (1.0: the odds divided by e), trading a few
    benign posts for recall on the posts nobody wrote yet."""
    violates, _ = _label_matrices(posts, policy_ids)
    out: dict[str, float] = {}
    needed = positives_needed(target_recall)
    for j, pid in enumerate(policy_ids):
        positive = scores[violates[:, j], j]
        if len(positive):
            threshold = threshold_for_recall(positive.tolist(), target_recall)
            if few_positives_margin and len(positive) < needed and 0.0 < threshold < 1.0:
                logit = math.log(threshold / (1.0 - threshold)) - few_positives_margin
                threshold = math.floor(10_000 / (1.0 + math.exp(-logit))) / 10_000
            out[pid] = threshold
    return out


def holdout_report(
    calib_scores: FloatMatrix,
    calib_posts: Sequence[LabeledPost],
    test_scores: FloatMatrix,
    test_posts: Sequence[LabeledPost],
    policy_ids: Sequence[str],
    thresholds: Mapping[str, float],
    target_recall: float,
    targets: Sequence[float] = FRONTIER_TARGETS,
) -> HoldoutReport:
    """Figures on the report split (`test_*`) at `thresholds` (picked on the calibration split),
    and the frontier: for each of `targets`, thresholds picked on the calibration split, recall
    and benign filtered on the report split."""
    violates, known = _label_matrices(test_posts, policy_ids)
    calib_violates, _ = _label_matrices(calib_posts, policy_ids)
    limits = np.array([thresholds.get(pid, 1.0) for pid in policy_ids], dtype=np.float32)
    passed = (test_scores >= limits) & (test_scores > 0.0)
    frontier_thresholds = {t: pick_thresholds(calib_scores, calib_posts, policy_ids, t) for t in targets}
    needed = positives_needed(target_recall)
    rows: list[HoldoutPolicy] = []
    for j, pid in enumerate(policy_ids):
        pos = violates[:, j]
        neg = known[:, j] & ~pos
        calib_pos = int(calib_violates[:, j].sum())
        frontier: dict[float, tuple[float, float]] = {}
        for t, picked in frontier_thresholds.items():
            if pid in picked and pos.any() and neg.any():
                at = (test_scores[:, j] >= picked[pid]) & (test_scores[:, j] > 0.0)
                frontier[t] = (float(at[pos].mean()), float(1.0 - at[neg].mean()))
        warning = None
        if calib_pos < needed:
            warning = (
                f"{calib_pos} positives on the calibration split: too few for target recall {target_recall:g} "
                f"(needs ≥ {needed})"
            )
        rows.append(
            HoldoutPolicy(
                policy_id=pid,
                threshold=float(limits[j]),
                calib_positives=calib_pos,
                recall=Rate.of(int(passed[pos, j].sum()), int(pos.sum())),
                benign_pass=Rate.of(int(passed[neg, j].sum()), int(neg.sum())),
                frontier=frontier,
                warning=warning,
            )
        )
    violating = violates.any(axis=1)
    benign = ~violating & np.array([bool(p.labels) for p in test_posts], dtype=bool)
    hit = np.asarray((passed & violates).any(axis=1))
    return HoldoutReport(
        policies=rows,
        post_recall=Rate.of(int(hit[violating].sum()), int(violating.sum())),
        pair_recall=Rate.of(int((passed & violates).sum()), int(violates.sum())),
        benign_pass=Rate.of(int(passed[benign].any(axis=1).sum()), int(benign.sum())),
    )


@dataclass(frozen=True, slots=True)
class Splits:
    train: list[LabeledPost]
    calib: list[LabeledPost]
    test: list[LabeledPost]
    duplicates: int  # posts dropped as exact duplicates (case and whitespace aside)
    conflicts: int  # of which carried other labels than the kept copy


def split_labeled(posts: Sequence[LabeledPost], seed: int, calib: float, test: float) -> Splits:
    """Deduplicate (first copy wins), then split by a seeded hash of each post's normalised
    `key` form, so obfuscated copies of one post (leet, spacing, look-alikes) land in the same
    split as the original and a post's split does not depend on the rest of the data."""
    seen: dict[str, LabeledPost] = {}
    duplicates = conflicts = 0
    parts: dict[str, list[LabeledPost]] = {"train": [], "calib": [], "test": []}
    for post in posts:
        key = dedup_key(post.text)
        first = seen.get(key)
        if first is not None:
            duplicates += 1
            conflicts += first.labels != post.labels
            continue
        seen[key] = post
        parts[split_of(normalise(post.text).key.strip(), seed, calib, test)].append(post)
    return Splits(parts["train"], parts["calib"], parts["test"], duplicates, conflicts)
