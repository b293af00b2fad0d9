"""`modstream policy lint`: static checks on a directory of policy files.

Pure functions over the file bytes and the parsed `Policy`; no I/O except reading the files in
`lint_policy_dir`. Every finding has a stable `code` (tests and CI scripts match on it) and a
severity: an *error* means the policy set should not ship (the CLI exits 1), a *warning* means it
will work but is probably not what the author meant. The checks and their codes are documented in
docs/writing-policies.md ("Linting").

Conventions the checks rely on (the shipped policies follow them):

* Template sections are Markdown headings whose text starts with INSTRUCTIONS, DEFINITIONS,
  VIOLATES, SAFE, OUTPUT FORMAT, EXAMPLES (any heading level, case-insensitive).
* The answer format is *stated* where a section is the OUTPUT FORMAT section or holds a JSON
  skeleton naming all five answer fields. OpenAI's gpt-oss-safeguard guide asks for it near the
  top (in INSTRUCTIONS, or the section right after it) and again right before EXAMPLES.
* A labelled example is one line: ``Content: "<text>" → {<the full five-field answer>}`` (``->`` and
  ``=>`` work as the arrow too; a leading ``-`` or ``*`` bullet is allowed). The answer must be one
  the worker accepts (`worker.contracts.JudgeAnswer`, validated strictly, all five fields present):
  the model copies the examples, so a partial answer there becomes an invalid answer in production.
* Rule ids are upper-case letters followed by digits (``SP1``, ``HT2``, ``H2.f``) at the start of a
  bullet in the VIOLATES section, optionally in bold.
* The allowed ``policy_category`` values are the quoted strings of the OUTPUT FORMAT clause that
  names ``policy_category`` (`output_categories`).
* Length is counted in o200k_harmony tokens, the tokenizer gpt-oss uses (`worker.judges.tokens`).
"""

from __future__ import annotations

import json
import re
import string
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from worker.contracts import JudgeAnswer
from worker.judges.tokens import count_tokens
from worker.policies.files import Policy, PolicyError, parse_policy, policy_files

LintSeverity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class TokenBounds:
    """o200k token bounds for a policy body (the prompt after the front matter).

    OpenAI's gpt-oss-safeguard guide finds 400-600 tokens of policy the sweet spot, measured on a
    template whose examples answer a bare 0 or 1. Ours show the full five-field answer the worker
    requires (35-45 tokens each) and state the format twice, as the guide asks: that adds about
    200-300 tokens to the same policy, so the default warning band is 400-900. Outside 250-2,000
    the body is an error: below 250 the bare template (the format twice, two five-field examples,
    one rule) leaves no room for rules; above 2,000 every post pays for a prompt the model attends
    to poorly. All four bounds are settable (`modstream policy lint --tokens-warn 400-600
    --tokens-error 250-2000`).
    """

    error_min: int = 250
    warn_min: int = 400
    warn_max: int = 900
    error_max: int = 2000

    def __post_init__(self) -> None:
        if not 0 <= self.error_min <= self.warn_min <= self.warn_max <= self.error_max:
            raise ValueError(
                "token bounds must satisfy 0 <= error_min <= warn_min <= warn_max <= error_max, got "
                f"{self.error_min}, {self.warn_min}, {self.warn_max}, {self.error_max}"
            )


DEFAULT_TOKEN_BOUNDS = TokenBounds()

# Template sections in the order the shipped policies use: OpenAI's gpt-oss-safeguard guide
# (INSTRUCTIONS, DEFINITIONS, VIOLATES, SAFE, EXAMPLES), with the output format stated in
# INSTRUCTIONS and again, in full, right before EXAMPLES. `section-order` checks the five
# required sections; where OUTPUT FORMAT may go is checked by the output-format-* codes.
REQUIRED_SECTIONS: tuple[str, ...] = ("INSTRUCTIONS", "DEFINITIONS", "VIOLATES", "SAFE", "EXAMPLES")
OUTPUT_SECTION = "OUTPUT FORMAT"
TEMPLATE_ORDER: tuple[str, ...] = ("INSTRUCTIONS", "DEFINITIONS", "VIOLATES", "SAFE", OUTPUT_SECTION, "EXAMPLES")
# The fields of `JudgeAnswer`. Some have defaults there, but a policy asks for all five and every
# example shows all five: a model copies what it sees.
ANSWER_FIELDS: tuple[str, ...] = ("violation", "policy_category", "rule_ids", "confidence", "rationale")

