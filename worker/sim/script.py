"""What the simulated judge answers: pure, deterministic functions of policy, post, effort and seed.

No I/O here, so the whole behaviour (directives, heuristic, faults, truncation) is unit-tested
without a server. Tokens are approximated as whitespace-separated words everywhere.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from worker.multipolicy import split_sections

Effort = Literal["low", "medium", "high"]
Fault = Literal["5xx", "timeout", "truncate", "invalid_json", "empty"]
FinishReason = Literal["stop", "length"]
FAULTS: tuple[str, ...] = get_args(Fault)

# Violation iff the lower-cased post contains one of these as whole words (so "die" does not
# fire on "diet", nor "hate" on "whatever"). One list, so tests can pick a safe vocabulary.
TRIGGER_PHRASES: tuple[str, ...] = (
    "scam", "free money", "crypto giveaway", "wire transfer", "click this link", "double your",
    "aimbot", "wallhack", "cheat engine", "undetected cheat",
    "kill you", "die", "kys", "hate", "nazi", "bomb", "gun", "shoot up", "terrorist",
    "nude", "nudes", "paid review", "5 stars", "five stars", "fake review",
    "self harm", "self-harm", "cut myself", "suicide",
    # Phrases of the shipped demo posts' obvious violations, so `modstream demo` reads sensibly.
    "btc", "aimbot", "5 star google review", "pills would it take", "worthless", "rats spreading",
    "with a rifle", "0nlyf4ns", "year olds dm", "stab you", "glock", "caliphate", "verify your login",
    "k y s", "dead man walking",
)  # fmt: skip
_TRIGGER_RE = re.compile(r"(?<!\w)(" + "|".join(re.escape(p) for p in TRIGGER_PHRASES) + r")(?!\w)")

# Reasoning length per effort, in tokens (words): roughly what gpt-oss spends on a short post.
REASONING_TOKENS: dict[str, int] = {"low": 40, "medium": 150, "high": 400}
RATIONALE_QUOTE_CHARS = 40
REASONING_QUOTE_CHARS = 200

_TOKEN_RE = re.compile(r"\S+")
_DIRECTIVE_RE = re.compile(r"\[\[sim:([^\]]*)\]\]", re.IGNORECASE)
_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
# Section names of OpenAI's policy template: they say nothing about the policy's subject.
_TEMPLATE_HEADINGS = {"instructions", "definitions", "violates", "safe", "examples", "output", "policy"}


class DirectiveError(ValueError):
    """A `[[sim: ...]]` directive the simulator cannot follow (a bug in the test that wrote it)."""


def count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def cut_tokens(text: str, n: int) -> str:
    """The prefix of `text` holding its first `n` tokens, cut right after the n-th (mid-JSON if need be)."""
    if n <= 0:
        return ""
    for i, match in enumerate(_TOKEN_RE.finditer(text), start=1):
        if i == n:
            return text[: match.end()]
    return text


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

    def merged(self, other: Directive) -> Directive:
        return Directive(
            violation=other.violation if other.violation is not None else self.violation,
            confidence=other.confidence or self.confidence,
            category=other.category if other.category_set else self.category,
            category_set=self.category_set or other.category_set,
            rule_ids=other.rule_ids if other.rule_ids is not None else self.rule_ids,
            fault=other.fault or self.fault,
            delay_ms=other.delay_ms if other.delay_ms is not None else self.delay_ms,
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
        if value not in REASONING_TOKENS:
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


def policy_category(policy: str) -> str:
    """A one-word category from the policy's first non-template heading ("# Spam & Scams" -> "spam")."""
    for match in _HEADING_RE.finditer(policy):
        words = [w for w in re.findall(r"[a-z0-9]+", match.group(1).lower()) if w not in _TEMPLATE_HEADINGS]
        words = [w for w in words if not w.isdigit()]  # "## VIOLATES (1)" names no subject
        if words:
            return str(words[0])
    return "policy"


def find_trigger(text: str) -> str | None:
    match = _TRIGGER_RE.search(text.lower())
    return str(match.group(1)) if match else None


