"""The checks on one parsed policy: template, answer format, length, examples, rule ids, funnel hints."""

from __future__ import annotations

import re
from collections.abc import Sequence

from worker.judges.tokens import count_tokens
from worker.policies.files import Policy
from worker.policies.lint.answers import check_example_answer
from worker.policies.lint.report import DEFAULT_TOKEN_BOUNDS, LintFinding, LintSeverity, TokenBounds
from worker.policies.lint.template import (
    ANSWER_FIELDS,
    LABEL_RE,
    OUTPUT_SECTION,
    QUOTED_RE,
    REQUIRED_SECTIONS,
    RULE_DEF_RE,
    Example,
    Section,
    keyword_terms,
    normalise_text,
    output_categories,
    parse_examples,
    split_sections,
    states_output_format,
)


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
                for match in LABEL_RE.finditer(text):
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
            rule = RULE_DEF_RE.match(text)
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
            for match in QUOTED_RE.finditer(text):
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
    quoted_names = {normalise_text(a or b) for a, b in QUOTED_RE.findall(body)}
    for category in policy.meta.escalation.severe_categories:
        if normalise_text(category) not in quoted_names:
            add(
                "warning",
                "severe-category-unknown",
                f'severe category {category!r} is never named in quotes in the body ("{category}"), '
                "so the model has no reason to answer it as policy_category",
            )

    # --- action (docs/workflow.md, "Verdicts") ---------------------------------------------------
    meta = policy.meta
    reachable = {meta.severity} | ({"severe"} if meta.escalation.severe_categories else set())
    if isinstance(meta.action, dict):
        for severity in sorted(set(meta.action) - reachable):
            add(
                "warning",
                "action-unreachable",
                f"action names severity {severity!r}, which this policy's results never have (they are "
                f"{' or '.join(sorted(reachable))}: the policy's severity, or severe for a severe category)",
            )
    if "severe" in reachable and meta.action_for("severe") in ("label", "age_gate"):
        add(
            "warning",
            "severe-action-mild",
            f"a severe violation is only {meta.action_for('severe')!r}: it stays visible; use hide, or review "
            "for a human to decide first",
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
