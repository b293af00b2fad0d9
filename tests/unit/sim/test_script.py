"""The simulator's scripted answers (worker.sim.script): pure logic, no server."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tests.conftest import POLICIES_DIR
from worker.contracts import JudgeAnswer
from worker.policies.files import load_policy_dir
from worker.sim import tokens
from worker.sim.directives import DirectiveError, parse_post
from worker.sim.harmony import analysis_header, final_header
from worker.sim.script import (
    REASONING_TOKENS,
    example_answer_keys,
    find_trigger,
    heuristic_confidence,
    policy_categories,
    policy_category,
    script,
)

POLICY = """# Spam and Scams

## INSTRUCTIONS
Decide whether the content is spam.

## OUTPUT FORMAT
{"violation": 0|1, "policy_category": str|null, "rule_ids": [...], "confidence": "low"|"medium"|"high",
 "rationale": str}
policy_category is "scam", "spam" or "phishing" (null when 0).
"""
# A policy whose examples show a two-field answer: a model not held to the schema copies it.
SHORT_EXAMPLES = (
    POLICY
    + """
## EXAMPLES
Content: "win a free iPhone, click here" → {"violation": 1, "rule_ids": ["SP1"]}
Content: "see you at the match" → {"violation": 0, "rule_ids": []}
"""
)


def answer_of(content: str | None) -> JudgeAnswer:
    assert content is not None
    return JudgeAnswer.model_validate_json(content)


def is_valid_answer(content: str | None) -> bool:
    try:
        answer_of(content)
    except (AssertionError, ValidationError):
        return False
    return True


def test_same_inputs_give_the_same_outcome() -> None:
    a = script(POLICY, "win free money today", "low", seed=7)
    b = script(POLICY, "win free money today", "low", seed=7)
    assert a == b


def test_trigger_word_is_a_violation_with_policy_category() -> None:
    out = script(POLICY, "Join this crypto giveaway, send 1 BTC", "low", seed=0)
    answer = answer_of(out.content)
    assert out.finish_reason == "stop"
    assert answer.violation == 1
    assert answer.policy_category == "scam", "the first category the OUTPUT FORMAT section allows"
    assert answer.rule_ids == ["R1"]


def test_safe_text_is_not_a_violation() -> None:
    answer = answer_of(script(POLICY, "Lovely weather for a picnic", "low", seed=0).content)
    assert answer.violation == 0
    assert answer.policy_category is None
    assert answer.rule_ids == []


@pytest.mark.parametrize("text", ["my new diet works", "whatever you say", "the game has begun"])
def test_triggers_match_whole_words_only(text: str) -> None:
    assert find_trigger(text) is None


def test_trigger_matching_ignores_case() -> None:
    assert find_trigger("This is a SCAM!") == "scam"


def test_directive_overrides_heuristic_and_is_stripped() -> None:
    post = "scam scam [[sim: violation=0 confidence=low category=none rule=]] scam"
    out = script(POLICY, post, "low", seed=0)
    answer = answer_of(out.content)
    assert (answer.violation, answer.confidence, answer.policy_category, answer.rule_ids) == (0, "low", None, [])
    assert "[[sim" not in answer.rationale and "[[sim" not in out.reasoning


def test_directive_sets_category_and_rules() -> None:
    answer = answer_of(script(POLICY, "hello [[sim: violation=1 category=fraud rule=S1,S2]]", "low", 0).content)
    assert (answer.violation, answer.policy_category, answer.rule_ids) == (1, "fraud", ["S1", "S2"])


def test_t2_values_apply_only_at_high_effort() -> None:
    post = "borderline [[sim: violation=1 confidence=low confidence_t2=high violation_t2=0]]"
    t1 = answer_of(script(POLICY, post, "low", 0).content)
    t2 = answer_of(script(POLICY, post, "high", 0).content)
    assert (t1.violation, t1.confidence) == (1, "low")
    assert (t2.violation, t2.confidence) == (0, "high")


def test_later_directive_wins() -> None:
    assert parse_post("[[sim: confidence=low]] x [[SIM: confidence=medium]]").base.confidence == "medium"


@pytest.mark.parametrize(
    "post",
    ["[[sim: colour=red]]", "[[sim: violation=2]]", "[[sim: confidence=sure]]", "[[sim: fault=boom]]",
     "[[sim: delay_ms=-5]]", "[[sim: violation]]"],
)  # fmt: skip
def test_malformed_directive_raises(post: str) -> None:
    with pytest.raises(DirectiveError):
        script(POLICY, post, "low", 0)


def test_reasoning_length_grows_with_effort_and_quotes_the_post() -> None:
    post = "A completely ordinary post about gardening and tomatoes, nothing else to see here"
    lengths = {}
    for effort in ("low", "medium", "high"):
        out = script(POLICY, post, effort, 0)
        lengths[effort] = out.reasoning_tokens
        assert lengths[effort] == REASONING_TOKENS[effort], "o200k tokens of the analysis"
        assert post[:60] in out.reasoning
    assert lengths["low"] < lengths["medium"] < lengths["high"]


def test_rationale_quotes_at_most_40_chars_but_reasoning_quotes_more() -> None:
    post = "x" * 45 + " MARKER-AFTER-FORTY"
    out = script(POLICY, post, "low", 0)
    assert "MARKER-AFTER-FORTY" not in (out.content or "")
    assert "MARKER-AFTER-FORTY" in out.reasoning
    assert "x" * 40 in answer_of(out.content).rationale


def test_confidence_distribution_by_effort() -> None:
    texts = [f"post number {i}" for i in range(2000)]
    low = [heuristic_confidence(t, "low", 0) for t in texts]
    high = [heuristic_confidence(t, "high", 0) for t in texts]
    assert 0.74 < low.count("high") / len(texts) < 0.86
    assert 0.10 < low.count("medium") / len(texts) < 0.20
    assert 0.02 < low.count("low") / len(texts) < 0.08
    assert "low" not in high


def test_policy_category_comes_from_output_format_not_headings() -> None:
    assert policy_category("# Game Cheating\n## OUTPUT FORMAT\npolicy_category is \"cheat-tools\", \"account-trading\" "
                           "or \"exploits\" (null when 0).\n") == "cheat-tools"  # fmt: skip
    assert policy_categories('## OUTPUT FORMAT\npolicy_category must be one of: "a" | "b"\n') == ("a", "b")
    # Headings and the JSON template line name no category.
    assert policy_category("# Policy: Hate Speech\n## VIOLATES (1)\n## OUTPUT FORMAT\n"
                           '{"violation": 0|1, "policy_category": str|null}\n') is None  # fmt: skip
    assert policy_category("no headings at all") is None
    answer = answer_of(script("# Hate Speech\n## INSTRUCTIONS\nx", "scam [[sim: violation=1]]", "low", 0).content)
    assert answer.policy_category is None, "no listed category: null, never the title's first word"


def test_every_shipped_policy_yields_one_of_its_own_categories() -> None:
    policies = load_policy_dir(POLICIES_DIR).policies
    assert len(policies) >= 10
    for policy in policies:
        allowed = policy_categories(policy.prompt)
        assert allowed, f"{policy.id}: the OUTPUT FORMAT section lists no policy_category values"
        headings = {line.lstrip("#").strip().lower() for line in policy.prompt.splitlines() if line.startswith("#")}
        assert not set(allowed) & headings, f"{policy.id}: a heading was taken as a category"
        answer = answer_of(script(policy.prompt, "an obvious scam [[sim: violation=1]]", "low", 0).content)
        assert answer.policy_category == allowed[0], policy.id


def test_truncate_fault_gives_length_and_no_valid_answer() -> None:
    seen_null = seen_cut = False
    for i in range(20):
        out = script(POLICY, f"post {i} [[sim: fault=truncate]]", "low", 0)
        assert out.finish_reason == "length" and out.fault == "truncate"
        assert not is_valid_answer(out.content)
        seen_null |= out.content is None
        seen_cut |= bool(out.content)
    assert seen_null and seen_cut  # both shapes happen: cut in reasoning, cut mid-JSON


def test_invalid_json_fault_never_validates() -> None:
    for i in range(30):
        out = script(POLICY, f"post {i} scam", "low", 0, rate_fault="invalid_json")
        assert out.finish_reason == "stop" and out.content
        assert not is_valid_answer(out.content)


def test_empty_fault() -> None:
    out = script(POLICY, "hi [[sim: fault=empty]]", "low", 0)
    assert (out.content, out.finish_reason) == ("", "stop")
    assert out.reasoning


def test_directive_fault_none_beats_rate_fault() -> None:
    out = script(POLICY, "hi [[sim: fault=none]]", "low", 0, rate_fault="empty")
    assert is_valid_answer(out.content) and out.fault is None
    assert script(POLICY, "hi [[sim: violation=1]]", "low", 0, rate_fault="empty").content == ""


def test_fault_t2_none_lets_tier_two_answer() -> None:
    post = "x [[sim: fault=invalid_json fault_t2=none]]"
    assert not is_valid_answer(script(POLICY, post, "low", 0).content)
    assert is_valid_answer(script(POLICY, post, "high", 0).content)


def test_completion_is_harmony_analysis_then_final_in_o200k_tokens() -> None:
    out = script(POLICY, "hello there", "low", 0)
    ids = out.completion_ids
    assert ids[: len(analysis_header())] == analysis_header()
    assert tokens.decode(ids) == (
        f"<|channel|>analysis<|message|>{out.reasoning}<|end|><|start|>assistant<|channel|>final<|message|>"
        f"{out.content}<|return|>"
    )
    assert out.completion_tokens == len(analysis_header()) + out.reasoning_tokens + len(final_header()) + \
        tokens.count(out.content or "") + 1  # fmt: skip


def test_max_tokens_inside_reasoning_leaves_no_content() -> None:
    out = script(POLICY, "hello there", "high", 0, max_tokens=100)
    assert out.finish_reason == "length"
    assert out.content is None
    assert out.completion_tokens == 100
    assert out.reasoning_tokens == 100 - len(analysis_header())


def test_max_tokens_inside_the_final_header_leaves_no_content() -> None:
    full = script(POLICY, "hello there", "low", 0)
    out = script(POLICY, "hello there", "low", 0, max_tokens=len(analysis_header()) + full.reasoning_tokens + 2)
    assert (out.finish_reason, out.content, out.reasoning) == ("length", None, full.reasoning)
    assert out.completion_tokens == len(analysis_header()) + full.reasoning_tokens + 2


def test_max_tokens_inside_content_cuts_the_json() -> None:
    full = script(POLICY, "hello there", "low", 0)
    out = script(POLICY, "hello there", "low", 0, max_tokens=full.completion_tokens - 5)
    assert out.finish_reason == "length" and out.completion_tokens == full.completion_tokens - 5
    assert out.content is not None and full.content is not None
    assert full.content.startswith(out.content) and out.content != full.content
    assert tokens.count(out.content) == tokens.count(full.content) - 4  # the 5th was <|return|>
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.content)


def test_max_tokens_large_enough_changes_nothing() -> None:
    full = script(POLICY, "hello there", "medium", 0)
    assert script(POLICY, "hello there", "medium", 0, max_tokens=full.completion_tokens) == full
    cut = script(POLICY, "hello there", "medium", 0, max_tokens=full.completion_tokens - 1)
    assert cut.content == full.content and cut.finish_reason == "length", "only <|return|> was missing"


def test_p_violation_directive_sets_the_verdict_and_the_probability() -> None:
    out = script(POLICY, "borderline [[sim: p_violation=0.55 confidence=high]]", "low", 0)
    assert answer_of(out.content).violation == 1 and out.p_violations == (0.55,)
    out = script(POLICY, "scam [[sim: p_violation=0.2]]", "low", 0)
    assert answer_of(out.content).violation == 0 and out.p_violations == (0.2,)
    assert script(POLICY, "x [[sim: violation=1 p_violation=0.5]]", "low", 0).p_violations == (0.5,)
    with pytest.raises(DirectiveError):
        script(POLICY, "x [[sim: violation=0 p_violation=0.9]]", "low", 0)  # digit 1 iff p >= 0.5
    for bad in ("1.5", "-0.1", "high"):
        with pytest.raises(DirectiveError):
            script(POLICY, f"x [[sim: p_violation={bad}]]", "low", 0)


def test_a_pinned_verdict_replaces_the_one_beneath_it() -> None:
    # t2 values and post directives override base and policy ones, whichever of the two keys they use.
    post = "x [[sim: violation=0 p_violation_t2=0.9]]"
    low = script(POLICY, post, "low", 0)
    assert low.answer["violation"] == 0 and low.p_violations[0] < 0.5
    assert script(POLICY, post, "high", 0).p_violations == (0.9,)
    policy = POLICY + "[[sim: violation=0]]\n"
    out = script(policy, "x [[sim: p_violation=0.8]]", "low", 0)
    assert (out.answer["violation"], out.p_violations) == (1, (0.8,))


@pytest.mark.parametrize(
    ("directive", "p"),
    [("violation=1 confidence=high", 0.97), ("violation=1 confidence=medium", 0.8),
     ("violation=1 confidence=low", 0.6), ("violation=0 confidence=high", 0.03),
     ("violation=0 confidence=low", 0.4)],
)  # fmt: skip
def test_p_violation_follows_the_confidence_by_default(directive: str, p: float) -> None:
    assert script(POLICY, f"x [[sim: {directive}]]", "low", 0).p_violations == (pytest.approx(p),)


def test_schema_is_enforced_after_the_reasoning() -> None:
    assert example_answer_keys(SHORT_EXAMPLES) == ("violation", "rule_ids")
    assert example_answer_keys(POLICY) is None
    # Held to the schema: the full answer, whatever the examples show.
    enforced = script(SHORT_EXAMPLES, "a scam", "low", 0, response_format="json_schema")
    assert is_valid_answer(enforced.content) and enforced.constrained
    # Not held (no response_format): the model copies the examples' two-field answer.
    free = script(SHORT_EXAMPLES, "a scam", "low", 0, response_format=None)
    assert json.loads(free.content or "") == {"violation": 1, "rule_ids": ["R1"]} and not free.constrained
    assert free.reasoning == enforced.reasoning, "the analysis is free either way"
    # A policy whose examples are full answers gets full answers without a schema too.
    assert is_valid_answer(script(POLICY, "a scam", "low", 0, response_format=None).content)


def test_unenforced_fault_gives_valid_json_that_fails_the_schema() -> None:
    for i in range(12):
        for policy in (POLICY, SHORT_EXAMPLES):
            out = script(policy, f"post {i} scam [[sim: fault=unenforced]]", "low", 0, response_format="json_schema")
            assert out.fault == "unenforced" and out.finish_reason == "stop" and not out.constrained
            data = json.loads(out.content or "")
            assert data["violation"] == 1, "the violation digit is still there"
            assert not is_valid_answer(out.content)
    out = script(POLICY, "scam", "low", 0, rate_fault="unenforced")
    assert not is_valid_answer(out.content)


def test_delay_directive() -> None:
    assert script(POLICY, "x [[sim: delay_ms=250]]", "low", 0).delay_ms == 250


def test_triggers_count_only_for_the_policies_that_name_their_harm() -> None:
    post = "Is Cheat Engine okay to use in single-player Stardew Valley?"
    hate = "# Hate\nAttacks on protected groups. Saying you hate a group is HT1."
    cheating = "# Game cheating\nSelling or promoting an aimbot or similar tools violates GC1."
    assert find_trigger(post) == "cheat engine"  # no policy: every phrase counts
    assert find_trigger(post, hate) is None  # the hate policy names no cheating phrase
    assert find_trigger(post, cheating) == "cheat engine"  # "aimbot" names the whole cheating group
    assert find_trigger(post, "# Test policy\nBe nice.") == "cheat engine"  # names none: all count
    assert answer_of(script(hate, post, "low", seed=0).content).violation == 0
    assert answer_of(script(cheating, "selling a wallhack, cheap", "low", seed=0).content).violation == 1
