"""`modstream funnel evaluate`: recall and benign pass rate at the current thresholds."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from funnel.calibrate import evaluate
from worker.cli.funnel_common import (
    EMBEDDINGS_OPTION,
    ENGINE_OPTION,
    HEADS_OPTION,
    LABELED_OPTION,
    POLICIES_OPTION,
    build,
    load_labeled_files,
    load_policies,
    print_evaluation,
    sidecar_option,
    thresholds_for,
)
from worker.policies.screening import specs_from_policies


@click.command("evaluate")
@POLICIES_OPTION
@LABELED_OPTION
@sidecar_option("Use the calibrated thresholds in funnel-thresholds.yaml (else the front matter's).")
@HEADS_OPTION
@EMBEDDINGS_OPTION
@ENGINE_OPTION
def evaluate_command(
    policies_dir: Path, labeled_path: Path, sidecar: bool, heads: bool, embeddings: bool, engine: str
) -> None:
    """Recall and benign pass rate at the current thresholds (sidecar or front matter)."""
    thresholds = thresholds_for(policies_dir, sidecar)
    specs = specs_from_policies(load_policies(policies_dir).policies, thresholds)
    posts = load_labeled_files([labeled_path], [s.id for s in specs])
    funnel = build(specs, embeddings, engine, None, policies_dir if heads else None)
    scores = funnel.score_matrix([p.text for p in posts])
    evaluation = evaluate(scores, posts, funnel.policy_ids, funnel.thresholds.tolist())
    console = Console()
    kind = "calibrated" if thresholds else "front-matter"
    if funnel.headed_policies:
        kind += f" thresholds and fitted heads ({len(funnel.headed_policies)}), operating"
    table = Table(title=f"funnel at {kind} thresholds ({labeled_path.name})")
    for column in ("policy", "threshold", "recall"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for spec, threshold in zip(specs, funnel.thresholds.tolist(), strict=True):
        recall = evaluation.per_policy_recall.get(spec.id)
        head = " (head)" if spec.id in funnel.headed_policies else ""
        table.add_row(spec.id + head, f"{threshold:.4f}", "-" if recall is None else f"{recall:.3f}")
    console.print(table)
    print_evaluation(console, evaluation)
