"""From consumed messages to started work: keep the records this worker owns, hold the worker
cap (push back what arrived past it), notice rewinds, admit per partition (flow.py), then decode,
screen the batch in one funnel call off the loop, and hand each post to the fast path (cleared)
or to its own task (judge work, DLQ records)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial

import structlog
from confluent_kafka import Message

from funnel import FunnelResult
from worker.cascade.cleared import is_cleared
from worker.cascade.pipeline import judge_post
from worker.contracts import Post
from worker.kafka.consumer import GroupConsumer
from worker.ops.sensors import Sensors
from worker.ops.tracing import Header, select_headers
from worker.policies.reload import PolicyReloader
from worker.policies.screening import PolicyRuntime, screen, with_bypass
from worker.stream.backpressure import Backpressure
from worker.stream.clients import ClientTrouble
from worker.stream.deadline import retry_state
from worker.stream.decode import DecodeError, decode_posts
from worker.stream.fastpath import Cleared, FastPath
from worker.stream.flow import FlowControl
from worker.stream.judging import StreamJudges
from worker.stream.offsets import OffsetTracker, TopicPartitionKey
from worker.stream.rebalance import Rebalance
from worker.stream.records import Consumed
from worker.stream.tasks import PostTasks

log = structlog.get_logger("modstream.worker")
# A batch being screened: the funnel call, its posts, the policy snapshot, and each partition's
# tracker epoch when it started.
Screening = tuple[
    "asyncio.Future[list[FunnelResult | Exception]]",
    list[tuple[Consumed, Post]],
    PolicyRuntime,
    dict[TopicPartitionKey, object | None],
]


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    posts_topic: str
    passthrough: frozenset[str]
    max_record_bytes: int
    bypass_sample_rate: float
    # Records of this topic keep their retry headers (worker/stream/deadline.py); None: no retry topic.
    retry_topic: str | None = None


class Dispatcher:
    def __init__(
        self,
        settings: DispatchSettings,
        consumer: GroupConsumer,
        flow: FlowControl[Consumed],
        tracker: OffsetTracker,
        backpressure: Backpressure,
        rebalance: Rebalance,
        tasks: PostTasks,
        judges: StreamJudges,
        reloader: PolicyReloader,
        trouble: ClientTrouble,
        sensors: Sensors,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.flow = flow
        self.tracker = tracker
        self.backpressure = backpressure
        self.rebalance = rebalance
        self.tasks = tasks
        self.judges = judges
        self.reloader = reloader
        self.trouble = trouble
        self.sensors = sensors
        self.fast: FastPath | None = None  # wiring sets it unless the fast path is off
        self._dropped_logged: set[str] = set()  # invalid trace headers: logged once each, then counted
        # Batches whose funnel call runs (in a thread) while the loop polls: oldest first.
        self._screening: list[Screening] = []
        self._finishing = asyncio.Lock()

    async def dispatch(self, messages: list[Message]) -> None:
        owned: list[Consumed] = []
        consumed = 0
        assigned = self.consumer.assigned
        passthrough = self.settings.passthrough
        now = time.perf_counter()  # one clock reading for the batch: its posts were consumed together
        of = Consumed.of
        retry_topic = self.settings.retry_topic
        for msg in messages:
            error = msg.error()
            if error is not None:
                self.trouble.on_consume_error(error)
                continue
            record = of(msg, self._passthrough_headers(msg) if passthrough else (), now)
            if record.topic == retry_topic:
                record = of(msg, (*record.headers, *retry_state(msg.headers())), now)
            consumed += 1
            if record.tp not in assigned:
                # Fetched before a revoke: that partition is someone else's now; never act on it.
                self.sensors.on_abandoned("not_owned")
                continue
            owned.append(record)
        self.sensors.on_consumed(self.settings.posts_topic, consumed)
        fits, overflow = self.flow.over_cap(owned, self.flow.room(self.tasks.held_total))
        if overflow and not await self.backpressure.push_back(overflow, len(owned) - len(fits)):
            fits = owned  # could not seek back: holding a few over the cap beats skipping them
        ready: list[Consumed] = []
        started: dict[TopicPartitionKey, int] = {}
        at = self.flow.admit_batch(fits, 0, self.tasks.held, ready, started)
        while at < len(fits):  # a rewind: start that partition over from this record
            record = fits[at]
            ready = [r for r in ready if r.tp != record.tp]
            started[record.tp] = 0
            await self.rebalance.rewind(record)
            at = self.flow.admit_batch(fits, at, self.tasks.held, ready, started, rewound=at)
        await self.start(ready)

    def _passthrough_headers(self, msg: Message) -> tuple[Header, ...]:
        """The input headers on the allow-list; invalid trace headers are dropped and counted."""
        raw = msg.headers()
        if not raw:
            return ()
        selected = select_headers(raw, self.settings.passthrough)
        for name in selected.dropped:
            self.sensors.on_trace_header_dropped(name)
            if name not in self._dropped_logged:
                self._dropped_logged.add(name)
                log.warning(
                    "invalid_trace_header_dropped",
                    header=name,
                    note="not W3C Trace Context; later ones are only counted (modstream_trace_headers_dropped_total)",
                    topic=msg.topic(),
                    partition=msg.partition(),
                    offset=msg.offset(),
                )
        return selected.headers

    async def start(self, records: list[Consumed]) -> None:
        """Track and decode the records the flow control admitted, and start screening them in one
        funnel call off the loop. The loop finishes the screening (`finish_screened`) after its
        next poll, so the funnel of one batch overlaps the fetch and decoding of the next."""
        if not records:
            return
        tracker = self.tracker
        for record in records:
            tracker.start(record.tp, record.offset)
        runtime = self.reloader.runtime  # one snapshot for the whole batch
        valid: list[tuple[Consumed, Post]] = []
        decoded = decode_posts([record.value for record in records], self.settings.max_record_bytes)
        for record, post in zip(records, decoded, strict=True):
            if isinstance(post, DecodeError):
                self.tasks.dead_letter(record, post)
            else:
                valid.append((record, post))
        if not valid:
            return
        epochs = {tp: tracker.epoch(tp) for tp in {record.tp for record, _ in valid}}
        screening = asyncio.ensure_future(self._screen(runtime, valid))
        self._screening.append((screening, valid, runtime, epochs))

    @property
    def screening(self) -> int:
        """Batches being screened."""
        return len(self._screening)

    async def finish_screened(self) -> None:
        """Route every batch whose screening was started: cleared posts to the fast path, the rest
        to their own tasks. Posts of a partition that was revoked, lost or rewound meanwhile are
        dropped (their partition's bookkeeping is gone; the next owner or the re-read replays them)."""
        async with self._finishing:  # the loop, a revoke and the drain may all ask
            while self._screening:
                screening, valid, runtime, epochs = self._screening.pop(0)
                self._finish(await screening, valid, runtime, epochs)

    def _finish(
        self,
        screened: list[FunnelResult | Exception],
        valid: list[tuple[Consumed, Post]],
        runtime: PolicyRuntime,
        epochs: dict[TopicPartitionKey, object | None],
    ) -> None:
        stale = {tp for tp, epoch in epochs.items() if self.tracker.epoch(tp) is not epoch}
        if stale:
            kept = [(i, pair) for i, pair in enumerate(valid) if pair[0].tp not in stale]
            self.sensors.on_abandoned("revoked", len(valid) - len(kept))
            valid = [pair for _, pair in kept]
            screened = [screened[i] for i, _ in kept]
        self._route(runtime, valid, screened)

    def _route(
        self, runtime: PolicyRuntime, valid: list[tuple[Consumed, Post]], screened: list[FunnelResult | Exception]
    ) -> None:
        self.sensors.on_screened(screened, len(runtime.funnel.stale_heads))
        rates = runtime.bypass_rates(self.settings.bypass_sample_rate)
        # No policy sampled (the default): `with_bypass` would return every result unchanged.
        sampling = any(rate > 0 for rate in rates.values())
        fast = self.fast
        cleared: dict[TopicPartitionKey, list[Cleared]] = {}
        for (record, post), result in zip(valid, screened, strict=True):
            if isinstance(result, Exception):
                error = DecodeError("processing_error", f"funnel failed: {type(result).__name__}: {result}")
                self.tasks.dead_letter(record, error)
                continue
            if result.candidates:
                self.sensors.on_candidates(result.candidates)
            if sampling:
                result = with_bypass(result, post.id, rates)
            if fast is not None and is_cleared(result, runtime):
                cleared.setdefault(record.tp, []).append((record, post, result))
            else:
                self.judge(record, post, result, runtime)
        if fast is not None:
            for tp, group in cleared.items():
                fast.publish(tp, group, runtime)

    def judge(self, record: Consumed, post: Post, result: FunnelResult, runtime: PolicyRuntime) -> None:
        """The per-post path: one task that judges (if there is anything to judge) and publishes."""
        judging = partial(judge_post, post, result, runtime, self.judges.judges, record.source, record.started)
        self.tasks.judge(record, post, judging, lambda: runtime.candidates(result))

    async def _screen(
        self, runtime: PolicyRuntime, valid: list[tuple[Consumed, Post]]
    ) -> list[FunnelResult | Exception]:
        """The funnel for a batch; if it raises, post by post, so one poison post fails alone."""
        texts = [post.text for _, post in valid]
        langs = [post.lang for _, post in valid]
        try:
            return list(await screen(runtime, texts, langs))
        except Exception:
            log.warning("funnel_batch_failed_screening_one_by_one", batch=len(texts))
        results: list[FunnelResult | Exception] = []
        for text, lang in zip(texts, langs, strict=True):
            try:
                results.extend(await screen(runtime, [text], [lang]))
            except Exception as exc:
                results.append(exc)
        return results
