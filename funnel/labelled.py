"""The one reader of labelled datasets (JSONL), for the funnel's fit/calibrate/evaluate and `modstream eval`.

One post per line:
    {"id": "p1", "text": "...", "labels": {"spam-scams": 1, "harassment": 0}}
or, for one policy per line, {"id", "text", "label": 0|1, "policy": "spam-scams"} (the `policy`
field may be left out when exactly one policy is known to the caller). A policy missing from
`labels` means "not labelled", not "safe": each policy is scored only on the posts labelled for it.
A label is 0 or 1 (JSON true/false count as 1/0). Every error names the file and line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


class LabelledError(ValueError):
    """A dataset line that cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class LabelledRow:
    """One line: the JSON object as written (id, text, lang, ...) and its labels."""

    where: str  # "file:line", for the caller's own checks
    number: int  # 1-based line number
    data: dict[str, Any]
    labels: dict[str, int]


@dataclass(frozen=True, slots=True)
class LabeledPost:
    id: str
    text: str
    labels: dict[str, int]


def _label(value: Any, where: str) -> int:
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    raise LabelledError(f"{where}: a label must be 0 or 1, not {value!r}")


def _labels(data: dict[str, Any], policy_ids: Sequence[str], where: str) -> dict[str, int]:
    if isinstance(data.get("labels"), dict):
        return {str(k): _label(v, f"{where} labels.{k}") for k, v in data["labels"].items()}
    if "label" in data:
        policy = data.get("policy")
        if policy is None:
            if len(policy_ids) != 1:
                raise LabelledError(f"{where}: 'label' needs a 'policy' field when several policies are loaded")
            policy = policy_ids[0]
        return {str(policy): _label(data["label"], f"{where} label")}
    raise LabelledError(f"{where}: needs 'labels' {{policy_id: 0|1}} or 'label' (+ 'policy')")


def parse_labelled(
    lines: Iterable[str | bytes], source: str = "dataset", policy_ids: Sequence[str] = ()
) -> list[LabelledRow]:
    """Parse labelled JSONL (blank lines skipped); raises LabelledError naming the first bad line.
    `policy_ids`: the policies the caller knows (a one-policy `label` line needs exactly one)."""
    rows: list[LabelledRow] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise LabelledError(f"{where}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise LabelledError(f"{where}: each line must be a JSON object")
        rows.append(LabelledRow(where, number, data, _labels(data, policy_ids, where)))
    return rows


def read_labelled(path: Path, policy_ids: Sequence[str] = ()) -> list[LabelledRow]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelledError(f"cannot read {path}: {exc}") from None
    return parse_labelled(text.splitlines(), str(path), policy_ids)


def load_labeled(path: Path, policy_ids: Sequence[str] = ()) -> list[LabeledPost]:
    """The funnel's view of a labelled file: (id, text, labels) per post; a line without an id is
    named by its line number. Duplicates are kept (the splits drop them, see `split_labeled`)."""
    posts: list[LabeledPost] = []
    for row in read_labelled(path, policy_ids):
        text = row.data.get("text")
        if not isinstance(text, str):
            raise LabelledError(f"{row.where}: not a labelled post (no 'text' string)")
        posts.append(LabeledPost(id=str(row.data.get("id", row.number)), text=text, labels=row.labels))
    return posts
