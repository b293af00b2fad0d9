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
* Keywords are compared in the funnel's own normal form (`funnel.normalise.normalise_keyword`).

Modules: `template` (sections, examples, answer format), `answers` (example answers against
`JudgeAnswer`), `rules` (the checks on one policy), `directory` (files and directories),
`report` (findings, token bounds, the printed report), `command` (`python -m worker.policies.lint`).
"""

from __future__ import annotations

from worker.policies.lint.answers import check_example_answer
from worker.policies.lint.command import main
from worker.policies.lint.directory import lint_policy_bytes, lint_policy_dir
from worker.policies.lint.report import (
    DEFAULT_TOKEN_BOUNDS,
    LintFinding,
    LintSeverity,
    TokenBounds,
    format_findings,
    has_errors,
    parse_token_range,
    token_bounds,
)
from worker.policies.lint.rules import lint_policy
from worker.policies.lint.template import (
    ANSWER_FIELDS,
    Example,
    keyword_terms,
    output_categories,
    parse_examples,
    split_sections,
)

__all__ = [
    "ANSWER_FIELDS",
    "DEFAULT_TOKEN_BOUNDS",
    "Example",
    "LintFinding",
    "LintSeverity",
    "TokenBounds",
    "check_example_answer",
    "format_findings",
    "has_errors",
    "keyword_terms",
    "lint_policy",
    "lint_policy_bytes",
    "lint_policy_dir",
    "main",
    "output_categories",
    "parse_examples",
    "parse_token_range",
    "split_sections",
    "token_bounds",
]
