"""`max_in_flight_cleared`: posts of a fast-path group waiting for the broker's acknowledgement are
not charged to the in-flight caps, up to the allowance; everything else still is, and once the
group finished nothing is discounted any more."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.stream.test_fastpath import RUNTIME, TP, Harness, group


@pytest.mark.parametrize(("allowance", "held"), [(0, 5), (3, 2), (1024, 0)])
async def test_a_waiting_group_is_discounted_up_to_the_allowance(allowance: int, held: int) -> None:
    h = Harness()
    h.tasks.cleared_allowance = allowance
    posts = group(5)
    for record, _, _ in posts:
        h.tracker.start(record.tp, record.offset)
    h.tracker.start(("posts", 3), 7)  # another partition's post, judged: always charged
    h.fast.publish(TP, posts, RUNTIME)
    assert h.tracker.total_in_flight == 6
    assert (h.tasks.held(TP), h.tasks.held(("posts", 3)), h.tasks.held_total) == (held, 1, held + 1)
    await asyncio.gather(*h.tasks.all())
    assert (h.tasks.held(TP), h.tasks.held_total) == (0, 1)
    assert h.tracker.to_commit() == {TP: 15}


async def test_offsets_behind_an_unfinished_one_are_charged_again() -> None:
    h = Harness()
    h.tasks.cleared_allowance = 1024
    h.tracker.start(TP, 9)  # a judged post before the group, still running
    posts = group(4)
    for record, _, _ in posts:
        h.tracker.start(record.tp, record.offset)
    h.fast.publish(TP, posts, RUNTIME)
    assert h.tasks.held(TP) == 1
    await asyncio.gather(*h.tasks.all())
    # The group is acknowledged, but its offsets wait behind offset 9: they hold room again.
    assert h.tasks.held(TP) == h.tracker.in_flight(TP) == 5
