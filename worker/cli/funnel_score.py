"""`modstream funnel score`: score JSONL posts, one result line per post."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from funnel.language import LanguageConfig
from worker.cli.funnel_common import (
    EMBEDDINGS_OPTION,
    ENGINE_OPTION,
    HEADS_OPTION,
    POLICIES_OPTION,
    build,
    load_policies,
    sidecar_option,
    thresholds_for,
)
from worker.policies.screening import specs_from_policies


def _batches(lines: IO[bytes], size: int, errors: list[str]) -> Iterator[list[tuple[str, str, str | None]]]:
    """(id, text, lang) batches; malformed lines are reported in `errors` and skipped."""
    batch: list[tuple[str, str, str | None]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            post = orjson.loads(line)
            lang = post.get("lang")
            batch.append((str(post.get("id", number)), str(post["text"]), lang if isinstance(lang, str) else None))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            errors.append(f"line {number}: {type(exc).__name__}: {exc}")
            continue
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


@click.command("score")
@POLICIES_OPTION
@click.option("--input", "input_path", default="-", show_default=True, help="JSONL posts, or - for stdin.")
@click.option("--output", "output_path", default="-", show_default=True, help="JSONL results, or - for stdout.")
@click.option(
    "--batch-size",
    default=512,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Posts scored per call (the embedding stage is batched).",
)
@EMBEDDINGS_OPTION
@sidecar_option("Apply calibrated thresholds from <policies>/funnel-thresholds.yaml.")
@HEADS_OPTION
@ENGINE_OPTION
@click.option(
    "--languages/--no-languages",
    "language_step",
    default=True,
    show_default=True,
    help="Language step: posts in languages the funnel cannot read become candidates per the policies' "
    '`languages:` rules (a post\'s own "lang" field wins over detection).',
)
@click.option(
    "--readable",
    default="en",
    show_default=True,
    help="Comma-separated language codes the funnel may screen alone (the worker's `languages.readable`).",
)
def score_command(
    policies_dir: Path,
    input_path: str,
    output_path: str,
    batch_size: int,
    embeddings: bool,
    sidecar: bool,
    heads: bool,
    engine: str,
    language_step: bool,
    readable: str,
) -> None:
    """Score posts ({"id","text",...} per line); one result line per post:
    {"id","candidate","policies","scores","signals","very_sure","lang","route"}."""
    policy_set = load_policies(policies_dir)
    thresholds = thresholds_for(policies_dir, sidecar)
    try:
        codes = frozenset(code.strip() for code in readable.split(",") if code.strip())
        languages = LanguageConfig(readable=codes) if language_step else None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    funnel = build(
        specs_from_policies(policy_set.policies, thresholds),
        embeddings,
        engine,
        languages,
        policies_dir if heads else None,
    )
    stderr = Console(stderr=True)
    errors: list[str] = []
    total = _count_lines(Path(input_path)) if input_path != "-" else None
    scored = candidates = 0
    with ExitStack() as stack:
        source: IO[bytes] = sys.stdin.buffer if input_path == "-" else stack.enter_context(Path(input_path).open("rb"))
        sink: IO[bytes] = sys.stdout.buffer if output_path == "-" else stack.enter_context(Path(output_path).open("wb"))
        progress = stack.enter_context(
            Progress(
                TextColumn("scoring"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=stderr,
                disable=not stderr.is_terminal,
                transient=False,
            )
        )
        task = progress.add_task("scoring", total=total)
        for batch in _batches(source, batch_size, errors):
            results = funnel.score_batch([text for _, text, _ in batch], [lang for _, _, lang in batch])
            out: list[bytes] = []
            for (post_id, _, _), result in zip(batch, results, strict=True):
                row: dict[str, Any] = {
                    "id": post_id,
                    "candidate": result.is_candidate,
                    "policies": result.candidates,
                    "scores": result.scores,
                    "signals": result.signals,
                    "very_sure": result.very_sure,
                    "lang": result.lang,
                    "route": result.route,
                }
                out.append(orjson.dumps(row))
                candidates += result.is_candidate
            sink.write(b"\n".join(out) + b"\n")
            scored += len(batch)
            progress.update(task, advance=len(batch))
        sink.flush()
    for error in errors[:20]:
        stderr.print(f"[yellow]skipped[/] {error}")
    share = f"{candidates / scored:.1%}" if scored else "-"
    stderr.print(f"scored {scored} posts, {candidates} candidates ({share}), {len(errors)} malformed lines skipped")