_HEADING_RE = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
_EXAMPLE_RE = re.compile(
    r"""^\s*(?:[-*]\s+)?(?:\*\*)?Content(?:\*\*)?\s*:\s*["“](?P<content>.*?)["”]\s*(?:→|->|=>)\s*"""
    r"""(?P<answer>\{.*\})\s*$""",
    re.IGNORECASE,
)
_LABEL_RE = re.compile(r'"violation"\s*:\s*(?P<label>[01])\b')
_RULE_IDS_RE = re.compile(r'"rule_ids"\s*:\s*\[(?P<ids>[^\]]*)\]')
_QUOTED_RE = re.compile(r'"([^"\n]+)"|“([^”\n]+)”')
_RULE_DEF_RE = re.compile(r"^\s*(?:[-*]|\d+[.)])?\s*(?:\*\*)?(?P<id>[A-Z]{1,6}\d+(?:\.[A-Za-z0-9]+)?)\b")
_JSON_SKELETON_RE = re.compile(r"\{[^{}]*\}", re.DOTALL)
_CLAUSE_SPLIT_RE = re.compile(r"[;\n]")
_STRIP_CHARS = string.punctuation + string.whitespace + "“”‘’«»…"


@dataclass(frozen=True, slots=True)
class LintFinding:
    path: Path
    policy_id: str | None
    severity: LintSeverity
    code: str
    message: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """One template section of a policy body: its canonical key, heading line and text."""

    key: str | None  # one of TEMPLATE_ORDER, or None for any other heading
    title: str
    level: int
    line: int  # 1-based line number of the heading in the file
    lines: tuple[tuple[int, str], ...]  # (file line number, text) of the section's content

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.lines)


@dataclass(frozen=True, slots=True)
class Example:
    line: int
    content: str
    label: int | None
    rule_ids: tuple[str, ...]
    section: str | None
    answer: str = ""  # the answer exactly as written after the arrow


def normalise_text(text: str) -> str:
    """For comparing exemplars with examples: NFKC, casefold, collapsed spaces, no edge punctuation."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return folded.strip(_STRIP_CHARS)


def keyword_terms(keyword: str) -> str:
    """The term the funnel's keyword matcher builds: casefolded, non-alphanumerics become spaces."""
    folded = unicodedata.normalize("NFKC", keyword).casefold()
    return " ".join("".join(ch if ch.isalnum() else " " for ch in folded).split())


def _section_key(title: str) -> str | None:
    upper = title.strip().strip("*_` ").upper()
    for key in TEMPLATE_ORDER:
        if upper.startswith(key):
            return key
    if upper.startswith("OUTPUT"):
        return OUTPUT_SECTION
    return None


def split_sections(body: str, first_line: int = 1) -> list[Section]:
    """Split a policy body on Markdown headings; text before the first heading is dropped.

    A sub-heading that is not itself a template heading stays inside the enclosing template
    section (e.g. "### Borderline" under "## EXAMPLES"). Headings inside ``` fences are text.
    """
    sections: list[Section] = []
    # (key, title, level, line) of the open section, and its content lines
    current: tuple[str | None, str, int, int] | None = None
    content: list[tuple[int, str]] = []

    def close() -> None:
        if current is not None:
            key, title, level, line = current
            sections.append(Section(key=key, title=title, level=level, line=line, lines=tuple(content)))

    in_fence = False
    for offset, raw in enumerate(body.splitlines()):
        number = first_line + offset
        if raw.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADING_RE.match(raw)
        if match is not None:
            level = len(match.group("hashes"))
            key = _section_key(match.group("title"))
            nested = current is not None and key is None and current[0] is not None and level > current[2]
            if not nested:
                close()
                current = (key, match.group("title"), level, number)
                content = []
                continue
        if current is not None:
            content.append((number, raw))
    close()
    return sections


