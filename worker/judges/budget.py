"""Context budget for one judge request: the prompt plus the output cap must fit the server's context.

vLLM refuses a request whose prompt plus `max_tokens` exceeds `--max-model-len` (HTTP 400), and a
refused request is no verdict. So before a request is sent, the post (the user message) is cut to
what is left of the context after the policy, the chat template and the output cap: head and tail
kept, the middle replaced by a marker that says how much was removed. The call, the audit record
and the verdict's result then carry `truncated: true`.

Token counts are o200k_harmony counts (`worker.judges.tokens`, the gpt-oss tokenizer): exact for the
message texts of a gpt-oss judge, plus a fixed allowance for the chat template. A judge with another
tokenizer (the small test models) may count more tokens for the same text: leave headroom there.
`estimate_tokens` and `cut_middle` are the only two places that know the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from worker.judges.tokens import ENCODING, count_tokens

# What the chat template adds around the messages: gpt-oss's harmony system header (identity,
# knowledge cutoff, date, `Reasoning:`, channels: ~100 tokens) and per-message framing tokens.
TEMPLATE_OVERHEAD_TOKENS = 256
# The smallest post budget: below it the policy and the output cap leave no room for a post at all,
# and the output cap is lowered instead (see `plan_budget`).
MIN_POST_TOKENS = 256
MARKER = "\n\n[... {removed} characters of this post removed by modstream: too long for the judge's context ...]\n\n"


def estimate_tokens(text: str) -> int:
    """The tokens `text` takes in a gpt-oss prompt (o200k_harmony, special-token look-alikes as text)."""
    return count_tokens(text)


@cache
def _encoding() -> Any:
    import quicktok  # the wheel worker.judges.tokens counts with; encode/decode are needed to cut

    return quicktok.get_encoding(ENCODING)


def _decode(ids: list[int]) -> str:
    # A cut may split a multi-byte character between tokens: drop the partial bytes.
    return bytes(_encoding().decode_bytes(ids)).decode("utf-8", errors="ignore")


def cut_middle(text: str, budget: int) -> str:
    """`text` if it fits in `budget` tokens, else its head and tail around a marker, all within
    `budget` (never more, except that a budget smaller than the marker still gets the marker)."""
    ids: list[int] = list(_encoding().encode_ordinary(text))
    if len(ids) <= budget:
        return text
    keep = max(budget - estimate_tokens(MARKER.format(removed=len(text))), 0)
    # Tokens can merge differently across the joins: check the result and shrink until it fits.
    for _ in range(8):
        head = _decode(ids[: keep - keep // 2])
        tail = _decode(ids[len(ids) - keep // 2 :]) if keep // 2 else ""
        cut = f"{head}{MARKER.format(removed=len(text) - len(head) - len(tail))}{tail}"
        excess = estimate_tokens(cut) - budget
        if excess <= 0 or keep == 0:
            return cut
        keep = max(keep - excess, 0)
    return MARKER.format(removed=len(text))


@dataclass(frozen=True, slots=True)
class Budget:
    """How much of the context the post may take, and the output cap to send (None: none sent)."""

    post_tokens: int
    max_tokens: int | None


def plan_budget(fixed_tokens: int, max_model_len: int, max_post_tokens: int, max_tokens: int | None) -> Budget:
    """`fixed_tokens`: everything but the post (policy, template, schema). The post gets
    `max_post_tokens`, less if the context minus the fixed part and the output cap is smaller.
    Without a cap (`max_tokens=None`) the reasoning gets whatever the prompt leaves."""
    room = max_model_len - fixed_tokens - (max_tokens or 0)
    return Budget(post_tokens=max(min(max_post_tokens, room), MIN_POST_TOKENS), max_tokens=max_tokens)


def output_cap(max_tokens: int | None, max_model_len: int, prompt_tokens: int) -> int | None:
    """The `max_tokens` to send: the configured cap, lowered so that prompt + cap fits the context
    (when the policy alone leaves less than the cap). None stays None (the server's default is the
    rest of the context). Never below 1: a prompt that fills the context is the server's to refuse."""
    if max_tokens is None:
        return None
    return max(min(max_tokens, max_model_len - prompt_tokens), 1)
