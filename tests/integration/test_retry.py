"""The retry topic through the real broker and the simulator: a post whose judge never answers in time
goes to the `retry` topic, is consumed again by the worker after its not-before time, and after the
last attempt lands on the DLQ (`deadline_exceeded`) with a `review` verdict (its candidate policies
unresolved) and a review record, so nothing is forgotten.
Every consumed offset (posts and retry) is committed once its outputs were acknowledged."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from tests.conftest import worker_env
from tests.kafka_support import (
    WorkerProcess,
    committed_offsets,
    dlq_by_key,
    post_value,
    produce,
    read_topic,
    verdicts_by_id,
    wait_for,
)
from worker.local.broker import EmbeddedBroker, create_topics
from worker.sim.process import SimulatorProcess
from worker.stream.deadline import RETRY_ATTEMPT, RETRY_NOT_BEFORE, RETRY_ORIGIN

pytestmark = pytest.mark.integration

GROUP = "g-retry"
MAX_ATTEMPTS = 3


def test_deadline_exceeded_post_is_retried_then_dead_lettered_with_a_review_verdict(
    broker: EmbeddedBroker,
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    bootstrap = broker.bootstrap_servers
    create_topics(bootstrap, {"posts": 2, "actions": 2, "audit": 2, "dlq": 1, "retry": 1, "review": 1})
    t1, _ = sims
    # The judge holds every call about the poison post for 30 s; the deadline is 2 s of judge uptime.
    records = [
        (b"poison", post_value("poison", "selling aimbot [[sim: delay_ms=30000 fault=none]]")),
        (b"fine", post_value("fine", "selling aimbot cheats here [[sim: violation=1 confidence=high]]")),
    ]
    produced = produce(bootstrap, "posts", records)
    env = worker_env(
        broker,
        sims,
        group=GROUP,
        MODSTREAM_RECORD_DEADLINE_S="2",
        MODSTREAM_RETRY_DELAY_S="1.5",
        MODSTREAM_RETRY_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
    )
    worker = spawn_worker(env)

    dead = dlq_by_key(read_topic(bootstrap, "dlq", 1, timeout_s=180, producer_alive=worker.alive))
    assert list(dead) == [b"poison"], worker.log()[-3000:]
    [dlq_headers] = dead[b"poison"]
    assert dlq_headers["error.type"] == "deadline_exceeded"
    assert f"({MAX_ATTEMPTS} attempts)" in dlq_headers["error.message"]
    assert dlq_headers["source.topic"] == "retry"

    # Attempts 2 and 3 went through the retry topic, the original record each time.
    retried = read_topic(bootstrap, "retry", MAX_ATTEMPTS - 1)
    assert len(retried) == MAX_ATTEMPTS - 1
    headers = [{k: v.decode() for k, v in m.headers() or []} for m in retried]
    assert [h[RETRY_ATTEMPT] for h in headers] == [str(n) for n in range(2, MAX_ATTEMPTS + 1)]
    assert all(m.key() == b"poison" and m.value() == records[0][1] for m in retried)
    origins = {h[RETRY_ORIGIN] for h in headers}
    assert len(origins) == 1 and origins.pop().startswith("posts/"), "every retry names the first position"
    # Each retry record was produced by the attempt before it, which itself waited for its not-before time.
    not_before = [int(h[RETRY_NOT_BEFORE]) for h in headers]
    produced_at = [m.timestamp()[1] for m in retried]
    assert produced_at[1] >= not_before[0], "attempt 2 ran before its not-before time"
    dlq_at = read_topic(bootstrap, "dlq", 1)[0].timestamp()[1]
    assert dlq_at >= not_before[1], "attempt 3 ran before its not-before time"

    # Nothing forgotten: the poison post has a verdict, `review`; the other post was judged normally.
    verdicts = verdicts_by_id(read_topic(bootstrap, "actions", 2))
    assert set(verdicts) == {"poison", "fine"}
    [poison] = verdicts["poison"]
    assert (poison["decision"], poison["revision"]) == ("review", 1)
    assert poison["escalation_reasons"] == [f"deadline_exceeded_after_{MAX_ATTEMPTS}_attempts"]
    unjudged = [(r["policy_id"], r["violation"], r["unresolved"]) for r in poison["results"]]
    assert ("game-cheating", None, True) in unjudged, unjudged
    # ... and a person sees it: a review record for that verdict, reason `deadline`.
    [review] = [orjson.loads(m.value()) for m in read_topic(bootstrap, "review", 1)]
    assert (review["verdict_id"], review["reasons"]) == (poison["verdict_id"], ["deadline"])
    assert {p["policy_id"] for p in review["policies"] if p["unresolved"]} == {r[0] for r in unjudged}
    assert verdicts["fine"][0]["decision"] != "review"

    # The judge was asked about the poison post once per attempt, for each of its candidate policies
    # (the ones its verdict leaves unresolved: with the shipped heads, more than game-cheating).
    asked = [b for b in t1.requests() if "delay_ms=30000" in b["messages"][-1]["content"]]
    assert len(asked) == MAX_ATTEMPTS * len(unjudged)

    # At-least-once bookkeeping: every posts and retry record committed after its outputs.
    wait_for(
        lambda: committed_offsets(bootstrap, GROUP, "retry", 1) == {0: MAX_ATTEMPTS - 1},
        30,
        "the retry topic committed",
    )
    wait_for(
        lambda: all(
            committed_offsets(bootstrap, GROUP, "posts", 2).get(p, -1) == last + 1
            for p, last in produced.last_offsets.items()
        ),
        30,
        "the posts topic committed",
    )
