"""A tier's endpoints: least-in-flight balancing over those whose circuit breaker lets a request through.

Pure state, the caller passes the clock (worker/judges/breaker.py has the breaker's states).
"""

from __future__ import annotations

from collections.abc import Callable

from worker.judges.breaker import BreakerState, CircuitBreaker

BreakerListener = Callable[[str, BreakerState], None]


class Endpoints:
    """Several base URLs for one tier, chosen by least requests in flight (ties: list order) among
    those whose circuit breaker lets a request through."""

    def __init__(
        self,
        base_urls: list[str],
        failure_threshold: int = 5,
        cooldown_s: float = 10.0,
        on_state: BreakerListener | None = None,
    ) -> None:
        self.in_flight = dict.fromkeys(base_urls, 0)
        self.breakers = {url: CircuitBreaker(failure_threshold, cooldown_s) for url in base_urls}
        self._on_state = on_state

    def acquire(self, now: float) -> str | None:
        """An endpoint to send to, or None when every endpoint's breaker is open."""
        allowed = [url for url in self.in_flight if self.breakers[url].can_try(now)]
        if not allowed:
            return None
        url = min(allowed, key=self.in_flight.__getitem__)
        self._transition(url, lambda b: b.on_send(now))
        self.in_flight[url] += 1
        return url

    def release(self, url: str, ok: bool | None, now: float) -> None:
        """ok: the server answered (any status but 429/5xx); False: it did not; None: we gave up first."""
        self.in_flight[url] -= 1
        if ok is None:
            self._transition(url, CircuitBreaker.on_abandon)
        elif ok:
            self._transition(url, CircuitBreaker.on_success)
        else:
            self._transition(url, lambda b: b.on_failure(now))

    def available(self) -> bool:
        """At least one endpoint is known good (closed). Open or probing endpoints do not count."""
        return any(b.state == "closed" for b in self.breakers.values())

    def states(self) -> dict[str, BreakerState]:
        return {url: b.state for url, b in self.breakers.items()}

    def _transition(self, url: str, change: Callable[[CircuitBreaker], None]) -> None:
        breaker = self.breakers[url]
        before = breaker.state
        change(breaker)
        if breaker.state != before and self._on_state is not None:
            self._on_state(url, breaker.state)
