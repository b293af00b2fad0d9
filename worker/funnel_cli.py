"""`modstream funnel score|calibrate`: run the funnel on JSONL posts without Kafka.

modstream funnel score --policies policies --input posts.jsonl --output scored.jsonl
modstream funnel calibrate --policies policies --labeled datasets/funnel_dev.jsonl --target-recall 0.98
modstream funnel evaluate --policies policies --labeled datasets/eval_sample.jsonl
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from funnel import DEFAULT_MODEL_DIR, Funnel, PolicySpec, load_thresholds
from funnel.calibrate import Evaluation, calibrate, evaluate, file_sha256, load_labeled, write_sidecar
from worker.funnel import specs_from_policies
from worker.policies import PolicyError, PolicySet, load_policy_dir

ENGINES = click.Choice(["auto", "hyperscan", "pyahocorasick"])
# Options shared by the subcommands (one definition, one help text).
POLICIES_OPTION = click.option(
    "--policies",
    "policies_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory of policy *.md files (their `funnel:` front matter; thresholds from funnel-thresholds.yaml).",
)
LABELED_OPTION = click.option(
    "--labeled",
    "labeled_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help='JSONL: {"id","text","labels":{policy_id: 0|1}} per line.',
)
EMBEDDINGS_OPTION = click.option(
    "--embeddings/--no-embeddings",
    default=True,
    show_default=True,
    help="Include the embedding stage (off: keywords and patterns only).",
)
ENGINE_OPTION = click.option(
    "--engine",
    type=ENGINES,
    default="auto",
    show_default=True,
    help="Keyword engine: hyperscan when importable, else pyahocorasick.",
)


def _load_policies(directory: Path) -> PolicySet:
    try:
        return load_policy_dir(directory)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


def _build(specs: Sequence[PolicySpec], embeddings: bool, engine: str) -> Funnel:
    try:
        return Funnel.build(specs, model_dir=DEFAULT_MODEL_DIR if embeddings else None, engine=engine)
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc


def _batches(lines: IO[bytes], size: int, errors: list[str]) -> Iterator[list[tuple[str, str]]]:
    """(id, text) batches; malformed lines are reported in `errors` and skipped."""
    batch: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            post = orjson.loads(line)
            batch.append((str(post.get("id", number)), str(post["text"])))
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


@click.group("funnel")
def funnel_group() -> None:
    """The funnel on its own: score posts, calibrate thresholds."""


@funnel_group.command("score")
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
@click.option(
    "--sidecar/--no-sidecar",
    default=True,
    show_default=True,
    help="Apply calibrated thresholds from <policies>/funnel-thresholds.yaml.",
)
@ENGINE_OPTION
def score_command(
    policies_dir: Path,
    input_path: str,
    output_path: str,
    batch_size: int,
    embeddings: bool,
    sidecar: bool,
    engine: str,
) -> None:
    """Score posts ({"id","text",...} per line); one result line per post:
    {"id","candidate","policies","scores","signals","very_sure"}."""
    policy_set = _load_policies(policies_dir)
    try:
        thresholds = load_thresholds(policies_dir) if sidecar else {}
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    funnel = _build(specs_from_policies(policy_set.policies, thresholds), embeddings, engine)
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
            results = funnel.score_batch([text for _, text in batch])
            out: list[bytes] = []
            for (post_id, _), result in zip(batch, results, strict=True):
                row: dict[str, Any] = {
                    "id": post_id,
                    "candidate": result.is_candidate,
                    "policies": result.candidates,
                    "scores": result.scores,
                    "signals": result.signals,
                    "very_sure": result.very_sure,
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


def _report(console: Console, evaluation: Evaluation) -> None:
    console.print(
        f"{evaluation.posts} posts, {evaluation.violating_posts} violating, {evaluation.benign_posts} benign: "
        f"recall {evaluation.pair_recall:.3f} over (post, policy) pairs, {evaluation.post_recall:.3f} over "
        f"violating posts; {evaluation.benign_filtered:.1%} of benign posts filtered out "
        f"(pass rate {1 - evaluation.benign_filtered:.1%})."
    )


@funnel_group.command("evaluate")
@POLICIES_OPTION
@LABELED_OPTION
@click.option(
    "--sidecar/--no-sidecar",
    default=True,
    show_default=True,
    help="Use the calibrated thresholds in funnel-thresholds.yaml (else the front matter's).",
)
@EMBEDDINGS_OPTION
@ENGINE_OPTION
def evaluate_command(policies_dir: Path, labeled_path: Path, sidecar: bool, embeddings: bool, engine: str) -> None:
    """Recall and benign pass rate at the current thresholds (sidecar or front matter)."""
    try:
        thresholds = load_thresholds(policies_dir) if sidecar else {}
        posts = load_labeled(labeled_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    specs = specs_from_policies(_load_policies(policies_dir).policies, thresholds)
    funnel = _build(specs, embeddings, engine)
    scores = funnel.score_matrix([p.text for p in posts])
    evaluation = evaluate(scores, posts, funnel.policy_ids, [s.threshold for s in specs])
    console = Console()
    table = Table(title=f"funnel at {'calibrated' if thresholds else 'front-matter'} thresholds ({labeled_path.name})")
    for column in ("policy", "threshold", "recall"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for spec in specs:
        recall = evaluation.per_policy_recall.get(spec.id)
        table.add_row(spec.id, f"{spec.threshold:.4f}", "-" if recall is None else f"{recall:.3f}")
    console.print(table)
    _report(console, evaluation)


@funnel_group.command("calibrate")
@POLICIES_OPTION
@LABELED_OPTION
@click.option(
    "--target-recall",
    default=0.98,
    show_default=True,
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Recall of violating posts each policy's threshold must reach on the labelled file.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Sidecar to write [default: <policies>/funnel-thresholds.yaml].",
)
@click.option("--dry-run", is_flag=True, help="Report only; write nothing.")
@EMBEDDINGS_OPTION
@ENGINE_OPTION
def calibrate_command(
    policies_dir: Path,
    labeled_path: Path,
    target_recall: float,
    output_path: Path | None,
    dry_run: bool,
    embeddings: bool,
    engine: str,
) -> None:
    """Pick each policy's threshold for TARGET_RECALL on labelled posts and report how many
    benign posts still pass; write the thresholds to the sidecar file."""
    specs = specs_from_policies(_load_policies(policies_dir).policies)
    try:
        posts = load_labeled(labeled_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if not posts:
        raise click.ClickException(f"{labeled_path} holds no posts")
    funnel = _build(specs, embeddings, engine)
    scores = funnel.score_matrix([p.text for p in posts])
    calibrations = calibrate(scores, posts, specs, target_recall)
    evaluation = evaluate(scores, posts, funnel.policy_ids, [c.threshold for c in calibrations])

    console = Console()
    table = Table(title=f"funnel calibration, target recall {target_recall:g} ({labeled_path.name})")
    for column in ("policy", "threshold", "positives", "recall", "benign pass rate"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for c in calibrations:
        threshold = f"{c.threshold:.4f}" if c.calibrated else f"{c.threshold:.4f} (kept: no positives)"
        table.add_row(c.policy_id, threshold, str(c.positives), f"{c.recall:.3f}", f"{c.benign_pass_rate:.3f}")
    console.print(table)
    _report(console, evaluation)
    if dry_run:
        return
    model_sha = file_sha256(DEFAULT_MODEL_DIR / "model.safetensors") if embeddings else None
    written = write_sidecar(
        policies_dir,
        calibrations,
        data_file=labeled_path,
        data_sha256=file_sha256(labeled_path),
        target_recall=target_recall,
        evaluation=evaluation,
        model_sha256=model_sha,
        path=output_path,
    )
    console.print(f"thresholds written to {written}")
