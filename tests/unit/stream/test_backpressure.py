"""The judge-outage pause rule (worker/stream/backpressure.py): pause only while posts wait on a
tier that is down, or nothing would ever carry the probe that closes its breaker again."""

from __future__ import annotations

import pytest

from worker.judges.endpoints import Endpoints
from worker.stream.backpressure import pause_for_judges

A = "http://a/v1"


@pytest.mark.parametrize(
    ("down", "judging", "pause"),
    [(True, 3, True), (True, 1, True), (True, 0, False), (False, 0, False), (False, 5, False)],
)
def test_pause_only_while_posts_wait_on_a_down_tier(down: bool, judging: int, pause: bool) -> None:
    assert pause_for_judges(down, judging) is pause


def test_a_half_open_tier_closes_only_through_a_request() -> None:
    """Why the rule needs posts: the last post's call (the probe) is cancelled at its deadline; the
    tier stays unavailable until some later request succeeds."""
    endpoints = Endpoints([A], failure_threshold=1, cooldown_s=5)
    assert endpoints.acquire(0) == A
    endpoints.release(A, False, 0)
    assert endpoints.acquire(6) == A  # the probe
    endpoints.release(A, None, 7)  # cancelled: says nothing about the server
    assert not endpoints.available(), "still down: a pause now would wait for a probe nobody sends"
    assert pause_for_judges(not endpoints.available(), judging=0) is False
    assert endpoints.acquire(8) == A, "the next post's request is let through as the probe"
    endpoints.release(A, True, 8)
    assert endpoints.available()
