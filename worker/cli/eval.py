"""`modstream eval`: measure a policy directory on a labelled dataset against a real judge server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from worker.eval.scoring import Metrics, RunSummary

RESPONSE_FORMATS = ["json_schema", "json_object", "none"]


def api_base(url: str) -> str:
    """Accept a server root or an OpenAI base URL: `http://h:8000` and `http://h:8000/v1` both work."""
    url = url.rstrip("/")
    return url if urlsplit(url).path not in ("", "/") else f"{url}/v1"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def metrics_table(title: str, metrics: dict[str, Metrics], overall: Metrics) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        caption="P precision, R recall, FPR false-positive rate; "
        "no ans = no valid answer (left out of P/R); esc = escalated to tier 2; rev = sent to review",
    )
    table.add_column("policy", no_wrap=True)
    for name in ("n", "P", "R", "F1", "FPR", "TP", "FP", "TN", "FN", "no ans", "esc", "rev", "ms", "tok in/out"):
        table.add_column(name, justify="right", no_wrap=True)
    # Policies without a labelled post say nothing; they stay in the JSON report.
    rows = [*((pid, m) for pid, m in metrics.items() if m.n), ("ALL", overall)]
    for pid, m in rows:
        table.add_row(
            pid, str(m.n), _fmt(m.precision, 2), _fmt(m.recall, 2), _fmt(m.f1, 2), _fmt(m.fpr, 2),
            str(m.tp), str(m.fp), str(m.tn), str(m.fn), str(m.no_answer),
            _pct(m.escalation_rate), _pct(m.review_rate), f"{m.latency_ms_mean:.0f}",
            f"{m.prompt_tokens_mean:.0f}/{m.completion_tokens_mean:.0f}",
            end_section=pid == rows[-2][0],
        )  # fmt: skip
    return table


def compare_table(old: RunSummary, new: RunSummary) -> Table:
    table = Table(title="old → new (same dataset, same judge)", title_justify="left")
    for name in ("policy", "old version", "new version", "precision", "recall", "F1", "FPR", "escalated"):
        table.add_column(name, justify="left" if name.endswith(("policy", "version")) else "right")
    old_m, new_m = old.metrics(), new.metrics()
    for pid in sorted(set(old_m) | set(new_m), key=lambda p: (p not in new_m, p)):
        o, n = old_m.get(pid), new_m.get(pid)

        def pair(get: Any, pct: bool = False, o: Metrics | None = o, n: Metrics | None = n) -> str:
            show = _pct if pct else _fmt
            return f"{show(get(o)) if o else '-'} → {show(get(n)) if n else '-'}"

        table.add_row(
            pid,
            old.policy_versions.get(pid, "-"),
            new.policy_versions.get(pid, "-"),
            pair(lambda m: m.precision),
            pair(lambda m: m.recall),
            pair(lambda m: m.f1),
            pair(lambda m: m.fpr),
            pair(lambda m: m.escalation_rate, pct=True),
        )
    return table


def changes_table(changed: list[dict[str, Any]], limit: int = 50) -> Table:
    table = Table(title=f"decisions that changed ({len(changed)})", title_justify="left")
    for name in ("post", "policy", "label", "old", "new", "", "text"):
        table.add_column(name, overflow="fold")
    for c in changed[:limit]:
        verdict = {True: "fixed", False: "broke", None: ""}[c["fixed"]]
        table.add_row(
            c["post_id"], c["policy_id"], str(c["label"]),
            f"{c['old']['predicted']} ({c['old']['decision']})", f"{c['new']['predicted']} ({c['new']['decision']})",
            verdict, c["text"][:80],
        )  # fmt: skip
    if len(changed) > limit:
        table.caption = f"... and {len(changed) - limit} more in the report"
    return table


@click.command("eval")
@click.option(
    "--policies",
    "policies_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Policy directory to evaluate.",
)
@click.option(
    "--dataset",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Labelled JSONL: {"id","text","labels":{"policy_id":0|1}} (or "label" + "policy").',
)
@click.option(
    "--judge",
    "judge_url",
    required=True,
    help="Judge server (vLLM, the simulator, llama.cpp), e.g. http://127.0.0.1:8000/v1.",
)
@click.option(
    "--judge-t2", "judge_t2_url", default=None, help="Tier-2 server for --tier cascade/t2 [default: --judge]."
)
@click.option("--model", default=None, help="Model id for tier 1 [default: the one the server lists].")
@click.option("--model-t2", default=None, help="Model id for tier 2 [default: the one the tier-2 server lists].")
@click.option(
    "--tier",
    type=click.Choice(["t1", "t2", "cascade"]),
    default="t1",
    show_default=True,
    help="t1: low effort only; t2: high effort only; cascade: t1, escalate like the worker, t2.",
)
@click.option(
    "--judge-mode",
    type=click.Choice(["per_policy", "multi_policy"]),
    default="per_policy",
    show_default=True,
    help="One request per (post, policy), or one per post for all its labelled policies.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the full JSON report (metrics, every pair, changed decisions) here.",
)
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Posts judged at once (keep near the server's max-num-seqs).",
)
@click.option(
    "--compare",
    "compare_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="An older policy directory: run both on the same data, show metrics side by side and "
    "list the posts whose decision changed.",
)
@click.option(
    "--response-format",
    type=click.Choice(RESPONSE_FORMATS),
    default="json_schema",
    show_default=True,
    help="json_schema (vLLM), json_object (llama.cpp's server), none.",
)
@click.option(
    "--max-tokens",
    default=4096,
    show_default=True,
    type=click.IntRange(16),
    help="Upper bound on generated tokens per call (small models need a tight one).",
)
@click.option(
    "--logprobs/--no-logprobs",
    default=True,
    show_default=True,
    help="Ask for the answer's logprobs (p_violation, the uncertain_probability escalation). "
    "llama-cpp-python's server fails such requests: use --no-logprobs there.",
)
@click.option(
    "--timeout",
    "timeout_s",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds per HTTP call before it counts as failed (and is retried).",
)
@click.option(
    "--limit",
    default=None,
    type=click.IntRange(1),
    help="Evaluate only the first N labelled posts (quick checks against slow models).",
)
def eval_command(
    policies_dir: Path,
    dataset: Path,
    judge_url: str,
    judge_t2_url: str | None,
    model: str | None,
    model_t2: str | None,
    tier: str,
    judge_mode: str,
    report_path: Path | None,
    concurrency: int,
    compare_dir: Path | None,
    response_format: str,
    max_tokens: int,
    logprobs: bool,
    timeout_s: float,
    limit: int | None,
) -> None:
    """Measure a policy version on a labelled dataset: precision, recall, F1, FPR per policy.

    Judges every labelled (post, policy) pair directly with the worker's judge client (no Kafka,
    no funnel), prints a table per policy (confusion counts, escalation and review rates, mean
    latency and tokens) and writes a JSON report. --tier cascade escalates exactly like the
    worker. --compare OLD_DIR evaluates an older version on the same data and lists the posts
    whose decision changed. Against llama.cpp's server use --response-format json_object, a
    small --max-tokens and --no-logprobs.
    """
    from worker.eval.orchestrate import EvalError, EvalOptions, run_eval

    options = EvalOptions(
        policies_dir=policies_dir,
        dataset=dataset,
        judge_url=api_base(judge_url),
        judge_t2_url=api_base(judge_t2_url) if judge_t2_url else None,
        model=model,
        model_t2=model_t2,
        tier=tier,  # type: ignore[arg-type]  # click.Choice guarantees the literal
        multi_policy=judge_mode == "multi_policy",
        report_path=report_path,
        concurrency=concurrency,
        compare_dir=compare_dir,
        response_format=response_format,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        logprobs=logprobs,
        timeout_s=timeout_s,
        limit=limit,
    )
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the tables into 80 columns
        console.width = max(console.width, 150)
    try:
        done = asyncio.run(run_eval(options, console.print, progress_factory=lambda: _progress(console)))
    except EvalError as exc:
        raise click.ClickException(str(exc)) from None
    new, old = done.new, done.old
    console.print(metrics_table(f"{policies_dir} on {dataset} (tier {tier})", new.metrics(), new.overall()))
    if done.skipped:
        console.print(f"labels for policies not in {policies_dir} were skipped: {done.skipped}")
    if old is not None:
        console.print(metrics_table(f"{compare_dir} (old)", old.metrics(), old.overall()))
        console.print(compare_table(old, new))
        console.print(changes_table(done.report["compare"]["changed"]))
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_bytes(orjson.dumps(done.report, option=orjson.OPT_INDENT_2) + b"\n")
        console.print(f"report written to {report_path}")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
