"""`modstream eval` orchestration: load, check the judges, run one or two policy versions, build the report.

Printing is the command's (worker.cli.eval): this module hands back the runs and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from rich.progress import Progress

from worker.config import EscalationSettings, JudgeTierSettings, Tier1JudgeSettings, Tier2JudgeSettings
from worker.eval.run import EvalJudges, Evaluator, list_models
from worker.eval.scoring import (
    DatasetError,
    EvalTier,
    LabelledPost,
    RunSummary,
    build_report,
    load_dataset,
    pairs_for,
    unloaded_labels,
)
from worker.policies.files import PolicyError, PolicySet, load_policy_dir


@dataclass(frozen=True, slots=True)
class EvalOptions:
    policies_dir: Path
    dataset: Path
    judge_url: str
    judge_t2_url: str | None
    model: str | None
    model_t2: str | None
    tier: EvalTier
    multi_policy: bool
    report_path: Path | None
    concurrency: int
    compare_dir: Path | None
    response_format: Literal["json_schema", "json_object", "none"]
    max_tokens: int
    timeout_s: float
    limit: int | None
    # Ask for logprobs (p_violation); llama-cpp-python's server fails such requests (HTTP 500).
    logprobs: bool = True


class EvalError(Exception):
    """Something the user must fix (a policy directory, the dataset, a judge that does not answer)."""


@dataclass(frozen=True, slots=True)
class EvalRun:
    new: RunSummary
    old: RunSummary | None  # with --compare
    skipped: dict[str, int]  # labels naming policies that are not loaded, per policy id
    report: dict[str, Any]


def _load(directory: Path) -> PolicySet:
    try:
        return load_policy_dir(directory)
    except PolicyError as exc:
        raise EvalError(f"cannot load policies: {exc}") from None


async def _model(http: httpx.AsyncClient, url: str, wanted: str | None) -> str:
    """The model to ask for: the one given, or the only one the server lists; checks it is served."""
    try:
        served = await list_models(http, url)
    except (httpx.HTTPError, ValueError) as exc:
        raise EvalError(f"judge {url} does not answer GET /models: {exc}") from None
    if wanted is None:
        if len(served) != 1:
            raise EvalError(f"judge {url} serves {served or 'no models'}; pick one with --model")
        return served[0]
    if wanted not in served:
        raise EvalError(f"judge {url} does not serve model {wanted!r} (it lists {served})")
    return wanted


def _tier_settings(cls: type[JudgeTierSettings], url: str, model: str, o: EvalOptions) -> JudgeTierSettings:
    # Effort and the rest keep the tier's defaults (t1 low, t2 high), as in the worker.
    return cls.model_validate(
        {
            "base_urls": [url],
            "model": model,
            "timeout_s": o.timeout_s,
            "max_in_flight": o.concurrency,
            "max_tokens": o.max_tokens,
            "response_format": o.response_format,
            "logprobs": o.logprobs,
            "retry_max_s": 2.0,
        }
    )


async def run_eval(o: EvalOptions, say: Callable[[str], None], progress_factory: Callable[[], Progress]) -> EvalRun:
    new_set = _load(o.policies_dir)
    old_set = _load(o.compare_dir) if o.compare_dir else None
    ids = [p.id for p in new_set.policies]
    try:
        items = load_dataset(o.dataset, ids)
    except DatasetError as exc:
        raise EvalError(str(exc)) from None
    if o.limit is not None:
        items = [item for item in items if any(pid in item.labels for pid in ids)][: o.limit]
    if not pairs_for(items, ids):
        raise EvalError(f"no post in {o.dataset} is labelled for a policy in {o.policies_dir} ({ids})")
    t2_url = o.judge_t2_url or o.judge_url
    async with httpx.AsyncClient(timeout=o.timeout_s) as http:
        t1_model = await _model(http, o.judge_url, o.model) if o.tier != "t2" else ""
        t2_model = ""
        if o.tier != "t1":
            # One server for both tiers (e.g. one simulator): tier 2 asks for the same model unless told.
            same = o.judge_t2_url is None and o.tier == "cascade"
            t2_model = await _model(http, t2_url, o.model_t2 or (t1_model if same else o.model))
        judges = EvalJudges(
            tier=o.tier,
            t1=_tier_settings(Tier1JudgeSettings, o.judge_url, t1_model or t2_model, o),
            t2=_tier_settings(Tier2JudgeSettings, t2_url, t2_model or t1_model, o),
            rules=EscalationSettings(),
            multi_policy=o.multi_policy,
            concurrency=o.concurrency,
        )
        evaluator = Evaluator(judges)
        say(
            f"eval: {len(items)} posts, tier {o.tier}, judge {o.judge_url} ({t1_model or t2_model})"
            + (f", tier 2 {t2_url} ({t2_model})" if o.tier == "cascade" else "")
        )
        try:
            new = await _run(evaluator, new_set, items, f"{o.policies_dir}", progress_factory)
            old = await _run(evaluator, old_set, items, f"{o.compare_dir}", progress_factory) if old_set else None
        finally:
            await evaluator.aclose()
    texts = {item.post.id: item.post.text for item in items}
    skipped = unloaded_labels(items, ids)
    report = build_report(
        str(o.dataset),
        o.tier,
        {
            "t1": {"url": o.judge_url, "model": judges.t1.model, "effort": judges.t1.reasoning_effort},
            "t2": {"url": t2_url, "model": judges.t2.model, "effort": judges.t2.reasoning_effort},
            "judge_mode": "multi_policy" if o.multi_policy else "per_policy",
            "response_format": o.response_format,
            "max_tokens": o.max_tokens,
        },
        new,
        skipped,
        old,
        texts,
    )
    return EvalRun(new, old, skipped, report)


async def _run(
    evaluator: Evaluator,
    policies: PolicySet,
    items: list[LabelledPost],
    label: str,
    progress_factory: Callable[[], Progress],
) -> RunSummary:
    total = len(pairs_for(items, [p.id for p in policies.policies]))
    with progress_factory() as progress:
        task = progress.add_task(label, total=total)
        return await evaluator.run(policies, items, lambda n: progress.advance(task, n))
