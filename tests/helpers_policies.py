"""Build Policy objects for unit tests without touching the shipped policy files."""

from __future__ import annotations

from pathlib import Path

import yaml

from worker.policies.files import Policy, parse_policy

PROMPT = """## INSTRUCTIONS
Classify the content.
## OUTPUT FORMAT
{"violation": 0|1, "policy_category": str|null, "rule_ids": [], "confidence": "low"|"medium"|"high", "rationale": str}
"""


def make_policy(policy_id: str = "spam", prompt: str = PROMPT, **front: object) -> Policy:
    meta = {"id": policy_id, "title": policy_id.title(), **front}
    text = f"---\n{yaml.safe_dump(meta, sort_keys=True)}---\n{prompt}"
    return parse_policy(text.encode(), Path(f"{policy_id}.md"))
