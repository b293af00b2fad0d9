"""The simulator's `[[sim: key=value ...]]` directives: what a test can pin in a post or a policy."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

Effort = Literal["low", "medium", "high"]
Fault = Literal["5xx", "timeout", "truncate", "invalid_json", "empty", "unenforced"]
FAULTS: tuple[str, ...] = get_args(Fault)
CONFIDENCES = ("low", "medium", "high")

_DIRECTIVE_RE = re.compile(r"\[\[sim:([^\]]*)\]\]", re.IGNORECASE)


class DirectiveError(ValueError):
    """A `[[sim: ...]]` directive the simulator cannot follow (a bug in the test that wrote it)."""


def stable_hash(*parts: str | int) -> int:
    """A 64-bit hash that is the same in every process (unlike hash(), which is salted per run)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True, slots=True)
class Directive:
    """Values pinned by a directive; None = not pinned. `fault="none"` pins a clean answer."""

    violation: int | None = None
    confidence: str | None = None
    category: str | None = None
    category_set: bool = False  # category may be pinned to null, so None alone is ambiguous
    rule_ids: tuple[str, ...] | None = None
    fault: str | None = None
    delay_ms: int | None = None
    p_violation: float | None = None

    def merged(self, other: Directive) -> Directive:
        """`other` on top of self. A verdict pinned in `other` (violation or p_violation) replaces
        both of self's, so a post's p_violation overrides a policy's violation and vice versa."""
        verdict_from = other if other.violation is not None or other.p_violation is not None else self
        return Directive(
            violation=verdict_from.violation,
            confidence=other.confidence or self.confidence,
            category=other.category if other.category_set else self.category,
            category_set=self.category_set or other.category_set,
            rule_ids=other.rule_ids if other.rule_ids is not None else self.rule_ids,
            fault=other.fault or self.fault,
            delay_ms=other.delay_ms if other.delay_ms is not None else self.delay_ms,
            p_violation=verdict_from.p_violation,
        )


@dataclass(frozen=True, slots=True)
class ParsedPost:
    text: str  # the post with directives removed: what the heuristic reads and quotes
    base: Directive
    t2: Directive  # `key_t2=` values: applied on top of `base` at reasoning_effort "high"

    def directive_for(self, effort: str) -> Directive:
        return self.base.merged(self.t2) if effort == "high" else self.base


def _directive_value(key: str, value: str) -> dict[str, Any]:
    if key == "violation":
        if value not in ("0", "1"):
            raise DirectiveError(f"violation must be 0 or 1, not {value!r}")
        return {"violation": int(value)}
    if key == "confidence":
        if value not in CONFIDENCES:
            raise DirectiveError(f"confidence must be low, medium or high, not {value!r}")
        return {"confidence": value}
    if key == "category":
        return {"category": None if value.lower() in ("null", "none", "") else value, "category_set": True}
    if key in ("rule", "rules"):
        return {"rule_ids": tuple(r for r in value.split(",") if r)}
    if key == "fault":
        if value != "none" and value not in FAULTS:
            raise DirectiveError(f"fault must be one of {', '.join(FAULTS)} or none, not {value!r}")
        return {"fault": value}
    if key == "delay_ms":
        if not value.isdigit():
            raise DirectiveError(f"delay_ms must be a non-negative integer, not {value!r}")
        return {"delay_ms": int(value)}
    if key == "p_violation":
        try:
            p = float(value)
        except ValueError:
            p = -1.0
        if not 0.0 <= p <= 1.0:
            raise DirectiveError(f"p_violation must be a number from 0 to 1, not {value!r}")
        return {"p_violation": p}
    raise DirectiveError(f"unknown sim directive key {key!r}")


def parse_post(post: str) -> ParsedPost:
    """Split `[[sim: k=v ...]]` directives out of a post; later directives win over earlier ones."""
    base: dict[str, Any] = {}
    t2: dict[str, Any] = {}
    for match in _DIRECTIVE_RE.finditer(post):
        for item in match.group(1).split():
            key, sep, value = item.partition("=")
            if not sep:
                raise DirectiveError(f"sim directive item {item!r} is not key=value")
            key = key.lower()
            target = base
            if key.endswith("_t2"):
                key, target = key[: -len("_t2")], t2
            target.update(_directive_value(key, value))
    text = re.sub(r"\s+", " ", _DIRECTIVE_RE.sub(" ", post)).strip()
    return ParsedPost(text=text, base=Directive(**base), t2=Directive(**t2))
