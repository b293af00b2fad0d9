"""Circuit breaker and endpoint choice: pure state machines driven by an explicit clock."""

from __future__ import annotations

from worker.judges.breaker import CircuitBreaker
from worker.judges.endpoints import Endpoints

A, B = "http://a/v1", "http://b/v1"


def test_opens_after_n_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10)
    breaker.on_failure(0)
    breaker.on_failure(0)
    breaker.on_success()  # a success resets the count: failures must be consecutive
    breaker.on_failure(1)
    breaker.on_failure(1)
    assert breaker.state == "closed" and breaker.can_try(1)
    breaker.on_failure(2)
    assert breaker.state == "open"
    assert not breaker.can_try(2) and not breaker.can_try(11.9)


def test_half_open_lets_exactly_one_probe_through() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10)
    breaker.on_failure(0)
    assert breaker.can_try(10)
    breaker.on_send(10)
    assert breaker.state == "half_open"
    assert not breaker.can_try(10.1), "a second request while the probe is out"
    breaker.on_success()
    assert breaker.state == "closed" and breaker.can_try(10.2)


def test_failed_probe_reopens_for_a_fresh_cooldown() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=10)
    breaker.on_failure(0)
    breaker.on_send(10)
    breaker.on_failure(11)
    assert breaker.state == "open"
    assert not breaker.can_try(20.9) and breaker.can_try(21)


def test_abandoned_probe_frees_the_slot() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1)
    breaker.on_failure(0)
    breaker.on_send(1)
    breaker.on_abandon()
    assert breaker.state == "half_open" and breaker.can_try(1)


def test_least_in_flight_with_ties_in_list_order() -> None:
    endpoints = Endpoints([A, B])
    assert [endpoints.acquire(0) for _ in range(4)] == [A, B, A, B]
    endpoints.release(A, True, 0)
    endpoints.release(A, True, 0)
    assert endpoints.acquire(0) == A
    assert endpoints.in_flight == {A: 1, B: 2}


def test_open_endpoint_is_skipped_then_probed_after_cooldown() -> None:
    changes: list[tuple[str, str]] = []
    endpoints = Endpoints([A, B], failure_threshold=2, cooldown_s=5, on_state=lambda u, s: changes.append((u, s)))
    for _ in range(2):
        assert endpoints.acquire(0) == A
        endpoints.release(A, False, 0)
    assert changes == [(A, "open")]
    assert endpoints.available(), "B is still closed"
    assert {endpoints.acquire(1) for _ in range(3)} == {B}, "A is skipped while open"
    for _ in range(3):
        endpoints.release(B, True, 1)
    assert endpoints.acquire(5) == A, "after the cool-down the idle endpoint gets the probe"
    assert changes[-1] == (A, "half_open")
    assert endpoints.acquire(5) == B, "only one probe at a time"
    endpoints.release(A, True, 5)
    assert changes[-1] == (A, "closed")


def test_all_open_means_unavailable_and_no_endpoint() -> None:
    endpoints = Endpoints([A, B], failure_threshold=1, cooldown_s=5)
    for url in (A, B):
        assert endpoints.acquire(0) == url
        endpoints.release(url, False, 0)
    assert not endpoints.available()
    assert endpoints.acquire(1) is None
    # Cooled down: a probe may go, but the tier counts as available only once one succeeds.
    probe = endpoints.acquire(6)
    assert probe is not None and not endpoints.available()
    endpoints.release(probe, True, 6)
    assert endpoints.available()


def test_cancelled_call_neither_counts_as_failure_nor_success() -> None:
    endpoints = Endpoints([A], failure_threshold=1, cooldown_s=5)
    endpoints.acquire(0)
    endpoints.release(A, None, 0)
    assert endpoints.states() == {A: "closed"} and endpoints.in_flight == {A: 0}
