"""The gpt-oss-safeguard policy template as the linter reads it: sections, labelled examples, the
answer format and its categories (conventions in the package docstring, worker/policies/lint/__init__.py)."""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from funnel.normalise import normalise_keyword

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

HEADING_RE = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
EXAMPLE_RE = re.compile(
    r"""^\s*(?:[-*]\s+)?(?:\*\*)?Content(?:\*\*)?\s*:\s*["“](?P<content>.*?)["”]\s*(?:→|->|=>)\s*"""
    r"""(?P<answer>\{.*\})\s*$""",
    re.IGNORECASE,
)
LABEL_RE = re.compile(r'"violation"\s*:\s*(?P<label>[01])\b')
RULE_IDS_RE = re.compile(r'"rule_ids"\s*:\s*\[(?P<ids>[^\]]*)\]')
QUOTED_RE = re.compile(r'"([^"\n]+)"|“([^”\n]+)”')
RULE_DEF_RE = re.compile(r"^\s*(?:[-*]|\d+[.)])?\s*(?:\*\*)?(?P<id>[A-Z]{1,6}\d+(?:\.[A-Za-z0-9]+)?)\b")
JSON_SKELETON_RE = re.compile(r"\{[^{}]*\}", re.DOTALL)
CLAUSE_SPLIT_RE = re.compile(r"[;\n]")
STRIP_CHARS = string.punctuation + string.whitespace + "“”‘’«»…"


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
    return folded.strip(STRIP_CHARS)


def keyword_terms(keyword: str) -> str:
    """The words the funnel's keyword stage matches for a keyword: the funnel's own normalisation
    (`funnel.normalise.normalise_keyword`: folded, leetspeak undone, punctuation to spaces), so two
    keywords the linter calls duplicates are ones the funnel cannot tell apart."""
    return normalise_keyword(keyword)


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
        match = None if in_fence else HEADING_RE.match(raw)
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
            match = EXAMPLE_RE.match(text)
            if match is None:
                continue
            answer = match.group("answer")
            label_match = LABEL_RE.search(answer)
            ids_match = RULE_IDS_RE.search(answer)
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
    return any(all(f'"{f}"' in s for f in ANSWER_FIELDS) for s in JSON_SKELETON_RE.findall(section.text))


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
        text = JSON_SKELETON_RE.sub(" ", section.text)
        for clause in CLAUSE_SPLIT_RE.split(text):
            if "policy_category" not in clause:
                continue
            for a, b in QUOTED_RE.findall(clause):
                found.setdefault(a or b, None)
    return tuple(found)
