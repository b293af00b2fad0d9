"""The worker: consume (batch) -> decode -> funnel -> judge/escalate -> publish -> commit.

Concurrency model: one asyncio loop. The consumer runs on its own thread (see consume.py), each
post is an asyncio task, and an offset becomes committable only once every record derived from
it (verdict + audit, or the DLQ record) was acknowledged by the broker.

Beside the straight line: flow.py (the in-flight caps and pause decisions), watch.py (readiness
and the producer watchdog), transact.py (exactly-once mode), reload.py (policy hot reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import orjson
import structlog
from confluent_kafka import KafkaError, KafkaException, Message

from funnel import FunnelResult
from funnel.recall import RecallTracker
from worker.cascade.pipeline import Judged, Judges, judge_post
from worker.cascade.verdict import decide
from worker.config import Settings
from worker.contracts import Post, SourceRef
from worker.judges.breaker import STATE_VALUE
from worker.judges.client import JudgeCall, JudgeClient
from worker.kafka.consumer import GroupConsumer, consumer_config
from worker.kafka.errors import classify, is_broker_down
from worker.kafka.producer import DeliveryFailed, Publisher, Undeliverable, producer_config
from worker.ops.health import build_health_app, start_health_server
from worker.ops.logs import RepeatThrottle
from worker.ops.metrics import Metrics, consumer_lag_from_stats, usage_tokens
from worker.ops.tracing import Header, bind_trace, select_headers
from worker.ops.watch import Watch
from worker.policies.files import Policy
from worker.policies.reload import PolicyReloader
from worker.policies.screening import PolicyRuntime, count_recall, count_screened, screen, with_bypass
from worker.stream.deadline import DeadlineExceeded, JudgeUptimeClock
from worker.stream.decode import DecodeError, decode_post
from worker.stream.flow import FlowControl, pause_changes
from worker.stream.offsets import OffsetTracker, TopicPartitionKey
from worker.stream.transactions import TransactionalOutputs

log = structlog.get_logger("modstream.worker")
# How long the worker (or one partition) may sit at its in-flight cap before it is paused (see
# Worker._wait_for_room, FlowControl.cap_grace_left). Short next to max.poll.interval.ms and rebalance timeouts.
CAP_GRACE_S = 1.0
# The record a processing task works for (exactly-once mode files its outputs under it).
_current_record: ContextVar[Consumed | None] = ContextVar("modstream_current_record", default=None)


@dataclass(frozen=True, slots=True)
class Consumed:
    """What we keep of a Kafka message: enough to publish results and commit."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    started: float
    # The allow-listed input headers (headers.passthrough), copied onto every derived record.
    headers: tuple[Header, ...] = ()

    @property
    def tp(self) -> TopicPartitionKey:
        return (self.topic, self.partition)

    @property
    def source(self) -> SourceRef:
        return SourceRef(topic=self.topic, partition=self.partition, offset=self.offset)

    @classmethod
    def of(cls, msg: Message, headers: tuple[Header, ...] = ()) -> Consumed:
        return cls(
            str(msg.topic()),
            int(msg.partition() or 0),
            int(msg.offset() or 0),
            msg.key(),
            msg.value(),
            time.perf_counter(),
            headers,
        )


