"""The appeals service's record handling that needs no broker: parsing and stopping mid-appeal."""

from __future__ import annotations

import asyncio

import pytest

from worker.appeals.rejudge import InvalidAppeal
from worker.appeals.service import parse_appeal, until_stopped


def test_parse_appeal_accepts_an_appeal_and_names_what_is_wrong_otherwise() -> None:
    ok = b'{"appeal_id": "a", "post": {"id": "p", "text": "t"}, "statement": "s", "verdict_id": "v", "revision": 1}'
    assert parse_appeal(ok).post.id == "p"
    for bad, why in ((None, "empty"), (b"{", "not JSON"), (b'{"appeal_id": "a"}', "not an Appeal")):
        with pytest.raises(InvalidAppeal, match=why):
            parse_appeal(bad)


def test_until_stopped_cancels_the_work_when_stopped_first() -> None:
    async def scenario() -> tuple[bool, bool]:
        stop = asyncio.Event()
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def forever() -> None:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        running = asyncio.ensure_future(until_stopped(forever(), stop))
        await started.wait()
        stop.set()
        return await running, cancelled.is_set()

    assert asyncio.run(scenario()) == (False, True)


def test_until_stopped_reports_finished_work_and_its_errors() -> None:
    async def done() -> None:
        return None

    async def broken() -> None:
        raise RuntimeError("boom")

    assert asyncio.run(until_stopped(done(), asyncio.Event())) is True
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(until_stopped(broken(), asyncio.Event()))
