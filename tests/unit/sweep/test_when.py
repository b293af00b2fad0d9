"""The sweep's --from/--to values: RFC 3339, ages, and the CronJob's today / yesterday."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import click
import pytest

from worker.cli.sweep import when

NOW = datetime(2026, 12, 5, 1, 30, tzinfo=UTC)


def test_today_and_yesterday_are_utc_midnights() -> None:
    assert when("today", NOW) == datetime(2026, 12, 5, tzinfo=UTC)
    assert when("Yesterday", NOW) == datetime(2026, 12, 4, tzinfo=UTC)
    # Whatever the caller's zone: 2026-12-04 23:30 at UTC-3 is already the 5th in UTC.
    local = datetime(2026, 12, 4, 23, 30, tzinfo=timezone(timedelta(hours=-3)))
    assert when("today", local) == datetime(2026, 12, 5, tzinfo=UTC)


def test_times_and_ages_pass_through() -> None:
    assert when("36h", NOW) == NOW - timedelta(hours=36)
    assert when("2026-12-01T00:00:00Z", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(click.BadParameter):
        when("last week", NOW)
