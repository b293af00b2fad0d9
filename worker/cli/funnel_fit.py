"""`modstream funnel fit`: fit a logistic head per policy over the funnel's own signals."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from funnel import DEFAULT_MODEL_DIR, Funnel
from funnel.calibrate import file_sha256, holdout_report, pick_thresholds, split_labeled
from funnel.embed import load_embedder
from funnel.heads import HEADS_NAME, Features, fit_heads, model_sha256, save_heads, with_thresholds
from worker.cli.funnel_common import (
    DRY_RUN_OPTION,
    ENGINE_OPTION,
    HOLDOUT_OPTION,
    POLICIES_OPTION,
    SEED_OPTION,
    holdout_json,
    load_audit_files,
    load_labeled_files,
    load_policies,
    output_option,
    print_holdout,
    target_recall_option,
    thresholds_for,
)
from worker.policies.screening import specs_from_policies


def _features(funnel: Funnel, texts: Sequence[str], console: Console) -> tuple[Features, np.ndarray]:
    vectors: list[np.ndarray] = []
    signals: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    with Progress(
        TextColumn("features"), BarColumn(), MofNCompleteColumn(), console=console, disable=not console.is_terminal
    ) as progress:
        task = progress.add_task("features", total=len(texts))
        for start in range(0, len(texts), 1024):
            part, old = funnel.features(texts[start : start + 1024])
            vectors.append(part.vectors)
            signals.append(part.signals)
            scores.append(old)
            progress.update(task, advance=len(part.vectors))
    return Features(np.concatenate(vectors), np.concatenate(signals)), np.concatenate(scores)


@click.command("fit")
@POLICIES_OPTION
@click.option(
    "--labeled",
    "labeled_paths",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help='JSONL {"id","text","labels":{policy_id: 0|1}} per line; repeat for several files.',
)
@click.option(
    "--from-audit",
    "audit_paths",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Audit records (`modstream audit export`): the judges' answers as labels; repeat for several files.",
)
@HOLDOUT_OPTION
@click.option(
    "--calib",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0.05, 0.5),
    help="Share kept for picking the L2 strength and the thresholds (not for the weights).",
)
@SEED_OPTION
@target_recall_option("Recall each head's threshold must reach on the calibration split.")
@output_option(f"Heads file to write [default: <policies>/{HEADS_NAME}].")
@click.option(
    "--report-json", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Also write figures."
)
@click.option(
    "--few-positives-margin",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.0, 10.0),
    help="Log-odds a head's threshold is lowered by when its calibration split has too few positives for the target.",
)
@DRY_RUN_OPTION
@ENGINE_OPTION
def fit_command(
    policies_dir: Path,
    labeled_paths: tuple[Path, ...],
    audit_paths: tuple[Path, ...],
    holdout: float,
    calib: float,
    seed: int,
    target_recall: float,
    output_path: Path | None,
    report_json: Path | None,
    few_positives_margin: float,
    dry_run: bool,
    engine: str,
) -> None:
    """Fit a logistic head per policy over the funnel's own signals (embedding, exemplar
    similarity, keyword/pattern hits, today's score) on the train split, pick its threshold for
    TARGET_RECALL on the calibration split, report recall and benign pass rate on the held-out
    split (never fitted on), against today's scoring; write the heads beside the thresholds.

    With --from-audit the labels are the judges' own answers on your traffic (docs/funnel.md,
    "The judge as teacher"): only candidates and bypass samples are judged, so keep a bypass
    sample rate on, or the heads only learn what the funnel already flagged."""
    if not labeled_paths and not audit_paths:
        raise click.UsageError("give labelled posts: --labeled FILE and/or --from-audit FILE")
    policy_set = load_policies(policies_dir)
    specs = specs_from_policies(policy_set.policies, thresholds_for(policies_dir))
    ids = [s.id for s in specs]
    console = Console(stderr=True)
    posts = load_labeled_files(labeled_paths, ids) if labeled_paths else []
    if audit_paths:
        posts += load_audit_files(audit_paths, ids, console)
    if not posts:
        raise click.ClickException("no labelled posts: the audit records hold no valid judge answer")
    splits = split_labeled(posts, seed, calib, holdout)
    console.print(
        f"{len(posts)} labelled posts, {splits.duplicates} duplicates dropped ({splits.conflicts} with other labels); "
        f"train {len(splits.train)}, calib {len(splits.calib)}, held out {len(splits.test)} (seed {seed})"
    )
    # Scores only (no language routing): the heads learn from the funnel's signals.
    funnel = Funnel(specs, embedder=load_embedder(DEFAULT_MODEL_DIR), engine=engine)
    ordered = [*splits.train, *splits.calib, *splits.test]
    features, old_scores = _features(funnel, [p.text for p in ordered], console)
    names = ["train"] * len(splits.train) + ["calib"] * len(splits.calib) + ["test"] * len(splits.test)
    violates = np.array([[p.labels.get(pid) == 1 for pid in ids] for p in ordered], dtype=bool)
    known = np.array([[pid in p.labels for pid in ids] for p in ordered], dtype=bool)
    model_hash = model_sha256(DEFAULT_MODEL_DIR)
    heads, reports = fit_heads(
        features, violates, known, names, ids, {s.id: s.fingerprint() for s in specs}, model_hash
    )
    for r in reports:
        console.print(
            f"head {r.policy_id}: {r.train_positives} +/{r.train_negatives} − on train, L2 {r.lam:g}, "
            f"calibration AUC {r.calib_auc:.3f}"
        )
    skipped = [pid for pid in ids if pid not in heads.policy_ids]
    if skipped:
        console.print(f"[yellow]no head[/] (too few labelled posts on train): {', '.join(skipped)}")
    # Head probabilities for every post: a funnel with the (threshold-less) heads attached.
    headed = Funnel(specs, embedder=funnel.embedder, engine=engine, heads=heads)
    head_cols = [headed.policy_ids.index(pid) for pid in headed.headed_policies]
    head_idx = [heads.policy_ids.index(pid) for pid in headed.headed_policies]
    new_scores = old_scores.copy()
    new_scores[:, head_cols] = heads.probabilities(features, head_cols, head_idx)
    n_train, n_calib = len(splits.train), len(splits.calib)
    calib_slice = slice(n_train, n_train + n_calib)
    test_slice = slice(n_train + n_calib, len(ordered))
    picked = pick_thresholds(new_scores[calib_slice], splits.calib, ids, target_recall, few_positives_margin)
    # A policy without a head (or without calibration positives) keeps today's threshold and score.
    thresholds = {s.id: (picked[s.id] if s.id in heads.policy_ids and s.id in picked else s.threshold) for s in specs}
    report = holdout_report(
        new_scores[calib_slice], splits.calib, new_scores[test_slice], splits.test, ids, thresholds, target_recall
    )
    baseline = holdout_report(
        old_scores[calib_slice],
        splits.calib,
        old_scores[test_slice],
        splits.test,
        ids,
        {s.id: s.threshold for s in specs},
        target_recall,
    )
    out = Console(width=max(Console().width, 160))
    print_holdout(
        out, f"today's scoring at the current thresholds, held-out split ({len(splits.test)} posts)", baseline
    )
    print_holdout(out, f"learned heads, thresholds for recall {target_recall:g} on the calibration split", report)
    data_digest = hashlib.sha256()
    for path in (*labeled_paths, *audit_paths):
        data_digest.update(file_sha256(path).encode())
    meta: dict[str, Any] = {
        "generated_by": "modstream funnel fit",
        "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "data_files": {path.name: file_sha256(path) for path in labeled_paths},
        "audit_files": {path.name: file_sha256(path) for path in audit_paths},
        "data_sha256": data_digest.hexdigest(),
        "seed": seed,
        "split": {
            "calib": calib,
            "holdout": holdout,
            "train_posts": n_train,
            "calib_posts": n_calib,
            "holdout_posts": len(splits.test),
            "duplicates_dropped": splits.duplicates,
        },
        "target_recall": target_recall,
        "few_positives_margin": few_positives_margin,
        "policy_versions": {p.id: p.version for p in policy_set.policies if p.id in heads.policy_ids},
        "lambdas": {r.policy_id: r.lam for r in reports},
        "holdout": holdout_json(report),
        "holdout_baseline": holdout_json(baseline),
    }
    final = with_thresholds(heads, thresholds, meta)
    if report_json is not None:
        report_json.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if dry_run:
        return
    target = output_path or policies_dir / HEADS_NAME
    save_heads(target, final)
    out.print(f"heads for {len(final.policy_ids)} policies written to {target} ({target.stat().st_size:,} bytes)")