class Worker:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        # Funnel recall from the judge's verdicts on candidates and bypass samples (funnel/recall.py).
        self.recall = RecallTracker()
        # Owns the policy snapshot; swapped whole on reload (file poll or SIGHUP, see reload.py).
        self.reloader = PolicyReloader(
            settings.policies_dir,
            lambda r: self.metrics.policy_reloads.labels(r).inc(),
            languages=settings.languages.config(),
            use_heads=settings.funnel_heads,
        )
        self.tracker = OffsetTracker()
        self.flow: FlowControl[Consumed] = FlowControl(
            settings.max_in_flight, settings.max_in_flight_per_partition, pause_grace_s=CAP_GRACE_S
        )
        self.metrics.in_flight_cap.set(settings.max_in_flight)
        self.judge_clock = JudgeUptimeClock()
        self._consumer_fatal: str | None = None
        self._error_throttle = RepeatThrottle()
        self._passthrough = frozenset(settings.headers.passthrough)
        self._dropped_logged: set[str] = set()  # invalid trace headers: logged once each, then counted
        self._tasks: dict[TopicPartitionKey, set[asyncio.Task[None]]] = defaultdict(set)
        self._paused: set[TopicPartitionKey] = set()
        self._pause_unknown: set[TopicPartitionKey] = set()
        self._flow_changed = asyncio.Event()  # set whenever a post starts or finishes
        self.metrics_port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        kafka = settings.kafka
        self.consumer = GroupConsumer(
            consumer_config(
                kafka.bootstrap_servers,
                kafka.group_id,
                dict(kafka.extra),
                kafka.session_timeout_ms,
                kafka.heartbeat_interval_ms,
                kafka.partition_assignment_strategy,
            ),
            [settings.topics.posts],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
            on_error=lambda e: self._on_client_error("consumer", e),
            on_stats=self._on_consumer_stats,
        )
        producer_settings = producer_config(kafka.bootstrap_servers, dict(kafka.extra))
        if settings.exactly_once:
            producer_settings["transactional.id"] = settings.transactional_id or (
                f"modstream-{kafka.group_id}-{socket.gethostname()}"
            )
            producer_settings["transaction.timeout.ms"] = settings.transaction_timeout_ms
        self.publisher = Publisher(
            producer_settings,
            on_error=lambda e: self._on_client_error("producer", e),
            on_restart=self.metrics.client_restarts.labels("producer").inc,
        )
        # Exactly-once mode: outputs wait there until a transaction takes them with their offsets.
        self.transactions: TransactionalOutputs | None = None
        if settings.exactly_once:
            max_bytes = int(producer_settings.get("message.max.bytes", 1_000_000))
            self.transactions = TransactionalOutputs(self.publisher, max_bytes, self.metrics)
        limits = httpx.Limits(
            max_connections=settings.judge_t1.max_in_flight + settings.judge_t2.max_in_flight + 8,
            max_keepalive_connections=settings.judge_t1.max_in_flight + settings.judge_t2.max_in_flight,
        )
        self._http = httpx.AsyncClient(limits=limits)
        self.t1 = self._judge_client("t1")
        self.t2 = self._judge_client("t2")
        # Readiness, the judge-uptime clock and the producer watchdog (see watch.py).
        self.watch = Watch(
            (self.t1, self.t2),
            self.publisher,
            self.metrics,
            lambda: self.consumer.assigned,
            self.judge_clock,
            producer_stall_s=settings.producer_stall_s,
            watch_producer=self.transactions is None,
        )

    @property
    def runtime(self) -> PolicyRuntime:
        """The policy version new batches are judged under."""
        return self.reloader.runtime

    def _judge_client(self, tier: str) -> JudgeClient:
        tier_settings = self.settings.judge_t1 if tier == "t1" else self.settings.judge_t2
        return JudgeClient(
            "t1" if tier == "t1" else "t2",
            tier_settings,
            self._http,
            on_latency=lambda t, s: self.metrics.judge_latency.labels(t).observe(s),
            on_retry=lambda err: self._judge_retried(tier, err),
            on_breaker=lambda url, state: self.metrics.judge_breaker_state.labels(tier, url).set(STATE_VALUE[state]),
        )

    # ---- the straight line -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain within `drain_timeout_s`, commit, and return."""
        self._loop = asyncio.get_running_loop()
        self.publisher.start(self._loop)
        if self.transactions is not None:
            await self.transactions.init(stop)
        health_runner, self.metrics_port = await start_health_server(
            build_health_app(self.metrics, self.watch.readiness), self.settings.metrics_host, self.settings.metrics_port
        )
        watch_task = asyncio.create_task(self.watch.run(stop))
        reload_task = asyncio.create_task(self.reloader.watch(self.settings.policy_reload_interval_s))
        await self.consumer.subscribe()
        log.info(
            "worker_started",
            posts_topic=self.settings.topics.posts,
            group=self.settings.kafka.group_id,
            policies=[f"{p.id}@{p.version}" for p in self.runtime.policies.policies],
            metrics_port=self.metrics_port,
            kafka_extra=self.settings.kafka.redacted_extra(),
        )
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                if self._consumer_fatal is not None:
                    await self._restart_consumer()
                await self._start(self.flow.release(self.tracker.in_flight))
                room = self.flow.room(self.tracker.total_in_flight)
                if room == 0 and await self._wait_for_room():
                    continue
                await self._apply_backpressure()
                # consume() waits its whole timeout unless the batch fills: keep it short while posts
                # are in flight, or freed room is only noticed a timeout later. At the cap (after the
                # grace) every partition is paused; consume() still runs for rebalance callbacks.
                busy = self.tracker.total_in_flight or self.flow.parked
                timeout = (0.01 if room else 0.05) if busy else 0.2
                try:
                    messages = await self.consumer.consume(max(1, min(self.settings.kafka.batch_size, room)), timeout)
                except KafkaException as exc:
                    await self._on_consume_exception(exc)
                    continue
                if messages:
                    await self._dispatch(messages)
                if time.monotonic() - last_commit >= self.settings.kafka.commit_interval_s:
                    await self._commit()
                    last_commit = time.monotonic()
        finally:
            await self._drain()
            watch_task.cancel()
            reload_task.cancel()
            await self.consumer.close()
            remaining = self.publisher.close(timeout_s=10)
            await self._http.aclose()
            await health_runner.cleanup()
            log.info("worker_stopped", unflushed=remaining)

    async def _dispatch(self, messages: list[Message]) -> None:
        owned: list[Consumed] = []
        consumed = 0
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._on_consume_error(error)
                continue
            record = Consumed.of(msg, self._passthrough_headers(msg))
            consumed += 1
            if record.tp not in self.consumer.assigned:
                # Fetched before a revoke: that partition is someone else's now; never act on it.
                self.metrics.abandoned.labels("not_owned").inc()
                continue
            owned.append(record)
        self.metrics.records_consumed.labels(self.settings.topics.posts).inc(consumed)
        fits, overflow = self.flow.over_cap(owned, self.flow.room(self.tracker.total_in_flight))
        if overflow and not await self._push_back(overflow, len(owned) - len(fits)):
            fits = owned  # could not seek back: holding a few over the cap beats skipping them
        ready: list[Consumed] = []
        for record in fits:
            if self.flow.is_rewind(record):
                ready = [r for r in ready if r.tp != record.tp]
                self._rewind(record)
            if self.flow.admit_one(record, self.tracker.in_flight(record.tp) + _count(ready, record.tp)):
                ready.append(record)
        await self._start(ready)

    def _passthrough_headers(self, msg: Message) -> tuple[Header, ...]:
        """The input headers on the allow-list; invalid trace headers are dropped and counted."""
        if not self._passthrough:
            return ()
        selected = select_headers(msg.headers(), self._passthrough)
        for name in selected.dropped:
            self.metrics.trace_headers_dropped.labels(name).inc()
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

    async def _push_back(self, overflow: dict[TopicPartitionKey, int], count: int) -> bool:
        """Records beyond the worker cap arrived: their partitions were not really paused (our view
        of the pause state was wrong). Seek them back so they are read again later, and re-apply
        the pause state of those partitions explicitly on the next backpressure pass."""
        log.warning("over_cap_records_pushed_back", positions={f"{t}[{p}]": o for (t, p), o in overflow.items()})
        self.metrics.abandoned.labels("over_cap").inc(count)
        keys = sorted(overflow)
        self._pause_unknown.update(keys)
        try:
            # Pause before seeking: librdkafka < 1.9 let a pause after a seek resume from the old
            # position (librdkafka#3471); this order is safe everywhere.
            await self.consumer.pause(keys)
            self._paused.update(keys)
            await self.consumer.seek(overflow)
        except KafkaException as exc:
            log.warning("push_back_failed", error=str(exc))
            return False
        return True

    async def _start(self, records: list[Consumed]) -> None:
        """Track, decode, screen and spawn the processing of records the flow control admitted."""
        if not records:
            return
        for record in records:
            self.tracker.start(record.tp, record.offset)
        runtime = self.runtime  # one snapshot for the whole batch
        valid: list[tuple[Consumed, Post]] = []
        for record in records:
            decoded = decode_post(record.value, self.settings.max_record_bytes)
            if isinstance(decoded, DecodeError):
                self._spawn(record, partial(self._dead_letter, record, decoded))
            else:
                valid.append((record, decoded))
        screened = await self._screen(runtime, valid)
        count_screened(self.metrics, screened)
        self.metrics.funnel_heads_stale.set(len(runtime.funnel.stale_heads))
        bypass_rates = runtime.bypass_rates(self.settings.escalation.bypass_sample_rate)
        multi = self.settings.judge_mode == "multi_policy"
        judges = Judges(
            t1=self._judge_t1,
            t2=self._judge_t2,
            rules=self.settings.escalation,
            t1_many=self._judge_many_t1 if multi else None,
            t2_many=self._judge_many_t2 if multi else None,
        )
        for (record, post), result in zip(valid, screened, strict=True):
            if isinstance(result, Exception):
                error = DecodeError("processing_error", f"funnel failed: {type(result).__name__}: {result}")
                self._spawn(record, partial(self._dead_letter, record, error))
                continue
            for policy_id in result.candidates:
                self.metrics.funnel_candidates.labels(policy_id).inc()
            result = with_bypass(result, post.id, bypass_rates)
            judging = partial(judge_post, post, result, runtime, judges, record.source, record.started)
            self._spawn(record, partial(self._judge_and_publish, record, post, judging))

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

    async def _judge_t1(self, policy: Policy, post: Post) -> JudgeCall:
        return self._count_call(await self.t1.judge(policy, post))

    async def _judge_t2(self, policy: Policy, post: Post) -> JudgeCall:
        return self._count_call(await self.t2.judge(policy, post))

    async def _judge_many_t1(self, policies: Sequence[Policy], post: Post) -> list[JudgeCall]:
        return self._count_calls(await self.t1.judge_many(policies, post))

    async def _judge_many_t2(self, policies: Sequence[Policy], post: Post) -> list[JudgeCall]:
        return self._count_calls(await self.t2.judge_many(policies, post))

    def _count_call(self, call: JudgeCall) -> JudgeCall:
        return self._count_calls([call])[0]

    def _count_calls(self, calls: list[JudgeCall]) -> list[JudgeCall]:
        for call in calls:
            self.metrics.judge_calls.labels(call.tier, call.failure or "ok").inc()
            self.judge_clock.note_answer()
        # A multi-policy request's calls share one audit record (one request): count its tokens once.
        for audit in {id(c.audit): c.audit for c in calls}.values():
            for kind, tokens in usage_tokens(audit.usage).items():
                self.metrics.judge_tokens.labels(audit.tier, kind).inc(tokens)
        return calls

    def _judge_retried(self, tier: str, err: str) -> None:
        self.metrics.judge_retries.labels(tier, err).inc()
        self.judge_clock.note_failure()

    async def _judge_within_deadline(
        self, record: Consumed, judging: Callable[[], Coroutine[Any, Any, Judged]]
    ) -> Judged:
        """Judge, but give up after `record_deadline_s` of judge uptime (see worker/stream/deadline.py)."""
        task = asyncio.ensure_future(judging())
        started = self.judge_clock.value
        limit = self.settings.record_deadline_s
        try:
            while True:
                left = limit - (self.judge_clock.value - started)
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
        self, record: Consumed, post: Post, judging: Callable[[], Coroutine[Any, Any, Judged]]
    ) -> None:
        bind_trace(record.headers)  # this task's judge requests carry the post's trace context
        judged = await self._judge_within_deadline(record, judging)
        verdict = judged.verdict
        key = post.id.encode()
        headers = list(record.headers)
        sends = [self._deliver(self.settings.topics.actions, key, verdict.model_dump_json().encode(), headers)]
        if judged.audit is not None:
            sends.append(self._deliver_audit(key, judged.audit.model_dump_json().encode(), headers))
        await asyncio.gather(*sends)
        for reason in judged.escalations:
            self.metrics.escalations.labels(reason).inc()
        for agreement in judged.shadow:
            self.metrics.shadow_agreement.labels(agreement.policy_id, str(agreement.agree).lower()).inc()
        self.metrics.verdicts.labels(verdict.decision, verdict.tier).inc()
        count_recall(self.metrics, self.recall, verdict.results)
        for outcome in judged.outcomes:
            self.metrics.policy_verdicts.labels(outcome.policy.id, decide([outcome]), outcome.deciding.tier).inc()
        self.metrics.post_latency.observe(time.perf_counter() - record.started)

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
            await self._deliver(self.settings.topics.dlq, record.key, record.value, headers)
        except Undeliverable as exc:
            # The original is too large for the broker to take back: keep the evidence instead.
            size = len(record.value or b"") + len(record.key or b"")
            marker = [
                *headers,
                ("error.original_dropped", f"{exc} (key+value {size} bytes)".encode()),
            ]
            await self._deliver(self.settings.topics.dlq, (record.key or b"")[:1024] or None, None, marker)
        self.metrics.dlq_records.labels(error.type).inc()
        # Post text never goes to the log (only its position and the reason's kind).
        log.info("dead_lettered", error_type=error.type, **record.source.model_dump())

    async def _deliver_audit(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        try:
            await self._deliver(self.settings.topics.audit, key, value, headers)
        except Undeliverable as exc:
            stub = orjson.dumps({"post_id": key.decode(errors="replace"), "error": f"audit record not kept: {exc}"})
            await self._deliver(self.settings.topics.audit, key, stub, headers)

    async def _deliver(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Deliver or keep trying: a record we derived must reach the broker before its offset commits.
        Retriable errors (broker down, leader moving) wait and retry; a fatal producer error
        recreates the producer and retries; a record the broker can never take raises Undeliverable."""
        if self.transactions is not None:
            record = _current_record.get()
            assert record is not None, "outputs are produced by processing tasks only"
            self.transactions.add((record.tp, record.offset), topic, key, value, headers or [])
            return
        delay = 0.1
        while True:
            try:
                await self.publisher.send(topic, key, value, headers or [])
                return
            except DeliveryFailed as exc:
                kind = classify(exc.error)
                self.metrics.publish_errors.labels(topic, exc.error.name()).inc()
                if kind == "permanent":
                    raise Undeliverable(str(exc)) from None
                if kind == "fatal":
                    await asyncio.to_thread(self.publisher.restart, exc.generation, str(exc))
                    continue
                log.warning("delivery_failed_retrying", topic=topic, error=str(exc), kind=kind, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ---- bookkeeping ---------------------------------------------------------------------------

    def _spawn(self, record: Consumed, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(self._finish_after(record, work))
        tasks = self._tasks[record.tp]
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        self._observe_flow()

    async def _finish_after(self, record: Consumed, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        _current_record.set(record)  # this task's own context
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
                if attempt < self.settings.max_attempts:
                    self.metrics.processing_retries.inc()
                    log.warning(
                        "processing_failed_retrying",
                        attempt=attempt,
                        error_type=type(exc).__name__,
                        **record.source.model_dump(),
                    )
                    await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
                    continue
                # No exception message in the log: it may quote the post. The DLQ header keeps it.
                log.error(
                    "processing_failed", attempts=attempt, error_type=type(exc).__name__, **record.source.model_dump()
                )
                log.debug("processing_failed_traceback", exc_info=exc)
                reason = f"failed {attempt} times; last error {type(exc).__name__}: {exc}"
                await self._dead_letter(record, DecodeError("processing_error", reason))
                break
        self.tracker.finish(record.tp, record.offset)
        self._observe_flow()

    async def _wait_for_room(self) -> bool:
        """At the worker cap. Pausing now would make librdkafka drop the records it prefetched, and
        every cap hit would cost a re-fetch round trip (measured: 8x lower throughput with a fast
        judge). So wait up to `CAP_GRACE_S` for a post to finish instead. True: go round again
        (room may be free now); False: the cap has lasted the grace period, pause everything and
        keep calling consume() (rebalance callbacks, max.poll.interval.ms). A judge outage does
        not wait: everything is paused at once."""
        left = self.flow.cap_grace_left(time.monotonic())
        if left <= 0 or self._judges_down():
            return False
        self._flow_changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flow_changed.wait(), left)
        return True

    def _judges_down(self) -> bool:
        # A judge tier that is down (every endpoint's breaker open) is not a verdict: posts wait.
        return not (self.t1.available() and self.t2.available())

    def _observe_flow(self) -> None:
        self._flow_changed.set()
        held = self.tracker.total_in_flight
        self.metrics.in_flight.set(self.flow.observe(held))
        self.metrics.in_flight_high_water.set(self.flow.high_water)
        self.metrics.parked.set(self.flow.parked)
        self.metrics.tasks_running.set(sum(len(t) for t in self._tasks.values()))

    async def _apply_backpressure(self) -> None:
        want_paused = self.flow.want_paused(
            self.consumer.assigned,
            self.tracker.in_flight,
            self.tracker.total_in_flight,
            pause_all=self._judges_down(),
            now=time.monotonic(),
        )
        to_pause, to_resume = pause_changes(want_paused, self._paused, self._pause_unknown, self.consumer.assigned)
        try:
            if to_pause:
                await self.consumer.pause(to_pause)
            if to_resume:
                await self.consumer.resume(to_resume)
        except KafkaException as exc:  # e.g. a partition revoked meanwhile: retried next pass
            log.warning("pause_resume_failed", error=str(exc))
            return
        self._paused = want_paused
        self._pause_unknown.clear()
        self.metrics.paused_partitions.set(len(self._paused))
        for topic, partition in self.consumer.assigned:
            self.metrics.partition_in_flight.labels(topic, str(partition)).set(
                self.tracker.in_flight((topic, partition))
            )
        self._observe_flow()

    async def _commit(self) -> None:
        if self.transactions is not None:
            await self.transactions.commit(self.tracker, self.consumer)
            return
        offsets = self.tracker.to_commit()
        for (topic, partition), _ in offsets.items():
            self.metrics.commit_lag.labels(topic, str(partition)).set(self.tracker.in_flight((topic, partition)))
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaException as exc:
            self.metrics.commits.labels("error").inc()
            log.warning("commit_failed", error=str(exc))
            return
        self.tracker.mark_committed(offsets)
        self.metrics.commits.labels("ok").inc()

    async def _drain(self) -> None:
        for key in list(self.consumer.assigned):
            self.metrics.abandoned.labels("drain_parked").inc(self.flow.drop(key))
        pending = {t for tasks in self._tasks.values() for t in tasks}
        log.info("draining", in_flight=len(pending), deadline_s=self.settings.drain_timeout_s)
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.settings.drain_timeout_s)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
            if still:
                self.metrics.abandoned.labels("drain_deadline").inc(len(still))
                log.warning("drain_deadline_passed", abandoned=len(still))
        await asyncio.to_thread(self.publisher.flush, 10)
        await self._commit()

    # ---- rebalances (called on the consumer thread) --------------------------------------------

    def _on_assign(self, keys: list[TopicPartitionKey]) -> None:
        # librdkafka starts each newly assigned partition at its committed offset.
        self.metrics.rebalances.labels("assigned").inc(len(keys))
        for key in keys:
            self.tracker.forget(key)
            self.flow.drop(key)
        # librdkafka keeps a partition's pause flag across unassign/assign (one paused when it was
        # lost or revoked comes back paused: found by the broker-outage test, a stalled worker),
        # while a fresh consumer starts unpaused. Either way, the next backpressure pass sets the
        # state explicitly; assuming one of them let a worker read past its cap.
        self._pause_unknown.update(keys)

    def _on_revoke(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        assert self._loop is not None
        self.metrics.rebalances.labels("revoked").inc(len(keys))
        future = asyncio.run_coroutine_threadsafe(self._release(keys), self._loop)
        return future.result(timeout=self.settings.rebalance_timeout_s + 15)

    def _on_lost(self, keys: list[TopicPartitionKey]) -> None:
        assert self._loop is not None
        self.metrics.rebalances.labels("lost").inc(len(keys))
        future = asyncio.run_coroutine_threadsafe(self._release(keys, wait_s=0.0), self._loop)
        future.result(timeout=15)

    async def _release(
        self, keys: list[TopicPartitionKey], wait_s: float | None = None
    ) -> dict[TopicPartitionKey, int]:
        """Finish (within `rebalance_timeout_s`) or abandon the revoked partitions' posts, then hand
        back the offsets to commit. Abandoned posts are replayed by the next owner. Lost partitions
        (`wait_s=0`) are abandoned at once: another member may own them already."""
        bound = self.settings.rebalance_timeout_s if wait_s is None else wait_s
        started = time.monotonic()
        for key in keys:
            self.metrics.abandoned.labels("revoked_parked").inc(self.flow.drop(key))
            self.metrics.forget_partition(*key)
        tasks = {t for key in keys for t in self._tasks.get(key, ())}
        if tasks:
            still = tasks
            if bound > 0:
                _, still = await asyncio.wait(tasks, timeout=bound)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
            if still:
                self.metrics.abandoned.labels("revoked" if bound > 0 else "lost").inc(len(still))
        if self.transactions is not None:
            # Revoke: one last transaction with what finished; lost: nothing may be committed.
            if wait_s is None:
                await self.transactions.commit(self.tracker, self.consumer)
            for key in keys:
                self.transactions.drop(key)
                self.tracker.forget(key)
                self._paused.discard(key)
            return {}
        # Nothing derived from a revoked partition may land after ownership moved on: wait for the
        # broker's acknowledgements within what is left of the bound (at least 1 s).
        left = max(1.0, bound - (time.monotonic() - started))
        remaining = await asyncio.to_thread(self.publisher.flush, left)
        if remaining:
            log.warning("revoke_flush_incomplete", unflushed=remaining, partitions=keys)
        pending = self.tracker.to_commit() if wait_s is None else {}
        offsets = {key: pending[key] for key in keys if key in pending}
        for key in keys:
            self.tracker.forget(key)
            self._paused.discard(key)
        return offsets

    def _rewind(self, record: Consumed) -> None:
        """The partition went back to an offset we already read (log truncated or reset under us,
        e.g. auto.offset.reset after a broker lost its data). Start it over from here: the old
        in-flight work of that partition is cancelled and its offsets no longer count."""
        tp = record.tp
        stale = list(self._tasks.get(tp, ()))
        for task in stale:
            task.cancel()
        self.metrics.abandoned.labels("rewind").inc(len(stale) + self.flow.drop(tp))
        self.tracker.forget(tp)
        if self.transactions is not None:
            self.transactions.drop(tp)
        log.warning("offset_rewind", topic=tp[0], partition=tp[1], offset=record.offset, cancelled=len(stale))

    def _on_consumer_stats(self, stats: str) -> None:
        """librdkafka statistics (consumer thread): the lag of each partition this worker owns."""
        assigned = self.consumer.assigned
        for (topic, partition), lag in consumer_lag_from_stats(stats).items():
            if (topic, partition) in assigned:
                self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)

    def _on_consume_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        self._on_client_error("consumer", error)

    def _on_client_error(self, client: str, error: KafkaError) -> None:
        """Both clients' errors (error_cb, consume errors): count, flag broker trouble, and schedule a
        restart of a client that hit a fatal error. Never raises: the worker rides out outages."""
        kind = classify(error)
        self.metrics.kafka_errors.labels(client, kind, error.name()).inc()
        if kind == "fatal" and client == "consumer":
            self._consumer_fatal = f"{error.name()}: {error.str()}"
        if is_broker_down(error):
            # Logged once per change of reachability (watch.reachability), not per attempt.
            self.watch.broker_trouble(client, error.name(), error.str())
            if kind != "fatal":
                return
        # Others (auth, config...) repeat on every reconnect: once a minute per error, with a count.
        repeated = 0 if kind == "fatal" else self._error_throttle.admit((client, error.name()))
        if repeated >= 0:
            level = logging.ERROR if kind in ("fatal", "config") else logging.WARNING
            fields = {"client": client, "kind": kind, "error": error.name(), "reason": error.str()}
            log.log(level, "kafka_error", repeated=repeated, **fields)

    async def _on_consume_exception(self, exc: KafkaException) -> None:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None:
            self._on_client_error("consumer", error)
        else:
            log.warning("consume_failed", error=str(exc))
        await asyncio.sleep(0.2)  # not a synchronisation: a back-off before polling a failing client again

    async def _restart_consumer(self) -> None:
        reason = self._consumer_fatal or "fatal error"
        self._consumer_fatal = None
        keys = sorted(self.consumer.assigned)
        await self._release(keys, wait_s=0.0)  # the old member's partitions are gone with it
        await self.consumer.restart(reason)
        self._paused.clear()
        self._pause_unknown.clear()
        self.metrics.client_restarts.labels("consumer").inc()


def _count(records: list[Consumed], tp: TopicPartitionKey) -> int:
    return sum(1 for r in records if r.tp == tp)
