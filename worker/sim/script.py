"""What the simulated judge answers: pure, deterministic functions of policy, post, effort and seed.

No I/O here, so the whole behaviour (directives, heuristic, faults, truncation, response_format,
logprob probabilities) is unit-tested without a server. Tokens are o200k_harmony tokens
(worker/sim/tokens.py), and a completion is laid out as gpt-oss writes it in harmony: an analysis
message (the reasoning), then the final message (the content), then `<|return|>`.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Literal

from worker.judges.multipolicy import split_sections

from . import tokens
from .directives import DirectiveError, parse_post, stable_hash
from .harmony import analysis_header, final_header, return_token
from .reading import Match, find_frame, nearest_example
from .triggers import find_trigger

FinishReason = Literal["stop", "length"]


# Reasoning length per effort, in o200k tokens: roughly what gpt-oss spends on a short post.
REASONING_TOKENS: dict[str, int] = {"low": 60, "medium": 150, "high": 400}
RATIONALE_QUOTE_CHARS = 40
REASONING_QUOTE_CHARS = 200

# The probability of the `violation` digit being 1 when no directive pins it, from the confidence.
P_VIOLATION_BY_CONFIDENCE: dict[str, float] = {"high": 0.97, "medium": 0.8, "low": 0.6}
ANSWER_FIELDS = ("violation", "policy_category", "rule_ids", "confidence", "rationale")

_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
# `policy_category is "a", "b" or "c"` (also `must be`, `one of`, `policy_category: "a" | "b"`) in the
# OUTPUT FORMAT section; the JSON template line (`"policy_category": str|null`) does not match.
_CATEGORY_LIST_RE = re.compile(
    r'policy_category\b(?:\s+(?:is|must be|can be)(?:\s+one of)?\s*:?|\s*:)\s*((?:"[^"\n]+"(?:\s*(?:,|or|\||/)\s*)?)+)'
)
_QUOTED_RE = re.compile(r'"([^"\n]+)"')
# An example answer: `→ {...}` (or -> / =>) on one line.
_EXAMPLE_ANSWER_RE = re.compile(r"(?:→|->|=>)\s*(\{[^{}\n]*\})")


def _sections(policy: str) -> list[tuple[str, str]]:
    """(heading text, body up to the next heading) for each Markdown heading of the policy."""
    heads = list(_HEADING_RE.finditer(policy))
    return [
        (m.group(1), policy[m.end() : heads[i + 1].start() if i + 1 < len(heads) else len(policy)])
        for i, m in enumerate(heads)
    ]


@cache
def policy_categories(policy: str) -> tuple[str, ...]:
    """The policy_category values the policy's `## OUTPUT FORMAT` section allows, in order
    (`policy_category is "spam", "scam" or "phishing"`). Empty when the section lists none."""
    for heading, body in _sections(policy):
        if not heading.strip().upper().startswith("OUTPUT FORMAT"):
            continue
        match = _CATEGORY_LIST_RE.search(body)
        if match:
            return tuple(_QUOTED_RE.findall(match.group(1)))
    return ()


def policy_category(policy: str) -> str | None:
    """The category a violation is filed under: the first one the OUTPUT FORMAT section allows,
    None when it lists none (never a heading: a title says nothing about the allowed values)."""
    categories = policy_categories(policy)
    return categories[0] if categories else None


@cache
def example_answer_keys(policy: str) -> tuple[str, ...] | None:
    """The keys of the answers the policy's examples show (`→ {"violation": 1, "rule_ids": [...]}`),
    when no example shows all five fields: a model that is not held to the schema copies that
    shape. None when the examples show full answers, or show none."""
    shapes: list[tuple[str, ...]] = []
    for match in _EXAMPLE_ANSWER_RE.finditer(policy):
        try:
            data = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "violation" in data:
            shapes.append(tuple(data))
    if not shapes or any(set(ANSWER_FIELDS) <= set(shape) for shape in shapes):
        return None
    return shapes[0]




def heuristic_confidence(text: str, effort: str, seed: int) -> str:
    """Stable in the text: ~80/15/5 % high/medium/low at low effort; never low at high effort."""
    bucket = stable_hash(seed, "confidence", text) % 100
    high_below, medium_below = {"low": (80, 95), "medium": (85, 97), "high": (90, 100)}.get(effort, (80, 95))
    if bucket < high_below:
        return "high"
    return "medium" if bucket < medium_below else "low"


def p_violation_for(violation: int, confidence: str) -> float:
    """P(violation digit = 1) when no directive pins it: the confidence, read as a probability."""
    p = P_VIOLATION_BY_CONFIDENCE.get(confidence, P_VIOLATION_BY_CONFIDENCE["medium"])
    return p if violation else round(1.0 - p, 10)


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


def _finding(trigger: str | None, frame: str | None, match: Match | None) -> str:
    """One sentence of the reasoning: what decided the answer."""
    if match is not None:
        kind = "a violating" if match.example.violation else "a safe"
        return f'It reads like {kind} example of the policy: "{_quote(match.example.text, 60)}".'
    if trigger and frame:
        return f'The phrase "{trigger}" appears, but framed by "{frame}": a mention, not a use.'
    if trigger:
        return f'The phrase "{trigger}" appears; the policy lists this as violating.'
    return "Nothing in it matches the violating examples."


def _reasoning_ids(
    text: str, category: str | None, finding: str, answer: dict[str, Any], effort: str, seed: int
) -> tuple[int, ...]:
    """The analysis text in tokens: REASONING_TOKENS[effort] of them (more if the quote and the
    finding alone are longer)."""
    subject = f"the {category} category" if category else "this policy"
    opening = f'The user posted: "{_quote(text, REASONING_QUOTE_CHARS)}". Checking it against {subject}.'
    closing = tokens.encode(f" So violation={answer['violation']} with {answer['confidence']} confidence.")
    target = REASONING_TOKENS.get(effort, REASONING_TOKENS["medium"])
    head = tokens.encode(f"{opening} {finding}")
    room = target - len(head) - len(closing)
    filler: list[int] = []
    rng = random.Random(stable_hash(seed, "reasoning", text, effort))
    while len(filler) < room:
        filler.extend(tokens.encode(" " + rng.choice(_FILLER)))
    return head + tuple(filler[: max(0, room)]) + closing


def _invalid_json(answer: dict[str, Any], category: str | None, variant: int) -> str:
    """Three kinds of garbage a model emits; none of them validates as a JudgeAnswer."""
    if variant == 0:
        verdict = "breaks" if answer["violation"] else "does not break"
        return f"Looking at this post, it {verdict} the {category or 'content'} policy. Final answer: see above."
    if variant == 1:
        return json.dumps(answer)[:-1].rsplit(",", 1)[0] + ', "confidence": '  # unterminated object
    return json.dumps({"verdict": "violation" if answer["violation"] else "safe", "score": 0.5})


def _off_schema(answer: dict[str, Any], natural_keys: tuple[str, ...] | None, variant: int) -> dict[str, Any]:
    """Valid JSON that fails the answer schema, as gpt-oss writes when response_format is not
    enforced: the policy examples' short shape, or (variant) two fields only, or a numeric confidence.
    The `"violation": <digit>` stays in every shape, so its logprob can still be read."""
    if natural_keys is not None:
        return {k: answer[k] for k in natural_keys if k in answer}
    if variant % 2 == 0:
        return {"violation": answer["violation"], "rule_ids": answer["rule_ids"]}
    return {**answer, "confidence": P_VIOLATION_BY_CONFIDENCE.get(answer["confidence"], 0.8)}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One scripted completion, in tokens. `fault` "5xx"/"timeout" are acted out by the server.

    The completion is `analysis_header + reasoning_ids [+ final_header + content_ids] [+ <|return|>]`;
    `header_ids` counts how much of the final header was generated when the output was cut inside
    it (then `content_ids` is None)."""

    answer: dict[str, Any]  # what the model "meant" (JudgeAnswer-shaped), before faults and cuts
    reasoning_ids: tuple[int, ...]
    content_ids: tuple[int, ...] | None  # None: the final channel was never reached
    finish_reason: FinishReason
    fault: str | None
    delay_ms: int
    # P(digit = 1) for each `"violation": <digit>` of the content, in order (the logprobs use them).
    p_violations: tuple[float, ...] = ()
    # The final content was held to a JSON grammar (response_format given and enforced).
    constrained: bool = False
    partial_header: int = 0

    @property
    def reasoning(self) -> str:
        return tokens.decode(self.reasoning_ids)

    @property
    def content(self) -> str | None:
        return None if self.content_ids is None else tokens.decode(self.content_ids)

    @property
    def completion_ids(self) -> tuple[int, ...]:
        ids = analysis_header() + self.reasoning_ids
        if self.content_ids is not None:
            ids += final_header() + self.content_ids
        else:
            ids += final_header()[: self.partial_header]
        if self.finish_reason == "stop":
            ids += (return_token(),)
        return ids

    @property
    def completion_tokens(self) -> int:
        return len(self.completion_ids)

    @property
    def reasoning_tokens(self) -> int:
        return len(self.reasoning_ids)


