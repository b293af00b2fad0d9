"""How the simulated judge reads the policy (worker.sim.reading) and what script() makes of it: pure logic."""

from __future__ import annotations

import json

import pytest

from worker.sim.reading import (
    EXAMPLE_MATCH,
    MENTION_FRAMES,
    content_words,
    find_frame,
    labelled_texts,
    nearest_example,
    similarity,
)
from worker.sim.script import find_trigger, script

POLICY = """## INSTRUCTIONS
Classify the content for scams.

## VIOLATES (1)
- **SP1** Doubling schemes ("send 1 and get 2 back").

## SAFE (0)
- Warnings about scams; idioms such as "that price is a scam".

## OUTPUT FORMAT
policy_category is "scam" or "spam" (null when 0).

## EXAMPLES
Content: "Send 1 ETH, get 2 ETH back! Official giveaway, 3 hours left" → {"violation": 1, "policy_category": "spam", "rule_ids": ["SP3"], "confidence": "high", "rationale": "Doubling."}
Content: "Selling my old bike, 80 euros, pick up only" → {"violation": 0, "policy_category": null, "rule_ids": [], "confidence": "high", "rationale": "Sale."}
"""  # noqa: E501
BARE = "## INSTRUCTIONS\nClassify the content.\n"


def answer(policy: str, post: str, effort: str = "low") -> dict[str, object]:
    content = script(policy, post, effort, seed=3).content
    assert content is not None
    data = json.loads(content)
    assert isinstance(data, dict)
    return data


def test_labelled_texts_are_the_examples_then_the_quoted_rule_phrases() -> None:
    found = [(t.text, t.violation, t.policy_category, t.rule_ids) for t in labelled_texts(POLICY)]
    assert found == [
        ("Send 1 ETH, get 2 ETH back! Official giveaway, 3 hours left", 1, "spam", ("SP3",)),
        ("Selling my old bike, 80 euros, pick up only", 0, None, ()),
        ("send 1 and get 2 back", 1, None, ()),
        ("that price is a scam", 0, None, ()),
    ]
    assert labelled_texts(BARE) == ()


def test_content_words_read_leetspeak_and_drop_stop_words_and_endings() -> None:
    assert content_words("You are a fat w0rthless l0ser") == {"fat", "worthless", "loser"}
    assert content_words("Reporting cheaters") == {"report", "cheater"}
    assert content_words("$5 for 5 stars") == {"$5", "5", "star"}, "numbers stay numbers"


def test_similarity_is_the_cosine_of_word_sets() -> None:
    assert similarity(frozenset("ab"), frozenset("ab")) == 1.0
    assert similarity(frozenset("abcd"), frozenset("a")) == pytest.approx(0.5)
    assert similarity(frozenset(), frozenset("a")) == 0.0


def test_a_post_close_to_an_example_takes_its_label_and_filing() -> None:
    match = nearest_example(POLICY, "Send 0.1 BTC and get 0.2 BTC back, official giveaway, 1 hour left!")
    assert match is not None and match.example.violation == 1 and match.similarity >= EXAMPLE_MATCH
    got = answer(POLICY, "Send 0.1 BTC and get 0.2 BTC back, official giveaway, 1 hour left!")
    assert (got["violation"], got["policy_category"], got["rule_ids"]) == (1, "spam", ["SP3"])


def test_a_safe_example_clears_a_trigger_word() -> None:
    post = "That price is a scam honestly"
    assert find_trigger(post) == "scam"
    assert answer(POLICY, post)["violation"] == 0, "the SAFE rule's quoted idiom"
    assert answer(BARE, post)["violation"] == 1, "a policy with nothing to compare keeps the trigger rule"


def test_far_from_every_example_the_trigger_words_decide() -> None:
    assert nearest_example(POLICY, "free money for everyone") is None
    assert answer(POLICY, "free money for everyone")["violation"] == 1
    assert answer(POLICY, "lentil soup tonight")["violation"] == 0


@pytest.mark.parametrize(
    "post",
    [
        "If you have thoughts of suicide, call or text 988",
        "Two years clean from self harm, it gets better",
        "PSA: the crypto giveaway in the replies is fake",
        "I will literally kill you if you spoil it",
    ],
)
def test_a_trigger_word_in_a_mention_frame_is_not_a_violation(post: str) -> None:
    assert find_trigger(post) is not None and find_frame(post) is not None
    assert answer(BARE, post)["violation"] == 0
    assert answer(BARE, post, "high")["violation"] == 0, "tier 2 reads it the same way"


def test_frames_match_whole_words_only() -> None:
    assert find_frame("a hotline") == "hotline"
    assert find_frame("lollipop warnings") is None
    assert all(f == f.lower() for f in MENTION_FRAMES)


def test_a_directive_still_wins_over_the_policy_reading() -> None:
    post = "Send 1 ETH, get 2 ETH back! Official giveaway, 3 hours left [[sim: violation=0]]"
    assert answer(POLICY, post)["violation"] == 0
