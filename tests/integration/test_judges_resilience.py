"""The judge client against two real simulator processes: least-in-flight balancing, the circuit
breaker skipping a dead endpoint and probing it back, a whole tier down (the call waits, the tier
reports unavailable) and the eval harness's retry budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.helpers_policies import make_policy
from worker.config import Tier1JudgeSettings
from worker.contracts import Post
from worker.judges.client import JudgeClient, JudgeUnavailable
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

POLICY = make_policy("spam")


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[SimulatorProcess, SimulatorProcess]]:
    with (
        SimulatorProcess(speed=0, max_num_seqs=16, seed=1) as a,
        SimulatorProcess(speed=0, max_num_seqs=16, seed=2) as b,
    ):
        yield a, b


@pytest.fixture(autouse=True)
def fresh(pair: tuple[SimulatorProcess, SimulatorProcess]) -> None:
    for sim in pair:
        sim.reset()


def settings(*sims: SimulatorProcess, **extra: object) -> Tier1JudgeSettings:
    return Tier1JudgeSettings.model_validate(
        {"base_urls": [s.base_url for s in sims], "retry_initial_s": 0.05, "retry_max_s": 0.2, **extra}
    )


async def wait_until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)  # poll interval, not a synchronisation


def post(i: int, directive: str = "") -> Post:
    return Post(id=f"p{i}", text=f"hello number {i} {directive}".strip())


async def test_least_in_flight_spreads_concurrent_calls_over_both(
    pair: tuple[SimulatorProcess, SimulatorProcess],
) -> None:
    a, b = pair
    async with JudgeClient("t1", settings(a, b, max_in_flight=8)) as client:
        calls = await asyncio.gather(*(client.judge(POLICY, post(i, "[[sim: delay_ms=150]]")) for i in range(24)))
    assert all(c.answer is not None for c in calls)
    sa, sb = a.stats(), b.stats()
    assert sa["requests"] + sb["requests"] == 24
    # Eight slots over two idle endpoints: four each at a time, whichever finishes first refills.
    assert sa["max_running"] == sb["max_running"] == 4
    assert 8 <= sa["requests"] <= 16 and 8 <= sb["requests"] <= 16
    assert {c.audit.endpoint for c in calls} == {a.base_url, b.base_url}


async def test_breaker_skips_a_dead_endpoint_then_probes_it_back(
    pair: tuple[SimulatorProcess, SimulatorProcess],
) -> None:
    a, b = pair
    b.set_faults(outage=True)
    states: list[tuple[str, str]] = []
    async with JudgeClient(
        "t1", settings(a, b, breaker_failures=3, breaker_cooldown_s=3.0),
        on_breaker=lambda url, state: states.append((url, state)),
    ) as client:  # fmt: skip
        # Two calls at a time: least-in-flight gives B one of them whenever it is idle; every 503 from
        # B is retried (on A, or on B until its breaker opens). Every call still gets an answer.
        for i in range(12):
            calls = await asyncio.gather(client.judge(POLICY, post(i)), client.judge(POLICY, post(100 + i)))
            assert all(c.answer is not None and c.audit.endpoint == a.base_url for c in calls)
        assert client.breaker_states() == {a.base_url: "closed", b.base_url: "open"}
        assert client.available(), "one endpoint left is enough"
        refused = b.stats()["by_status"]["503"]
        assert 3 <= refused <= 4, "opens after 3 consecutive failures (one more may have been in flight)"
        for i in range(10):
            await asyncio.gather(client.judge(POLICY, post(200 + i)), client.judge(POLICY, post(300 + i)))
        assert b.stats()["by_status"]["503"] == refused, "no traffic to B while its breaker is open"
        b.set_faults(outage=False)
        # After the cool-down one probe reaches B; it answers, so B is back in rotation.
        i = 0

        async def send() -> None:
            nonlocal i
            i += 1
            await asyncio.gather(client.judge(POLICY, post(1000 + i)), client.judge(POLICY, post(2000 + i)))

        deadline = time.monotonic() + 10
        while client.breaker_states()[b.base_url] != "closed":
            assert time.monotonic() < deadline, "B never closed again"
            await send()
        await send()
    assert (b.base_url, "open") in states and (b.base_url, "half_open") in states
    assert states[-1] == (b.base_url, "closed")
    assert b.stats()["by_status"]["200"] >= 1


async def test_whole_tier_down_the_call_waits_and_the_tier_is_unavailable(
    pair: tuple[SimulatorProcess, SimulatorProcess],
) -> None:
    a, b = pair
    for sim in pair:
        sim.set_faults(outage=True)
    async with JudgeClient("t1", settings(a, b, breaker_failures=2, breaker_cooldown_s=0.3)) as client:
        pending = asyncio.create_task(client.judge(POLICY, post(1, "[[sim: violation=1 confidence=high]]")))
        await wait_until(lambda: not client.available(), 10, "the tier to report unavailable")
        assert not pending.done(), "a judge that is down is not a verdict: the call keeps waiting"
        a.set_faults(outage=False)
        call = await asyncio.wait_for(pending, timeout=15)
        assert call.answer is not None and call.answer.violation == 1
        assert call.audit.endpoint == a.base_url
        assert client.available()


async def test_eval_budget_gives_up_on_a_dead_tier(pair: tuple[SimulatorProcess, SimulatorProcess]) -> None:
    a, _ = pair
    a.set_faults(outage=True)
    retries: list[str] = []
    async with JudgeClient("t1", settings(a), give_up_after_s=0.5, on_retry=retries.append) as client:
        # Giving up is the behaviour under test; the deadline only stops a hang (no timing assertion).
        with pytest.raises(JudgeUnavailable):
            await asyncio.wait_for(client.judge(POLICY, post(1)), timeout=60)
    # Only "unavailable" outcomes are retried (how many fit in 0.5 s depends on the machine's load).
    assert set(retries) <= {"JudgeUnavailable"}
