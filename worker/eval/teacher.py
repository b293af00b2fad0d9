"""The judge as teacher: audit records (what the judges were asked and answered) as labelled posts.

Each audit record holds the judge calls made for one post. The post's text is the request's user
message (context turns unwrapped); each policy's label is the violation digit of the deciding
answer, tier 2 over tier 1 (the cascade's own order). Calls without a valid answer give no
label, and a post without any label is left out. The labels are the judges' opinions, not the
truth: docs/funnel.md ("The judge as teacher") lists what that costs and how to watch it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from funnel.labelled import LabeledPost
from worker.judges.protocol import parse_answer, parse_multi_answer

TIER_ORDER = {"t1": 1, "t2": 2}
CONTEXT_MARKER = "\n\nContent to classify:\n"


@dataclass
class TeacherReport:
    """What the conversion kept and why it dropped the rest (printed by the CLI)."""

    records: int = 0
    posts: int = 0
    labels: Counter[str] = field(default_factory=Counter)  # policy_id -> labels kept
    positives: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> count


def post_text(request: Mapping[str, Any]) -> str | None:
    """The post as the judge saw it: the last user message, without the conversation wrapper."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        return None
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    text = users[-1] if users else None
    if not isinstance(text, str):
        return None
    if text.startswith("Conversation so far:\n") and CONTEXT_MARKER in text:
        return text.split(CONTEXT_MARKER, 1)[1]
    return text


def call_labels(call: Mapping[str, Any]) -> dict[str, int]:
    """policy_id -> violation digit for each policy this call answered validly."""
    if call.get("error"):
        return {}
    content, finish = call.get("content"), call.get("finish_reason")
    versions = call.get("policy_versions")
    if isinstance(versions, dict) and versions:  # one multi-policy request
        answers = parse_multi_answer(content, finish, list(versions))
        return {pid: int(a.violation) for pid, a in answers.items() if not isinstance(a, str)}
    answer = parse_answer(content, finish)
    policy_id = call.get("policy_id")
    if isinstance(answer, str) or not isinstance(policy_id, str):
        return {}
    return {policy_id: int(answer.violation)}


def labelled_from_audit(records: Iterable[Mapping[str, Any]], report: TeacherReport | None = None) -> list[LabeledPost]:
    """One labelled post per audit record with at least one valid answer."""
    report = report if report is not None else TeacherReport()
    posts: list[LabeledPost] = []
    for record in records:
        report.records += 1
        calls = [c for c in record.get("calls") or [] if isinstance(c, dict)]
        if not calls:
            report.dropped["no judge calls"] += 1
            continue
        texts = {post_text(c.get("request") or {}) for c in calls} - {None}
        if len(texts) != 1:
            report.dropped["no post text" if not texts else "calls disagree on the text"] += 1
            continue
        labels: dict[str, int] = {}
        for call in sorted(calls, key=lambda c: TIER_ORDER.get(str(c.get("tier")), 0)):
            labels.update(call_labels(call))  # a later tier overwrites an earlier one
        if not labels:
            report.dropped["no valid answer"] += 1
            continue
        report.posts += 1
        for policy_id, violation in labels.items():
            report.labels[policy_id] += 1
            report.positives[policy_id] += violation
        posts.append(LabeledPost(id=str(record.get("post_id")), text=texts.pop() or "", labels=labels))
    return posts
