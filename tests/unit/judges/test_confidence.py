"""p_violation from vLLM-shaped chat logprobs (choices[0].logprobs.content), pure."""

from __future__ import annotations

import math
from typing import Any

import pytest

from worker.judges.confidence import p_violation

MASKED = -9999.0


def tok(text: str, logprob: float = -0.01, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    """One entry as vLLM returns it: the sampled token, its logprob, bytes, and the top alternatives."""
    alternatives = top if top is not None else [(text, logprob)]
    return {
        "token": text,
        "logprob": logprob,
        "bytes": list(text.encode()),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternatives],
    }


def digit(sampled: str, p_one: float, zero: str = "0", one: str = "1") -> dict[str, Any]:
    """The digit position: "1" with probability p_one, "0" with the rest, plus masked junk."""
    lp1, lp0 = math.log(p_one), math.log(1 - p_one)
    return tok(sampled, lp1 if sampled.strip() == "1" else lp0, [(one, lp1), (zero, lp0), ("2", MASKED), ("x", MASKED)])


def harmony(reasoning: list[dict[str, Any]], answer: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A gpt-oss completion: analysis channel, then the final channel, every token in the logprobs."""
    return [
        tok("<|channel|>"), tok("analysis"), tok("<|message|>"), *reasoning, tok("<|end|>"),
        tok("<|start|>"), tok("assistant"), tok("<|channel|>"), tok("final"), tok("<|message|>"), *answer,
    ]  # fmt: skip


def answer(at_digit: dict[str, Any]) -> list[dict[str, Any]]:
    tail = [tok(', "'), tok("policy"), tok("_category"), tok('":'), tok(" null"), tok("}")]
    return [tok('{"'), tok("violation"), tok('":'), tok(" "), at_digit, *tail]


def test_gpt_oss_shape_reads_the_answer_digit_not_the_reasoning() -> None:
    # The reasoning quotes the key with the other digit; only the final answer's digit counts.
    reasoning = [tok("The"), tok(" answer"), tok(" is"), tok(' {"'), tok("violation"), tok('":'), digit(" 0", 0.01)]
    content = harmony(reasoning, answer(digit("1", 0.55)))
    assert p_violation(content) == pytest.approx(0.55)


@pytest.mark.parametrize("sampled", [" 1", "1"])
def test_a_digit_with_or_without_its_space(sampled: str) -> None:
    zero = sampled.replace("1", "0")
    content = [tok('{"'), tok("violation"), tok('":'), digit(sampled, 0.9, zero=zero, one=sampled)]
    assert p_violation(content) == pytest.approx(0.9)
    # The alternatives need not agree on the space: " 0" and "0" are both the digit 0.
    mixed = [tok('{"violation": '), digit(sampled, 0.9, zero="0" if zero == " 0" else " 0", one=sampled)]
    assert p_violation(mixed) == pytest.approx(0.9)


def test_digit_inside_the_colon_token() -> None:
    # Some vocabularies merge `": 1` into one token: the alternatives share the `": ` prefix.
    content = [
        tok('{"'),
        tok("violation"),
        tok('": 0', math.log(0.3), [('": 0', math.log(0.3)), ('": 1', math.log(0.7))]),
    ]
    assert p_violation(content) == pytest.approx(0.7)


def test_masked_alternative_counts_as_zero() -> None:
    # Grammar-constrained decoding masks the other digit: the judge is certain.
    content = [tok('{"violation":'), tok(" 1", 0.0, [(" 1", 0.0), (" 0", MASKED)])]
    assert p_violation(content) == 1.0
    content = [tok('{"violation":'), tok(" 0", 0.0, [(" 0", 0.0), (" 1", MASKED)])]
    assert p_violation(content) == 0.0


def test_sampled_token_outside_the_top_alternatives_still_counts() -> None:
    content = [tok('{"violation": '), tok("1", math.log(0.2), [("0", math.log(0.6)), ("x", math.log(0.1))])]
    assert p_violation(content) == pytest.approx(0.2 / 0.8)


@pytest.mark.parametrize(
    "content",
    [
        None,
        [],
        [tok("I"), tok(" cannot"), tok(" say")],  # no key at all
        [tok('{"violation":')],  # truncated right after the key
        [tok('{"violation": '), tok("true", -0.1, [("true", -0.1), ("false", -2.0)])],  # no digit alternatives
        [{"logprob": -0.1}],  # malformed entries are skipped
    ],
)
def test_no_digit_no_probability(content: list[dict[str, Any]] | None) -> None:
    assert p_violation(content) is None


def test_multi_policy_answer_per_policy_id() -> None:
    content = [
        tok('{"results": {"'), tok("spam"), tok('": {"violation": '), digit("1", 0.8),
        tok(', "rationale": "x"}, "'), tok("hate"), tok('": {"violation": '), digit("0", 0.1), tok("}}}"),
    ]  # fmt: skip
    assert p_violation(content, after="spam") == pytest.approx(0.8)
    assert p_violation(content, after="hate") == pytest.approx(0.1)
    assert p_violation(content, after="absent") is None


def test_a_long_analysis_before_the_answer_is_skipped_not_misread() -> None:
    """High-effort reasoning is thousands of tokens (and may quote a `"violation": 0`); the answer's
    digit is still the one read, whether the key straddles the tail window or not."""
    quoted = [tok('"violation"'), tok(":"), digit("0", 0.1)]
    for filler in (10, 505, 509, 5000):
        reasoning = [*quoted, *(tok(" word") for _ in range(filler))]
        assert p_violation(harmony(reasoning, answer(digit("1", 0.83)))) == pytest.approx(0.83)
    # An answer cut off before its digit falls back to the last key there is (the quoted one).
    cut = harmony([*quoted, *(tok(" word") for _ in range(2000))], [tok("{"), tok('"rationale"')])
    assert p_violation(cut) == pytest.approx(0.1)
