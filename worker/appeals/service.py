"""`modstream appeals serve`: consume the appeals topic, re-judge each appealed post at tier 2 (high
effort) with the author's statement as context, and publish the superseding verdict, its audit record
and, when tier 2 is unsure, a review record.

One appeal at a time per process (appeals are rare; tier 2 at high effort is the cost, not Kafka). An
appeal's offset is committed only after every record derived from it was acknowledged by the broker
(at-least-once; a replay repeats the same verdict id, so consumers dedupe it). An appeal that cannot
be read or names an unknown policy goes to the DLQ with `error.type` `invalid_appeal`; one whose
processing keeps failing goes there with `processing_error`. The service never exits on a bad record.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from confluent_kafka import Message
from pydantic import ValidationError

from worker.appeals.rejudge import InvalidAppeal, Outcome, appealed_policies, decide_appeal, frame
from worker.cascade.verdict import WORKER_VERSION
from worker.config import Settings
from worker.contracts import Appeal, Post, SourceRef
from worker.judges.client import JudgeClient
from worker.judges.protocol import JudgeCall
from worker.kafka.consumer import GroupConsumer, consumer_config
from worker.kafka.producer import DeliveryFailed, Publisher, producer_config
from worker.ops.tracing import Header, bind_trace, select_headers
from worker.policies.files import Policy, load_policy_dir

log = structlog.get_logger("modstream.appeals")

# A record whose processing raises (a bug, a broker refusing a record) is tried this often, then dead-lettered.
MAX_ATTEMPTS = 3
POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]

    @property
    def source(self) -> SourceRef:
        return SourceRef(topic=self.topic, partition=self.partition, offset=self.offset)

    @property
    def where(self) -> dict[str, object]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}


async def until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run `work` unless `stop` is set first (then cancel it); True when it finished. A tier 2 that is
    down makes an appeal wait indefinitely: SIGTERM must not."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()  # re-raises the work's exception
    return True


def parse_appeal(value: bytes | None) -> Appeal:
    if not value:
        raise InvalidAppeal("empty record")
    try:
        return Appeal.model_validate(orjson.loads(value))
    except orjson.JSONDecodeError as exc:
        raise InvalidAppeal(f"not JSON: {exc}") from None
    except ValidationError as exc:
        raise InvalidAppeal(f"not an Appeal: {exc.error_count()} error(s): {exc.errors()[0]['msg']}") from None


class AppealService:
    def __init__(self, settings: Settings, group_id: str) -> None:
        self.settings = settings
        kafka = settings.kafka
        self.consumer = GroupConsumer(
            consumer_config(
                kafka.bootstrap_servers,
                group_id,
                dict(kafka.extra),
                kafka.session_timeout_ms,
                kafka.heartbeat_interval_ms,
                kafka.partition_assignment_strategy,
            ),
            [settings.topics.appeals],
            on_assign=lambda keys: None,
            # Offsets are committed after each appeal: nothing is pending when partitions move.
            on_revoke=lambda keys: {},
        )
        self.publisher = Publisher(producer_config(kafka.bootstrap_servers, dict(kafka.extra)))
        # Tier 2 at high effort, whatever effort the stream uses for it.
        t2 = settings.judge_t2.model_copy(update={"reasoning_effort": "high"})
        self.judge = JudgeClient("t2", t2)
        self.appeals = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.publisher.start(asyncio.get_running_loop())
        await self.consumer.subscribe()
        log.info("appeals_started", topic=self.settings.topics.appeals, model=self.judge.settings.model)
        try:
            while not stop.is_set():
                messages = await self.consumer.consume(16, POLL_S)
                for msg in messages:
                    if stop.is_set():
                        break  # not committed: the next run reads it again
                    await self._one(msg, stop)
        finally:
            await self.judge.aclose()
            await self.consumer.close()
            self.publisher.close()
            log.info("appeals_stopped", appeals=self.appeals)

    async def _one(self, msg: Message, stop: asyncio.Event) -> None:
        error = msg.error()
        if error is not None:
            log.warning("consume_error", error=error.name(), reason=error.str())
            return
        record = Received(
            str(msg.topic()),
            int(msg.partition() or 0),
            int(msg.offset() or 0),
            msg.key(),
            msg.value(),
            select_headers(msg.headers(), self.settings.headers.passthrough).headers,
        )
        while not stop.is_set():
            try:
                if not await until_stopped(self.handle(record), stop):
                    return  # stopped mid-appeal: not committed, the next run reads it again
            except Exception as exc:  # the broker refused even the DLQ record: wait, then try again
                log.error("appeal_not_filed_retrying", error_type=type(exc).__name__, **record.where)
                await asyncio.sleep(1.0)
                continue
            await self.consumer.commit({(record.topic, record.partition): record.offset + 1})
            return

    async def handle(self, record: Received) -> None:
        """Process one appeal record until its outputs (or its DLQ record) are acknowledged."""
        try:
            appeal = parse_appeal(record.value)
            policies = appealed_policies(appeal, load_policy_dir(self.settings.policies_dir).live)
        except InvalidAppeal as exc:
            await self.dead_letter(record, "invalid_appeal", str(exc))
            return
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                outcome = await self.rejudge(appeal, policies, record)
                await self.publish(record, outcome)
            except Exception as exc:
                if attempt < MAX_ATTEMPTS:
                    log.warning(
                        "appeal_failed_retrying", attempt=attempt, error_type=type(exc).__name__, **record.where
                    )
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                reason = f"failed {attempt} times; last error {type(exc).__name__}: {exc}"
                await self.dead_letter(record, "processing_error", reason)
                return
            self.appeals += 1
            log.info(
                "appeal_decided",
                decision=outcome.verdict.decision,
                revision=outcome.verdict.revision,
                review=outcome.review is not None,
                **record.where,
            )
            return

    async def rejudge(self, appeal: Appeal, policies: Sequence[Policy], record: Received) -> Outcome:
        bind_trace(record.headers)
        started = time.perf_counter()
        calls = await asyncio.gather(*(self._ask(appeal, p) for p in policies))
        return decide_appeal(
            appeal,
            calls,
            self.settings.escalation.t2_min_confidence,
            record.source,
            self.settings.topics.audit,
            (time.perf_counter() - started) * 1000,
            WORKER_VERSION,
        )

    async def _ask(self, appeal: Appeal, policy: Policy) -> JudgeCall:
        framed = frame(policy, appeal.post.text, appeal.statement)
        post = Post(id=appeal.post.id, text=framed.text, context=appeal.post.context, lang=appeal.post.lang)
        call = await self.judge.judge(framed.policy, post)
        # The result names the policy as loaded (the appeal section is in the audit's request).
        return JudgeCall(call.tier, policy, call.answer, call.failure, call.audit, call.p_violation, call.truncated)

    async def publish(self, record: Received, outcome: Outcome) -> None:
        topics = self.settings.topics
        key = outcome.verdict.post_id.encode()
        headers = list(record.headers)
        sends = [
            self.publisher.send(topics.actions, key, outcome.verdict.model_dump_json().encode(), headers),
            self._send_audit(key, outcome.audit.model_dump_json().encode(), headers),
        ]
        if outcome.review is not None:
            sends.append(self.publisher.send(topics.review, key, outcome.review.model_dump_json().encode(), headers))
        await asyncio.gather(*sends)

    async def _send_audit(self, key: bytes, value: bytes, headers: list[Header]) -> None:
        try:
            await self.publisher.send(self.settings.topics.audit, key, value, headers)
        except DeliveryFailed as exc:
            stub = orjson.dumps({"post_id": key.decode(errors="replace"), "error": f"audit record not kept: {exc}"})
            await self.publisher.send(self.settings.topics.audit, key, stub, headers)

    async def dead_letter(self, record: Received, error_type: str, message: str) -> None:
        headers = [
            ("error.type", error_type.encode()),
            ("error.message", message.encode("utf-8", "replace")[:4096]),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
            *record.headers,
        ]
        await self.publisher.send(self.settings.topics.dlq, record.key, record.value, headers)
        log.info("appeal_dead_lettered", error_type=error_type, **record.where)


async def serve(settings: Settings, group_id: str, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop`); returns how many appeals were decided."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = AppealService(settings, group_id)
    try:
        await service.run(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return service.appeals


__all__ = ["AppealService", "Received", "parse_appeal", "serve"]
