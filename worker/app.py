"""The worker: consume (batch) -> decode -> funnel -> judge/escalate -> publish -> commit.

Concurrency model: one asyncio loop. The consumer runs on its own thread (see consume.py), each
post is an asyncio task, and an offset becomes committable only once every record derived from
it (verdict + audit, or the DLQ record) was acknowledged by the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from confluent_kafka import KafkaError, KafkaException, Message

from worker.commit import OffsetTracker, TopicPartitionKey
from worker.config import Settings
from worker.consume import GroupConsumer, consumer_config
from worker.contracts import Post, SourceRef
from worker.decode import DecodeError, decode_post
from worker.funnel import PolicyRuntime, screen
from worker.health import build_health_app, start_health_server
from worker.judge import JudgeCall, JudgeClient
from worker.metrics import Metrics
from worker.pipeline import Judged, Judges, judge_post
from worker.policies import Policy, load_policy_dir
from worker.publish import DeliveryFailed, Publisher, producer_config

log = structlog.get_logger("modstream.worker")


@dataclass(frozen=True, slots=True)
class Consumed:
    """What we keep of a Kafka message: enough to publish results and commit."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    started: float

    @property
    def tp(self) -> TopicPartitionKey:
        return (self.topic, self.partition)

    @property
    def source(self) -> SourceRef:
        return SourceRef(topic=self.topic, partition=self.partition, offset=self.offset)

    @classmethod
    def of(cls, msg: Message) -> Consumed:
        return cls(
            str(msg.topic()),
            int(msg.partition() or 0),
            int(msg.offset() or 0),
            msg.key(),
            msg.value(),
            time.perf_counter(),
        )


