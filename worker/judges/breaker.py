"""A circuit breaker per judge endpoint: pure state, the caller passes the clock.

closed --N consecutive failures--> open --cool-down elapsed--> half-open (exactly one probe)
half-open --probe succeeds--> closed;  half-open --probe fails--> open (a fresh cool-down).

Why: a judge that is down (vLLM crashed, GPU node gone) otherwise receives every retry of every
post in flight; with the breaker those retries stop hitting it, other endpoints of the tier take
the load, and when a whole tier is open the worker pauses consumption (posts wait; none is
silently allowed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]
# Gauge values for `modstream_judge_breaker_state`.
STATE_VALUE: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(slots=True)
class CircuitBreaker:
    failure_threshold: int
    cooldown_s: float
    state: BreakerState = "closed"
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probe_in_flight: bool = False

    def can_try(self, now: float) -> bool:
        """Would a request be let through now? (No state change: callers may ask several breakers.)"""
        if self.state == "closed":
            return True
        if self.state == "open":
            return now - self.opened_at >= self.cooldown_s
        return not self.probe_in_flight

    def on_send(self, now: float) -> None:
        """A request is being sent through this breaker (after `can_try` said yes)."""
        if self.state == "open" and now - self.opened_at >= self.cooldown_s:
            self.state = "half_open"
        if self.state == "half_open":
            self.probe_in_flight = True

    def on_success(self) -> None:
        self.state = "closed"
        self.consecutive_failures = 0
        self.probe_in_flight = False

    def on_failure(self, now: float) -> None:
        self.probe_in_flight = False
        if self.state == "half_open":
            self._open(now)
            return
        self.consecutive_failures += 1
        if self.state == "closed" and self.consecutive_failures >= self.failure_threshold:
            self._open(now)

    def on_abandon(self) -> None:
        """The request was cancelled before it told us anything: free the probe slot."""
        self.probe_in_flight = False

    def _open(self, now: float) -> None:
        self.state = "open"
        self.opened_at = now
