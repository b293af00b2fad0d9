"""`worker.lint`: one purpose-built bad policy directory per defect class (tests/data/bad_policies/).

Each case directory is the clean `ok/` fixture with exactly one defect, so the expected findings
are asserted exactly: the right code, the right severity, and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.lint import (
    LintFinding,
    approx_tokens,
    format_findings,
    has_errors,
    lint_policy_dir,
    main,
    parse_examples,
    split_sections,
)

BAD = Path(__file__).parent / "data" / "bad_policies"

E, W = "error", "warning"
CASES: dict[str, list[tuple[str, str]]] = {
    "ok": [],
    "invalid-policy": [(E, "invalid-policy")] * 4,
    "duplicate-id": [(E, "duplicate-id")],
    "missing-section": [(E, "missing-section")],
    "no-output-format": [(E, "no-output-format")],
    "output-format-incomplete": [(E, "output-format-incomplete")],
    "body-too-short": [(E, "body-too-short")],
    "body-short": [(W, "body-short")],
    "body-long": [(W, "body-long")],
    "body-too-long": [(E, "body-too-long")],
    "example-label-contradiction": [(E, "example-label-contradiction")],
    "exemplar-labelled-safe": [(E, "exemplar-labelled-safe")] * 2,
    "conflicting-examples": [(E, "conflicting-examples")],
    "invalid-pattern": [(E, "invalid-pattern")],
    "pattern-matches-everything": [(E, "pattern-matches-everything")],
    "empty-funnel": [(W, "empty-exemplars"), (W, "empty-keywords")],
    "keyword-hygiene": [(W, "keyword-duplicate"), (W, "keyword-unmatchable")],
    "examples-one-sided": [(W, "examples-one-sided")],
    "example-unlabelled": [(W, "example-unlabelled")],
    "unknown-rule-id": [(W, "unknown-rule-id")],
    "rules-without-ids": [(W, "rules-without-ids")],
    "section-order": [(W, "section-order")],
    "severe-category-unknown": [(W, "severe-category-unknown")],
    "thresholds-inverted": [(W, "thresholds-inverted")],
    "shadow-of-unknown": [(E, "shadow-of-unknown")],
}


def _summary(findings: list[LintFinding]) -> list[tuple[str, str]]:
    return sorted((f.severity, f.code) for f in findings)


def test_every_fixture_directory_has_a_case() -> None:
    on_disk = {p.name for p in BAD.iterdir() if p.is_dir()}
    assert on_disk == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_policy_case(case: str) -> None:
    findings = lint_policy_dir(BAD / case)
    assert _summary(findings) == sorted(CASES[case]), format_findings(findings)
    for finding in findings:
        assert finding.path.parent == BAD / case
        assert finding.message


def test_errors_and_warnings_drive_has_errors() -> None:
    assert not has_errors(lint_policy_dir(BAD / "ok"))
    assert not has_errors(lint_policy_dir(BAD / "section-order"))  # warnings only
    assert has_errors(lint_policy_dir(BAD / "missing-section"))


def test_invalid_policy_findings_have_no_policy_id_and_name_the_problem() -> None:
    findings = {f.path.name: f for f in lint_policy_dir(BAD / "invalid-policy")}
    assert all(f.policy_id is None for f in findings.values())
    assert "must start with a '---'" in findings["no-front-matter.md"].message
    assert "not UTF-8" in findings["not-utf8.md"].message
    assert "funnel.keywords" in findings["unquoted-number-keyword.md"].message
    assert "severity" in findings["unknown-field.md"].message


def test_duplicate_id_is_reported_on_the_second_file() -> None:
    (finding,) = lint_policy_dir(BAD / "duplicate-id")
    assert finding.path.name == "b-counterfeit-copy.md"
    assert "a-counterfeit.md" in finding.message
    assert finding.policy_id == "counterfeit-goods"


def test_findings_carry_file_line_numbers() -> None:
    path = BAD / "example-label-contradiction" / "policy.md"
    (finding,) = lint_policy_dir(path.parent)
    assert finding.line is not None
    assert '"violation": 0' in path.read_text().splitlines()[finding.line - 1]


def test_missing_and_empty_directories(tmp_path: Path) -> None:
    (missing,) = lint_policy_dir(tmp_path / "nope")
    assert (missing.severity, missing.code) == ("error", "no-policies")
    (tmp_path / "_draft.md").write_text("ignored, like load_policy_dir ignores it")
    (empty,) = lint_policy_dir(tmp_path)
    assert (empty.severity, empty.code) == ("error", "no-policies")


def test_approx_tokens_counts_words_and_punctuation() -> None:
    assert approx_tokens("") == 0
    assert approx_tokens("Hello, world!") == 4
    assert approx_tokens('{"violation": 1}') == 7  # { " violation " : 1 }


def test_split_sections_keeps_non_template_subheadings_inside() -> None:
    body = '## INSTRUCTIONS\nx\n## EXAMPLES\n### Borderline\nContent: "a" -> {"violation": 0}\n## Notes\ny\n'
    sections = split_sections(body, first_line=10)
    assert [(s.key, s.line) for s in sections] == [("INSTRUCTIONS", 10), ("EXAMPLES", 12), (None, 15)]
    (example,) = parse_examples(sections)
    assert (example.label, example.section, example.line, example.content) == (0, "EXAMPLES", 14, "a")


def test_headings_inside_code_fences_are_text() -> None:
    body = "## INSTRUCTIONS\n```\n## SAFE\n```\n"
    assert [s.key for s in split_sections(body)] == ["INSTRUCTIONS"]


def test_format_findings() -> None:
    assert format_findings([]) == "no problems found"
    findings = [
        LintFinding(Path("p/b.md"), "b", "warning", "body-long", "too long"),
        LintFinding(Path("p/a.md"), "a", "error", "missing-section", "no SAFE", line=3),
        LintFinding(Path("p/c.md"), None, "error", "invalid-policy", "invalid front matter:\nline two"),
    ]
    assert format_findings(findings).splitlines() == [
        "p/a.md:3: error [missing-section] a: no SAFE",
        "p/b.md: warning [body-long] b: too long",
        "p/c.md: error [invalid-policy] invalid front matter:",
        "    line two",
        "2 errors, 1 warning",
    ]


def test_main_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(BAD / "ok")]) == 0
    assert "no problems found" in capsys.readouterr().out
    assert main([str(BAD / "section-order")]) == 0
    assert main([str(BAD / "missing-section")]) == 1
    assert "[missing-section]" in capsys.readouterr().out
    assert main([]) == 2