def heuristic_confidence(text: str, effort: str, seed: int) -> str:
    """Stable in the text: ~80/15/5 % high/medium/low at low effort; never low at high effort."""
    bucket = stable_hash(seed, "confidence", text) % 100
    high_below, medium_below = {"low": (80, 95), "medium": (85, 97), "high": (90, 100)}.get(effort, (80, 95))
    if bucket < high_below:
        return "high"
    return "medium" if bucket < medium_below else "low"


def _quote(text: str, limit: int) -> str:
    return text[:limit].replace('"', "'")


_FILLER = (
    "Check each rule in the VIOLATES section against the content.",
    "Consider the context: is the author quoting, joking, reporting or asking for help?",
    "Compare the content with the SAFE examples before deciding.",
    "Focus on what the content does, not on single words.",
    "The policy says to answer in JSON with violation, category, rule ids, confidence and rationale.",
    "Ambiguous cases should get a lower confidence rather than a guess.",
)


def _reasoning(text: str, category: str, trigger: str | None, answer: dict[str, Any], effort: str, seed: int) -> str:
    opening = f'The user posted: "{_quote(text, REASONING_QUOTE_CHARS)}". The policy is about {category}.'
    finding = (
        f'The phrase "{trigger}" appears; the policy lists this as violating.'
        if trigger
        else "Nothing in it matches the violating examples."
    )
    closing = f"So violation={answer['violation']} with {answer['confidence']} confidence."
    target = REASONING_TOKENS.get(effort, REASONING_TOKENS["medium"])
    room = target - count_tokens(opening) - count_tokens(finding) - count_tokens(closing)
    rng = random.Random(stable_hash(seed, "reasoning", text, effort))
    filler: list[str] = []
    while sum(count_tokens(s) for s in filler) < room:
        filler.append(rng.choice(_FILLER))
    return " ".join(p for p in (opening, finding, cut_tokens(" ".join(filler), room), closing) if p)


def _invalid_json(answer: dict[str, Any], category: str, variant: int) -> str:
    """Three kinds of garbage a model emits; none of them validates as a JudgeAnswer."""
    if variant == 0:
        verdict = "breaks" if answer["violation"] else "does not break"
        return f"Looking at this post, it {verdict} the {category} policy. Final answer: see above."
    if variant == 1:
        return json.dumps(answer)[:-1].rsplit(",", 1)[0] + ', "confidence": '  # unterminated object
    return json.dumps({"verdict": "violation" if answer["violation"] else "safe", "score": 0.5})


@dataclass(frozen=True, slots=True)
class Outcome:
    """One scripted completion. `fault` "5xx"/"timeout" are acted out by the server, not here."""

    answer: dict[str, Any]  # what the model "meant" (JudgeAnswer-shaped), before faults and cuts
    reasoning: str
    content: str | None
    finish_reason: FinishReason
    fault: str | None
    delay_ms: int

    @property
    def completion_tokens(self) -> int:
        return count_tokens(self.reasoning) + count_tokens(self.content or "")


def apply_max_tokens(outcome: Outcome, max_tokens: int | None) -> Outcome:
    """Cut the output at `max_tokens` like vLLM: reasoning first, then content; finish_reason "length"."""
    if max_tokens is None or outcome.completion_tokens <= max_tokens:
        return outcome
    reasoning_tokens = count_tokens(outcome.reasoning)
    if reasoning_tokens >= max_tokens:
        # Cut inside the analysis channel: vLLM then has no final-channel text at all.
        return replace(outcome, reasoning=cut_tokens(outcome.reasoning, max_tokens), content=None,
                       finish_reason="length")  # fmt: skip
    content = cut_tokens(outcome.content or "", max_tokens - reasoning_tokens)
    return replace(outcome, content=content, finish_reason="length")


@dataclass(frozen=True, slots=True)
class Plan:
    """What the model "means" for one policy, before faults and length cuts."""

    answer: dict[str, Any]
    reasoning: str
    category: str
    text: str
    fault: str | None  # pinned by a directive (None: not pinned; "none": pinned clean)
    delay_ms: int


