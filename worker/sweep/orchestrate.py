"""`modstream sweep` without the command line: settings + arguments -> a finished (or resumed)
sweep and its report document."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from worker.config import Settings
from worker.contracts import ReasoningEffort
from worker.kafka.consumer import consumer_config
from worker.kafka.producer import producer_config
from worker.policies.files import Policy, PolicySet, load_policy_files, read_policy_files
from worker.policies.screening import PolicyRuntime
from worker.sweep.bucket import TokenBucket
from worker.sweep.rejudge import Rejudger
from worker.sweep.report import report_document
from worker.sweep.runner import Advance, Sweep, Topics, Wiring, prepare
from worker.sweep.state import SweepSpec, SweepState, SweepTier, state_path

log = structlog.get_logger("modstream.sweep")


class SweepError(Exception):
    """A sweep that cannot start as asked (unknown policy, bad state file...)."""


@dataclass(frozen=True, slots=True)
class SweepOptions:
    since: datetime
    until: datetime
    policy_ids: Sequence[str]  # empty: every live policy
    policies_dir: Path
    tier: SweepTier
    effort: ReasoningEffort | None
    funnel: bool
    rate: float  # judge requests per second
    dry_run: bool
    dry_run_topic: str
    group: str | None
    state_dir: Path
    concurrency: int = 16
    actions_slack: timedelta = timedelta(hours=1)


def select(policies: PolicySet, wanted: Sequence[str]) -> list[Policy]:
    live = list(policies.live)
    if not wanted:
        return live
    by_id = {p.id: p for p in live}
    unknown = sorted(set(wanted) - set(by_id))
    if unknown:
        raise SweepError(f"not live policies in {policies.directory}: {unknown} (live: {sorted(by_id)})")
    return [by_id[i] for i in sorted(set(wanted))]


def plan_sweep(settings: Settings, options: SweepOptions) -> tuple[SweepSpec, PolicySet, list[Policy], str]:
    """The spec (hence run id and group) of these arguments, without touching Kafka."""
    policies = load_policy_files(options.policies_dir, read_policy_files(options.policies_dir))
    chosen = select(policies, options.policy_ids)
    topics = settings.topics
    spec = SweepSpec(
        since=options.since.astimezone(UTC),
        until=options.until.astimezone(UTC),
        policies=tuple(p.id for p in chosen),
        policy_set=policies.version,
        tier=options.tier,
        effort=options.effort,
        funnel=options.funnel,
        dry_run=options.dry_run,
        posts_topic=topics.posts,
        output_topic=options.dry_run_topic if options.dry_run else topics.actions,
    )
    return spec, policies, chosen, options.group or spec.group(settings.kafka.group_id)


async def execute(
    settings: Settings, options: SweepOptions, advance: Advance | None = None, on_state: Any = None
) -> dict[str, Any]:
    """Run (or resume) the sweep; returns the report document. `on_state(state)` is called once the
    range is known (the command line sizes its progress bar with it)."""
    spec, policies, chosen, group = plan_sweep(settings, options)
    kafka = settings.kafka
    topics = settings.topics
    timing = (kafka.session_timeout_ms, kafka.heartbeat_interval_ms, kafka.partition_assignment_strategy)
    wiring = Wiring(
        consumer_config=consumer_config(kafka.bootstrap_servers, group, dict(kafka.extra), *timing),
        producer_config=producer_config(kafka.bootstrap_servers, dict(kafka.extra)),
        topics=Topics(topics.posts, topics.actions, spec.output_topic, topics.audit, topics.review),
        state_file=state_path(options.state_dir, group),
        concurrency=options.concurrency,
        slack=options.actions_slack,
    )
    state: SweepState = prepare(spec, wiring, group)
    if on_state is not None:
        on_state(state)
    log.info(
        "sweep_start",
        run_id=spec.run_id,
        group=group,
        state=str(wiring.state_file),
        total=state.total,
        completed=state.completed,
        resumed=state.completed > 0,
    )
    runtime = None
    if spec.funnel:
        runtime = PolicyRuntime.build(
            policies, settings.languages.config(), settings.funnel_heads, settings.funnel_embeddings
        )
    rejudger = Rejudger(settings, runtime, chosen, spec.tier, spec.effort, TokenBucket(options.rate))
    try:
        sweep = Sweep(spec, state, wiring, rejudger, {p.id for p in policies.live})
        counts = await sweep.run(advance)
    finally:
        await rejudger.aclose()
    header = {
        "run_id": spec.run_id,
        "group": group,
        "state_file": str(wiring.state_file),
        **spec.as_dict(),
        "finished": state.finished,
        "records": state.total,
        "generated_at": datetime.now(UTC).isoformat(),
    }
    return report_document(counts, header)
