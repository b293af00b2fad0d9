"""`wait_ready`: the one readiness poll behind the embedded broker and the llama.cpp server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from worker.local.ready import wait_ready


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_ready_once_the_probe_says_so(sleeper: subprocess.Popen[bytes]) -> None:
    answers = iter([False, False, True])
    calls: list[int] = []

    def probe() -> bool:
        calls.append(1)
        return next(answers)

    assert wait_ready(sleeper, probe, timeout_s=60.0, interval_s=0.0, exited=str) is True
    assert len(calls) == 3


def test_not_ready_when_the_time_is_up(sleeper: subprocess.Popen[bytes]) -> None:
    assert wait_ready(sleeper, lambda: False, timeout_s=0.05, interval_s=0.01, exited=str) is False
    assert sleeper.poll() is None, "the caller decides what to do with a server that never answered"


def test_a_process_that_exits_fails_at_once() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(RuntimeError, match="exited with 3"):
        wait_ready(process, lambda: True, timeout_s=60.0, interval_s=0.0, exited=lambda code: f"exited with {code}")
