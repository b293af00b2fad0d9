"""The sweep's loop: read the range with the sweep's own consumer group (partitions assigned, no
group join), re-judge each post, publish what changed, commit the group's offsets and the state
file only after the broker acknowledged everything derived from them.

At-least-once, like the worker: after a crash the posts between the last commit and the crash are
read again. Whatever the first attempt published is recognised (this run's verdict ids on the
output topic, read at start) and neither re-published nor counted twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from confluent_kafka import Consumer, Message, TopicPartition
from pydantic import ValidationError

from worker import __version__
from worker.cascade.precedence import policy_call
from worker.cascade.verdict import assemble_audit, assemble_review, review_policies
from worker.contracts import Post, ReviewPolicy, SourceRef
from worker.kafka.producer import Output, Publisher
from worker.kafka.ranges import TimeRange
from worker.stream.offsets import OffsetTracker
from worker.sweep.current import CurrentVerdicts, Known
from worker.sweep.locate import locate, read_current, usable
from worker.sweep.outcome import KEPT_ROUTES, Judging, already_swept, plan, superseding_verdict
from worker.sweep.rejudge import Rejudger
from worker.sweep.report import Counts, Ledger
from worker.sweep.state import PartitionRange, SweepSpec, SweepState, load_state, save_state

log = structlog.get_logger("modstream.sweep")

Advance = Callable[[int, Counts], None]


@dataclass(frozen=True, slots=True)
class Topics:
    posts: str
    actions: str
    output: str  # actions, or the dry-run topic
    audit: str
    review: str


@dataclass(frozen=True, slots=True)
class Wiring:
    consumer_config: dict[str, Any]
    producer_config: dict[str, Any]
    topics: Topics
    state_file: Path
    concurrency: int
    slack: timedelta
    commit_interval_s: float = 1.0
    idle_polls: int = 6


def prepare(spec: SweepSpec, wiring: Wiring, group: str) -> SweepState:
    """The stored state of this run, or a new one with the range located and saved."""
    state = load_state(wiring.state_file, spec.run_id)
    if state is not None:
        return state
    window = TimeRange(spec.since, spec.until)
    ranges = locate(wiring.consumer_config, wiring.topics.posts, window)
    state = SweepState(
        run_id=spec.run_id,
        group=group,
        spec=spec.as_dict(),
        topic=wiring.topics.posts,
        created_at=datetime.now(UTC),
        partitions={p: PartitionRange(start=s, end=e, position=s) for p, (s, e) in sorted(ranges.items())},
    )
    save_state(wiring.state_file, state)
    return state


def context_policies(results: list[Any], swept: set[str]) -> list[ReviewPolicy]:
    """Kept (not re-judged) results as review context; an unresolved one is for the reviewer too."""
    return [
        ReviewPolicy(
            policy_id=r.policy_id,
            policy_version=r.policy_version,
            severity=r.severity,
            action=r.action,
            unresolved=policy_call(r) == "review",
            proposed_violation=bool(r.violation),
            t1=r,
        )
        for r in results
        if r.policy_id not in swept
    ]


class Sweep:
    def __init__(self, spec: SweepSpec, state: SweepState, wiring: Wiring, rejudger: Rejudger, live: set[str]) -> None:
        self.spec = spec
        self.state = state
        self.wiring = wiring
        self.rejudger = rejudger
        self.live = live
        self.swept = set(spec.policies)
        self.index = CurrentVerdicts(spec.run_id)
        self.ledger = Ledger(state.counts)
        self.tracker = OffsetTracker()
        self.window = TimeRange(spec.since, spec.until)
        self.publisher = Publisher(wiring.producer_config)
        self.advance: Advance = lambda n, counts: None
        self._failure: BaseException | None = None
        # Partitions this process received records from (only those may end by going idle).
        self._touched: set[int] = set()

    # ---- per post ---------------------------------------------------------------------------

    async def _post(self, msg: Message) -> Counts:
        counts = Counts()
        counts.bump("read")
        _, timestamp = msg.timestamp()
        if not self.window.since_ms <= timestamp < self.window.until_ms:
            counts.bump("out_of_window")
            return counts
        try:
            post = Post.model_validate_json(msg.value() or b"")
        except ValidationError:
            counts.bump("invalid")
            return counts
        current = self.index.base.get(post.id)
        own = self.index.swept_by_us(post.id)
        if own is not None:
            counts.add(already_swept(current, own))
            return counts
        if current is None:
            counts.bump("no_verdict")
            return counts
        if current.route in KEPT_ROUTES:
            counts.bump("kept")
            return counts
        await self._rejudge(post, current, msg, counts)
        return counts

    async def _rejudge(self, post: Post, current: Known, msg: Message, counts: Counts) -> None:
        started = time.perf_counter()
        done = await self.rejudger.rejudge(post)
        counts.bump("judge_requests", done.requests)
        decided = plan(current, done.results, self.swept, self.live)
        counts.add(decided.counts)
        if not decided.changed:
            return
        top = done.top
        how = Judging(
            tier=done.tier,
            model=top.audit.model if top else None,
            effort=top.audit.reasoning_effort if top else None,
            escalation_reasons=done.reasons,
            funnel=done.funnel,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        source = SourceRef(
            topic=msg.topic() or self.wiring.topics.posts, partition=msg.partition() or 0, offset=msg.offset() or 0
        )
        now = datetime.now(UTC)
        verdict = superseding_verdict(post.id, current, decided, how, self.spec.run_id, source, now, __version__)
        key = post.id.encode()
        topics = self.wiring.topics
        outputs: list[Output] = [(topics.output, key, verdict.model_dump_json().encode(), ())]
        if not self.spec.dry_run:
            audit = assemble_audit(verdict, done.calls, decided.results, done.signals)
            outputs.append((topics.audit, key, audit.model_dump_json().encode(), ()))
            if verdict.decision == "review":
                policies = [
                    *review_policies(done.outcomes, done.results),
                    *context_policies(decided.results, self.swept),
                ]
                review = assemble_review(post, verdict, policies, ["sweep"], topics.audit, now)
                outputs.append((topics.review, key, review.model_dump_json().encode(), ()))
                counts.bump("review_records")
        failures = await self.publisher.send_many(outputs)
        if failures:
            raise failures[0][1]
        # A second record of the same post later in the range sees this verdict as already swept.
        self.index.observe(verdict, own_only=True)

    async def _run_one(self, msg: Message) -> None:
        partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
        try:
            counts = await self._post(msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failure = self._failure or exc
            return
        self.ledger.record(partition, offset, counts)
        self.tracker.finish((self.state.topic, partition), offset)
        self.advance(1, counts)

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self, advance: Advance | None = None) -> Counts:
        if advance is not None:
            self.advance = advance
        wiring = self.wiring
        read = await asyncio.to_thread(
            read_current,
            wiring.consumer_config,
            self.index,
            wiring.topics.actions,
            wiring.topics.output,
            self.window,
            wiring.slack,
        )
        log.info("sweep_current_verdicts", records=read, posts=len(self.index.base), own=len(self.index.own))
        self.publisher.start(asyncio.get_running_loop())
        consumer = Consumer({**wiring.consumer_config, "enable.partition.eof": False})
        try:
            await self._consume(consumer)
            await self._commit(consumer, final=True)
        finally:
            await asyncio.to_thread(consumer.close)
            self.publisher.close()
        return self.state.counts

    async def _consume(self, consumer: Consumer) -> None:
        topic = self.state.topic
        todo = {p: r for p, r in self.state.partitions.items() if not r.done}
        if not todo:
            return
        consumer.assign([TopicPartition(topic, p, r.position) for p, r in todo.items()])
        reading = set(todo)
        inflight: set[asyncio.Task[None]] = set()
        idle = 0
        last_commit = time.monotonic()
        while reading or inflight:
            if self._failure is not None:
                break
            room = self.wiring.concurrency - len(inflight)
            if room <= 0 or not reading:
                await asyncio.wait(inflight, timeout=self.wiring.commit_interval_s, return_when="FIRST_COMPLETED")
            else:
                batch = await asyncio.to_thread(consumer.consume, min(room, 500), 0.5)
                idle = 0 if batch or inflight else idle + 1
                for msg in batch:
                    self._take(msg, consumer, reading, inflight)
                if idle >= self.wiring.idle_polls:
                    self._idle_out(reading)
            if time.monotonic() - last_commit >= self.wiring.commit_interval_s:
                await self._commit(consumer)
                last_commit = time.monotonic()
        if self._failure is not None:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
            raise self._failure
        for partition in todo:  # everything read and finished: the partition is done
            if partition in self._touched and self.tracker.in_flight((topic, partition)) == 0:
                self._advance_position(partition, self.state.partitions[partition].end)

    def _idle_out(self, reading: set[int]) -> None:
        """Nothing arrives any more: a partition this process read from ends short of `end` (a gap:
        compaction, transaction markers); one it never received anything from stays unfinished
        (logged; a rerun tries again) rather than being skipped unread."""
        for partition in sorted(reading - self._touched):
            log.warning(
                "sweep_partition_silent", partition=partition, position=self.state.partitions[partition].position
            )
        reading.clear()

    def _take(self, msg: Message, consumer: Consumer, reading: set[int], inflight: set[asyncio.Task[None]]) -> None:
        if not usable(msg):
            return
        partition, offset = int(msg.partition() or 0), int(msg.offset() or 0)
        span = self.state.partitions.get(partition)
        if partition not in reading or span is None:
            return
        self._touched.add(partition)
        if offset >= span.end:
            reading.discard(partition)
            consumer.pause([TopicPartition(self.state.topic, partition)])
            return
        self.tracker.start((self.state.topic, partition), offset)
        task = asyncio.create_task(self._run_one(msg))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        if offset >= span.end - 1:
            reading.discard(partition)
            consumer.pause([TopicPartition(self.state.topic, partition)])

    def _advance_position(self, partition: int, offset: int) -> None:
        span = self.state.partitions[partition]
        if offset > span.position:
            span.position = min(offset, span.end)
        self.ledger.settle(partition, offset)

    async def _commit(self, consumer: Consumer, final: bool = False) -> None:
        """State file first, then the group's offsets: the file is what a restart reads."""
        ready = self.tracker.to_commit()
        for (_, partition), offset in ready.items():
            self._advance_position(partition, offset)
        if final:
            self.state.finished = all(r.done for r in self.state.partitions.values())
        if not ready and not final:
            return
        save_state(self.wiring.state_file, self.state)
        offsets = [
            TopicPartition(self.state.topic, p, r.position)
            for p, r in self.state.partitions.items()
            if r.position > r.start
        ]
        if offsets:
            await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
        self.tracker.mark_committed(ready)
