"""Eval harness, pure part: the labelled dataset, per-pair results, metrics, and version diffs.

A labelled dataset is JSONL read by the project's one reader, `funnel.labelled` (its docstring gives
the format); here each line must also be a valid Post with a unique id.

Confusion counts use the judge's violation flag on the deciding answer. Pairs without any valid
answer (truncated, invalid JSON, judge unavailable) are counted as `no_answer` and left out of
precision/recall, so read `no_answer` next to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from funnel.labelled import LabelledError, parse_labelled
from worker.contracts import Decision, Post

EvalTier = Literal["t1", "t2", "cascade"]
REPORT_SCHEMA = "modstream.eval/1"
# A dataset line that cannot be used; the message names the file and line.
DatasetError = LabelledError


@dataclass(frozen=True, slots=True)
class LabelledPost:
    post: Post
    labels: dict[str, int]


def parse_dataset(lines: Iterable[str], policy_ids: Sequence[str], source: str = "dataset") -> list[LabelledPost]:
    """Parse labelled JSONL (`funnel.labelled`); each line must also be a valid Post with a unique id.
    Raises DatasetError naming the first bad line."""
    items: list[LabelledPost] = []
    seen: set[str] = set()
    for row in parse_labelled(lines, source, policy_ids):
        try:
            post = Post.model_validate(row.data)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise DatasetError(f"{row.where}: not a post ({error['msg']} at {error['loc']})") from None
        if post.id in seen:
            raise DatasetError(f"{row.where}: duplicate id {post.id!r}")
        seen.add(post.id)
        items.append(LabelledPost(post, row.labels))
    return items


def load_dataset(path: Path, policy_ids: Sequence[str]) -> list[LabelledPost]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    return parse_dataset(text.splitlines(), policy_ids, str(path))


def pairs_for(items: Sequence[LabelledPost], policy_ids: Sequence[str]) -> list[tuple[LabelledPost, str]]:
    """(post, policy id) for every label whose policy is loaded, in dataset then policy order."""
    loaded = list(policy_ids)
    return [(item, pid) for item in items for pid in loaded if pid in item.labels]


def unloaded_labels(items: Sequence[LabelledPost], policy_ids: Sequence[str]) -> dict[str, int]:
    """Labels naming policies that are not loaded (skipped), counted per policy id."""
    skipped: dict[str, int] = {}
    for item in items:
        for pid in item.labels:
            if pid not in policy_ids:
                skipped[pid] = skipped.get(pid, 0) + 1
    return dict(sorted(skipped.items()))


@dataclass(frozen=True, slots=True)
class PairResult:
    """How one (post, policy) pair was judged."""

    post_id: str
    policy_id: str
    policy_version: str
    label: int
    predicted: int | None  # the deciding answer's violation flag; None: no valid answer at all
    decision: Decision  # as the worker would decide this policy alone (review = human queue)
    tier: Literal["t1", "t2"]
    confidence: str | None
    escalation_reasons: list[str] = field(default_factory=list)
    failure: str | None = None
    latency_ms: float = 0.0
    prompt_tokens: float = 0.0
    completion_tokens: float = 0.0
    cached_tokens: float = 0.0


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True, slots=True)
class Metrics:
    n: int
    positives: int
    tp: int
    fp: int
    tn: int
    fn: int
    no_answer: int
    escalated: int
    review: int
    latency_ms_mean: float
    prompt_tokens_mean: float
    completion_tokens_mean: float
    cached_tokens_mean: float

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None or p + r == 0:
            return None
        return 2 * p * r / (p + r)

    @property
    def fpr(self) -> float | None:
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def escalation_rate(self) -> float | None:
        return _ratio(self.escalated, self.n)

    @property
    def review_rate(self) -> float | None:
        return _ratio(self.review, self.n)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("precision", "recall", "f1", "fpr", "escalation_rate", "review_rate"):
            value = getattr(self, name)
            data[name] = None if value is None else round(value, 4)
        for name in ("latency_ms_mean", "prompt_tokens_mean", "completion_tokens_mean", "cached_tokens_mean"):
            data[name] = round(data[name], 1)
        return data


def score(results: Sequence[PairResult]) -> Metrics:
    n = len(results)
    answered = [r for r in results if r.predicted is not None]

    def count(label: int, predicted: int) -> int:
        return sum(1 for r in answered if r.label == label and r.predicted == predicted)

    def mean(values: Iterable[float]) -> float:
        items = list(values)
        return sum(items) / len(items) if items else 0.0

    return Metrics(
        n=n,
        positives=sum(r.label for r in results),
        tp=count(1, 1),
        fp=count(0, 1),
        tn=count(0, 0),
        fn=count(1, 0),
        no_answer=n - len(answered),
        escalated=sum(1 for r in results if r.escalation_reasons),
        review=sum(1 for r in results if r.decision == "review"),
        latency_ms_mean=mean(r.latency_ms for r in results),
        prompt_tokens_mean=mean(r.prompt_tokens for r in results),
        completion_tokens_mean=mean(r.completion_tokens for r in results),
        cached_tokens_mean=mean(r.cached_tokens for r in results),
    )


def score_by_policy(results: Sequence[PairResult], policy_ids: Sequence[str]) -> dict[str, Metrics]:
    return {pid: score([r for r in results if r.policy_id == pid]) for pid in policy_ids}


@dataclass(frozen=True, slots=True)
class Change:
    post_id: str
    policy_id: str
    label: int
    old: PairResult
    new: PairResult

    @property
    def fixed(self) -> bool | None:
        """True: the new version is right where the old was wrong; False: the reverse; None: neither."""
        old_right, new_right = self.old.predicted == self.label, self.new.predicted == self.label
        return None if old_right == new_right else new_right


def changed_decisions(old: Sequence[PairResult], new: Sequence[PairResult]) -> list[Change]:
    """Pairs judged under both versions whose violation flag or decision differ."""
    before = {(r.post_id, r.policy_id): r for r in old}
    changes: list[Change] = []
    for r in new:
        o = before.get((r.post_id, r.policy_id))
        if o is not None and (o.predicted, o.decision) != (r.predicted, r.decision):
            changes.append(Change(r.post_id, r.policy_id, r.label, o, r))
    return changes


def pair_dict(r: PairResult) -> dict[str, Any]:
    data = asdict(r)
    for name in ("latency_ms", "prompt_tokens", "completion_tokens", "cached_tokens"):
        data[name] = round(data[name], 1)
    return data


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One policy version evaluated on the dataset."""

    policies_dir: str
    policy_versions: dict[str, str]
    results: list[PairResult]

    def metrics(self) -> dict[str, Metrics]:
        return score_by_policy(self.results, list(self.policy_versions))

    def overall(self) -> Metrics:
        return score(self.results)

    def as_dict(self, with_results: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "policies_dir": self.policies_dir,
            "policy_versions": self.policy_versions,
            "metrics": {pid: m.as_dict() for pid, m in self.metrics().items()},
            "overall": self.overall().as_dict(),
        }
        if with_results:
            data["results"] = [pair_dict(r) for r in self.results]
        return data


def build_report(
    dataset: str,
    tier: EvalTier,
    judges: dict[str, Any],
    new: RunSummary,
    skipped_labels: dict[str, int],
    old: RunSummary | None = None,
    texts: dict[str, str] | None = None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "dataset": dataset,
        "tier": tier,
        "judges": judges,
        "skipped_labels": skipped_labels,
        **new.as_dict(),
    }
    if old is not None:
        texts = texts or {}
        report["compare"] = {
            "old": old.as_dict(with_results=False),
            "changed": [
                {
                    "post_id": c.post_id,
                    "policy_id": c.policy_id,
                    "label": c.label,
                    "fixed": c.fixed,
                    "old": {"predicted": c.old.predicted, "decision": c.old.decision},
                    "new": {"predicted": c.new.predicted, "decision": c.new.decision},
                    "text": texts.get(c.post_id, "")[:200],
                }
                for c in changed_decisions(old.results, new.results)
            ],
        }
    return report
