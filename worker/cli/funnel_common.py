"""What the `modstream funnel` subcommands share: their options (one definition, one help text),
loading the policies and labelled files, building a funnel, and the report lines and tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

from funnel import DEFAULT_MODEL_DIR, Funnel, PolicySpec, load_thresholds
from funnel.calibrate import FRONTIER_TARGETS, Evaluation, HoldoutReport, LabeledPost, check_policy_ids, load_labeled
from funnel.heads import load_heads
from funnel.language import LanguageConfig
from worker.eval.teacher import TeacherReport, labelled_from_audit
from worker.policies.files import PolicyError, PolicySet, load_policy_dir

F = TypeVar("F", bound=Callable[..., Any])
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
HEADS_OPTION = click.option(
    "--heads/--no-heads",
    default=False,
    show_default=True,
    help="Score with the fitted heads of <policies>/funnel-heads.npz, as the worker does (off: today's scoring).",
)
ENGINE_OPTION = click.option(
    "--engine",
    type=ENGINES,
    default="auto",
    show_default=True,
    help="Keyword engine: hyperscan when importable, else pyahocorasick.",
)

SEED_OPTION = click.option("--seed", default=20261204, show_default=True, type=int, help="Seed of the split.")
DRY_RUN_OPTION = click.option("--dry-run", is_flag=True, help="Report only; write nothing.")
HOLDOUT_OPTION = click.option(
    "--holdout",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0.05, 0.5),
    help="Share of the (deduplicated) posts kept aside for the reported figures; never fitted on.",
)


def sidecar_option(help_text: str) -> Callable[[F], F]:
    return click.option("--sidecar/--no-sidecar", default=True, show_default=True, help=help_text)


def target_recall_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--target-recall",
        default=0.98,
        show_default=True,
        type=click.FloatRange(0.0, 1.0, min_open=True),
        help=help_text,
    )


def output_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--output", "output_path", type=click.Path(path_type=Path, dir_okay=False), default=None, help=help_text
    )


def thresholds_for(policies_dir: Path, sidecar: bool = True) -> dict[str, float]:
    """The calibrated thresholds of <policies>/funnel-thresholds.yaml, or none (the front matter's)."""
    try:
        return load_thresholds(policies_dir) if sidecar else {}
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def load_policies(directory: Path) -> PolicySet:
    try:
        return load_policy_dir(directory)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


def build(
    specs: Sequence[PolicySpec],
    embeddings: bool,
    engine: str,
    languages: LanguageConfig | None = None,
    heads_dir: Path | None = None,
) -> Funnel:
    """`languages` None: no language step (scores and thresholds do not depend on it).
    `heads_dir`: use the fitted heads there (as the worker does); needs the embeddings."""
    try:
        heads = load_heads(heads_dir) if heads_dir is not None and embeddings else None
        return Funnel.build(
            specs,
            model_dir=DEFAULT_MODEL_DIR if embeddings else None,
            engine=engine,
            languages=languages,
            heads=heads,
        )
    except (ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc


def load_labeled_files(
    paths: Sequence[Path], policy_ids: Sequence[str], sources: dict[int, str] | None = None
) -> list[LabeledPost]:
    """`sources`, when given, gets `id(post)` -> the name of the file each post came from."""
    posts: list[LabeledPost] = []
    try:
        for path in paths:
            loaded = load_labeled(path)
            check_policy_ids(loaded, policy_ids, str(path))
            posts.extend(loaded)
            if sources is not None:
                sources.update((id(post), path.name) for post in loaded)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if not posts:
        raise click.ClickException("the labelled files hold no posts")
    return posts


def read_json_lines(path: Path) -> list[Any]:
    """Every non-blank line of a JSONL export (verdicts, audit records) parsed; a bad line is a CLI error."""
    records: list[Any] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise click.ClickException(f"{path}:{number}: not JSON ({exc})") from None
    return records


def load_audit_files(paths: Sequence[Path], policy_ids: Sequence[str], console: Console) -> list[LabeledPost]:
    """Audit records as labelled posts (worker/eval/teacher.py), policies outside POLICIES dropped."""
    report = TeacherReport()
    posts: list[LabeledPost] = []
    known = set(policy_ids)
    for path in paths:
        for post in labelled_from_audit(read_json_lines(path), report):
            labels = {pid: v for pid, v in post.labels.items() if pid in known}
            if labels:
                posts.append(LabeledPost(post.id, post.text, labels))
    dropped = ", ".join(f"{n} {why}" for why, n in report.dropped.most_common()) or "none"
    console.print(f"audit: {report.records} records -> {report.posts} labelled posts (dropped: {dropped})")
    for policy_id in sorted(report.labels):
        console.print(f"  {policy_id}: {report.labels[policy_id]} labels, {report.positives[policy_id]} violating")
    return posts


def print_evaluation(console: Console, evaluation: Evaluation) -> None:
    console.print(
        f"{evaluation.posts} posts, {evaluation.violating_posts} violating, {evaluation.benign_posts} benign: "
        f"recall {evaluation.pair_recall:.3f} over (post, policy) pairs, {evaluation.post_recall:.3f} over "
        f"violating posts; {evaluation.benign_filtered:.1%} of benign posts filtered out "
        f"(pass rate {1 - evaluation.benign_filtered:.1%})."
    )


def print_holdout(console: Console, title: str, report: HoldoutReport) -> None:
    table = Table(title=title)
    columns = ("policy", "threshold", "calib +", "recall [95% CI] (hits/n)", "benign pass [95% CI]")
    for column in (*columns, *(f"filtered @{t:g}" for t in FRONTIER_TARGETS)):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for row in report.policies:
        frontier = [f"{row.frontier[t][1]:.1%}" if t in row.frontier else "-" for t in FRONTIER_TARGETS]
        table.add_row(
            row.policy_id,
            f"{row.threshold:.4f}",
            str(row.calib_positives),
            str(row.recall),
            str(row.benign_pass),
            *frontier,
        )
    console.print(table)
    console.print(
        f"overall (held-out): recall of violating posts {report.post_recall}, of (post, policy) pairs "
        f"{report.pair_recall}; benign posts passed to a judge {report.benign_pass}"
    )
    for row in report.policies:
        if row.warning:
            console.print(f"[yellow]warning[/] {row.policy_id}: {row.warning}")


def holdout_json(report: HoldoutReport) -> dict[str, Any]:
    def rate(r: Any) -> dict[str, Any]:
        return {"value": round(r.value, 4), "ci95": [round(r.low, 4), round(r.high, 4)], "hits": r.hits, "n": r.n}

    return {
        "post_recall": rate(report.post_recall),
        "pair_recall": rate(report.pair_recall),
        "benign_pass": rate(report.benign_pass),
        "policies": {
            row.policy_id: {
                "threshold": row.threshold,
                "calib_positives": row.calib_positives,
                "recall": rate(row.recall),
                "benign_pass": rate(row.benign_pass),
                "benign_filtered_at_recall": {
                    str(t): {"recall": round(v[0], 4), "benign_filtered": round(v[1], 4)}
                    for t, v in row.frontier.items()
                },
                **({"warning": row.warning} if row.warning else {}),
            }
            for row in report.policies
        },
    }
