"""The per-post processing deadline, measured on a clock that stops while the judges are down.

A post whose judging takes longer than `record_deadline_s` is poison for the judge (every call
about it fails or hangs while other posts get answers): it goes to the DLQ with
`deadline_exceeded` instead of holding its partition forever. But a judge that is down for
everyone is not the post's fault: the post waits (docs/judges.md), so the deadline clock only runs
while the judges answer. The clock advances in ticks; a tick counts as "judges up" when some
judge call was answered during it, when no judge call failed during it (idle, or one slow
call), or when the judges' readiness check (`/health`, `/v1/models`) passes (only poison posts are left,
failing while the servers are fine). A tick with failures, no answer and failing readiness (an
outage) does not count. Pure logic.
"""

from __future__ import annotations


class JudgeUptimeClock:
    def __init__(self) -> None:
        self.value = 0.0
        self._answers = 0
        self._failures = 0
        self._last_tick: float | None = None

    def note_answer(self) -> None:
        self._answers += 1

    def note_failure(self) -> None:
        self._failures += 1

    def tick(self, now: float, healthy: bool = False) -> bool:
        """Advance to `now`; returns whether the elapsed interval counted as judges-up. `healthy`:
        the judges' readiness check passed."""
        up = self._answers > 0 or self._failures == 0 or healthy
        if self._last_tick is not None and up:
            self.value += max(0.0, now - self._last_tick)
        self._last_tick = now
        self._answers = 0
        self._failures = 0
        return up


class DeadlineExceeded(Exception):
    """Judging one post took longer than `record_deadline_s` of judge uptime."""
