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
from funnel.calibrate import LabeledPost, Rate, file_sha256, holdout_report, pick_thresholds, split_labeled
from funnel.embed import load_embedder
from funnel.heads import (
    HEAD,
    HEADS_NAME,
    Features,
    ScorerChoice,
    choose_scorer,
    fit_heads,
    model_sha256,
    save_heads,
    with_thresholds,
)
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
    TARGET_RECALL on the calibration split, and per policy keep today's scoring instead when it
    reaches that recall there with no more benign calibration posts passed than the head (the
    choice is recorded in the file; the worker follows it). Report recall and benign pass rate
    on the held-out split (never fitted or chosen on), against today's scoring; write the heads
    beside the thresholds.

    With --from-audit the labels are the judges' own answers on your traffic (docs/funnel.md,
    "The judge as teacher"): only candidates and bypass samples are judged, so keep a bypass
    sample rate on, or the heads only learn what the funnel already flagged."""
    if not labeled_paths and not audit_paths:
        raise click.UsageError("give labelled posts: --labeled FILE and/or --from-audit FILE")
    policy_set = load_policies(policies_dir)
    specs = specs_from_policies(policy_set.policies, thresholds_for(policies_dir))
    ids = [s.id for s in specs]
    thresholds_today = {s.id: s.threshold for s in specs}
    console = Console(stderr=True)
    source: dict[int, str] = {}  # id(post) -> the file it came from (benign pass per file)
    posts = load_labeled_files(labeled_paths, ids, source) if labeled_paths else []
    for path in audit_paths:
        loaded = load_audit_files([path], ids, console)
        source.update((id(p), path.name) for p in loaded)
        posts += loaded
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
    # Each head's own threshold (kept in the file whatever the choice below); a head without
    # calibration positives keeps today's threshold (and today's scoring: see the choice).
    head_thresholds = {pid: picked.get(pid, thresholds_today[pid]) for pid in heads.policy_ids}
    all_heads = {pid: head_thresholds.get(pid, thresholds_today[pid]) for pid in ids}
    # Per policy, head or today's scoring: decided on the calibration split alone.
    choices = _choose_scorers(
        new_scores[calib_slice], old_scores[calib_slice], splits.calib, ids, heads.policy_ids, all_heads,
        thresholds_today, target_recall,
    )  # fmt: skip
    for c in choices.values():
        console.print(
            f"scorer {c.policy_id}: [bold]{c.scorer}[/] ({c.calib_positives} calibration positives; head recall "
            f"{c.head_recall:.3f} benign pass {c.head_benign_pass:.3f}, today's recall {c.score_recall:.3f} "
            f"benign pass {c.score_benign_pass:.3f}: {c.reason})"
        )
    use_head = [pid in choices and choices[pid].scorer == HEAD for pid in ids]
    shipped_scores = np.where(np.array(use_head)[None, :], new_scores, old_scores)
    thresholds = {pid: all_heads[pid] if use_head[j] else thresholds_today[pid] for j, pid in enumerate(ids)}
    report = holdout_report(
        shipped_scores[calib_slice],
        splits.calib,
        shipped_scores[test_slice],
        splits.test,
        ids,
        thresholds,
        target_recall,
    )
    heads_report = holdout_report(
        new_scores[calib_slice], splits.calib, new_scores[test_slice], splits.test, ids, all_heads, target_recall
    )
    baseline = holdout_report(
        old_scores[calib_slice],
        splits.calib,
        old_scores[test_slice],
        splits.test,
        ids,
        thresholds_today,
        target_recall,
    )
    out = Console(width=max(Console().width, 160))
    print_holdout(
        out, f"today's scoring at the current thresholds, held-out split ({len(splits.test)} posts)", baseline
    )
    print_holdout(out, f"every head, thresholds for recall {target_recall:g} on the calibration split", heads_report)
    print_holdout(out, "the operating point written: per policy the scorer chosen on the calibration split", report)
    shipped_passed = (shipped_scores >= np.array([thresholds[pid] for pid in ids], dtype=np.float32)) & (
        shipped_scores > 0.0
    )
    per_file = _benign_pass_per_file(splits.test, shipped_passed[test_slice], source, ids)
    for name, rate in per_file.items():
        out.print(f"held-out benign posts of {name} passed to a judge: {rate}")
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
        "scorers": {pid: c.scorer for pid, c in choices.items()},
        "scorer_choice": {
            pid: {
                "scorer": c.scorer,
                "calib_positives": c.calib_positives,
                "head": {"recall": round(c.head_recall, 4), "benign_pass": round(c.head_benign_pass, 4)},
                "score": {"recall": round(c.score_recall, 4), "benign_pass": round(c.score_benign_pass, 4)},
                "score_threshold": thresholds_today[pid],
                "reason": c.reason,
            }
            for pid, c in choices.items()
        },
        "holdout": holdout_json(report),
        "holdout_heads": holdout_json(heads_report),
        "holdout_baseline": holdout_json(baseline),
        "holdout_benign_pass_per_file": {
            name: {"value": round(r.value, 4), "ci95": [round(r.low, 4), round(r.high, 4)], "hits": r.hits, "n": r.n}
            for name, r in per_file.items()
        },
    }
    final = with_thresholds(heads, head_thresholds, meta)
    if report_json is not None:
        report_json.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if dry_run:
        return
    target = output_path or policies_dir / HEADS_NAME
    save_heads(target, final)
    out.print(f"heads for {len(final.policy_ids)} policies written to {target} ({target.stat().st_size:,} bytes)")


def _choose_scorers(
    head_scores: np.ndarray,
    today_scores: np.ndarray,
    posts: Sequence[LabeledPost],
    ids: Sequence[str],
    headed: Sequence[str],
    head_thresholds: dict[str, float],
    today_thresholds: dict[str, float],
    target_recall: float,
) -> dict[str, ScorerChoice]:
    """Per fitted policy, head or today's scoring (funnel.heads.choose_scorer), on calibration posts."""
    out: dict[str, ScorerChoice] = {}
    for j, pid in enumerate(ids):
        if pid not in headed:
            continue
        labels = np.array([p.labels.get(pid, -1) for p in posts])
        head = (head_scores[:, j] >= np.float32(head_thresholds[pid])) & (head_scores[:, j] > 0.0)
        today = (today_scores[:, j] >= np.float32(today_thresholds[pid])) & (today_scores[:, j] > 0.0)
        out[pid] = choose_scorer(pid, head, today, labels == 1, labels == 0, target_recall)
    return out


def _benign_pass_per_file(
    posts: Sequence[LabeledPost], passed: np.ndarray, source: dict[int, str], ids: Sequence[str]
) -> dict[str, Rate]:
    """Per labelled file: its held-out posts that violate nothing, and how many reach a judge for some policy."""
    hits: dict[str, int] = {}
    totals: dict[str, int] = {}
    for row, post in enumerate(posts):
        if not post.labels or any(post.labels.get(pid) == 1 for pid in ids):
            continue
        name = source.get(id(post), "?")
        totals[name] = totals.get(name, 0) + 1
        hits[name] = hits.get(name, 0) + int(passed[row].any())
    return {name: Rate.of(hits[name], totals[name]) for name in sorted(totals)}
