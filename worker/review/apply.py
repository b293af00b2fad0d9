"""`modstream review apply`: reviewer decisions (`review-decisions`) -> superseding verdicts (`actions`).

One loop on one thread:
1. follow the `review` topic from the beginning (no group) into the store, so a decision finds the
   record it answers (an unknown review id makes it read on until caught up before giving up);
2. consume `review-decisions` in a consumer group; per decision, build the superseding verdict
   (supersede.py), or a DLQ record (original bytes, `error.type`/`error.message`/`source.*` headers)
   for one that cannot be applied: not JSON, not a ReviewDecision, unknown review id, a policy not in
   the record, another post. A decision already applied (a replay) is skipped;
3. produce the batch's verdicts and DLQ records and wait for the broker's acknowledgement of every
   one; only then note the decisions as applied in the store and commit the batch's offsets.
A crash anywhere replays the batch: the verdicts come out again with the same ids (at-least-once,
idempotent for consumers that keep the greatest (revision, verdict_id) per post).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import ValidationError

from worker.contracts import ReviewDecision, ReviewRecord, SourceRef
from worker.kafka.errors import classify
from worker.review.follow import Follower
from worker.review.store import AppliedDecision, ReviewStore
from worker.review.supersede import InvalidDecision, supersede

log = structlog.get_logger("modstream.review")
ACK_TIMEOUT_S = 60.0
# topic, key, value, headers
Output = tuple[str, bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]


@dataclass(frozen=True, slots=True)
class ApplyTopics:
    review: str = "review"
    decisions: str = "review-decisions"
    actions: str = "actions"
    dlq: str = "dlq"


@dataclass
class ApplyCounts:
    """What the consumer did so far (read from another thread by tests and the CLI's summary)."""

    read: int = 0
    published: int = 0
    dead_lettered: int = 0
    replays: int = 0
    reasons: list[str] = field(default_factory=list)


class DeliveryError(RuntimeError):
    """The broker did not acknowledge every record of a batch: nothing of it is committed."""


def store_review(store: ReviewStore, msg: Message) -> None:
    try:
        store.add_review(ReviewRecord.model_validate_json(msg.value() or b""))
    except ValidationError as exc:
        log.warning("unreadable_review_record", partition=msg.partition(), offset=msg.offset(), error=str(exc)[:300])


def dead_letter_headers(msg: Message, kind: str, message: str) -> list[tuple[str, str | bytes | None]]:
    return [
        ("error.type", kind.encode()),
        ("error.message", message.encode("utf-8", "replace")[:4096]),
        ("source.topic", str(msg.topic()).encode()),
        ("source.partition", str(msg.partition()).encode()),
        ("source.offset", str(msg.offset()).encode()),
    ]


def next_offsets(batch: list[Message]) -> list[TopicPartition]:
    """The offsets to commit after `batch`: one past its last record, per partition."""
    last: dict[tuple[str, int], int] = {}
    for msg in batch:
        key = (str(msg.topic()), int(msg.partition() or 0))
        last[key] = max(last.get(key, -1), int(msg.offset() or 0))
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in sorted(last.items())]


