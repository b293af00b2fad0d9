"""`modstream review apply` and `modstream review serve`: the human end of the review queue
(worker/review/, docs/workflow.md, "Review queue and console")."""

from __future__ import annotations

import signal
import sys
import threading
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import click
import orjson
from aiohttp import web
from pydantic import ValidationError

from worker.cli.audit import jsonl_out_option, parse_when
from worker.cli.run import ConfigFailure
from worker.config import ConfigError, Settings, load_settings
from worker.contracts import ReviewDecision
from worker.kafka.clients import client_configs
from worker.kafka.ranges import TimeRange, read_range
from worker.ops.logs import configure_logging
from worker.review.apply import ApplyTopics, ReviewApplier, store_review
from worker.review.auth import Auth, parse_tokens
from worker.review.console import Console, ConsoleConfig
from worker.review.follow import Follower
from worker.review.labels import label_row
from worker.review.store import ReviewStore

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The worker's YAML config (also MODSTREAM_CONFIG_FILE): broker address, client settings, topics.",
)


def settings_of(config_file: Path | None) -> Settings:
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        raise ConfigFailure(str(exc)) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


@click.group("review")
def review_group() -> None:
    """The review queue: apply reviewers' decisions, serve the reviewer's console."""


@review_group.command("apply")
@config_option
@click.option(
    "--db",
    default="review-apply.sqlite3",
    show_default=True,
    help="SQLite file remembering the review records and the decisions applied (':memory:' to rebuild each start).",
)
@click.option(
    "--group", default=None, help="Consumer group for review-decisions [default: <kafka.group_id>-review-apply]."
)
def apply_command(config_file: Path | None, db: str, group: str | None) -> None:
    """Consume review-decisions and publish each decision's superseding verdict on the actions
    topic (tier human, route review); invalid decisions go to the DLQ. Offsets are committed only
    after the broker acknowledged the verdicts."""
    settings = settings_of(config_file)
    consumer, producer = client_configs(settings.kafka, group or f"{settings.kafka.group_id}-review-apply")
    topics = settings.topics
    applier = ReviewApplier(
        consumer,
        producer,
        ReviewStore(db),
        ApplyTopics(review=topics.review, decisions=topics.review_decisions, actions=topics.actions, dlq=topics.dlq),
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    counts = applier.run(stop)
    click.echo(
        f"review apply stopped: {counts.read} decisions read, {counts.published} verdicts published, "
        f"{counts.dead_lettered} dead-lettered, {counts.replays} replays skipped",
        err=True,
    )


@review_group.command("serve")
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8090, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--token",
    "tokens",
    multiple=True,
    envvar="MODSTREAM_CONSOLE_TOKENS",
    help="A reviewer's bearer token as name=token (repeatable; env: comma-separated).",
)
@click.option(
    "--trusted-header",
    envvar="MODSTREAM_CONSOLE_TRUSTED_HEADER",
    default=None,
    help="Take the reviewer from this header set by an authenticating proxy (e.g. X-Forwarded-User). "
    "Only behind a proxy that strips the client's copy.",
)
@click.option(
    "--cot-reviewers",
    envvar="MODSTREAM_CONSOLE_COT_REVIEWERS",
    default=None,
    help="Comma-separated reviewers allowed to see the chain of thought [default: every signed-in reviewer].",
)
@click.option("--origin", default=None, help="Public scheme://host of the console when a proxy rewrites it.")
@click.option("--db", default=":memory:", show_default=True, help="SQLite file for the store (rebuilt from topics).")
@click.option("--limit", default=100, show_default=True, type=int, help="Posts listed per page.")
def serve_command(
    config_file: Path | None,
    host: str,
    port: int,
    tokens: tuple[str, ...],
    trusted_header: str | None,
    cot_reviewers: str | None,
    origin: str | None,
    db: str,
    limit: int,
) -> None:
    """Serve the reviewer's console: the queue by priority, each post with its policies' verdicts
    and (for authorised reviewers) the judges' chain of thought; confirm / overturn produces a
    ReviewDecision to review-decisions."""
    settings = settings_of(config_file)
    try:
        by_token = parse_tokens(tokens)
    except ValueError as exc:
        raise ConfigFailure(str(exc)) from None
    if not by_token and not trusted_header:
        raise ConfigFailure("no way to sign in: give --token name=token (MODSTREAM_CONSOLE_TOKENS) or --trusted-header")
    cot = frozenset(n.strip() for n in cot_reviewers.split(",") if n.strip()) if cot_reviewers else None
    consumer, producer = client_configs(settings.kafka, f"{settings.kafka.group_id}-review-console")
    topics = settings.topics
    config = ConsoleConfig(
        consumer=consumer,
        producer=producer,
        auth=Auth(tokens=by_token, trusted_header=trusted_header, cot_reviewers=cot),
        review_topic=topics.review,
        decisions_topic=topics.review_decisions,
        audit_topic=topics.audit,
        origin=origin,
        limit=limit,
    )
    web.run_app(Console(config, ReviewStore(db)).app(), host=host, port=port, print=None)


@review_group.command("labels")
@config_option
@click.option("--since", required=True, help="Decisions from (inclusive): RFC 3339 time or an age like 30d, 36h.")
@click.option("--until", default=None, help="Decisions until (exclusive): RFC 3339 time or an age [default: now].")
@jsonl_out_option
def labels_command(config_file: Path | None, since: str, until: str | None, out_path: Path) -> None:
    """Write the reviewers' decisions between SINCE and UNTIL as a labelled dataset, one post a line
    ({"id", "text", ..., "labels": {policy_id: 0|1}}), the format `modstream eval --dataset` and
    `modstream funnel fit --labeled` read. Restricted data: it quotes posts."""
    settings = settings_of(config_file)
    now = datetime.now(UTC)
    try:
        window = TimeRange(parse_when(since, now), parse_when(until, now) if until else now)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    consumer, _ = client_configs(settings.kafka, f"{settings.kafka.group_id}-review-labels")  # never joined
    by_review: dict[str, list[ReviewDecision]] = defaultdict(list)
    for msg in read_range(consumer, settings.topics.review_decisions, window):
        try:
            decision = ReviewDecision.model_validate_json(msg.value() or b"")
        except ValidationError:
            continue
        by_review[decision.review_id].append(decision)
    store = ReviewStore()
    reviews = Follower(consumer, {settings.topics.review: lambda m: store_review(store, m)})
    try:
        reviews.catch_up()
    finally:
        reviews.close()
    written = unknown = 0
    out: IO[bytes] = sys.stdout.buffer if str(out_path) == "-" else out_path.open("wb")
    try:
        for review_id, decisions in by_review.items():
            record = store.review(review_id)
            row = label_row(record, decisions) if record is not None else None
            if row is None:
                unknown += 1
                continue
            out.write(orjson.dumps(row) + b"\n")
            written += 1
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    click.echo(f"{written} labelled posts" + (f" ({unknown} decisions without a usable review record)" if unknown
               else ""), err=True)  # fmt: skip
