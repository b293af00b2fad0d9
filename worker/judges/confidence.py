"""A calibrated confidence signal: the probability the judge gave the `violation` digit it wrote.

The judge request asks for `logprobs: true, top_logprobs: k`. vLLM's chat logprobs are
`choices[0].logprobs.content = [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]`;
for gpt-oss they cover every completion token, the harmony channel headers and the analysis
(reasoning) included, so the answer's digit is found by position: the LAST `"violation"` key
followed by `:` in the concatenated token text, then the first token carrying the digit after it.
Its top alternatives give p = P("1") / (P("0") + P("1")) (" 1" and "1" both count as "1"; a masked
alternative, logprob -9999.0, has probability 0). Pure functions, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

_KEY = re.compile(r'"violation"\s*:\s*')


def p_violation(content: Sequence[Any] | None, after: str | None = None) -> float | None:
    """P(violation = 1) at the answer's `violation` digit, or None when the logprobs hold no such
    digit (no logprobs, a truncated or malformed answer, too few alternatives to tell).

    `after`: for a multi-policy answer, the policy id whose entry to read: the first `"violation"`
    key after the last `"<after>":` key (the answer comes after the reasoning, so its keys are last).
    """
    if not content:
        return None
    # The answer is the completion's tail; with gpt-oss the logprobs also cover the whole analysis
    # (thousands of tokens at high effort), so look at a growing tail window rather than join it all.
    # The last match inside a tail is the last match overall, so the result is the same.
    window = _TAIL_TOKENS
    while True:
        tail = content[-window:] if window < len(content) else content
        found = _p_violation_in(tail, after)
        if found is not None or len(tail) == len(content):
            return found
        window *= 4


_TAIL_TOKENS = 512


def _p_violation_in(content: Sequence[Any], after: str | None) -> float | None:
    tokens = [t for t in content if isinstance(t, dict) and isinstance(t.get("token"), str)]
    if not tokens:
        return None
    texts = [str(t["token"]) for t in tokens]
    joined = "".join(texts)
    start = 0
    if after is not None:
        anchors = list(re.finditer(re.escape(f'"{after}"') + r"\s*:", joined))
        if not anchors:
            return None
        start = anchors[-1].end()
        key = _KEY.search(joined, start)
        keys = [key] if key else []
    else:
        keys = list(_KEY.finditer(joined))
    if not keys:
        return None
    digit_at = keys[-1].end()  # the first character after `"violation":` and any whitespace
    offset = 0
    for token, text in zip(tokens, texts, strict=True):
        end = offset + len(text)
        if end > digit_at:
            # This token holds the digit; `prefix` is its part before the digit (e.g. `": ` in `": 1`).
            return _p_one(token, text[: max(digit_at - offset, 0)])
        offset = end
    return None


def _p_one(token: dict[str, Any], prefix: str) -> float | None:
    """P("1") / (P("0") + P("1")) over the token and its top alternatives sharing `prefix`."""
    candidates = [token, *(token.get("top_logprobs") or [])]
    core = prefix.strip()
    mass = {"0": 0.0, "1": 0.0}
    seen: set[str] = set()
    for alt in candidates:
        text, logprob = alt.get("token"), alt.get("logprob")
        if not isinstance(text, str) or not isinstance(logprob, int | float) or text in seen:
            continue
        seen.add(text)  # the sampled token is usually also among the top alternatives: count it once
        # Whitespace does not matter: " 1" and "1" are both the digit 1.
        rest = text.lstrip()
        if not rest.startswith(core):
            continue
        digit = rest[len(core) :].strip()[:1]
        if digit in mass:
            mass[digit] += math.exp(logprob) if logprob > -1000 else 0.0
    total = mass["0"] + mass["1"]
    if total <= 0.0:
        return None
    return mass["1"] / total
