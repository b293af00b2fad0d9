"""The aiohttp judge client against a real simulator process: who owns the HTTP session, every failed
attempt retried and reported exactly once (the first attempt runs outside tenacity), the per-request
timeout, and many calls in flight at once on one connection pool."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from tests.helpers_policies import make_policy
from worker.config import Tier1JudgeSettings
from worker.contracts import Post
from worker.judges.client import JudgeClient, JudgeUnavailable
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

POLICY = make_policy("spam")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(speed=0, max_num_seqs=64, seed=7) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(sim: SimulatorProcess) -> None:
    sim.reset()


def settings(sim: SimulatorProcess, **extra: object) -> Tier1JudgeSettings:
    return Tier1JudgeSettings.model_validate(
        {"base_urls": [sim.base_url], "retry_initial_s": 0.01, "retry_max_s": 0.05, **extra}
    )


def post(i: int) -> Post:
    return Post(id=f"p{i}", text=f"hello number {i}")


async def test_a_session_passed_in_is_used_and_left_open(sim: SimulatorProcess) -> None:
    async with aiohttp.ClientSession() as session:
        client = JudgeClient("t1", settings(sim), session)
        call = await client.judge(POLICY, post(1))
        await client.aclose()
        assert call.answer is not None
        assert not session.closed, "the caller's session is the caller's to close"
        again = JudgeClient("t1", settings(sim), session)
        assert (await again.judge(POLICY, post(2))).answer is not None
    assert sim.stats()["requests"] == 2


async def test_an_owned_session_is_created_on_use_and_closed_by_aclose(sim: SimulatorProcess) -> None:
    client = JudgeClient("t1", settings(sim))
    assert await client.ready()
    calls = await asyncio.gather(*(client.judge(POLICY, post(i)) for i in range(10)))
    assert all(c.answer is not None for c in calls)
    await client.aclose()
    await client.aclose()  # idempotent
    # A closed client that is used again opens a new session (and must be closed again).
    assert (await client.judge(POLICY, post(11))).answer is not None
    await client.aclose()
    assert sim.stats()["requests"] == 11


async def test_every_failed_attempt_is_retried_and_reported_once(sim: SimulatorProcess) -> None:
    sim.set_faults(fail_5xx_rate=0.3)
    retries: list[str] = []
    # A breaker that never opens here: every failure is then a request the server saw.
    tier = settings(sim, max_in_flight=16, breaker_failures=10_000)
    async with JudgeClient("t1", tier, on_retry=retries.append) as client:
        calls = await asyncio.gather(*(client.judge(POLICY, post(i)) for i in range(200)))
    assert all(c.answer is not None for c in calls), "a 5xx is not a verdict: every call ends answered"
    stats = sim.stats()
    failed = stats["by_status"].get("500", 0)
    assert failed > 0, "the fault rate produced failures (seeded)"
    assert stats["requests"] == 200 + failed, "one more request per failure, no more"
    assert retries == ["JudgeUnavailable"] * failed, "on_retry once per failed attempt, first attempts included"


async def test_the_timeout_is_per_request_and_counts_as_unavailable(sim: SimulatorProcess) -> None:
    sim.set_faults(timeout_rate=1.0, timeout_hold_s=30.0)
    retries: list[str] = []
    tier = settings(sim, timeout_s=1.0, breaker_failures=10_000)
    async with JudgeClient("t1", tier, give_up_after_s=2.0, on_retry=retries.append) as client:
        # Giving up is the behaviour under test; the outer deadline only stops a hang.
        with pytest.raises(JudgeUnavailable) as raised:
            await asyncio.wait_for(client.judge(POLICY, post(1)), timeout=60)
    # The server holds each request 30 s, then drops the connection (a disconnect, not a timeout).
    assert isinstance(raised.value.__cause__, TimeoutError), "the attempt was cut by the client's timeout"
    assert retries and set(retries) == {"JudgeUnavailable"}
    # Each attempt but the last was retried; an attempt cut before it reached the server is not counted.
    assert 1 <= sim.stats()["requests"] <= len(retries) + 1


async def test_many_calls_in_flight_share_the_pool(sim: SimulatorProcess) -> None:
    async with JudgeClient("t1", settings(sim, max_in_flight=48)) as client:
        calls = await asyncio.gather(*(client.judge(POLICY, post(i)) for i in range(480)))
    assert all(c.answer is not None for c in calls)
    stats = sim.stats()
    assert stats["requests"] == 480
    assert stats["max_running"] <= 48, "max_in_flight bounds what the server sees at once"
