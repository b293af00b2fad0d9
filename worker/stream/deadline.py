"""The per-post processing deadline, measured on a clock that stops while the judges are down.

A post whose judging takes longer than `record_deadline_s` is poison for the judge (every call
about it fails or hangs while other posts get answers): instead of holding its partition forever
it goes to the retry topic and is judged again later (below), and after the last attempt to the
DLQ with `deadline_exceeded` and a `review` verdict. But a judge that is down for
everyone is not the post's fault: the post waits (docs/judges.md), so the deadline clock only runs
while the judges answer. The clock advances in ticks; a tick counts as "judges up" when some
judge call was answered during it, when no judge call failed during it (idle, or one slow
call), or when the judges' readiness check (`/health`, `/v1/models`) passes (only poison posts are left,
failing while the servers are fine). A tick with failures, no answer and failing readiness (an
outage) does not count. Pure logic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.cascade.precedence import decide
from worker.cascade.revisions import FIRST_REVISION, stream_verdict_id
from worker.cascade.verdict import WORKER_VERSION, unanswered_result
from worker.contracts import FunnelSummary, SourceRef, Verdict
from worker.ops.tracing import Header, RawHeaders
from worker.policies.files import Policy


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


# ---- the retry topic (docs/workflow.md, "Retry topic") -------------------------------------------
#
# A post past its deadline is not dead-lettered at once: it is produced again, unchanged (key, value,
# allow-listed headers), to the retry topic with three headers of its own, and the worker, which also
# consumes that topic, judges it again once its not-before time has passed. After `max_attempts`
# judging attempts in all it goes to the DLQ (`deadline_exceeded`) and gets a verdict with decision
# `review`, so a person looks at it.

RETRY_ATTEMPT = "retry.attempt"  # the attempt the retry record is for: 2, 3, ...
RETRY_NOT_BEFORE = "retry.not_before"  # epoch milliseconds: not judged again before this
RETRY_ORIGIN = "retry.origin"  # topic/partition/offset of the post as first consumed
RETRY_HEADERS = frozenset({RETRY_ATTEMPT, RETRY_NOT_BEFORE, RETRY_ORIGIN})


@dataclass(frozen=True, slots=True)
class RetryRoute:
    topic: str
    delay_s: float
    # Judging attempts in all, the first one (from the posts topic) included; 1 turns retries off.
    max_attempts: int


def retry_state(raw: RawHeaders) -> tuple[Header, ...]:
    """The retry headers of a record consumed from the retry topic (kept beside the passthrough ones)."""
    kept: list[Header] = []
    for name, value in (raw.items() if isinstance(raw, Mapping) else raw) if raw else ():
        if name in RETRY_HEADERS and value is not None:
            kept.append((name, value.encode() if isinstance(value, str) else value))
    return tuple(kept)


def _header(headers: Iterable[Header], name: str) -> str | None:
    found = None
    for key, value in headers:
        if key == name:
            found = value.decode("ascii", "replace")
    return found


def attempt_of(headers: Iterable[Header]) -> int:
    """Which judging attempt a retry record is (1 when it carries no valid count)."""
    try:
        return max(1, int(_header(headers, RETRY_ATTEMPT) or 1))
    except ValueError:
        return 1


def not_before_of(headers: Iterable[Header]) -> float | None:
    """The not-before time in epoch seconds, or None."""
    try:
        raw = _header(headers, RETRY_NOT_BEFORE)
        return None if raw is None else int(raw) / 1000.0
    except ValueError:
        return None


def origin_of(headers: Iterable[Header], fallback: str) -> str:
    return _header(headers, RETRY_ORIGIN) or fallback


def retry_headers(headers: Iterable[Header], attempt: int, not_before_s: float, origin: str) -> list[Header]:
    """The headers of the next retry record: the record's own headers without old retry headers, then ours."""
    kept = [(k, v) for k, v in headers if k not in RETRY_HEADERS]
    return [
        *kept,
        (RETRY_ATTEMPT, str(attempt).encode()),
        (RETRY_NOT_BEFORE, str(int(not_before_s * 1000)).encode()),
        (RETRY_ORIGIN, origin.encode()),
    ]


def due_in(headers: Iterable[Header], now_s: float) -> float:
    """Seconds until a retry record may be judged (0: now)."""
    not_before = not_before_of(headers)
    return 0.0 if not_before is None else max(0.0, not_before - now_s)


async def wait_until_due(headers: Iterable[Header], clock: Callable[[], float] = time.time) -> None:
    """Hold a retry record until its not-before time (the delay is the point, not a synchronisation)."""
    delay = due_in(headers, clock())
    if delay > 0:
        await asyncio.sleep(delay)


def give_up_verdict(
    post_id: str, source: SourceRef, attempts: int, latency_ms: float, candidates: Sequence[Policy]
) -> Verdict:
    """The verdict of a post no attempt could judge in time: each candidate policy unresolved, so a
    person decides (`review`; interim `hide` when a candidate policy is severe, by the precedence
    rule). A post with no candidate (only a bypass sample timed out) stays `allow`: the funnel cleared it."""
    why = f"not judged: deadline exceeded after {attempts} attempt{'s' if attempts > 1 else ''}"
    live = [policy for policy in candidates if not policy.meta.shadow]  # shadows never decide
    results = [unanswered_result(policy, why) for policy in live]
    decision, interim = decide(results)
    return Verdict(
        post_id=post_id,
        verdict_id=stream_verdict_id(post_id, source),
        revision=FIRST_REVISION,
        route="stream",
        decision=decision,
        interim_action=interim,
        results=results,
        tier="t1",
        escalated=False,
        escalation_reasons=[f"deadline_exceeded_after_{attempts}_attempts"],
        funnel=FunnelSummary(candidates=[p.id for p in live], scores={}),
        latency_ms=round(latency_ms, 3),
        decided_at=datetime.now(UTC),
        worker_version=WORKER_VERSION,
        source=source,
    )
