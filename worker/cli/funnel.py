"""`modstream funnel score|calibrate`: run the funnel on JSONL posts without Kafka.

modstream funnel score --policies policies --input posts.jsonl --output scored.jsonl
modstream funnel calibrate --policies policies --labeled datasets/funnel_dev.jsonl --target-recall 0.98
modstream funnel evaluate --policies policies --labeled datasets/eval_sample.jsonl
modstream funnel fit --policies policies --labeled a.jsonl --labeled b.jsonl [--holdout 0.2] [--seed N]
modstream funnel recall --from-audit verdicts.jsonl [--policies policies]
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import click
import numpy as np
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from funnel import DEFAULT_MODEL_DIR, Funnel, PolicySpec, load_thresholds
from funnel.calibrate import (
    FRONTIER_TARGETS,
    Evaluation,
    HoldoutReport,
    LabeledPost,
    calibrate,
    check_policy_ids,
    evaluate,
    file_sha256,
    holdout_report,
    load_labeled,
    pick_thresholds,
    split_labeled,
    write_sidecar,
)
from funnel.embed import load_embedder
from funnel.heads import HEADS_NAME, Features, fit_heads, load_heads, model_sha256, save_heads, with_thresholds
from funnel.language import LanguageConfig
from funnel.recall import tracker_from_verdicts
from worker.policies.files import PolicyError, PolicySet, load_policy_dir
from worker.policies.screening import specs_from_policies

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
HOLDOUT_OPTION = click.option(
    "--holdout",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0.05, 0.5),
    help="Share of the (deduplicated) posts kept aside for the reported figures; never fitted on.",
)


def _load_policies(directory: Path) -> PolicySet:
    try:
        return load_policy_dir(directory)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc


def _build(
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
    policy_set = _load_policies(policies_dir)
    try:
        thresholds = load_thresholds(policies_dir) if sidecar else {}
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        codes = frozenset(code.strip() for code in readable.split(",") if code.strip())
        languages = LanguageConfig(readable=codes) if language_step else None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    funnel = _build(
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
@HEADS_OPTION
@EMBEDDINGS_OPTION
@ENGINE_OPTION
def evaluate_command(
    policies_dir: Path, labeled_path: Path, sidecar: bool, heads: bool, embeddings: bool, engine: str
) -> None:
    """Recall and benign pass rate at the current thresholds (sidecar or front matter)."""
    try:
        thresholds = load_thresholds(policies_dir) if sidecar else {}
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    specs = specs_from_policies(_load_policies(policies_dir).policies, thresholds)
    posts = _load_labeled_files([labeled_path], [s.id for s in specs])
    funnel = _build(specs, embeddings, engine, None, policies_dir if heads else None)
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
    specs = specs_from_policies(_load_policies(policies_dir).policies)
    all_posts = _load_labeled_files([labeled_path], [s.id for s in specs])
    splits = split_labeled(all_posts, seed, 0.0, holdout)
    posts = splits.train
    if not posts:
        raise click.ClickException(f"{labeled_path} holds no posts to calibrate on")
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
        _print_holdout(
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


def _load_labeled_files(paths: Sequence[Path], policy_ids: Sequence[str]) -> list[LabeledPost]:
    posts: list[LabeledPost] = []
    try:
        for path in paths:
            loaded = load_labeled(path)
            check_policy_ids(loaded, policy_ids, str(path))
            posts.extend(loaded)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if not posts:
        raise click.ClickException("the labelled files hold no posts")
    return posts


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


def _print_holdout(console: Console, title: str, report: HoldoutReport) -> None:
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


def _holdout_json(report: HoldoutReport) -> dict[str, Any]:
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


@funnel_group.command("fit")
@POLICIES_OPTION
@click.option(
    "--labeled",
    "labeled_paths",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help='JSONL {"id","text","labels":{policy_id: 0|1}} per line; repeat for several files.',
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
@click.option(
    "--target-recall",
    default=0.98,
    show_default=True,
    type=click.FloatRange(0.0, 1.0, min_open=True),
    help="Recall each head's threshold must reach on the calibration split.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=f"Heads file to write [default: <policies>/{HEADS_NAME}].",
)
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
@click.option("--dry-run", is_flag=True, help="Report only; write nothing.")
@ENGINE_OPTION
def fit_command(
    policies_dir: Path,
    labeled_paths: tuple[Path, ...],
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
    split (never fitted on), against today's scoring; write the heads beside the thresholds."""
    policy_set = _load_policies(policies_dir)
    specs = specs_from_policies(policy_set.policies, load_thresholds(policies_dir))
    ids = [s.id for s in specs]
    posts = _load_labeled_files(labeled_paths, ids)
    console = Console(stderr=True)
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
    _print_holdout(
        out, f"today's scoring at the current thresholds, held-out split ({len(splits.test)} posts)", baseline
    )
    _print_holdout(out, f"learned heads, thresholds for recall {target_recall:g} on the calibration split", report)
    data_digest = hashlib.sha256()
    for path in labeled_paths:
        data_digest.update(file_sha256(path).encode())
    meta: dict[str, Any] = {
        "generated_by": "modstream funnel fit",
        "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "data_files": {path.name: file_sha256(path) for path in labeled_paths},
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
        "holdout": _holdout_json(report),
        "holdout_baseline": _holdout_json(baseline),
    }
    final = with_thresholds(heads, thresholds, meta)
    if report_json is not None:
        report_json.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if dry_run:
        return
    target = output_path or policies_dir / HEADS_NAME
    save_heads(target, final)
    out.print(f"heads for {len(final.policy_ids)} policies written to {target} ({target.stat().st_size:,} bytes)")


@funnel_group.command("recall")
@click.option(
    "--from-audit",
    "audit_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="JSONL export of verdict records (results with `sampled` and `sample_rate`).",
)
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Check the records' policy ids against this policy set.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=None,
    help="Bypass sample rate for sampled results that do not carry their `sample_rate`.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per policy instead of a table.")
def recall_command(audit_path: Path, policies_dir: Path | None, rate: float | None, as_json: bool) -> None:
    """Estimated funnel recall per policy from the judge's verdicts on candidates and on
    bypass-sampled cleared posts, with a Wilson 95 % interval."""
    known = [p.id for p in _load_policies(policies_dir).policies] if policies_dir is not None else None
    records: list[dict[str, Any]] = []
    with audit_path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise click.ClickException(f"{audit_path}:{number}: not JSON ({exc})") from exc
    try:
        estimates = tracker_from_verdicts(records, rate, known).estimates()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        for e in estimates:
            click.echo(
                orjson.dumps(
                    {
                        "policy_id": e.policy_id,
                        "recall": e.recall,
                        "ci95": [e.low, e.high],
                        "candidate_violations": e.candidate_violations,
                        "sampled_violations": e.sampled_violations,
                        "sampled_posts": e.sampled_posts,
                        "rate": e.rate,
                    }
                )
            )
        return
    table = Table(title=f"estimated funnel recall ({audit_path.name})")
    for column in ("policy", "candidates judged violating", "sampled cleared", "of which violating", "rate", "recall"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for e in estimates:
        shown = "- (no sample)" if e.recall is None else f"{e.recall:.3f} [{e.low:.3f}, {e.high:.3f}]"
        table.add_row(
            e.policy_id,
            str(e.candidate_violations),
            str(e.sampled_posts),
            str(e.sampled_violations),
            f"{e.rate:g}",
            shown,
        )
    Console().print(table)