def parse_examples(sections: Iterable[Section]) -> list[Example]:
    examples: list[Example] = []
    for section in sections:
        for number, text in section.lines:
            match = _EXAMPLE_RE.match(text)
            if match is None:
                continue
            answer = match.group("answer")
            label_match = _LABEL_RE.search(answer)
            ids_match = _RULE_IDS_RE.search(answer)
            ids = tuple(re.findall(r'"([^"]+)"', ids_match.group("ids"))) if ids_match else ()
            examples.append(
                Example(
                    line=number,
                    content=match.group("content"),
                    label=int(label_match.group("label")) if label_match else None,
                    rule_ids=ids,
                    section=section.key,
                    answer=answer,
                )
            )
    return examples


def states_output_format(section: Section) -> bool:
    """Whether a section states the answer format: it is OUTPUT FORMAT, or it holds a JSON
    skeleton (or a full example answer) naming all five answer fields."""
    if section.key == OUTPUT_SECTION:
        return True
    return any(all(f'"{f}"' in s for f in ANSWER_FIELDS) for s in _JSON_SKELETON_RE.findall(section.text))


def output_categories(sections: Iterable[Section]) -> tuple[str, ...]:
    """The allowed `policy_category` values: the quoted strings of every OUTPUT FORMAT clause (split
    at newlines and semicolons, JSON skeletons removed) that names policy_category.

    'policy_category is "spam" (SP1, SP2), "scam" or "phishing" (null when 0); ...' gives
    ("spam", "scam", "phishing"). Empty when the OUTPUT FORMAT names no values.
    """
    found: dict[str, None] = {}
    for section in sections:
        if section.key != OUTPUT_SECTION:
            continue
        text = _JSON_SKELETON_RE.sub(" ", section.text)
        for clause in _CLAUSE_SPLIT_RE.split(text):
            if "policy_category" not in clause:
                continue
            for a, b in _QUOTED_RE.findall(clause):
                found.setdefault(a or b, None)
    return tuple(found)


def check_example_answer(
    example: Example, rule_ids: Iterable[str] = (), categories: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """`(code, message)` for every way the example's answer would fail, or mislead, the worker.

    `rule_ids`: the ids VIOLATES defines (empty: not checked); `categories`: the allowed
    policy_category values (empty: not checked).
    """
    try:
        data: Any = json.loads(example.answer)
    except ValueError as exc:
        return [("example-answer-invalid", f"the answer is not valid JSON ({exc}): {example.answer}")]
    if not isinstance(data, dict):
        return [("example-answer-invalid", f"the answer is not a JSON object: {example.answer}")]
    problems: list[tuple[str, str]] = []
    missing = [f for f in ANSWER_FIELDS if f not in data]
    if missing:
        problems.append(
            (
                "example-answer-incomplete",
                f"the answer lacks {', '.join(missing)}; show all five fields "
                f"({', '.join(ANSWER_FIELDS)}), since the model answers the way the examples do",
            )
        )
    if isinstance(data.get("violation"), bool):
        # JSON true/false passes the Literal[0, 1] check (True == 1) but is not the digit the
        # format asks for, and the worker reads p_violation from that digit's logprobs.
        problems.append(
            ("example-answer-invalid", f'"violation" is the digit 0 or 1, not {json.dumps(data["violation"])}')
        )
    try:
        answer = JudgeAnswer.model_validate(data, strict=True)
    except ValidationError as exc:
        # A missing field is example-answer-incomplete above; report only wrong values here.
        wrong = [e for e in exc.errors() if e["type"] != "missing"]
        if wrong:
            errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in wrong)
            problems.append(("example-answer-invalid", f"the worker's answer model rejects it ({errors})"))
        return problems
    if missing:
        return problems
    if not answer.rationale.strip():
        problems.append(("example-answer-invalid", "the rationale is empty; show the one short sentence you want"))
    defined = set(rule_ids)
    allowed = {normalise_text(c): c for c in categories}
    if answer.violation == 0:
        if answer.policy_category is not None or answer.rule_ids:
            problems.append(
                (
                    "example-answer-invalid",
                    'a "violation": 0 answer has policy_category null and rule_ids []; this one has '
                    f"{answer.policy_category!r} and {answer.rule_ids}",
                )
            )
        return problems
    if defined and not defined.intersection(answer.rule_ids):
        problems.append(
            (
                "example-answer-no-rule",
                f'a "violation": 1 answer cites at least one VIOLATES rule ({", ".join(sorted(defined))}); '
                f"this one cites {answer.rule_ids}",
            )
        )
    if allowed and (answer.policy_category is None or normalise_text(answer.policy_category) not in allowed):
        problems.append(
            (
                "example-answer-category",
                f"policy_category {answer.policy_category!r} is not one the OUTPUT FORMAT allows "
                f"({', '.join(allowed.values())})",
            )
        )
    return problems


