"""Example answers checked against what the worker accepts (a model copies the examples it sees)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from worker.contracts import JudgeAnswer
from worker.policies.lint.template import ANSWER_FIELDS, Example, normalise_text


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
