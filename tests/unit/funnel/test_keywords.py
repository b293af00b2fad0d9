"""Keyword and pattern stages on both engines (Hyperscan and the pyahocorasick/`re` fallback)."""

from __future__ import annotations

import random

import pytest

from funnel import PolicySpec, hs
from funnel.keywords import AhoScanner, KeywordHit, KeywordStage, evidence_counts, keyword_literals, make_scanner
from funnel.normalise import normalise
from funnel.patterns import PatternStage

ENGINES = [
    pytest.param("hyperscan", marks=pytest.mark.skipif(not hs.available(), reason="hyperscan extra not installed")),
    "pyahocorasick",
]
SPECS = [
    PolicySpec("violence", keywords=("kill", "kill you", "shoot up"), patterns=(r"\bi('ll| will) (kill|stab)\b",)),
    PolicySpec("spam", keywords=("free money", "dm me", "кэш"), patterns=(r"bit\.ly/\S+", r"(?<=\$)\d+k")),
    PolicySpec("empty"),
]


def hits(stage: KeywordStage, text: str) -> set[tuple[str, str]]:
    return {(h.policy_id, h.keyword) for h in stage.match_batch([normalise(text)])[0]}


@pytest.mark.parametrize("engine", ENGINES)
def test_whole_words_only(engine: str) -> None:
    stage = KeywordStage(SPECS, engine)
    assert hits(stage, "I will kill you") == {("violence", "kill"), ("violence", "kill you")}
    assert hits(stage, "skills, killer, skill") == set()
    assert hits(stage, "kill") == {("violence", "kill")}  # at both ends of the text
    assert hits(stage, "free-money!! dm me") == {("spam", "free money"), ("spam", "dm me")}


@pytest.mark.parametrize("engine", ENGINES)
def test_non_ascii_keyword_and_offsets(engine: str) -> None:
    # Multi-byte text before a match: byte offsets (hyperscan) must become character offsets.
    stage = KeywordStage(SPECS, engine)
    assert hits(stage, "привет кэш and kiiill") == {("spam", "кэш"), ("violence", "kill")}


@pytest.mark.parametrize("engine", ENGINES)
def test_batches_do_not_leak_between_posts(engine: str) -> None:
    stage = KeywordStage(SPECS, engine)
    # "kill" at the end of one post and "you" at the start of the next must not make "kill you".
    posts = [normalise(t) for t in ["I could kill", "you know", "nothing here", "free money"] * 300]
    found = stage.match_batch(posts)
    assert len(found) == 1200
    for i, post_hits in enumerate(found):
        expected = [{("violence", "kill")}, set(), set(), {("spam", "free money")}][i % 4]
        assert {(h.policy_id, h.keyword) for h in post_hits} == expected


@pytest.mark.parametrize("seed", [7, 8])
def test_engines_agree_on_random_posts(seed: int) -> None:
    if not hs.available():
        pytest.skip("hyperscan extra not installed")
    rng = random.Random(seed)
    vocabulary = ["kill", "k1ll", "you", "free", "fr33", "money", "dm", "me", "shoot", "up", "the", "a", "кэш", "ü"]
    texts = [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 12))) for _ in range(700)]
    posts = [normalise(t) for t in texts]
    fast = KeywordStage(SPECS, "hyperscan").match_batch(posts)
    fallback = KeywordStage(SPECS, "pyahocorasick").match_batch(posts)
    assert [sorted((h.policy_id, h.keyword) for h in x) for x in fast] == [
        sorted((h.policy_id, h.keyword) for h in x) for x in fallback
    ]


def test_keyword_literals_carry_runs_and_1_variants() -> None:
    literals = dict(keyword_literals("kill"))
    assert literals[" kil "] == (1, 1, 1, 2, 1)  # the double l must be there
    assert " k1l " in literals and " ki1 " in literals and " k1 " in literals
    assert literals[" k1 "] == (1, 1, 3, 1)  # "k111": i and both l's became one run of three


def test_make_scanner_rejects_unknown_engine() -> None:
    with pytest.raises(ValueError, match="unknown matcher engine"):
        make_scanner(["x"], "grep")


def test_empty_scanner() -> None:
    assert AhoScanner([]).scan(["anything"]) == [[]]


def test_evidence_counts_merges_overlapping_hits() -> None:
    found = [
        KeywordHit("a", "5 star reviews", True, (1, 15)),
        KeywordHit("a", "star reviews", True, (3, 15)),
        KeywordHit("a", "fake", False, (20, 24)),
        KeywordHit("b", "x", False, (1, 2)),
    ]
    assert evidence_counts(found) == {"a": (1, 1), "b": (1, 0)}


@pytest.mark.parametrize("engine", ENGINES)
def test_patterns_run_on_clean_text(engine: str) -> None:
    stage = PatternStage(SPECS, engine)
    found = stage.match_batch([normalise(t) for t in ["I'll KILL him", "go to bit.ly/abc", "earn $20k", "hello"]])
    assert found[0] == [("violence", r"\bi('ll| will) (kill|stab)\b")]
    assert found[1] == [("spam", r"bit\.ly/\S+")]
    # A lookbehind is beyond hyperscan: that one pattern falls back to `re`.
    assert found[2] == [("spam", r"(?<=\$)\d+k")]
    assert found[3] == []


@pytest.mark.parametrize("engine", ENGINES)
def test_patterns_also_see_the_plain_form(engine: str) -> None:
    """De-leeted, de-spaced text (`Normalised.plain`) meets patterns on both engines, credited to its own post."""
    stage = PatternStage([PolicySpec("cheats", patterns=(r"\bfree\s+(robux|v-?bucks)\b",))], engine)
    found = stage.match_batch([normalise(t) for t in ["hello there", "fr33 v-bucks", "f r e e robux", "free time"]])
    assert [bool(hits) for hits in found] == [False, True, True, False]


def test_invalid_pattern_names_the_policy() -> None:
    with pytest.raises(ValueError, match=r"policy 'bad'.*invalid pattern"):
        PatternStage([PolicySpec("bad", patterns=("(unclosed",))])


def test_hyperscan_database_cache_roundtrip(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    if not hs.available():
        pytest.skip("hyperscan extra not installed")
    monkeypatch.setenv("MODSTREAM_CACHE", str(tmp_path))
    hs._MEMORY_CACHE.clear()
    first = KeywordStage([PolicySpec("c", keywords=("cache me",))], "hyperscan")
    assert list(hs.cache_dir().glob("*.db")), "compiled database was not written to the cache"
    hs._MEMORY_CACHE.clear()
    second = KeywordStage([PolicySpec("c", keywords=("cache me",))], "hyperscan")  # loaded from disk
    for stage in (first, second):
        assert hits(stage, "please cache me now") == {("c", "cache me")}
