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

from funnel.labelled import load_labeled
from worker.contracts import JudgeAnswer, Post
from worker.eval.scoring import parse_dataset
from worker.judges.tokens import count_tokens
from worker.policies.files import PolicySet, load_policy_dir
from worker.policies.lint import (
    ANSWER_FIELDS,
    DEFAULT_TOKEN_BOUNDS,
    format_findings,
    keyword_terms,
    lint_policy_dir,
    output_categories,
    parse_examples,
    split_sections,
)

ROOT = Path(__file__).resolve().parents[3]
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
# OpenAI's gpt-oss-safeguard guide: the output format near the top (the skeleton ends
# INSTRUCTIONS) and again right before EXAMPLES (the OUTPUT FORMAT section).
TEMPLATE = ["INSTRUCTIONS", "DEFINITIONS", "VIOLATES", "SAFE", "OUTPUT FORMAT", "EXAMPLES"]


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
    # Real o200k tokens, inside the linter's default band (docs/writing-policies.md, "Length").
    assert DEFAULT_TOKEN_BOUNDS.warn_min <= count_tokens(body) <= DEFAULT_TOKEN_BOUNDS.warn_max
    sections = split_sections(body)
    assert [s.key for s in sections] == TEMPLATE
    by_key = {s.key: s for s in sections}
    # The same skeleton twice: the last lines of INSTRUCTIONS, and the OUTPUT FORMAT section.
    assert body.count(OUTPUT_SKELETON) == 2
    assert by_key["INSTRUCTIONS"].text.rstrip().endswith(OUTPUT_SKELETON)
    assert OUTPUT_SKELETON in by_key["OUTPUT FORMAT"].text
    examples = parse_examples(sections)
    labels = Counter(e.label for e in examples if e.section == "EXAMPLES")
    assert labels[0] >= 2 and labels[1] >= 2
    assert 4 <= len(examples) <= 6  # the guide: 4-6 short examples
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


def test_example_answers_are_complete_judge_answers(policy_set: PolicySet) -> None:
    # Every example shows the full answer a model should copy: all five fields, in the order the
    # skeleton gives them ("violation" first: the worker reads p_violation from that digit).
    for policy in policy_set.policies:
        sections = split_sections(policy.prompt)
        categories = output_categories(sections)
        severe = {c.casefold() for c in policy.meta.escalation.severe_categories}
        assert severe <= {c.casefold() for c in categories}, policy.id
        lines = [line for line in policy.prompt.splitlines() if line.startswith("Content:")]
        assert len(lines) == len(parse_examples(sections))
        for line in lines:
            raw = json.loads(line[line.index("{") :])
            assert tuple(raw) == ANSWER_FIELDS, line
            answer = JudgeAnswer.model_validate(raw, strict=True)
            assert answer.rationale and len(answer.rationale) <= 80, line
            if answer.violation:
                assert answer.policy_category in categories, line
            else:
                assert (answer.policy_category, answer.rule_ids) == (None, []), line


def test_lint_catches_a_shipped_policy_with_a_two_field_example(tmp_path: Path) -> None:
    # The shipped files pass the new rules because they comply, not because the rules are blind.
    source = POLICIES / "spam-scams.md"
    text = source.read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("Content:") and '"violation": 1' in line)
    two_fields = line[: line.index("{")] + '{"violation": 1, "rule_ids": ["SP3"]}'
    (tmp_path / "spam-scams.md").write_text(text.replace(line, two_fields), encoding="utf-8")
    (finding,) = lint_policy_dir(tmp_path)
    assert (finding.severity, finding.code) == ("error", "example-answer-incomplete")


def test_lint_catches_a_shipped_policy_stating_the_format_only_once(tmp_path: Path) -> None:
    text = (POLICIES / "hate.md").read_text(encoding="utf-8")
    top = "Reply with only this JSON object, all five fields:\n" + OUTPUT_SKELETON + "\n"
    assert text.count(top) == 1
    (tmp_path / "hate.md").write_text(text.replace(top, ""), encoding="utf-8")
    (finding,) = lint_policy_dir(tmp_path)
    assert (finding.severity, finding.code) == ("error", "output-format-not-at-top")


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
    # The project's one labelled-set reader accepts every line, as eval and the funnel tools will.
    assert len(parse_dataset(EVAL_SET.read_text(encoding="utf-8").splitlines(), sorted(REQUIRED_IDS))) == len(
        load_labeled(EVAL_SET)
    )
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
