"""`modstream funnel calibrate`: pick thresholds for a target recall and write the sidecar."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from funnel import DEFAULT_MODEL_DIR
from funnel.calibrate import calibrate, evaluate, file_sha256, holdout_report, split_labeled, write_sidecar
from worker.cli.funnel_common import (
    DRY_RUN_OPTION,
    EMBEDDINGS_OPTION,
    ENGINE_OPTION,
    LABELED_OPTION,
    POLICIES_OPTION,
    SEED_OPTION,
    build,
    load_labeled_files,
    load_policies,
    output_option,
    print_evaluation,
    print_holdout,
    target_recall_option,
)
from worker.policies.screening import specs_from_policies


@click.command("calibrate")
@POLICIES_OPTION
@LABELED_OPTION
@target_recall_option("Recall of violating posts each policy's threshold must reach on the labelled file.")
@output_option("Sidecar to write [default: <policies>/funnel-thresholds.yaml].")
@DRY_RUN_OPTION
@click.option(
    "--holdout",
    default=0.3,
    show_default=True,
    type=click.FloatRange(0.0, 0.5),
    help="Share of the (deduplicated) posts kept aside: thresholds are picked on the rest, figures "
    "reported on this part (0: report on the calibration posts themselves, optimistic).",
)
@SEED_OPTION
@EMBEDDINGS_OPTION
@ENGINE_OPTION
def calibrate_command(
    policies_dir: Path,
    labeled_path: Path,
    target_recall: float,
    output_path: Path | None,
    dry_run: bool,
    holdout: float,
    seed: int,
    embeddings: bool,
    engine: str,
) -> None:
    """Pick each policy's threshold for TARGET_RECALL on labelled posts and report how many
    benign posts still pass, on a held-out split; write the thresholds to the sidecar file."""
    specs = specs_from_policies(load_policies(policies_dir).policies)
    all_posts = load_labeled_files([labeled_path], [s.id for s in specs])
    splits = split_labeled(all_posts, seed, 0.0, holdout)
    posts = splits.train
    if not posts:
        raise click.ClickException(f"{labeled_path} holds no posts to calibrate on")
    funnel = build(specs, embeddings, engine)
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
    print_evaluation(console, evaluation)
    if splits.test:
        test_scores = funnel.score_matrix([p.text for p in splits.test])
        held = holdout_report(
            scores,
            posts,
            test_scores,
            splits.test,
            funnel.policy_ids,
            {c.policy_id: c.threshold for c in calibrations},
            target_recall,
        )
        print_holdout(
            Console(width=max(console.width, 160)),
            f"held-out split ({len(splits.test)} posts, seed {seed}): thresholds above, never fitted on these",
            held,
        )
        evaluation = evaluate(test_scores, splits.test, funnel.policy_ids, [c.threshold for c in calibrations])
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