def apply_max_tokens(outcome: Outcome, max_tokens: int | None) -> Outcome:
    """Cut the output after `max_tokens` tokens like vLLM: inside the analysis (no content at all),
    inside the final header (no content either) or inside the content; finish_reason "length"."""
    if max_tokens is None or outcome.completion_tokens <= max_tokens:
        return outcome
    n = max_tokens - len(analysis_header())
    r = len(outcome.reasoning_ids)
    if n <= r:
        return replace(outcome, reasoning_ids=outcome.reasoning_ids[: max(0, n)], content_ids=None,
                       partial_header=0, finish_reason="length")  # fmt: skip
    n -= r
    header = len(final_header())
    if n < header or outcome.content_ids is None:
        return replace(outcome, content_ids=None, partial_header=min(n, header), finish_reason="length")
    return replace(outcome, content_ids=outcome.content_ids[: n - header], finish_reason="length")


@dataclass(frozen=True, slots=True)
class Plan:
    """What the model "means" for one policy, before faults and length cuts."""

    answer: dict[str, Any]
    reasoning_ids: tuple[int, ...]
    category: str | None
    text: str
    fault: str | None  # pinned by a directive (None: not pinned; "none": pinned clean)
    delay_ms: int
    p_violation: float
    natural_keys: tuple[str, ...] | None  # the answer shape the policy's examples teach, if short


