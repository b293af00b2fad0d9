"""Helpers for the judge/escalation/reload/shadow/eval tests: small policy files whose funnel
hints are made-up keywords (so which policy a post reaches is exact and independent of the
shipped policies' tuning), and Prometheus text parsing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import yaml

BODY = """# {title}

## INSTRUCTIONS
Classify the content against the {title} policy. {extra}

## DEFINITIONS
- **Thing**: what this test policy is about.

## VIOLATES (1)
- **R1** Content that is about the thing.

## SAFE (0)
- Anything else.

## EXAMPLES
- "about the thing" -> 1
- "about something else" -> 0

## OUTPUT FORMAT
{{"violation": 0|1, "policy_category": str|null, "rule_ids": [...], "confidence": "low"|"medium"|"high", \
"rationale": str}}
"""


def policy_text(policy_id: str, keywords: list[str], extra: str = "", **front: Any) -> str:
    """A policy file. `extra` goes into the prompt (e.g. a `[[sim: ...]]` policy directive)."""
    funnel = {"keywords": keywords, "threshold": 0.5, "very_sure": 0.95, **front.pop("funnel", {})}
    meta = {"id": policy_id, "title": policy_id.title(), "funnel": funnel, **front}
    body = BODY.format(title=policy_id.replace("-", " ").title(), extra=extra)
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n{body}"


def write_policy(directory: Path, policy_id: str, keywords: list[str], extra: str = "", **front: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{policy_id}.md"
    path.write_text(policy_text(policy_id, keywords, extra, **front), encoding="utf-8")
    return path


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        found = dict(_LABEL.findall(match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def scrape(metrics_url: str) -> str:
    try:
        return httpx.get(f"{metrics_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""