class ReviewApplier:
    def __init__(
        self,
        consumer: dict[str, Any],
        producer: dict[str, Any],
        store: ReviewStore,
        topics: ApplyTopics = ApplyTopics(),
        counts: ApplyCounts | None = None,
    ) -> None:
        self.store = store
        self.topics = topics
        self.counts = counts if counts is not None else ApplyCounts()
        reader_config = {**consumer, "group.id": f"{consumer['group.id']}-review-reader"}  # never joined
        self._reviews = Follower(reader_config, {topics.review: lambda m: store_review(store, m)})
        self._decisions = Consumer({**consumer, "enable.auto.commit": False})
        self._producer = Producer(producer)

    def decide(
        self, msg: Message, batch: dict[str, tuple[ReviewDecision, AppliedDecision]]
    ) -> tuple[ReviewDecision, AppliedDecision, bytes] | None:
        """The verdict a decision record produces (None: a replay). Raises InvalidDecision.
        `batch`: this batch's decisions so far, by review id (not in the store until acknowledged)."""
        try:
            decision = ReviewDecision.model_validate_json(msg.value() or b"")
        except ValidationError as exc:
            kind = "bad_json" if any(e["type"] == "json_invalid" for e in exc.errors()) else "invalid_decision"
            raise InvalidDecision(kind, str(exc)[:2000]) from None
        in_batch = batch.get(decision.review_id)
        if self.store.seen(decision.decision_id) or (in_batch and in_batch[0].decision_id == decision.decision_id):
            return None
        record = self.store.review(decision.review_id)
        if record is None:
            self._reviews.catch_up()  # the record may be on the review topic but not read yet
            record = self.store.review(decision.review_id)
        if record is None:
            raise InvalidDecision("unknown_review", f"no review record {decision.review_id!r}")
        source = SourceRef(topic=str(msg.topic()), partition=int(msg.partition() or 0), offset=int(msg.offset() or 0))
        previous = in_batch[1] if in_batch else self.store.applied(decision.review_id)
        out = supersede(record, decision, previous, source)
        return decision, out.applied, out.verdict.model_dump_json().encode()

    def handle(self, batch: list[Message]) -> None:
        outputs: list[Output] = []
        applied: dict[str, tuple[ReviewDecision, AppliedDecision]] = {}  # newest per review
        in_order: list[tuple[ReviewDecision, AppliedDecision]] = []
        for msg in batch:
            self.counts.read += 1
            try:
                result = self.decide(msg, applied)
            except InvalidDecision as exc:
                headers = dead_letter_headers(msg, exc.kind, exc.message)
                outputs.append((self.topics.dlq, msg.key(), msg.value(), headers))
                self.counts.dead_lettered += 1
                self.counts.reasons.append(exc.kind)
                log.warning("review_decision_dead_lettered", error_type=exc.kind, partition=msg.partition(),
                            offset=msg.offset())  # fmt: skip
                continue
            if result is None:
                self.counts.replays += 1
                continue
            decision, done, verdict = result
            outputs.append((self.topics.actions, decision.post_id.encode(), verdict, []))
            applied[decision.review_id] = (decision, done)
            in_order.append((decision, done))
        self._produce(outputs)
        # Acknowledged: only now are the decisions applied (a crash before this line replays them).
        for decision, done in in_order:
            self.store.record_applied(decision, done)
        self.counts.published += len(outputs) - sum(1 for topic, *_ in outputs if topic == self.topics.dlq)

    def _produce(self, outputs: list[Output]) -> None:
        errors: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, _msg: Message) -> None:
            if error is not None:
                errors.append(error)

        for topic, key, value, headers in outputs:
            while True:
                try:
                    self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.1)
        remaining = self._producer.flush(ACK_TIMEOUT_S)
        if errors or remaining:
            raise DeliveryError(f"{len(errors)} records refused, {remaining} unacknowledged: {errors[:3]}")

    def run(self, stop: threading.Event) -> ApplyCounts:
        """Consume until `stop` is set (raises DeliveryError / fatal KafkaException; offsets of an
        unfinished batch are not committed, so a restart replays it)."""
        self._decisions.subscribe([self.topics.decisions])
        try:
            while not stop.is_set():
                self._reviews.poll(0.1)
                messages = self._decisions.consume(200, 0.5)
                batch = []
                for msg in messages:
                    error = msg.error()
                    if error is None:
                        batch.append(msg)
                    elif classify(error) in ("fatal", "config"):
                        raise KafkaException(error)
                if batch:
                    self.handle(batch)
                    self._decisions.commit(offsets=next_offsets(batch), asynchronous=False)
        finally:
            self._decisions.close()
            self._reviews.close()
            self._producer.flush(10)
        return self.counts


__all__ = ["ApplyCounts", "ApplyTopics", "DeliveryError", "ReviewApplier"]
