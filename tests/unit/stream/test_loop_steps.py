"""Decisions the loop's steps make that need no broker: the poll size and wait, and the one
cancel-wait-abandon helper drain, release and rewind share."""

from __future__ import annotations

import asyncio

from worker.stream.loop import poll_size_and_timeout
from worker.stream.tasks import finish_or_abandon


def test_poll_asks_for_the_room_left_never_more_than_a_batch() -> None:
    assert poll_size_and_timeout(room=1000, busy=False, batch_size=500) == (500, 0.2)
    assert poll_size_and_timeout(room=7, busy=True, batch_size=500) == (7, 0.01)


def test_at_the_cap_the_poll_still_runs_for_one_record() -> None:
    # Rebalance callbacks and max.poll.interval.ms need consume() to keep being called.
    assert poll_size_and_timeout(room=0, busy=True, batch_size=500) == (1, 0.05)


async def test_finish_or_abandon_lets_quick_tasks_finish_and_cancels_the_rest() -> None:
    finished: list[str] = []
    release = asyncio.Event()

    async def quick() -> None:
        finished.append("quick")

    async def stuck() -> None:
        await release.wait()
        finished.append("stuck")

    tasks = {asyncio.create_task(quick()), asyncio.create_task(stuck())}
    # The quick one finishes at its first step; the stuck one never does: the bound is what ends the wait.
    assert await finish_or_abandon(tasks, 0.05) == 1
    assert finished == ["quick"]
    assert all(t.done() for t in tasks)
    assert sum(t.cancelled() for t in tasks) == 1


async def test_finish_or_abandon_with_no_wait_cancels_everything_at_once() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    tasks = [asyncio.create_task(forever()) for _ in range(3)]
    await asyncio.sleep(0)
    assert await finish_or_abandon(tasks, 0.0) == 3
    assert all(t.cancelled() for t in tasks)
    assert await finish_or_abandon([], 5.0) == 0
