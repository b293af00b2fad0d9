"""The shipped policies (policies/), the demo posts (examples/) and the eval set (datasets/)."""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from worker.contracts import JudgeAnswer, Post
from worker.lint import (
    approx_tokens,
    format_findings,
    keyword_terms,
    lint_policy_dir,
    parse_examples,
    split_sections,
)
from worker.policies import PolicySet, load_policy_dir

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
EVAL_SET = ROOT / "datasets" / "eval_sample.jsonl"
DEMO = ROOT / "examples" / "demo_posts.jsonl"
DEMO_EXPECTED = ROOT / "examples" / "demo_expected.jsonl"

REQUIRED_IDS = {
    "spam-scams",
    "game-cheating",
    "fake-reviews",
    "self-harm",
    "harassment",
    "hate",
    "hate-threats",
    "sexual-content",
    "sexual-minors",
    "violence",
    "violent-extremism",
}
SEVERE_IDS = {"sexual-minors", "hate-threats", "violent-extremism", "self-harm"}
OUTPUT_SKELETON = (
    '{"violation": 0|1, "policy_category": str|null, "rule_ids": [...], '
    '"confidence": "low"|"medium"|"high", "rationale": str}'
)
TEMPLATE = ["INSTRUCTIONS", "DEFINITIONS", "VIOLATES", "SAFE", "EXAMPLES", "OUTPUT FORMAT"]


@pytest.fixture(scope="module")
def policy_set() -> PolicySet:
    return load_policy_dir(POLICIES)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_all_required_policies_ship(policy_set: PolicySet) -> None:
    assert set(policy_set.by_id()) >= REQUIRED_IDS
    for policy in policy_set.policies:
        assert policy.path.stem == policy.id, "file name should match the id"
        assert not policy.meta.shadow


def test_shipped_policies_lint_without_errors_or_warnings() -> None:
    findings = lint_policy_dir(POLICIES)
    assert findings == [], format_findings(findings)


@pytest.mark.parametrize("policy_id", sorted(REQUIRED_IDS))
def test_policy_body(policy_set: PolicySet, policy_id: str) -> None:
    policy = policy_set.by_id()[policy_id]
    body = policy.prompt
    # Target 400-600 tokens (DESIGN §1); the approximation runs a little above o200k on
    # JSON-heavy text, hence the tolerant window.
    assert 350 <= approx_tokens(body) <= 700
    assert 400 <= len(body.split()) * 1.3 <= 600
    sections = split_sections(body)
    assert [s.key for s in sections] == TEMPLATE
    assert OUTPUT_SKELETON in body
    examples = parse_examples(sections)
    labels = Counter(e.label for e in examples if e.section == "EXAMPLES")
    assert labels[0] >= 2 and labels[1] >= 2
    # Rule ids share one prefix per policy and every example cites defined rules.
    violates = next(s for s in sections if s.key == "VIOLATES").text
    rule_ids = re.findall(r"\*\*([A-Z]{2}\d)\*\*", violates)
    assert len(rule_ids) >= 4 and len({r[:2] for r in rule_ids}) == 1
    for example in examples:
        assert set(example.rule_ids) <= set(rule_ids)
        assert (example.label == 1) == bool(example.rule_ids)


@pytest.mark.parametrize("policy_id", sorted(REQUIRED_IDS))
def test_policy_front_matter(policy_set: PolicySet, policy_id: str) -> None:
    meta = policy_set.by_id()[policy_id].meta
    funnel = meta.funnel
    assert 30 <= len(funnel.keywords) <= 80
    assert all(k == k.lower() and k.strip() == k for k in funnel.keywords)
    assert len(set(funnel.keywords)) == len(funnel.keywords)
    assert funnel.patterns
    for pattern in funnel.patterns:
        re.compile(pattern)
    assert 8 <= len(funnel.exemplars) <= 15
    assert (funnel.threshold, funnel.very_sure) == (0.5, 0.95)
    if policy_id in SEVERE_IDS:
        assert meta.escalation.severe_categories, "severe policies double-check violations"
        assert meta.escalation.min_confidence == "high"
    if policy_id in {"sexual-minors", "hate-threats", "violent-extremism"}:
        assert meta.severity == "severe"


