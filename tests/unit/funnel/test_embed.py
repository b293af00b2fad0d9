"""The embedder's chunk cache (funnel/embed.py `_ids`): a text's token ids are exactly what the
tokenizer gives for the whole text, whatever the text, the batch and the state of the cache."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnel import DEFAULT_MODEL_DIR, normalise
from funnel import embed as embed_module
from funnel.embed import StaticEmbedder, clip

EMBEDDER = StaticEmbedder(DEFAULT_MODEL_DIR)
# Letters of several scripts, CJK (split per character by the tokenizer), accents and combining
# marks, controls and every kind of whitespace, punctuation, emoji: what could tokenize
# differently alone than inside a text.
ALPHABET = st.sampled_from(
    list("abcxyz ABC 0123 éüßΩяعد中文字한국 \u0301\u0308 \t\n\r\x00\x07\u00a0\u2028\u3000 .,!?'\"-_#@ 🙂👍🏽\ufffd")
)
TEXTS = st.text(ALPHABET, max_size=80) | st.text(max_size=80)


def tokenizer_ids(text: str) -> list[int]:
    return list(EMBEDDER.tokenizer.encode(text, add_special_tokens=False).ids)


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXTS, max_size=6))
def test_cached_ids_are_the_tokenizers_ids(texts: list[str]) -> None:
    assert EMBEDDER._ids(texts) == [tokenizer_ids(t) for t in texts]
    # And again, now from the cache.
    assert EMBEDDER._ids(texts) == [tokenizer_ids(t) for t in texts]


@settings(max_examples=100, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=6))
def test_cached_ids_on_the_funnels_own_input(texts: list[str]) -> None:
    """What the funnel feeds the embedder: the `words` form, clipped."""
    words = [clip(normalise(t).words, EMBEDDER.max_chars) for t in texts]
    assert EMBEDDER._ids(words) == [tokenizer_ids(w) for w in words]


def test_a_full_cache_starts_afresh_and_still_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embed_module, "WORD_CACHE_SIZE", 5)
    embedder = StaticEmbedder(DEFAULT_MODEL_DIR)
    first = ["one two three", "four five six seven"]
    assert embedder._ids(first) == [tokenizer_ids(t) for t in first]
    second = ["two three eight nine", "ten"]  # over the bound: only this batch's chunks are kept
    assert embedder._ids(second) == [tokenizer_ids(t) for t in second]
    assert set(embedder._chunk_ids) == {"two", "three", "eight", "nine", "ten"}


def test_long_chunks_are_tokenized_each_time_not_kept() -> None:
    embedder = StaticEmbedder(DEFAULT_MODEL_DIR)
    long_word = "x" * (embed_module.CACHED_CHUNK_CHARS + 1)
    texts = [f"short {long_word} words", long_word, "short"]
    assert embedder._ids(texts) == [tokenizer_ids(t) for t in texts]
    assert embedder._ids(texts) == [tokenizer_ids(t) for t in texts]
    assert long_word not in embedder._chunk_ids and {"short", "words"} <= set(embedder._chunk_ids)


def test_vectors_match_the_uncached_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    """encode_uncentred end to end, bit for bit, against the same embedder fed by the tokenizer
    directly (no cache)."""
    texts = ["free v bucks at bit ly x", "", "k i l l", "word " * 300, "中文 🙂 [UNK] ￼", "a  b\tc"]
    cached = EMBEDDER.encode_uncentred(texts)
    uncached = StaticEmbedder(DEFAULT_MODEL_DIR)
    monkeypatch.setattr(uncached, "_ids", lambda chunks: [tokenizer_ids(t) for t in chunks])
    assert np.array_equal(cached, uncached.encode_uncentred(texts))
    assert not cached[1].any() and cached[0].any()