class Worker:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.runtime = PolicyRuntime.build(load_policy_dir(settings.policies_dir))
        self.tracker = OffsetTracker()
        self._tasks: dict[TopicPartitionKey, set[asyncio.Task[None]]] = defaultdict(set)
        self._paused: set[TopicPartitionKey] = set()
        self._judges_ready = False
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
        )
        self.publisher = Publisher(producer_config(kafka.bootstrap_servers, dict(kafka.extra)))
        limits = httpx.Limits(
            max_connections=settings.judge_t1.max_in_flight + settings.judge_t2.max_in_flight + 8,
            max_keepalive_connections=settings.judge_t1.max_in_flight + settings.judge_t2.max_in_flight,
        )
        self._http = httpx.AsyncClient(limits=limits)
        self.t1 = self._judge_client("t1")
        self.t2 = self._judge_client("t2")

    def _judge_client(self, tier: str) -> JudgeClient:
        tier_settings = self.settings.judge_t1 if tier == "t1" else self.settings.judge_t2
        return JudgeClient(
            "t1" if tier == "t1" else "t2",
            tier_settings,
            self._http,
            on_latency=lambda t, s: self.metrics.judge_latency.labels(t).observe(s),
            on_retry=lambda err: self.metrics.judge_retries.labels(tier, err).inc(),
        )

    # ---- the straight line -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain within `drain_timeout_s`, commit, and return."""
        self._loop = asyncio.get_running_loop()
        self.publisher.start(self._loop)
        health_runner, self.metrics_port = await start_health_server(
            build_health_app(self.metrics, self.readiness), self.settings.metrics_host, self.settings.metrics_port
        )
        readiness_task = asyncio.create_task(self._watch_judges(stop))
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
                await self._apply_backpressure()
                room = self.settings.max_in_flight - self.tracker.total_in_flight
                messages = await self.consumer.consume(max(1, min(self.settings.kafka.batch_size, room)), 0.1)
                if messages:
                    await self._dispatch(messages)
                if time.monotonic() - last_commit >= self.settings.kafka.commit_interval_s:
                    await self._commit()
                    last_commit = time.monotonic()
        finally:
            await self._drain()
            readiness_task.cancel()
            await self.consumer.close()
            remaining = self.publisher.close(timeout_s=10)
            await self._http.aclose()
            await health_runner.cleanup()
            log.info("worker_stopped", unflushed=remaining)

    async def _dispatch(self, messages: list[Message]) -> None:
        records: list[Consumed] = []
        for msg in messages:
            error = msg.error()
            if error is not None:
                self._on_consume_error(error)
                continue
            record = Consumed.of(msg)
            self.tracker.start(record.tp, record.offset)
            records.append(record)
        self.metrics.records_consumed.labels(self.settings.topics.posts).inc(len(records))
        runtime = self.runtime  # one snapshot for the whole batch
        valid: list[tuple[Consumed, Post]] = []
        for record in records:
            decoded = decode_post(record.value, self.settings.max_record_bytes)
            if isinstance(decoded, DecodeError):
                self._spawn(record, self._dead_letter(record, decoded))
            else:
                valid.append((record, decoded))
        screened = await screen(runtime, [post.text for _, post in valid])
        judges = Judges(t1=self._judge_t1, t2=self._judge_t2, rules=self.settings.escalation)
        for (record, post), result in zip(valid, screened, strict=True):
            for policy_id in result.candidates:
                self.metrics.funnel_candidates.labels(policy_id).inc()
            judging = judge_post(post, result, runtime, judges, record.source, record.started)
            self._spawn(record, self._judge_and_publish(record, post, judging))

    async def _judge_t1(self, policy: Policy, post: Post) -> JudgeCall:
        return self._count_call(await self.t1.judge(policy, post))

    async def _judge_t2(self, policy: Policy, post: Post) -> JudgeCall:
        return self._count_call(await self.t2.judge(policy, post))

    def _count_call(self, call: JudgeCall) -> JudgeCall:
        self.metrics.judge_calls.labels(call.tier, call.failure or "ok").inc()
        return call

    async def _judge_and_publish(self, record: Consumed, post: Post, judging: Coroutine[Any, Any, Judged]) -> None:
        judged = await judging
        verdict = judged.verdict
        key = post.id.encode()
        sends = [self._deliver(self.settings.topics.actions, key, verdict.model_dump_json().encode())]
        if judged.audit is not None:
            sends.append(self._deliver(self.settings.topics.audit, key, judged.audit.model_dump_json().encode()))
        await asyncio.gather(*sends)
        for reason in judged.escalations:
            self.metrics.escalations.labels(reason).inc()
        self.metrics.verdicts.labels(verdict.decision, verdict.tier).inc()
        self.metrics.post_latency.observe(time.perf_counter() - record.started)

    async def _dead_letter(self, record: Consumed, error: DecodeError) -> None:
        headers = [
            ("error.type", error.type.encode()),
            ("error.message", error.message.encode("utf-8", "replace")[:4096]),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        await self._deliver(self.settings.topics.dlq, record.key, record.value, headers)
        self.metrics.dlq_records.labels(error.type).inc()
        log.info("dead_lettered", error_type=error.type, reason=error.message, **record.source.model_dump())

    async def _deliver(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Deliver or keep trying: a record we derived must reach the broker before its offset commits."""
        delay = 0.1
        while True:
            try:
                await self.publisher.send(topic, key, value, headers or [])
                return
            except (DeliveryFailed, KafkaException) as exc:
                self.metrics.publish_errors.labels(topic, type(exc).__name__).inc()
                log.warning("delivery_failed_retrying", topic=topic, error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ---- bookkeeping ---------------------------------------------------------------------------

    def _spawn(self, record: Consumed, work: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(self._finish_after(record, work))
        self._tasks[record.tp].add(task)
        task.add_done_callback(self._tasks[record.tp].discard)
        self.metrics.in_flight.set(self.tracker.total_in_flight)

    async def _finish_after(self, record: Consumed, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or poison record: dead-letter it rather than stall the partition
            log.exception("processing_failed", **record.source.model_dump())
            await self._dead_letter(record, DecodeError("processing_error", f"{type(exc).__name__}: {exc}"))
        self.tracker.finish(record.tp, record.offset)
        self.metrics.in_flight.set(self.tracker.total_in_flight)

    async def _apply_backpressure(self) -> None:
        at_cap = self.tracker.total_in_flight >= self.settings.max_in_flight
        want_paused = set(self.consumer.assigned) if at_cap else set()
        to_pause = sorted(want_paused - self._paused)
        to_resume = sorted(self._paused - want_paused)
        if to_pause:
            await self.consumer.pause(to_pause)
        if to_resume:
            await self.consumer.resume(to_resume)
        self._paused = want_paused
        self.metrics.paused_partitions.set(len(self._paused))

    async def _commit(self) -> None:
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
        pending = {t for tasks in self._tasks.values() for t in tasks}
        log.info("draining", in_flight=len(pending), deadline_s=self.settings.drain_timeout_s)
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.settings.drain_timeout_s)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
            if still:
                log.warning("drain_deadline_passed", abandoned=len(still))
        await asyncio.to_thread(self.publisher.flush, 10)
        await self._commit()

    # ---- rebalances (called on the consumer thread) --------------------------------------------

    def _on_assign(self, keys: list[TopicPartitionKey]) -> None:
        for key in keys:
            self.tracker.forget(key)

    def _on_revoke(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(self._release(keys), self._loop)
        return future.result(timeout=self.settings.drain_timeout_s + 15)

    async def _release(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Finish (within the drain bound) or abandon the revoked partitions' posts, then hand back
        the offsets to commit. Abandoned posts are replayed by the next owner."""
        tasks = {t for key in keys for t in self._tasks.get(key, ())}
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=self.settings.drain_timeout_s)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        # Nothing derived from a revoked partition may land after ownership moved on.
        await asyncio.to_thread(self.publisher.flush, 10)
        pending = self.tracker.to_commit()
        offsets = {key: pending[key] for key in keys if key in pending}
        for key in keys:
            self.tracker.forget(key)
            self._paused.discard(key)
        return offsets

    def _on_consume_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        log.warning("consume_error", error=error.name(), reason=error.str())

    # ---- readiness ---------------------------------------------------------------------------

    async def _watch_judges(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            t1_ok, t2_ok = await asyncio.gather(self.t1.ready(), self.t2.ready())
            self._judges_ready = t1_ok and t2_ok
            self.metrics.ready.set(1 if self.readiness()[0] else 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=5.0)

    def readiness(self) -> tuple[bool, str]:
        if not self.consumer.assigned:
            return False, "no partitions assigned"
        if not self._judges_ready:
            return False, "a judge tier does not list its model on /v1/models"
        return True, "ok"
