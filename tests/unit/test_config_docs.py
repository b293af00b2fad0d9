"""docs/configuration.md lists every setting: a new field without a row fails here."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from worker.config import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def setting_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths += setting_paths(kind, f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


def documented_paths(markdown: str) -> set[str]:
    """Names in the first cell of each table row; `a.x` / `y` means a.x and a.y, `a.*` all of a."""
    names: set[str] = set()
    for line in markdown.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        prefix = ""
        for token in re.findall(r"`([^`]+)`", first_cell):
            if "." in token:
                prefix = token.rsplit(".", 1)[0] + "."
                names.add(token)
            else:
                names.add(prefix + token)
    return names


def is_documented(path: str, documented: set[str]) -> bool:
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    return path in documented or (parent != "" and f"{parent}.*" in documented)


def test_every_setting_has_a_row_in_the_configuration_docs() -> None:
    documented = documented_paths(DOC.read_text(encoding="utf-8"))
    missing = [path for path in setting_paths(Settings) if not is_documented(path, documented)]
    assert missing == [], f"add these settings to docs/configuration.md: {missing}"


def test_the_check_notices_a_missing_row() -> None:
    documented = documented_paths("| `kafka.group_id` / `batch_size` | x |\n| `judge_t2.*` | y |\n")
    assert is_documented("kafka.batch_size", documented)
    assert is_documented("judge_t2.model", documented)
    assert not is_documented("kafka.bootstrap_servers", documented)
    assert not is_documented("max_attempts", documented)
