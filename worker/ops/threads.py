"""Native thread pools of the worker, sized once at start-up (docs/configuration.md, "Thread pools").

The funnel's CPU work runs in two native libraries that start a pool of one thread per core by
default: numpy's BLAS (OpenBLAS in the numpy wheels) for the embedding stage's small matrix products,
and the HF tokenizers library's rayon pool for tokenizing a batch. On the worker's small per-batch
products those threads mostly spin waiting for work beside the GIL-bound event loop: pinning BLAS to
one thread halved the worker's CPU in docs/benchmarks.md. More cores are used by running more worker
processes (docs/deployment.md), not by wider pools.

- BLAS: threadpoolctl limits every BLAS library loaded in the process (numpy is imported first so
  its OpenBLAS is loaded); the limit holds for the life of the process.
- tokenizers: `TOKENIZERS_PARALLELISM` is read by the library at every batch call (false: tokenize a
  batch on the calling thread); `RAYON_NUM_THREADS` sizes the rayon pool when it is first started,
  so it is set here, before the funnel tokenizes anything.
A setting of 0 leaves that library's default (and any env var the operator set) alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("modstream.threads")


@dataclass(frozen=True)
class ThreadPools:
    """What start-up set: the requested sizes (0: library default) and the BLAS libraries found."""

    blas_threads: int
    tokenizer_threads: int
    blas_libraries: tuple[dict[str, Any], ...]
    tokenizer_env: dict[str, str]


def tokenizer_env(threads: int) -> dict[str, str]:
    """The env vars that give the HF tokenizers library `threads` threads (0: none, its default)."""
    if threads == 0:
        return {}
    if threads == 1:
        return {"TOKENIZERS_PARALLELISM": "false"}
    return {"TOKENIZERS_PARALLELISM": "true", "RAYON_NUM_THREADS": str(threads)}


_sized: ThreadPools | None = None


def size_thread_pools(blas_threads: int, tokenizer_threads: int) -> ThreadPools:
    """Pin BLAS to `blas_threads` and the tokenizers to `tokenizer_threads` for this process (0 leaves
    a library at its default) and log the outcome. Call at start-up, before the funnel is built; a
    repeated call with the same sizes (several workers in one process, as in tests) changes nothing."""
    global _sized
    if _sized is not None and (_sized.blas_threads, _sized.tokenizer_threads) == (blas_threads, tokenizer_threads):
        return _sized
    import numpy  # noqa: F401 - loads numpy's BLAS, so threadpoolctl can find and limit it
    from threadpoolctl import threadpool_info, threadpool_limits

    if blas_threads > 0:
        threadpool_limits(limits=blas_threads, user_api="blas")
    libraries = tuple(
        {key: info.get(key) for key in ("internal_api", "num_threads", "version")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    )
    env = tokenizer_env(tokenizer_threads)
    os.environ.update(env)
    pools = _sized = ThreadPools(blas_threads, tokenizer_threads, libraries, env)
    log.info(
        "thread_pools_sized",
        blas_threads=blas_threads or "library default",
        blas_libraries=list(libraries),
        tokenizer_threads=tokenizer_threads or "library default",
        tokenizer_env=env,
    )
    return pools
