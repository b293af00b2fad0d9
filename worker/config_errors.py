"""Configuration errors in one line a person can act on: the bad YAML file, setting or env var."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError
from pydantic_settings import SettingsError


class ConfigError(RuntimeError):
    """Start-up configuration problem; the message names the setting and what to do."""


def check_yaml_file(path: Path) -> None:
    """Raise ConfigError, in one line naming the file, line and column, if the config file is not
    valid YAML or its top level is not a mapping (an empty file is fine: no settings)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc.strerror or exc}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f"line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}: "
        problem = exc.problem or "invalid YAML"
        context = ""
        if exc.context and exc.context_mark is not None:
            mark = exc.context_mark
            context = f" ({exc.context} started at line {mark.line + 1}, column {mark.column + 1})"
        raise ConfigError(f"config file {path}: {where}invalid YAML: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if loaded is not None and not isinstance(loaded, dict):
        kind = "a list" if isinstance(loaded, list) else f"a {type(loaded).__name__}"
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        start = node.start_mark if node is not None else None
        where = f"line {start.line + 1}, column {start.column + 1}" if start is not None else "line 1, column 1"
        raise ConfigError(
            f"config file {path}: {where}: the top level must be a mapping of settings "
            f"(e.g. `kafka:` / `judge_t1:`), not {kind}"
        )


def describe_validation_error(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for err in exc.errors():
        dotted = ".".join(str(part) for part in err["loc"])
        env = "MODSTREAM_" + "__".join(str(part).upper() for part in err["loc"] if isinstance(part, str))
        lines.append(f"  - {dotted} (env {env}): {err['msg']}")
    return "\n".join(lines)


def describe_settings_error(exc: SettingsError) -> str:
    """Name the env vars behind an unparseable value: pydantic-settings only names the top field."""
    field = str(exc).split('field "', 1)[-1].split('"', 1)[0]
    suspects = sorted(var for var in os.environ if var.upper().startswith(f"MODSTREAM_{field.upper()}"))
    cause = f": {exc.__cause__}" if exc.__cause__ else ""
    return (
        f"invalid configuration: cannot parse {', '.join(suspects) or field}{cause}. Settings that hold "
        "lists or mappings take JSON in env vars, e.g. MODSTREAM_JUDGE_T1__BASE_URLS='[\"http://vllm:8000/v1\"]'."
    )