def plan(policy: str, post: str, effort: str, seed: int) -> Plan:
    """The scripted answer for one policy. Directives in the policy text are defaults that the
    post's directives override (so a test can script a whole policy version, e.g. for eval --compare)."""
    parsed = parse_post(post)
    directive = parsed.directive_for(effort)
    if "[[sim:" in policy.lower():
        directive = parse_post(policy).directive_for(effort).merged(directive)
    text = parsed.text or post
    trigger = find_trigger(parsed.text, policy)
    # The policy's own labelled texts first; else a trigger word, unless its frame makes it a mention.
    match = nearest_example(policy, parsed.text)
    frame = find_frame(parsed.text) if trigger and match is None else None
    category = policy_category(policy)
    heuristic = match.example.violation if match is not None else int(trigger is not None and frame is None)
    violation = directive.violation if directive.violation is not None else heuristic
    if directive.p_violation is not None:
        from_p = int(directive.p_violation >= 0.5)
        if directive.violation is not None and directive.violation != from_p:
            raise DirectiveError(
                f"p_violation={directive.p_violation} means violation={from_p} (1 iff p >= 0.5), "
                f"but the directive also says violation={directive.violation}"
            )
        violation = from_p
    # A violation that matches a violating example is filed as that example is (category, rules).
    taught = match.example if match is not None and match.example.violation and violation else None
    default_category = (taught.policy_category or category) if taught else category if violation else None
    answer_category = directive.category if directive.category_set else default_category
    default_rules = list(taught.rule_ids) if taught and taught.rule_ids else ["R1"] if violation else []
    rules = list(directive.rule_ids) if directive.rule_ids is not None else default_rules
    quote = _quote(text, RATIONALE_QUOTE_CHARS)
    filed = f" ({answer_category})" if answer_category else ""
    confidence = directive.confidence or heuristic_confidence(text, effort, seed)
    answer: dict[str, Any] = {
        "violation": violation,
        "policy_category": answer_category,
        "rule_ids": rules,
        "confidence": confidence,
        "rationale": f'Violates the policy{filed}: "{quote}"' if violation else f'No rule applies to "{quote}"',
    }
    p = directive.p_violation if directive.p_violation is not None else p_violation_for(violation, confidence)
    reasoning = _reasoning_ids(text, category, _finding(trigger, frame, match), answer, effort, seed)
    return Plan(answer, reasoning, category, text, directive.fault, directive.delay_ms or 0, p,
                example_answer_keys(policy))  # fmt: skip


