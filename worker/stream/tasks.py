"""Per-post tasks: a post with judge work (or a DLQ record) is one asyncio task that judges within
the deadline, publishes through `Outputs`, retries a failing post and dead-letters it at last, and
finishes its offset once everything derived from it was acknowledged (or filed, exactly-once).

Also the task registry per partition (drain, revoke and rewind cancel from it) and the one
cancel-wait-abandon helper they share.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog

from worker.cascade.pipeline import Judged
from worker.cascade.verdict import assemble_review, review_policy
from worker.contracts import Post
from worker.kafka.producer import Undeliverable
from worker.ops.sensors import Sensors
from worker.ops.tracing import bind_trace, end_post_trace, publish_headers
from worker.policies.files import Policy
from worker.stream.deadline import (
    DeadlineExceeded,
    JudgeUptimeClock,
    RetryRoute,
    attempt_of,
    give_up_verdict,
    origin_of,
    retry_headers,
    wait_until_due,
)
from worker.stream.decode import DecodeError
from worker.stream.offsets import OffsetTracker, TopicPartitionKey
from worker.stream.outputs import Outputs
from worker.stream.records import Consumed

log = structlog.get_logger("modstream.worker")

Work = Callable[[], Coroutine[Any, Any, None]]
Judging = Callable[[], Coroutine[Any, Any, Judged]]


async def finish_or_abandon(tasks: Collection[asyncio.Task[None]], wait_s: float) -> int:
    """Let `tasks` finish within `wait_s` (0: not at all), cancel the rest and wait until they have
    unwound. Returns how many were abandoned. Used by drain, release (revoke/lost) and rewind."""
    if not tasks:
        return 0
    still: Collection[asyncio.Task[None]] = tasks
    if wait_s > 0:
        _, still = await asyncio.wait(tasks, timeout=wait_s)
    for task in still:
        task.cancel()
    await asyncio.gather(*still, return_exceptions=True)
    return len(still)


@dataclass(frozen=True, slots=True)
class Topics:
    actions: str
    audit: str
    dlq: str
    review: str = "review"


class PostTasks:
    def __init__(
        self,
        topics: Topics,
        outputs: Outputs,
        tracker: OffsetTracker,
        sensors: Sensors,
        clock: JudgeUptimeClock,
        *,
        max_attempts: int,
        record_deadline_s: float,
        on_change: Callable[[], None],
        cleared_allowance: int = 0,
        retry: RetryRoute | None = None,
    ) -> None:
        self.topics = topics
        self.outputs = outputs
        self.tracker = tracker
        self.sensors = sensors
        self.clock = clock
        self.max_attempts = max_attempts
        self.record_deadline_s = record_deadline_s
        self.on_change = on_change  # a post started or finished (flow gauges, wait_for_room)
        # Deadline-exceeded posts go to the retry topic (worker/stream/deadline.py); None: straight to the DLQ.
        self.retry = retry
        self._tasks: dict[TopicPartitionKey, set[asyncio.Task[None]]] = defaultdict(set)
        # Group tasks (the fast path: one task, many posts) and the posts they carry.
        self._groups = 0
        self._grouped = 0
        self._grouped_of: dict[TopicPartitionKey, int] = {}
        # `max_in_flight_cleared`: how many posts of group tasks may be held on top of the caps.
        self.cleared_allowance = cleared_allowance

    # ---- the registry ----------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Posts being judged or published now: the per-post tasks and the posts of fast-path groups."""
        return self.judging + self._grouped

    @property
    def judging(self) -> int:
        """Per-post tasks (judge work, dead letters): the posts that may still call a judge."""
        return sum(len(t) for t in self._tasks.values()) - self._groups

    def of(self, keys: Collection[TopicPartitionKey]) -> set[asyncio.Task[None]]:
        return {t for key in keys for t in self._tasks.get(key, ())}

    def all(self) -> set[asyncio.Task[None]]:
        return {t for tasks in self._tasks.values() for t in tasks}

    def _register(self, tp: TopicPartitionKey, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        tasks = self._tasks[tp]
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return task

    def held(self, tp: TopicPartitionKey) -> int:
        """Records of `tp` charged to the in-flight caps: the tracker's count, less the posts of
        fast-path groups (cleared, verdicts encoded, waiting only for the broker's acknowledgement)
        up to `cleared_allowance`. Those free their room in bulk a broker round trip later; charged
        to the caps they left the worker waiting for acknowledgements with the funnel idle."""
        grouped = min(self._grouped_of.get(tp, 0), self.cleared_allowance)
        return max(0, self.tracker.in_flight(tp) - grouped)

    @property
    def held_total(self) -> int:
        """`held` over every partition (the worker cap's count)."""
        return max(0, self.tracker.total_in_flight - min(self._grouped, self.cleared_allowance))

    def spawn_group(self, tp: TopicPartitionKey, posts: int, coro: Coroutine[Any, Any, None]) -> None:
        """A task carrying `posts` posts of one partition (it finishes their offsets itself)."""
        self._groups += 1
        self._grouped += posts
        self._grouped_of[tp] = self._grouped_of.get(tp, 0) + posts

        def done(_task: asyncio.Task[None]) -> None:
            self._groups -= 1
            self._grouped -= posts
            left = self._grouped_of.get(tp, 0) - posts
            if left > 0:
                self._grouped_of[tp] = left
            else:
                self._grouped_of.pop(tp, None)
            self.on_change()

        self._register(tp, coro).add_done_callback(done)

    # ---- per-post tasks --------------------------------------------------------------------------

    def judge(
        self, record: Consumed, post: Post, judging: Judging, candidates: Callable[[], Sequence[Policy]] = tuple
    ) -> None:
        """`candidates`: the post's candidate policies, asked for only if the post runs out of time."""
        self._spawn(record, lambda: self._judge_and_publish(record, post, judging, candidates))

    def dead_letter(self, record: Consumed, error: DecodeError) -> None:
        self._spawn(record, lambda: self._dead_letter(record, error))

    def _spawn(self, record: Consumed, work: Work) -> None:
        self._register(record.tp, self._finish_after(record, work))
        self.on_change()

    async def _finish_after(self, record: Consumed, work: Work) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await work()
                break
            except asyncio.CancelledError:
                raise
            except DeadlineExceeded as exc:
                await self._dead_letter(record, DecodeError("deadline_exceeded", str(exc)))
                break
            except Exception as exc:  # a bug or poison record: retry, then dead-letter it
                if attempt < self.max_attempts:
                    self.sensors.on_processing_retry()
                    log.warning(
                        "processing_failed_retrying", attempt=attempt, error_type=type(exc).__name__, **record.where
                    )
                    await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
                    continue
                # No exception message in the log: it may quote the post. The DLQ header keeps it.
                log.error("processing_failed", attempts=attempt, error_type=type(exc).__name__, **record.where)
                log.debug("processing_failed_traceback", exc_info=exc)
                reason = f"failed {attempt} times; last error {type(exc).__name__}: {exc}"
                await self._dead_letter(record, DecodeError("processing_error", reason))
                break
        self.tracker.finish(record.tp, record.offset)
        self.on_change()

    async def _judge_within_deadline(self, judging: Judging) -> Judged:
        """Judge, but give up after `record_deadline_s` of judge uptime (see worker/stream/deadline.py)."""
        task = asyncio.ensure_future(judging())
        started = self.clock.value
        limit = self.record_deadline_s
        try:
            while True:
                left = limit - (self.clock.value - started)
                if left <= 0:
                    raise DeadlineExceeded(
                        f"judging took longer than record_deadline_s={limit:g}s while the judges answered other posts"
                    )
                done, _ = await asyncio.wait({task}, timeout=max(left, 0.05))
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _judge_and_publish(
        self, record: Consumed, post: Post, judging: Judging, candidates: Callable[[], Sequence[Policy]]
    ) -> None:
        bind_trace(record.headers, record.started, record.where)  # judge requests carry the trace context
        if self.retry is not None and record.topic == self.retry.topic:
            await wait_until_due(record.headers)
        try:
            judged = await self._judge_within_deadline(judging)
        except DeadlineExceeded as exc:
            end_post_trace("deadline_exceeded")  # its spans (OTel on) end here; retry and DLQ carry the caller's
            await self._deadline_exceeded(record, post, exc, candidates())
            return
        key = post.id.encode()
        headers = publish_headers(record.headers)  # the publish span's trace context when OTel is on
        verdict = judged.verdict.model_dump_json().encode()
        sends = [self.outputs.send(record.position, self.topics.actions, key, verdict, headers)]
        if judged.audit is not None:
            sends.append(self._send_audit(record, key, judged.audit.model_dump_json().encode(), headers))
        # Decision `review`: a record for the human queue, through the same outputs (same transaction
        # or the same at-least-once acknowledgement before the offset is finished).
        review = judged.review_record(post, self.topics.audit, datetime.now(UTC))
        if review is not None:
            value = review.model_dump_json().encode()
            sends.append(self.outputs.send(record.position, self.topics.review, key, value, headers))
        await asyncio.gather(*sends)
        self.sensors.on_judged(judged, time.perf_counter() - record.started)
        if review is not None:
            self.sensors.on_review_record(review.reasons)

    async def _deadline_exceeded(
        self, record: Consumed, post: Post, exc: DeadlineExceeded, candidates: Sequence[Policy]
    ) -> None:
        """To the retry topic while attempts are left; else the DLQ, a verdict with every candidate
        policy unresolved (`review`) and its review record (reason `deadline`)."""
        retry = self.retry
        attempt = attempt_of(record.headers) if retry is not None and record.topic == retry.topic else 1
        if retry is not None and attempt < retry.max_attempts:
            origin = origin_of(record.headers, f"{record.topic}/{record.partition}/{record.offset}")
            headers = retry_headers(record.headers, attempt + 1, time.time() + retry.delay_s, origin)
            await self.outputs.send(record.position, retry.topic, record.key, record.value, headers)
            log.info("deadline_exceeded_retry", attempt=attempt, next_attempt=attempt + 1, **record.where)
            return
        message = f"{exc} ({attempt} attempt{'s' if attempt > 1 else ''})"
        latency_ms = (time.perf_counter() - record.started) * 1000
        verdict = give_up_verdict(post.id, record.source, attempt, latency_ms, candidates)
        key, headers = post.id.encode(), list(record.headers)
        sends = [
            self._dead_letter(record, DecodeError("deadline_exceeded", message)),
            self.outputs.send(record.position, self.topics.actions, key, verdict.model_dump_json().encode(), headers),
        ]
        review = None
        if verdict.decision == "review":
            policies = [review_policy(result) for result in verdict.results]
            review = assemble_review(post, verdict, policies, ["deadline"], self.topics.audit, datetime.now(UTC))
            sends.append(
                self.outputs.send(record.position, self.topics.review, key, review.model_dump_json().encode(), headers)
            )
        await asyncio.gather(*sends)
        if review is not None:
            self.sensors.on_review_record(review.reasons)

    async def _send_audit(self, record: Consumed, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        try:
            await self.outputs.send(record.position, self.topics.audit, key, value, headers)
        except Undeliverable as exc:
            stub = orjson.dumps({"post_id": key.decode(errors="replace"), "error": f"audit record not kept: {exc}"})
            await self.outputs.send(record.position, self.topics.audit, key, stub, headers)

    async def _dead_letter(self, record: Consumed, error: DecodeError) -> None:
        headers = [
            ("error.type", error.type.encode()),
            ("error.message", error.message.encode("utf-8", "replace")[:4096]),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
            *record.headers,
        ]
        try:
            await self.outputs.send(record.position, self.topics.dlq, record.key, record.value, headers)
        except Undeliverable as exc:
            # The original is too large for the broker to take back: keep the evidence instead.
            size = len(record.value or b"") + len(record.key or b"")
            marker = [*headers, ("error.original_dropped", f"{exc} (key+value {size} bytes)".encode())]
            await self.outputs.send(record.position, self.topics.dlq, (record.key or b"")[:1024] or None, None, marker)
        self.sensors.on_dead_letter(error.type)
        # Post text never goes to the log (only its position and the reason's kind).
        log.info("dead_lettered", error_type=error.type, **record.where)
