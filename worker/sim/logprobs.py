"""`choices[0].logprobs` of a chat completion, shaped as vLLM returns it for gpt-oss.

Pure: a function of the scripted Outcome. Like vLLM, the entries cover every completion token
(scope "all"): the harmony headers (`<|channel|>analysis<|message|>`, `<|end|><|start|>assistant
<|channel|>final<|message|>`), the analysis (reasoning), the final content and `<|return|>`; scope
"content" (the server's default, `--logprobs-scope`) covers only the final content, which keeps
responses small in load tests. The token that holds
the digit after `"violation": ` has "1" at log(p) and "0" at log(1 - p) among its top_logprobs,
where p is the scripted P(violation) (digit 1 iff p >= 0.5, as the verdict says). Other
alternatives are masked (-9999.0, as vLLM shows tokens its grammar forbids) inside a constrained
content, and merely unlikely elsewhere.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from . import tokens
from .harmony import analysis_header, final_header
from .script import Outcome

MASKED = -9999.0
# vLLM's default --max-logprobs.
MAX_TOP_LOGPROBS = 20
# Filler alternatives for tokens other than the violation digit.
_ALTERNATIVES = (
    " the", ",", ".", " and", " a", "\n", " to", " of", " is", " in", " it", " that", ":", " not",
    " for", " with", " this", " be", " or", " as", " on",
)  # fmt: skip
_VIOLATION_DIGIT = re.compile(rb'"violation":\s*([01])')


@lru_cache(maxsize=65536)
def _shown(token: bytes) -> tuple[str, list[int]]:
    # The byte list is shared by every entry of this token: entries are serialised, never mutated.
    return token.decode("utf-8", "replace"), list(token)


def _entry(token: bytes, logprob: float) -> dict[str, Any]:
    text, raw = _shown(token)
    return {"token": text, "logprob": logprob, "bytes": raw}


@lru_cache(maxsize=8192)
def _filler(exclude: bytes, k: int, masked: bool) -> tuple[dict[str, Any], ...]:
    """k - 1 alternatives for a token other than the violation digit (shared between entries)."""
    alts: list[dict[str, Any]] = []
    for alt in _ALTERNATIVES:
        if len(alts) >= k - 1:
            break
        if alt.encode() != exclude:
            alts.append(_entry(alt.encode(), MASKED if masked else -5.0 - 0.5 * len(alts)))
    return tuple(alts)


def _log(p: float) -> float:
    return math.log(p) if p > 0.0 else MASKED


def digit_positions(content_ids: tuple[int, ...]) -> list[int]:
    """Index in `content_ids` of each token holding the digit after `"violation": `, in order."""
    pieces = [tokens.token_bytes(t) for t in content_ids]
    starts: list[int] = []
    offset = 0
    for piece in pieces:
        starts.append(offset)
        offset += len(piece)
    text = b"".join(pieces)
    found: list[int] = []
    for match in _VIOLATION_DIGIT.finditer(text):
        at = match.start(1)
        # The last token that starts at or before the digit is the one holding it.
        index = max(i for i, start in enumerate(starts) if start <= at)
        found.append(index)
    return found


def chat_logprobs(outcome: Outcome, top_logprobs: int, seed: int, scope: str = "all") -> dict[str, Any]:
    """{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]}: for every completion
    token (scope "all", as vLLM), or only for the final content's tokens (scope "content")."""
    ids = outcome.completion_ids
    content_start = len(analysis_header()) + len(outcome.reasoning_ids) + len(final_header())
    content_ids = outcome.content_ids or ()
    digits = {}
    if outcome.content_ids is not None:
        for n, index in enumerate(digit_positions(content_ids)):
            if n < len(outcome.p_violations):
                digits[content_start + index] = outcome.p_violations[n]
    entries: list[dict[str, Any]] = []
    first = content_start if scope == "content" else 0
    last = content_start + len(content_ids) if scope == "content" else len(ids)
    for i in range(first, last):
        token_id = ids[i]
        raw = tokens.token_bytes(token_id)
        masked = outcome.constrained and content_start <= i < content_start + len(content_ids)
        if i in digits:
            entries.append(_digit_entry(raw, digits[i], top_logprobs, masked))
            continue
        # Near-certain, deterministic: the model is sure of almost every token it writes.
        chosen = -(((token_id * 2654435761) ^ (i * 40503) ^ seed) % 2000) / 20000.0
        entry = _entry(raw, chosen)
        entry["top_logprobs"] = [_entry(raw, chosen), *_filler(raw, top_logprobs, masked)] if top_logprobs else []
        entries.append(entry)
    return {"content": entries}


def _digit_entry(raw: bytes, p: float, top_logprobs: int, masked: bool) -> dict[str, Any]:
    """The violation digit's token: "1" at log(p), "0" at log(1 - p), whatever the sampled digit."""
    digit = b"1" if b"1" in raw else b"0"
    other = b"0" if digit == b"1" else b"1"
    p_digit = p if digit == b"1" else 1.0 - p
    chosen = _entry(raw, _log(p_digit))
    alternative = _entry(raw.replace(digit, other), _log(1.0 - p_digit))
    top = sorted([chosen, alternative], key=lambda e: -float(e["logprob"]))
    for alt in ("2", " ", "\n", "true", "null"):
        if len(top) >= top_logprobs:
            break
        top.append(_entry(alt.encode(), MASKED if masked else -12.0 - len(top)))
    entry = dict(chosen)
    entry["top_logprobs"] = top[:top_logprobs]
    return entry
