"""The simulator's scripted answers (worker.sim.script): pure logic, no server."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from worker.contracts import JudgeAnswer
from worker.sim.script import (
    REASONING_TOKENS,
    DirectiveError,
    count_tokens,
    cut_tokens,
    find_trigger,
    heuristic_confidence,
    parse_post,
    policy_category,
    script,
)

POLICY = "# Spam and Scams\n\n## INSTRUCTIONS\nDecide whether the content is spam.\n## OUTPUT\nJSON."


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
    assert answer.policy_category == "spam"
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
        lengths[effort] = count_tokens(out.reasoning)
        assert lengths[effort] == REASONING_TOKENS[effort]
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


def test_policy_category_skips_template_headings() -> None:
    assert policy_category("## INSTRUCTIONS\nx\n# Game Cheating\n") == "game"
    assert policy_category("## VIOLATES (1)\n# Policy: Hate Speech\n") == "hate"
    assert policy_category("no headings at all") == "policy"


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


def test_max_tokens_inside_reasoning_leaves_no_content() -> None:
    out = script(POLICY, "hello there", "high", 0, max_tokens=100)
    assert out.finish_reason == "length"
    assert out.content is None
    assert count_tokens(out.reasoning) == 100


def test_max_tokens_inside_content_cuts_the_json() -> None:
    full = script(POLICY, "hello there", "low", 0)
    out = script(POLICY, "hello there", "low", 0, max_tokens=count_tokens(full.reasoning) + 3)
    assert out.finish_reason == "length"
    assert out.content is not None and full.content is not None
    assert full.content.startswith(out.content) and out.content != full.content
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.content)


def test_max_tokens_large_enough_changes_nothing() -> None:
    full = script(POLICY, "hello there", "medium", 0)
    assert script(POLICY, "hello there", "medium", 0, max_tokens=full.completion_tokens) == full


def test_cut_tokens_keeps_original_spacing() -> None:
    assert cut_tokens("a  b\nc d", 3) == "a  b\nc"
    assert cut_tokens("a b", 0) == ""
    assert cut_tokens("a b", 9) == "a b"


def test_delay_directive() -> None:
    assert script(POLICY, "x [[sim: delay_ms=250]]", "low", 0).delay_ms == 250