def test_example_answers_validate_as_judge_answers(policy_set: PolicySet) -> None:
    # The examples show only some fields; with a confidence added they must be valid answers.
    for policy in policy_set.policies:
        for line in policy.prompt.splitlines():
            if line.startswith("Content:"):
                answer = json.loads(line[line.index("{") :])
                JudgeAnswer.model_validate({**answer, "confidence": "high"})


def test_most_exemplars_hit_their_own_keywords_or_patterns(policy_set: PolicySet) -> None:
    # Exemplars feed the similarity stage, so some may deliberately avoid the keywords; but a
    # policy whose own exemplars mostly miss its keyword list has a keyword list that is off.
    for policy in policy_set.policies:
        funnel = policy.meta.funnel
        terms = [keyword_terms(k) for k in funnel.keywords]
        patterns = [re.compile(p) for p in funnel.patterns]
        hits = 0
        for exemplar in funnel.exemplars:
            words = f" {keyword_terms(exemplar)} "
            lowered = " ".join(exemplar.casefold().split())
            hits += any(f" {t} " in words for t in terms) or any(p.search(lowered) for p in patterns)
        assert hits / len(funnel.exemplars) >= 0.8, policy.id


def test_eval_set_lines_are_valid() -> None:
    rows = _jsonl(EVAL_SET)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    texts = [r["text"] for r in rows]
    assert len(texts) == len(set(texts))
    for row in rows:
        assert set(row) == {"id", "text", "labels"}
        assert isinstance(row["text"], str) and row["text"].strip()
        assert row["labels"], row["id"]
        assert set(row["labels"]) <= REQUIRED_IDS, row["id"]
        assert all(v in (0, 1) and type(v) is int for v in row["labels"].values())
        target = row["id"].removeprefix("ev-").rsplit("-", 1)[0]
        assert target in row["labels"], row["id"]


def test_eval_set_size_and_balance() -> None:
    rows = _jsonl(EVAL_SET)
    assert len(rows) >= 240
    counts = Counter((p, v) for r in rows for p, v in r["labels"].items())
    for policy_id in REQUIRED_IDS:
        assert counts[(policy_id, 1)] >= 10, policy_id
        assert counts[(policy_id, 0)] >= 10, policy_id


def _demo_value(row: dict[str, Any]) -> bytes:
    if "__raw__" in row:
        return str(row["__raw__"]).encode("utf-8")
    if "__raw_b64__" in row:
        return base64.b64decode(row["__raw_b64__"])
    if "__empty__" in row:
        return b""
    return json.dumps(row).encode("utf-8")


def _post_or_none(value: bytes) -> Post | None:
    try:
        data = json.loads(value.decode("utf-8"))
        return Post.model_validate(data) if isinstance(data, dict) else None
    except (UnicodeDecodeError, ValueError, ValidationError):
        return None


def test_demo_posts_match_their_expected_outcomes() -> None:
    rows = _jsonl(DEMO)
    expected = {e["id"]: e for e in _jsonl(DEMO_EXPECTED)}
    assert 45 <= len(rows) <= 60
    assert len(expected) == len(rows)
    seen: list[str] = []
    for number, row in enumerate(rows, 1):
        demo_id = f"demo-{number:03d}"
        seen.append(demo_id)
        assert row.get("id", row.get("__key__")) == demo_id
        post = _post_or_none(_demo_value(row))
        outcome = expected[demo_id]["expect"]
        if outcome == "dead-letter":
            assert post is None, demo_id
        else:
            assert post is not None and post.id == demo_id
            assert post.created_at is not None and post.lang
        for policy_id in expected[demo_id].get("policies", []):
            assert policy_id in REQUIRED_IDS
    assert seen == sorted(expected)
    outcomes = Counter(e["expect"] for e in expected.values())
    assert outcomes["dead-letter"] >= 5
    assert 0.5 <= outcomes["allow"] / len(rows) <= 0.7
    assert 0.25 <= outcomes["violation"] / len(rows) <= 0.35
