"""The batched fast path for posts the funnel cleared (no candidate after language routing, no
bypass sample: `worker.cascade.cleared.is_cleared`): no task, no pydantic model per post.

Per (partition, consumed batch) the cleared posts' verdicts are encoded together from plain data
(`encode_cleared_batch`, byte-identical to the per-post path's except timings), handed to
`Outputs.send_batch` together, and their offsets finished in bulk (`OffsetTracker.finish_many`) once
the last acknowledgement arrived: one task, one future and one wake-up per group. A post whose
record failed (or a group whose encoding failed) goes the per-post path, which retries and
dead-letters as usual. Metrics count these verdicts exactly as the per-post path would.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import structlog

from funnel import FunnelResult
from worker.cascade.cleared import encode_cleared_batch
from worker.contracts import Post
from worker.kafka.producer import Output
from worker.ops.sensors import Sensors
from worker.policies.screening import PolicyRuntime
from worker.stream.offsets import OffsetTracker, TopicPartitionKey
from worker.stream.outputs import Outputs
from worker.stream.records import Consumed, Position
from worker.stream.tasks import PostTasks

log = structlog.get_logger("modstream.worker")

Cleared = tuple[Consumed, Post, FunnelResult]
# The per-post path for one screened post (a task that judges, publishes, retries, dead-letters).
Fallback = Callable[[Consumed, Post, FunnelResult, PolicyRuntime], None]


class FastPath:
    def __init__(
        self,
        outputs: Outputs,
        tracker: OffsetTracker,
        tasks: PostTasks,
        sensors: Sensors,
        actions_topic: str,
        fallback: Fallback,
    ) -> None:
        self.outputs = outputs
        self.tracker = tracker
        self.tasks = tasks
        self.sensors = sensors
        self.actions_topic = actions_topic
        self.fallback = fallback

    def publish(self, tp: TopicPartitionKey, group: Sequence[Cleared], runtime: PolicyRuntime) -> None:
        """Encode the group's verdicts now and send them in one task."""
        if not group:
            return
        now = time.perf_counter()
        try:
            values = encode_cleared_batch(
                [post for _, post, _ in group],
                [result for _, _, result in group],
                [record.offset for record, _, _ in group],
                runtime,
                tp[0],
                tp[1],
                [(now - record.started) * 1000 for record, _, _ in group],
                datetime.now(UTC),
            )
        except Exception as exc:  # never lose a post to the fast path: the per-post path decides
            log.warning("fast_path_encode_failed", error_type=type(exc).__name__, posts=len(group))
            self._fall_back(group, runtime)
            return
        topic = self.actions_topic
        items: list[tuple[Position, Output]] = [
            ((tp, record.offset), (topic, post.id.encode(), value, record.headers))
            for (record, post, _), value in zip(group, values, strict=True)
        ]
        self.tasks.spawn_group(tp, len(group), self._send(tp, group, items, runtime))

    async def _send(
        self,
        tp: TopicPartitionKey,
        group: Sequence[Cleared],
        items: list[tuple[Position, Output]],
        runtime: PolicyRuntime,
    ) -> None:
        try:
            failed = set(await self.outputs.send_batch(items))
        except Exception as exc:  # CancelledError is not an Exception: a revoke still cancels
            log.warning("fast_path_send_failed", error_type=type(exc).__name__, posts=len(group))
            failed = set(range(len(group)))
        done = (
            [record for i, (record, _, _) in enumerate(group) if i not in failed]
            if failed
            else [r for r, _, _ in group]
        )
        self.tracker.finish_many(tp, [record.offset for record in done])
        now = time.perf_counter()
        # Posts per consumed-at time (one per consumed batch): one latency per distinct time.
        latencies: dict[float, int] = {}
        for started, count in Counter(record.started for record in done).items():
            latency = now - started
            latencies[latency] = latencies.get(latency, 0) + count
        self.sensors.on_cleared(latencies)
        if failed:
            self._fall_back([group[i] for i in sorted(failed)], runtime)

    def _fall_back(self, group: Sequence[Cleared], runtime: PolicyRuntime) -> None:
        for record, post, result in group:
            self.fallback(record, post, result, runtime)
