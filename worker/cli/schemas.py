"""`modstream schemas`: write the JSON Schemas of the message contracts."""

from __future__ import annotations

from pathlib import Path

import click
import orjson


@click.command("schemas")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("schemas"),
    show_default=True,
    help="Directory to write the JSON Schemas into.",
)
def schemas(out_dir: Path) -> None:
    """Write JSON Schemas of the message contracts (Post, Verdict, AuditRecord, JudgeAnswer,
    ReviewRecord, ReviewDecision, Appeal)."""
    from worker.contracts import Appeal, AuditRecord, JudgeAnswer, Post, ReviewDecision, ReviewRecord, Verdict

    out_dir.mkdir(parents=True, exist_ok=True)
    for model in (Post, Verdict, AuditRecord, JudgeAnswer, ReviewRecord, ReviewDecision, Appeal):
        path = out_dir / f"{model.__name__.lower()}.schema.json"
        path.write_bytes(
            orjson.dumps(model.model_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
        click.echo(f"wrote {path}")
