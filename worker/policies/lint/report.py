"""Lint findings, the body-length bounds, and the report the command prints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class LintFinding:
    path: Path
    policy_id: str | None
    severity: LintSeverity
    code: str
    message: str
    line: int | None = None


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
