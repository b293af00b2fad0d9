"""`worker.policies.lint`: one purpose-built bad policy directory per defect class (tests/data/bad_policies/).

Each case directory is the clean `ok/` fixture with exactly one defect, so the expected findings
are asserted exactly: the right code, the right severity, and nothing else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.judges.tokens import count_tokens
from worker.policies.files import parse_policy
from worker.policies.lint import (
    DEFAULT_TOKEN_BOUNDS,
    Example,
    LintFinding,
    TokenBounds,
    check_example_answer,
    format_findings,
    has_errors,
    lint_policy_dir,
    main,
    output_categories,
    parse_examples,
    parse_token_range,
    split_sections,
    token_bounds,
)

BAD = Path(__file__).resolve().parents[2] / "data" / "bad_policies"

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
    # An answer without "violation" is also missing the other fields a model would copy.
    "example-unlabelled": [(E, "example-answer-incomplete"), (W, "example-unlabelled")],
    "example-answer-incomplete": [(E, "example-answer-incomplete")],
    "example-answer-invalid": [(E, "example-answer-invalid")],
    "example-answer-no-rule": [(E, "example-answer-no-rule")],
    "example-answer-category": [(E, "example-answer-category")],
    "output-format-not-at-top": [(E, "output-format-not-at-top")],
    "output-format-not-before-examples": [(E, "output-format-not-before-examples")],
    # The layout the policies had before: format stated once, after EXAMPLES; two-field examples.
    "legacy-layout": [(E, "example-answer-incomplete")] * 4
    + [(E, "output-format-not-at-top"), (E, "output-format-not-before-examples")],
    "unknown-rule-id": [(W, "unknown-rule-id")],
    "rules-without-ids": [(W, "rules-without-ids")],
    "section-order": [(W, "section-order")],
    "severe-category-unknown": [(W, "severe-category-unknown")],
    "thresholds-inverted": [(W, "thresholds-inverted")],
    "shadow-of-unknown": [(E, "shadow-of-unknown")],
    "action-unreachable": [(W, "action-unreachable")],
    "severe-action-mild": [(W, "severe-action-mild")],
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


def test_count_tokens_is_the_o200k_harmony_tokenizer() -> None:
    import quicktok

    from worker.judges.tokens import ENCODING

    encoding = quicktok.get_encoding(ENCODING)
    # o200k ids (tiktoken's o200k_base gives the same; cl100k would give [9906, 11, 1917, 0]).
    assert encoding.encode("Hello, world!") == [13225, 11, 2375, 0]
    assert encoding.n_vocab == 201_088  # o200k_base plus the harmony special tokens
    assert encoding.encode("<|start|>", allowed_special="all") == [200006]
    assert count_tokens("") == 0
    assert count_tokens("Hello, world!") == 4
    # Harmony's control tokens in a post or policy are plain text, never a single special token.
    assert count_tokens("<|end|>") > 1


def test_doctored_two_field_example_is_caught() -> None:
    # The acceptance case of the issue: an example whose answer has only two of the five fields.
    path = BAD / "example-answer-incomplete" / "policy.md"
    (finding,) = lint_policy_dir(path.parent)
    assert (finding.severity, finding.code) == ("error", "example-answer-incomplete")
    assert finding.line is not None
    line = path.read_text().splitlines()[finding.line - 1]
    assert line.endswith('{"violation": 1, "rule_ids": ["CG1"]}')
    assert "policy_category, confidence, rationale" in finding.message
    assert main([str(path.parent)]) == 1


def _example(answer: str) -> Example:
    return Example(line=1, content="x", label=None, rule_ids=(), section="EXAMPLES", answer=answer)


FULL = {"violation": 1, "policy_category": "a", "rule_ids": ["X1"], "confidence": "high", "rationale": "Why."}
SAFE = {"violation": 0, "policy_category": None, "rule_ids": [], "confidence": "high", "rationale": "Why not."}


@pytest.mark.parametrize(
    ("answer", "codes"),
    [
        (FULL, []),
        (SAFE, []),
        ({**FULL, "rule_ids": ["X1", "X9"]}, []),  # unknown ids alone are the unknown-rule-id warning
        ({"violation": 1, "rule_ids": ["X1"]}, ["example-answer-incomplete"]),
        ({"violation": 0, "confidence": "high"}, ["example-answer-incomplete"]),
        ({**FULL, "confidence": "certain"}, ["example-answer-invalid"]),
        ({**FULL, "violation": 2}, ["example-answer-invalid"]),
        ({**FULL, "violation": True}, ["example-answer-invalid"]),
        ({**FULL, "violation": "1"}, ["example-answer-invalid"]),  # strict: the digit, not a string
        ({**FULL, "rule_ids": "X1"}, ["example-answer-invalid"]),
        ({**FULL, "rationale": " "}, ["example-answer-invalid"]),
        ({**SAFE, "policy_category": "a"}, ["example-answer-invalid"]),
        ({**SAFE, "rule_ids": ["X1"]}, ["example-answer-invalid"]),
        ({**FULL, "rule_ids": []}, ["example-answer-no-rule"]),
        ({**FULL, "rule_ids": ["X9"]}, ["example-answer-no-rule"]),
        ({**FULL, "policy_category": "b"}, ["example-answer-category"]),
        ({**FULL, "policy_category": None}, ["example-answer-category"]),
        ({**FULL, "policy_category": "A"}, []),  # matched case-insensitively, like severe_categories
    ],
)
def test_check_example_answer(answer: dict[str, object], codes: list[str]) -> None:
    import json

    problems = check_example_answer(_example(json.dumps(answer)), {"X1", "X2"}, ("a",))
    assert [code for code, _ in problems] == codes, problems


def test_check_example_answer_rejects_what_is_not_a_json_object() -> None:
    assert [c for c, _ in check_example_answer(_example("{violation: 1}"))] == ["example-answer-invalid"]
    assert [c for c, _ in check_example_answer(_example("[1]"))] == ["example-answer-invalid"]


def test_rule_and_category_checks_only_apply_when_the_policy_defines_them() -> None:
    import json

    answer = _example(json.dumps({**FULL, "rule_ids": [], "policy_category": "anything"}))
    assert check_example_answer(answer) == []


def test_output_categories_come_from_the_output_format_clause() -> None:
    body = (
        '## INSTRUCTIONS\nSay "hello".\n'
        '{"violation": 0|1, "policy_category": str|null, "rule_ids": [...], "confidence": "low"|"high"}\n'
        "## OUTPUT FORMAT\n"
        '{"violation": 0|1, "policy_category": str|null, "confidence": "low"|"medium"|"high"}\n'
        'policy_category is "spam", "scam" or “phishing” (null when 0); rationale is "short".\n'
    )
    assert output_categories(split_sections(body)) == ("spam", "scam", "phishing")
    assert output_categories(split_sections("## OUTPUT FORMAT\nAnswer yes or no.\n")) == ()


def test_shipped_layout_states_the_format_at_the_top_and_before_examples() -> None:
    # The `ok` fixture follows the layout the shipped policies use; moving its OUTPUT FORMAT to
    # right after INSTRUCTIONS (and dropping the skeleton from INSTRUCTIONS) is allowed too, as
    # long as the format is stated again right before EXAMPLES.
    text = (BAD / "ok" / "counterfeit-goods.md").read_text()
    policy = parse_policy(text.encode(), BAD / "ok" / "counterfeit-goods.md")
    keys = [s.key for s in split_sections(policy.prompt)]
    assert keys == ["INSTRUCTIONS", "DEFINITIONS", "VIOLATES", "SAFE", "OUTPUT FORMAT", "EXAMPLES"]


def test_token_bounds_are_configurable(tmp_path: Path) -> None:
    ok = BAD / "ok"
    tokens = count_tokens(parse_policy((ok / "counterfeit-goods.md").read_bytes(), ok).prompt)
    assert DEFAULT_TOKEN_BOUNDS.warn_min <= tokens <= DEFAULT_TOKEN_BOUNDS.warn_max
    # The guide's 400-600 sweet spot as the warning band: this fixture is above it.
    strict = token_bounds("400-600") if tokens > 600 else token_bounds(f"400-{tokens - 1}")
    (finding,) = lint_policy_dir(ok, strict)
    assert (finding.severity, finding.code) == ("warning", "body-long")
    assert f"body is {tokens} o200k tokens" in finding.message
    (finding,) = lint_policy_dir(
        ok, TokenBounds(error_min=tokens + 1, warn_min=tokens + 1, warn_max=5000, error_max=5000)
    )
    assert (finding.severity, finding.code) == ("error", "body-too-short")
    assert lint_policy_dir(ok, token_bounds(error=f"{tokens}-{tokens}", warn=f"{tokens}-{tokens}")) == []


def test_token_range_parsing() -> None:
    assert parse_token_range("400-600") == (400, 600)
    with pytest.raises(ValueError, match="MIN-MAX"):
        parse_token_range("600")
    with pytest.raises(ValueError, match="MIN-MAX"):
        parse_token_range("a-b")
    with pytest.raises(ValueError, match="error_min <= warn_min"):
        token_bounds(warn="100-600")  # below the default error minimum
    assert token_bounds() == DEFAULT_TOKEN_BOUNDS


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
    # --tokens-warn narrows the band: the ok fixture then warns (exit 0, warnings only).
    assert main(["--tokens-warn", "400-401", str(BAD / "ok")]) == 0
    assert "[body-long]" in capsys.readouterr().out
    assert main(["--tokens-error", "250-260", str(BAD / "ok")]) == 2  # warn band outside error band
    assert main(["--tokens-warn", "400-401", "--tokens-error", "250-401", str(BAD / "ok")]) == 1
    assert "[body-too-long]" in capsys.readouterr().out


def test_cli_policy_lint_and_policy_tokens() -> None:
    from click.testing import CliRunner

    from worker.cli.main import cli

    runner = CliRunner()
    ok = BAD / "ok"
    result = runner.invoke(cli, ["policy", "lint", str(ok)])
    assert (result.exit_code, result.output.strip()) == (0, "no problems found")
    result = runner.invoke(cli, ["policy", "lint", "--tokens-warn", "400-401", str(ok)])
    assert result.exit_code == 0 and "[body-long]" in result.output
    result = runner.invoke(cli, ["policy", "lint", "--tokens-error", "250-401", "--tokens-warn", "400-401", str(ok)])
    assert result.exit_code == 1 and "[body-too-long]" in result.output
    result = runner.invoke(cli, ["policy", "lint", "--tokens-warn", "600", str(ok)])
    assert result.exit_code == 2 and "MIN-MAX" in result.output
    result = runner.invoke(cli, ["policy", "lint", str(BAD / "example-answer-incomplete")])
    assert result.exit_code == 1 and "[example-answer-incomplete]" in result.output

    body = parse_policy((ok / "counterfeit-goods.md").read_bytes(), ok).prompt
    tokens = count_tokens(body)
    answers = sum(count_tokens(" " + e.answer) for e in parse_examples(split_sections(body)))
    assert 4 * 30 <= answers <= 4 * 50  # four five-field answers
    result = runner.invoke(cli, ["policy", "tokens", str(ok)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "policy              body  answers",
        f"counterfeit-goods  {tokens:>5}  {answers:>7}",
        f"1 policies: body {tokens}-{tokens} o200k tokens (mean {tokens}), "
        f"{tokens - answers}-{tokens - answers} without the example answers",
    ]
    result = runner.invoke(cli, ["policy", "tokens", str(BAD / "duplicate-id")])
    assert result.exit_code == 1 and "duplicate policy id" in result.output
