"""Construction, in one place: the consumer, the producer, the outputs (at-least-once or
exactly-once: the only place that reads `settings.exactly_once`), the judges, the policy
reloader, flow control, the sensors, and the collaborators the loop calls. Nothing here runs."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from worker.config import Settings
from worker.judges.client import JudgeClient
from worker.kafka.consumer import GroupConsumer, consumer_config
from worker.kafka.producer import Publisher, producer_config
from worker.ops.metrics import Metrics
from worker.ops.sensors import Sensors
from worker.ops.watch import Watch
from worker.policies.reload import PolicyReloader
from worker.stream.backpressure import Backpressure
from worker.stream.clients import ClientTrouble
from worker.stream.deadline import JudgeUptimeClock, RetryRoute
from worker.stream.dispatch import Dispatcher, DispatchSettings
from worker.stream.fastpath import FastPath
from worker.stream.flow import FlowControl
from worker.stream.judging import StreamJudges
from worker.stream.offsets import OffsetTracker
from worker.stream.outputs import AtLeastOnceOutputs, Outputs
from worker.stream.rebalance import Rebalance
from worker.stream.records import Consumed
from worker.stream.tasks import PostTasks, Topics
from worker.stream.transactions import TransactionalOutputs

# How long the worker (or one partition) may sit at its in-flight cap before it is paused (see
# Backpressure.wait_for_room, FlowControl.cap_grace_left). Short next to max.poll.interval.ms and rebalance timeouts.
CAP_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class Parts:
    settings: Settings
    sensors: Sensors
    consumer: GroupConsumer
    publisher: Publisher
    outputs: Outputs
    tracker: OffsetTracker
    flow: FlowControl[Consumed]
    tasks: PostTasks
    backpressure: Backpressure
    rebalance: Rebalance
    dispatcher: Dispatcher
    trouble: ClientTrouble
    judges: StreamJudges
    reloader: PolicyReloader
    watch: Watch
    close_http: Callable[[], Awaitable[None]]


def judge_clients(
    settings: Settings, sensors: Sensors, clock: JudgeUptimeClock
) -> tuple[JudgeClient, JudgeClient, Callable[[], Awaitable[None]]]:
    """Both judge tiers (each owns its HTTP session, sized to its `max_in_flight`); returns them
    and the function that closes them. The one place the stream builds judge clients."""

    def retried(tier: str, err: str) -> None:
        sensors.on_judge_retry(tier, err)
        clock.note_failure()

    t1 = JudgeClient(
        "t1",
        settings.judge_t1,
        on_latency=sensors.on_judge_latency,
        on_retry=lambda err: retried("t1", err),
        on_breaker=lambda url, state: sensors.on_breaker("t1", url, state),
    )
    t2 = JudgeClient(
        "t2",
        settings.judge_t2,
        on_latency=sensors.on_judge_latency,
        on_retry=lambda err: retried("t2", err),
        on_breaker=lambda url, state: sensors.on_breaker("t2", url, state),
    )

    async def close() -> None:
        await t1.aclose()
        await t2.aclose()

    return t1, t2, close


def wire(settings: Settings, metrics: Metrics | None = None) -> Parts:
    sensors = Sensors(metrics)
    sensors.on_in_flight_cap(settings.max_in_flight)
    reloader = PolicyReloader(
        settings.policies_dir,
        sensors.on_policy_reload,
        languages=settings.languages.config(),
        use_heads=settings.funnel_heads,
        embeddings=settings.funnel_embeddings,
    )
    tracker = OffsetTracker()
    flow: FlowControl[Consumed] = FlowControl(
        settings.max_in_flight, settings.max_in_flight_per_partition, pause_grace_s=CAP_GRACE_S
    )
    clock = JudgeUptimeClock()
    trouble = ClientTrouble(sensors)
    kafka = settings.kafka
    # Deadline-exceeded posts: produced to and consumed from the retry topic (worker/stream/deadline.py).
    retry = None
    if settings.retry_max_attempts > 1:
        retry = RetryRoute(settings.topics.retry, settings.retry_delay_s, settings.retry_max_attempts)
    # The consumer calls back into `rebalance`, built below from parts that need the consumer.
    consumer = GroupConsumer(
        consumer_config(
            kafka.bootstrap_servers,
            kafka.group_id,
            dict(kafka.extra),
            kafka.session_timeout_ms,
            kafka.heartbeat_interval_ms,
            kafka.partition_assignment_strategy,
        ),
        [settings.topics.posts, *([retry.topic] if retry else [])],
        on_assign=lambda keys: rebalance.on_assign(keys),
        on_revoke=lambda keys: rebalance.on_revoke(keys),
        on_lost=lambda keys: rebalance.on_lost(keys),
        on_error=lambda e: trouble.on_client_error("consumer", e),
        on_stats=trouble.on_consumer_stats,
    )
    producer_settings = producer_config(kafka.bootstrap_servers, dict(kafka.extra))
    if settings.exactly_once:
        producer_settings["transactional.id"] = settings.transactional_id or (
            f"modstream-{kafka.group_id}-{socket.gethostname()}"
        )
        producer_settings["transaction.timeout.ms"] = settings.transaction_timeout_ms
    publisher = Publisher(
        producer_settings,
        on_error=lambda e: trouble.on_client_error("producer", e),
        on_restart=lambda: sensors.on_client_restart("producer"),
    )
    outputs: Outputs
    if settings.exactly_once:
        max_bytes = int(producer_settings.get("message.max.bytes", 1_000_000))
        outputs = TransactionalOutputs(publisher, consumer, tracker, sensors, max_bytes)
    else:
        outputs = AtLeastOnceOutputs(publisher, consumer, tracker, sensors)
    t1, t2, close_http = judge_clients(settings, sensors, clock)
    judges = StreamJudges(
        t1, t2, sensors, clock, settings.escalation, settings.judge_mode == "multi_policy", settings.public_rationale
    )
    # Readiness, the judge-uptime clock and the producer watchdog (see watch.py).
    watch = Watch(
        (t1, t2),
        publisher,
        sensors,
        lambda: consumer.assigned,
        clock,
        producer_stall_s=settings.producer_stall_s,
        watch_producer=outputs.watch_producer,
    )
    trouble.watch, trouble.consumer = watch, consumer
    tasks = PostTasks(
        Topics(settings.topics.actions, settings.topics.audit, settings.topics.dlq, settings.topics.review),
        outputs,
        tracker,
        sensors,
        clock,
        max_attempts=settings.max_attempts,
        record_deadline_s=settings.record_deadline_s,
        on_change=lambda: backpressure.observe(),
        cleared_allowance=settings.max_in_flight_cleared if settings.fast_path else 0,
        retry=retry,
    )
    backpressure = Backpressure(
        consumer,
        flow,
        tracker,
        sensors,
        judges.down,
        lambda: tasks.running,
        lambda: tasks.judging,
        tasks.held,
        lambda: tasks.held_total,
    )
    rebalance = Rebalance(tracker, flow, tasks, outputs, backpressure, sensors, settings.rebalance_timeout_s)
    dispatcher = Dispatcher(
        DispatchSettings(
            settings.topics.posts,
            frozenset(settings.headers.passthrough),
            settings.max_record_bytes,
            settings.escalation.bypass_sample_rate,
            retry.topic if retry else None,
        ),
        consumer,
        flow,
        tracker,
        backpressure,
        rebalance,
        tasks,
        judges,
        reloader,
        trouble,
        sensors,
    )
    rebalance.settle = dispatcher.finish_screened
    if settings.fast_path:
        dispatcher.fast = FastPath(outputs, tracker, tasks, sensors, settings.topics.actions, dispatcher.judge)
    return Parts(
        settings,
        sensors,
        consumer,
        publisher,
        outputs,
        tracker,
        flow,
        tasks,
        backpressure,
        rebalance,
        dispatcher,
        trouble,
        judges,
        reloader,
        watch,
        close_http,
    )
