"""Process-level running of the worker: signals, exit codes."""

from __future__ import annotations

import asyncio
import signal

import structlog

from worker.config import Settings
from worker.ops.threads import size_thread_pools
from worker.stream.worker import Worker

log = structlog.get_logger("modstream.serve")


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> Worker:
    """Run until SIGTERM/SIGINT (or `stop` is set): then stop consuming, drain, commit, return."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, _request_stop, stop, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    # Native thread pools (BLAS, tokenizers) sized before the funnel is built (worker/ops/threads.py).
    size_thread_pools(settings.blas_threads, settings.tokenizer_threads)
    worker = Worker(settings)
    try:
        # SIGHUP: reload the policy directory now (see worker/policies/reload.py).
        loop.add_signal_handler(signal.SIGHUP, worker.reloader.request)
        installed.append(signal.SIGHUP)
    except (NotImplementedError, RuntimeError, AttributeError):  # not the main thread / no SIGHUP
        pass
    try:
        await worker.run(stop)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    return worker


def _request_stop(stop: asyncio.Event, sig: int) -> None:
    if stop.is_set():
        log.warning("second_signal_ignored_draining_already", signal=signal.Signals(sig).name)
        return
    log.info("stop_requested", signal=signal.Signals(sig).name)
    stop.set()
