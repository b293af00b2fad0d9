"""The sweep's token bucket and rate parsing, on a fake clock (no real waiting)."""

from __future__ import annotations

import asyncio

import pytest

from worker.sweep.bucket import TokenBucket, parse_rate


@pytest.mark.parametrize(
    ("text", "per_second"), [("5/s", 5.0), ("5", 5.0), ("300/m", 5.0), ("7200/h", 2.0), (" 0.5 / s ", 0.5)]
)
def test_parse_rate(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["", "fast", "0/s", "5/d", "-1/s", "5/s/s"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_bucket_paces_to_the_rate_after_the_burst() -> None:
    fake = FakeTime()
    bucket = TokenBucket(4.0, burst=2.0, clock=fake.clock, sleep=fake.sleep)

    async def take(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()

    asyncio.run(take(10))
    # Two from the burst at once, then one every 1/4 s: 8 more take 2 s.
    assert bucket.taken == 10
    assert fake.now == pytest.approx(2.0)
    assert all(s == pytest.approx(0.25) for s in fake.slept)


def test_bucket_refills_up_to_the_burst_only() -> None:
    fake = FakeTime()
    bucket = TokenBucket(1.0, burst=3.0, clock=fake.clock, sleep=fake.sleep)
    fake.now = 100.0  # a long idle time saves at most `burst` tokens

    async def take(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()

    asyncio.run(take(4))
    assert fake.now == pytest.approx(101.0)


def test_bucket_concurrent_waiters_share_the_rate() -> None:
    fake = FakeTime()
    bucket = TokenBucket(10.0, burst=1.0, clock=fake.clock, sleep=fake.sleep)

    async def main() -> None:
        await asyncio.gather(*(bucket.acquire() for _ in range(21)))

    asyncio.run(main())
    assert bucket.taken == 21
    assert fake.now == pytest.approx(2.0)


def test_bucket_refuses_a_zero_rate() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0.0)
