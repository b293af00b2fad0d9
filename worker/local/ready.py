"""Wait for a local server we started (broker, llama.cpp) to answer: poll a probe at a fixed interval
(tenacity) until it says ready, the process exits, or the time is up."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed


def wait_ready(
    process: subprocess.Popen[Any],
    probe: Callable[[], bool],
    timeout_s: float,
    interval_s: float,
    exited: Callable[[int], str],
) -> bool:
    """True once `probe()` does; False when `timeout_s` passed first. Raises RuntimeError with
    `exited(returncode)` as soon as the process is gone."""

    def attempt() -> bool:
        code = process.poll()
        if code is not None:
            raise RuntimeError(exited(code))
        return probe()

    retrying = Retrying(
        stop=stop_after_delay(timeout_s), wait=wait_fixed(interval_s), retry=retry_if_result(lambda ok: not ok)
    )
    try:
        return bool(retrying(attempt))
    except RetryError:
        return False
