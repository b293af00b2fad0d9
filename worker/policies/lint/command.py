"""`python -m worker.policies.lint`: the linter without the `modstream` command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from worker.policies.lint.directory import lint_policy_dir
from worker.policies.lint.report import DEFAULT_TOKEN_BOUNDS, format_findings, has_errors, token_bounds


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