def script(
    policy: str,
    post: str,
    effort: str,
    seed: int,
    *,
    rate_fault: str | None = None,
    max_tokens: int | None = None,
    response_format: str | None = "json_schema",
) -> Outcome:
    """The scripted completion for one request.

    `rate_fault` is the fault drawn from the configured rates; a directive's `fault=` (even
    `fault=none`) replaces it. Raises DirectiveError for a malformed directive. A multi-policy
    prompt (worker/judges/multipolicy.py layout) gets one answer per policy section in one completion.
    `response_format` is the request's `response_format.type` (None when absent; the default is
    what the worker sends): "json_schema" holds the content to the answer schema after the
    reasoning, unless the fault is "unenforced" or "invalid_json" (vLLM #23120).
    """
    sections = split_sections(policy)
    prompts = [prompt for _, prompt in sections] if sections else [policy]
    plans = [plan(prompt, post, effort, seed) for prompt in prompts]
    pinned = next((p.fault for p in plans if p.fault is not None), None)
    fault = pinned if pinned is not None else rate_fault
    fault = None if fault == "none" else fault
    first = plans[0]
    variant = stable_hash(seed, "variant", first.text, effort)
    enforced = response_format == "json_schema" and fault not in ("unenforced", "invalid_json")

    def shaped(p: Plan) -> dict[str, Any]:
        if fault == "unenforced":
            return _off_schema(p.answer, p.natural_keys, variant)
        if enforced or p.natural_keys is None:
            return p.answer
        return {k: p.answer[k] for k in p.natural_keys if k in p.answer}

    if sections:
        # Assumption (documented in docs/judges.md): the model reasons about each policy about as long
        # as it would alone, so reasoning tokens add up; one fault, if any, hits the whole completion.
        shown: dict[str, Any] = {"results": {pid: shaped(p) for (pid, _), p in zip(sections, plans, strict=True)}}
        reasoning: tuple[int, ...] = ()
        for (pid, _), p in zip(sections, plans, strict=True):
            reasoning += tokens.encode(f"Policy {pid}: " if not reasoning else f" Policy {pid}: ") + p.reasoning_ids
        category: str | None = "multiple"
    else:
        shown, reasoning, category = shaped(first), first.reasoning_ids, first.category
    full_content = json.dumps(shown)
    content: str | None = full_content
    finish: FinishReason = "stop"
    if fault == "truncate":
        finish = "length"
        if variant % 2 == 0:
            full = tokens.encode(full_content)
            content = tokens.decode(full[: max(1, len(full) // 2)])
        else:
            reasoning, content = reasoning[: len(reasoning) // 2], None
    elif fault == "invalid_json":
        content = _invalid_json(first.answer, category, variant % 3)
    elif fault == "empty":
        content = ""
    outcome = Outcome(
        answer=first.answer,
        reasoning_ids=reasoning,
        content_ids=None if content is None else tokens.encode(content),
        finish_reason=finish,
        fault=fault,
        delay_ms=max(p.delay_ms for p in plans),
        p_violations=tuple(p.p_violation for p in plans),
        constrained=enforced or (response_format == "json_object" and fault not in ("unenforced", "invalid_json")),
    )
    return apply_max_tokens(outcome, max_tokens)