def plan(policy: str, post: str, effort: str, seed: int) -> Plan:
    """The scripted answer for one policy. Directives in the policy text are defaults that the
    post's directives override (so a test can script a whole policy version, e.g. for eval --compare)."""
    parsed = parse_post(post)
    directive = parsed.directive_for(effort)
    if "[[sim:" in policy.lower():
        directive = parse_post(policy).directive_for(effort).merged(directive)
    text = parsed.text or post
    trigger = find_trigger(parsed.text)
    category = policy_category(policy)
    violation = directive.violation if directive.violation is not None else int(trigger is not None)
    default_category = category if violation else None
    answer_category = directive.category if directive.category_set else default_category
    rules = list(directive.rule_ids) if directive.rule_ids is not None else (["R1"] if violation else [])
    quote = _quote(text, RATIONALE_QUOTE_CHARS)
    answer: dict[str, Any] = {
        "violation": violation,
        "policy_category": answer_category,
        "rule_ids": rules,
        "confidence": directive.confidence or heuristic_confidence(text, effort, seed),
        "rationale": (
            f'Violates {category} policy: "{quote}"' if violation else f'No {category} rule applies to "{quote}"'
        ),
    }
    reasoning = _reasoning(text, category, trigger, answer, effort, seed)
    return Plan(answer, reasoning, category, text, directive.fault, directive.delay_ms or 0)


def script(
    policy: str,
    post: str,
    effort: str,
    seed: int,
    *,
    rate_fault: str | None = None,
    max_tokens: int | None = None,
) -> Outcome:
    """The scripted completion for one request.

    `rate_fault` is the fault drawn from the configured rates; a directive's `fault=` (even
    `fault=none`) replaces it. Raises DirectiveError for a malformed directive. A multi-policy
    prompt (worker/multipolicy.py layout) gets one answer per policy section in one completion.
    """
    sections = split_sections(policy)
    if sections is not None:
        return _script_multi(sections, post, effort, seed, rate_fault, max_tokens)
    p = plan(policy, post, effort, seed)
    fault = p.fault if p.fault is not None else rate_fault
    return _finish(p.answer, p.answer, p.reasoning, p.category, p.text, effort, seed, fault, p.delay_ms, max_tokens)


def _script_multi(
    sections: list[tuple[str, str]],
    post: str,
    effort: str,
    seed: int,
    rate_fault: str | None,
    max_tokens: int | None,
) -> Outcome:
    """Assumption (documented in docs/judges.md): the model reasons about each policy about as long
    as it would alone, so reasoning tokens add up; one fault, if any, hits the whole completion."""
    plans = [plan(prompt, post, effort, seed) for _, prompt in sections]
    combined = {"results": {pid: p.answer for (pid, _), p in zip(sections, plans, strict=True)}}
    reasoning = " ".join(f"Policy {pid}: {p.reasoning}" for (pid, _), p in zip(sections, plans, strict=True))
    pinned = next((p.fault for p in plans if p.fault is not None), None)
    fault = pinned if pinned is not None else rate_fault
    delay_ms = max(p.delay_ms for p in plans)
    first = plans[0]
    return _finish(combined, first.answer, reasoning, "multiple", first.text, effort, seed, fault, delay_ms, max_tokens)


def _finish(
    shown: dict[str, Any],
    answer: dict[str, Any],
    reasoning: str,
    category: str,
    text: str,
    effort: str,
    seed: int,
    fault: str | None,
    delay_ms: int,
    max_tokens: int | None,
) -> Outcome:
    """Serialise `shown` as the content, then act out the fault and the length limit."""
    full = json.dumps(shown)
    content: str | None = full
    finish: FinishReason = "stop"
    fault = None if fault == "none" else fault
    variant = stable_hash(seed, "variant", text, effort)
    if fault == "truncate":
        finish = "length"
        if variant % 2 == 0:
            content = cut_tokens(full, max(1, count_tokens(full) // 2))
        else:
            reasoning, content = cut_tokens(reasoning, count_tokens(reasoning) // 2), None
    elif fault == "invalid_json":
        content = _invalid_json(answer, category, variant % 3)
    elif fault == "empty":
        content = ""
    outcome = Outcome(answer, reasoning, content, finish, fault, delay_ms)
    return apply_max_tokens(outcome, max_tokens)
