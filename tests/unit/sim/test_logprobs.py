"""The simulator's logprobs (worker.sim.logprobs): vLLM's chat-completion shape, consistent with the verdict."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from worker.sim import tokens
from worker.sim.logprobs import MASKED, chat_logprobs, digit_positions
from worker.sim.script import script

POLICY = """# Test policy
## OUTPUT FORMAT
{"violation": 0|1, "policy_category": str|null, "rule_ids": [...], "confidence": "low"|"medium"|"high",
 "rationale": str}
policy_category is "spam" or "scam" (null when 0).
"""


def digit_entries(logprobs: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries whose top_logprobs offer both digits: where the violation digit was written."""
    found = []
    for entry in logprobs["content"]:
        offered = {alt["token"] for alt in entry["top_logprobs"]}
        if {"0", "1"} <= offered:
            found.append(entry)
    return found


@pytest.mark.parametrize(
    ("directive", "p", "digit"),
    [("p_violation=0.55", 0.55, "1"), ("p_violation=0.2", 0.2, "0"), ("p_violation=0.99", 0.99, "1"),
     ("p_violation=0.5", 0.5, "1")],
)  # fmt: skip
def test_violation_digit_carries_p(directive: str, p: float, digit: str) -> None:
    out = script(POLICY, f"some post [[sim: {directive}]]", "low", 0)
    assert json.loads(out.content or "")["violation"] == int(digit), "digit 1 iff p >= 0.5"
    logprobs = chat_logprobs(out, top_logprobs=5, seed=0)
    (entry,) = digit_entries(logprobs)
    assert entry["token"] == digit and entry["bytes"] == list(digit.encode())
    alternatives = {alt["token"]: alt["logprob"] for alt in entry["top_logprobs"]}
    assert alternatives["1"] == pytest.approx(math.log(p)) and alternatives["0"] == pytest.approx(math.log(1 - p))
    assert entry["logprob"] == alternatives[digit]
    # Under the json_schema grammar every other alternative is masked, as vLLM shows it.
    assert [a["logprob"] for a in entry["top_logprobs"][2:]] == [MASKED] * 3
    logprob_values = [a["logprob"] for a in entry["top_logprobs"]]
    assert logprob_values == sorted(logprob_values, reverse=True)


def test_logprobs_cover_every_completion_token_in_order() -> None:
    out = script(POLICY, "a scam [[sim: confidence=medium]]", "low", 0)
    logprobs = chat_logprobs(out, top_logprobs=2, seed=0)
    entries = logprobs["content"]
    assert len(entries) == out.completion_tokens, "analysis, headers, content and <|return|>, as vLLM"
    assert b"".join(bytes(e["bytes"]) for e in entries).decode() == tokens.decode(out.completion_ids)
    assert [e["token"] for e in entries[:3]] == ["<|channel|>", "analysis", "<|message|>"]
    assert entries[-1]["token"] == "<|return|>"
    assert all(len(e["top_logprobs"]) == 2 and e["top_logprobs"][0]["token"] == e["token"] for e in entries
               if e not in digit_entries(logprobs))  # fmt: skip
    assert all(e["logprob"] <= 0.0 for e in entries)
    # Default p from the confidence: violation with medium confidence -> 0.8.
    (entry,) = digit_entries(logprobs)
    assert entry["logprob"] == pytest.approx(math.log(0.8))


def test_content_scope_covers_the_final_answer_only() -> None:
    out = script(POLICY, "a scam [[sim: p_violation=0.7]]", "low", 0)
    entries = chat_logprobs(out, top_logprobs=3, seed=0, scope="content")["content"]
    assert "".join(e["token"] for e in entries) == out.content
    assert entries == chat_logprobs(out, top_logprobs=3, seed=0)["content"][-len(entries) - 1 : -1]
    (entry,) = digit_entries({"content": entries})
    assert entry["logprob"] == pytest.approx(math.log(0.7))
    cut = script(POLICY, "a scam", "high", 0, max_tokens=50)
    assert chat_logprobs(cut, 3, 0, scope="content") == {"content": []}, "no final message, nothing to cover"


def test_top_logprobs_zero_gives_empty_lists() -> None:
    out = script(POLICY, "hello", "low", 0)
    entries = chat_logprobs(out, top_logprobs=0, seed=0)["content"]
    assert entries and all(e["top_logprobs"] == [] for e in entries)


def test_unconstrained_alternatives_are_not_masked() -> None:
    out = script(POLICY, "hello [[sim: violation=0 confidence=low]]", "low", 0, response_format=None)
    (entry,) = digit_entries(chat_logprobs(out, top_logprobs=4, seed=0))
    assert entry["token"] == "0" and entry["logprob"] == pytest.approx(math.log(0.6))
    assert MASKED not in [a["logprob"] for a in entry["top_logprobs"]]


def test_multi_policy_answer_has_one_digit_per_policy() -> None:
    from worker.judges.multipolicy import multi_prompt

    prompt = multi_prompt([("spam", POLICY), ("scams", POLICY.replace("Test", "Other"))])
    out = script(prompt, "free money scam [[sim: p_violation=0.7]]", "low", 0)
    assert len(digit_positions(out.content_ids or ())) == 2
    assert [e["logprob"] for e in digit_entries(chat_logprobs(out, 3, 0))] == [pytest.approx(math.log(0.7))] * 2


def test_cut_before_the_digit_has_no_digit_entry() -> None:
    full = script(POLICY, "hello", "low", 0)
    out = script(POLICY, "hello", "low", 0, max_tokens=full.completion_tokens - tokens.count(full.content or "") + 2)
    assert out.finish_reason == "length" and "violation" in (out.content or "")
    assert digit_entries(chat_logprobs(out, 2, 0)) == []