def _body_first_line(data: bytes) -> int:
    """1-based file line number of the first body line `parse_policy` keeps (after the fence)."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    fences = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if len(fences) < 2:
        return 1
    index = fences[1] + 1
    while index < len(lines) and not lines[index].strip():
        index += 1
    return index + 1


def lint_policy(
    policy: Policy, body_first_line: int = 1, token_bounds: TokenBounds = DEFAULT_TOKEN_BOUNDS
) -> list[LintFinding]:
    """All checks that need only one parsed policy (everything except duplicate ids)."""
    findings: list[LintFinding] = []

    def add(severity: LintSeverity, code: str, message: str, line: int | None = None) -> None:
        findings.append(LintFinding(policy.path, policy.id, severity, code, message, line))

    body = policy.prompt
    sections = split_sections(body, body_first_line)
    by_key: dict[str, list[Section]] = {}
    for section in sections:
        if section.key is not None:
            by_key.setdefault(section.key, []).append(section)

    # --- template sections -------------------------------------------------------------
    for key in REQUIRED_SECTIONS:
        if key not in by_key:
            add("error", "missing-section", f'no "## {key}" section (the gpt-oss-safeguard template needs it)')
    present = [s.key for s in sections if s.key in REQUIRED_SECTIONS]
    first_seen = list(dict.fromkeys(present))
    expected = [k for k in REQUIRED_SECTIONS if k in first_seen]
    if first_seen != expected:
        add(
            "warning",
            "section-order",
            f"sections appear as {', '.join(first_seen)}; the template order is {', '.join(expected)}",
        )

    # --- output format ---------------------------------------------------------------------
    output_sections = by_key.get(OUTPUT_SECTION, [])
    if not output_sections:
        add(
            "error",
            "no-output-format",
            'no "## OUTPUT FORMAT" section: state the five-field JSON answer and the allowed policy_category values',
        )
    else:
        text = "\n".join(s.text for s in output_sections)
        missing = [f for f in ANSWER_FIELDS if f not in text]
        if missing:
            add(
                "error",
                "output-format-incomplete",
                f"the OUTPUT FORMAT section does not name {', '.join(missing)}; ask for all five fields "
                f"({', '.join(ANSWER_FIELDS)})",
                output_sections[0].line,
            )
    for code, message, line in _format_placement(sections, bool(output_sections)):
        add("error", code, message, line)

    # --- length (o200k tokens) ---------------------------------------------------------------
    tokens = count_tokens(body)
    bounds = token_bounds
    aim = (
        "the gpt-oss-safeguard guide's sweet spot is 400-600 tokens of policy; "
        f"this linter warns outside {bounds.warn_min}-{bounds.warn_max}"
    )
    if tokens < bounds.error_min:
        add("error", "body-too-short", f"body is {tokens} o200k tokens (< {bounds.error_min}); {aim}")
    elif tokens < bounds.warn_min:
        add("warning", "body-short", f"body is {tokens} o200k tokens (< {bounds.warn_min}); {aim}")
    elif tokens > bounds.error_max:
        add("error", "body-too-long", f"body is {tokens} o200k tokens (> {bounds.error_max}); {aim}")
    elif tokens > bounds.warn_max:
        add("warning", "body-long", f"body is {tokens} o200k tokens (> {bounds.warn_max}); {aim}")

    # --- labels that contradict their section ------------------------------------------------
    for key, wrong in (("VIOLATES", "0"), ("SAFE", "1")):
        for section in by_key.get(key, []):
            for number, text in section.lines:
                for match in _LABEL_RE.finditer(text):
                    if match.group("label") == wrong:
                        add(
                            "error",
                            "example-label-contradiction",
                            f'an example in the {key} section is labelled "violation": {wrong}',
                            number,
                        )

    # --- labelled examples -------------------------------------------------------------------
    examples = parse_examples(sections)
    labelled = [e for e in examples if e.label is not None]
    in_examples = [e for e in labelled if e.section == "EXAMPLES"]
    if "EXAMPLES" in by_key and not {0, 1} <= {e.label for e in in_examples}:
        have = sorted({str(e.label) for e in in_examples}) or ["none"]
        add(
            "warning",
            "examples-one-sided",
            f"EXAMPLES should show both labels (found: {', '.join(have)}); "
            'write lines like Content: "..." → {"violation": 1, ...}',
            by_key["EXAMPLES"][0].line,
        )
    for example in examples:
        if example.label is None:
            add("warning", "example-unlabelled", 'example has no "violation": 0|1 label', example.line)

    seen_labels: dict[str, Example] = {}
    for example in labelled:
        norm = normalise_text(example.content)
        earlier = seen_labels.get(norm)
        if earlier is not None and earlier.label != example.label:
            add(
                "error",
                "conflicting-examples",
                f"the same content is labelled {earlier.label} on line {earlier.line} and {example.label} here",
                example.line,
            )
        seen_labels.setdefault(norm, example)

    # --- rule ids ------------------------------------------------------------------------------
    defined: set[str] = set()
    for section in by_key.get("VIOLATES", []):
        for _, text in section.lines:
            rule = _RULE_DEF_RE.match(text)
            if rule is not None:
                defined.add(rule.group("id"))
    if "VIOLATES" in by_key and not defined:
        add(
            "warning",
            "rules-without-ids",
            "VIOLATES rules carry no ids (e.g. **SP1**), so rule_ids in answers mean nothing",
            by_key["VIOLATES"][0].line,
        )
    elif defined:
        for example in labelled:
            for rule_id in example.rule_ids:
                if rule_id not in defined:
                    add(
                        "warning",
                        "unknown-rule-id",
                        f"example cites {rule_id!r}, which no VIOLATES rule defines",
                        example.line,
                    )

    # --- example answers: what a model copying them would answer --------------------------------
    categories = output_categories(sections)
    for example in examples:
        for code, message in check_example_answer(example, defined, categories):
            add("error", code, message, example.line)

    # --- funnel hints -------------------------------------------------------------------------
    funnel = policy.meta.funnel
    exemplars = {normalise_text(e): e for e in funnel.exemplars}
    for example in labelled:
        if example.label == 0 and normalise_text(example.content) in exemplars:
            add(
                "error",
                "exemplar-labelled-safe",
                f"funnel exemplar {exemplars[normalise_text(example.content)]!r} is an example labelled 0",
                example.line,
            )
    for section in by_key.get("SAFE", []):
        for number, text in section.lines:
            for match in _QUOTED_RE.finditer(text):
                quoted = normalise_text(match.group(1) or match.group(2))
                if quoted in exemplars:
                    add(
                        "error",
                        "exemplar-labelled-safe",
                        f"funnel exemplar {exemplars[quoted]!r} is quoted as SAFE",
                        number,
                    )

    if not funnel.keywords:
        add("warning", "empty-keywords", "funnel.keywords is empty: the keyword stage never selects this policy")
    if not funnel.exemplars:
        add("warning", "empty-exemplars", "funnel.exemplars is empty: the similarity stage has nothing to match")
    terms: dict[str, str] = {}
    for keyword in funnel.keywords:
        term = keyword_terms(keyword)
        if not term:
            add("warning", "keyword-unmatchable", f"keyword {keyword!r} has no letters or digits; it never matches")
        elif term in terms:
            add(
                "warning",
                "keyword-duplicate",
                f"keyword {keyword!r} matches the same words as {terms[term]!r}",
            )
        else:
            terms[term] = keyword
    for pattern in funnel.patterns:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            add("error", "invalid-pattern", f"funnel pattern {pattern!r} does not compile: {exc}")
            continue
        if compiled.search("") is not None:
            add(
                "error",
                "pattern-matches-everything",
                f"funnel pattern {pattern!r} matches the empty string, so every post would be a candidate",
            )
    if funnel.very_sure < funnel.threshold:
        add(
            "warning",
            "thresholds-inverted",
            f"funnel.very_sure ({funnel.very_sure}) is below funnel.threshold ({funnel.threshold})",
        )

    # --- escalation ------------------------------------------------------------------------------
    quoted_names = {normalise_text(a or b) for a, b in _QUOTED_RE.findall(body)}
    for category in policy.meta.escalation.severe_categories:
        if normalise_text(category) not in quoted_names:
            add(
                "warning",
                "severe-category-unknown",
                f'severe category {category!r} is never named in quotes in the body ("{category}"), '
                "so the model has no reason to answer it as policy_category",
            )
    return findings


def _format_placement(sections: Sequence[Section], has_output_section: bool) -> list[tuple[str, str, int | None]]:
    """The guide's rule: the answer format near the top (INSTRUCTIONS or the section right after
    it) and again right before EXAMPLES, two separate statements."""
    keys = [s.key for s in sections]
    if "INSTRUCTIONS" not in keys or "EXAMPLES" not in keys:
        return []  # missing-section says it
    problems: list[tuple[str, str, int | None]] = []
    top = keys.index("INSTRUCTIONS")
    examples = keys.index("EXAMPLES")
    bottom = examples - 1 if examples > 0 else None
    top_candidates = [i for i in (top, top + 1) if i < len(sections) and i != bottom and i != examples]
    if not any(states_output_format(sections[i]) for i in top_candidates):
        problems.append(
            (
                "output-format-not-at-top",
                "state the answer format near the top: end INSTRUCTIONS with the five-field JSON skeleton "
                '({"violation": 0|1, "policy_category": ..., "rule_ids": [...], "confidence": ..., "rationale": ...})',
                sections[top].line,
            )
        )
    # With no OUTPUT FORMAT section at all, no-output-format already says what is missing.
    if has_output_section and (bottom is None or not states_output_format(sections[bottom])):
        problems.append(
            (
                "output-format-not-before-examples",
                "state the answer format again right before EXAMPLES: put the OUTPUT FORMAT section there",
                sections[examples].line,
            )
        )
    return problems


def lint_policy_bytes(
    data: bytes, path: Path, token_bounds: TokenBounds = DEFAULT_TOKEN_BOUNDS
) -> tuple[Policy | None, list[LintFinding]]:
    """Parse one file and lint it; an unparsable file yields one `invalid-policy` error."""
    try:
        policy = parse_policy(data, path)
    except PolicyError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        return None, [LintFinding(path, None, "error", "invalid-policy", message)]
    return policy, lint_policy(policy, _body_first_line(data), token_bounds)


def lint_policy_dir(directory: Path, token_bounds: TokenBounds = DEFAULT_TOKEN_BOUNDS) -> list[LintFinding]:
    """Lint every policy file in `directory` (the same files `load_policy_dir` loads)."""
    if not directory.is_dir():
        return [LintFinding(directory, None, "error", "no-policies", f"{directory} is not a directory")]
    files = policy_files(directory)
    if not files:
        return [LintFinding(directory, None, "error", "no-policies", f"{directory} holds no *.md policy files")]
    findings: list[LintFinding] = []
    seen: dict[str, tuple[Path, Policy]] = {}
    for path in files:
        policy, file_findings = lint_policy_bytes(path.read_bytes(), path, token_bounds)
        findings.extend(file_findings)
        if policy is None:
            continue
        if policy.id in seen:
            findings.append(
                LintFinding(
                    path,
                    policy.id,
                    "error",
                    "duplicate-id",
                    f"policy id {policy.id!r} is also used by {seen[policy.id][0]}",
                )
            )
        else:
            seen[policy.id] = (path, policy)
    findings.extend(_dangling_shadows(seen))
    return findings


def _dangling_shadows(policies: dict[str, tuple[Path, Policy]]) -> list[LintFinding]:
    """A shadow twin must name a live policy of the same directory, or the worker refuses to load it."""
    live = {pid for pid, (_, policy) in policies.items() if not policy.meta.shadow}
    return [
        LintFinding(
            path,
            pid,
            "error",
            "shadow-of-unknown",
            f"shadow_of names {policy.meta.shadow_of!r}, which is not a live policy here (live: {sorted(live)})",
        )
        for pid, (path, policy) in policies.items()
        if policy.meta.shadow_of is not None and policy.meta.shadow_of not in live
    ]


def has_errors(findings: Iterable[LintFinding]) -> bool:
    return any(f.severity == "error" for f in findings)


def format_findings(findings: Sequence[LintFinding]) -> str:
    """One line per finding, `path:line: severity [code] policy: message`, then a summary line."""
    ordered = sorted(
        findings,
        key=lambda f: (str(f.path), f.line or 0, f.severity != "error", f.code),
    )
    lines = []
    for f in ordered:
        where = f"{f.path}:{f.line}" if f.line is not None else str(f.path)
        who = f" {f.policy_id}:" if f.policy_id else ""
        message = f.message.replace("\n", "\n    ")
        lines.append(f"{where}: {f.severity} [{f.code}]{who} {message}")
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    if not findings:
        lines.append("no problems found")
    else:
        lines.append(f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}")
    return "\n".join(lines)


def parse_token_range(text: str) -> tuple[int, int]:
    """ "400-900" -> (400, 900); for `--tokens-warn` / `--tokens-error`."""
    low, sep, high = text.partition("-")
    try:
        if not sep:
            raise ValueError(text)
        return int(low), int(high)
    except ValueError:
        raise ValueError(f"expected a token range MIN-MAX such as 400-900, got {text!r}") from None


def token_bounds(warn: str | None = None, error: str | None = None) -> TokenBounds:
    """Bounds from the command-line ranges; an omitted range keeps its default."""
    d = DEFAULT_TOKEN_BOUNDS
    warn_min, warn_max = parse_token_range(warn) if warn else (d.warn_min, d.warn_max)
    error_min, error_max = parse_token_range(error) if error else (d.error_min, d.error_max)
    return TokenBounds(error_min=error_min, warn_min=warn_min, warn_max=warn_max, error_max=error_max)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m worker.policies.lint [--tokens-warn MIN-MAX] [--tokens-error MIN-MAX] DIR [DIR ...]`: print
    the findings; exit status 1 if any is an error, 2 on a usage error."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m worker.policies.lint", description="Lint policy directories.")
    parser.add_argument("directories", nargs="+", type=Path, metavar="POLICY_DIR")
    parser.add_argument(
        "--tokens-warn",
        help=f"o200k token range outside which the body length warns "
        f"(default {DEFAULT_TOKEN_BOUNDS.warn_min}-{DEFAULT_TOKEN_BOUNDS.warn_max})",
    )
    parser.add_argument(
        "--tokens-error",
        help=f"o200k token range outside which it is an error "
        f"(default {DEFAULT_TOKEN_BOUNDS.error_min}-{DEFAULT_TOKEN_BOUNDS.error_max})",
    )
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        bounds = token_bounds(args.tokens_warn, args.tokens_error)
    except SystemExit as exc:
        return int(exc.code or 0)
    except ValueError as exc:
        print(f"python -m worker.policies.lint: {exc}", file=sys.stderr)
        return 2
    findings = [finding for directory in args.directories for finding in lint_policy_dir(directory, bounds)]
    print(format_findings(findings))
    return 1 if has_errors(findings) else 0


if __name__ == "__main__":
    raise SystemExit(main())
