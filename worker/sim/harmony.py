"""Harmony framing of a simulated completion: the token ids gpt-oss writes around its two messages."""

from __future__ import annotations

from functools import cache

from . import tokens


def _harmony(*parts: str | int) -> tuple[int, ...]:
    """Token ids of a harmony header: ints are special-token names' ids, strings are text."""
    ids: list[int] = []
    for part in parts:
        if isinstance(part, int):
            ids.append(part)
        else:
            ids.extend(tokens.encode(part))
    return tuple(ids)


@cache
def analysis_header() -> tuple[int, ...]:
    """`<|channel|>analysis<|message|>`: what gpt-oss writes after the prompt's `<|start|>assistant`."""
    return _harmony(tokens.special(tokens.CHANNEL), "analysis", tokens.special(tokens.MESSAGE))


@cache
def final_header() -> tuple[int, ...]:
    """`<|end|><|start|>assistant<|channel|>final<|message|>`: the end of the analysis and the start of the answer."""
    return _harmony(
        tokens.special(tokens.END), tokens.special(tokens.START), "assistant",
        tokens.special(tokens.CHANNEL), "final", tokens.special(tokens.MESSAGE),
    )  # fmt: skip


@cache
def return_token() -> int:
    return tokens.special(tokens.RETURN)
