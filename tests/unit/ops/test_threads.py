"""worker/ops/threads.py: the native pools are sized as the settings say. Each case runs in a fresh
interpreter: the limits are process-wide and would leak into the rest of the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.ops.threads import tokenizer_env

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import json, os, sys
from worker.ops.threads import size_thread_pools
from threadpoolctl import threadpool_info
pools = size_thread_pools(int(sys.argv[1]), int(sys.argv[2]))
again = size_thread_pools(int(sys.argv[1]), int(sys.argv[2]))
print(json.dumps({
    "blas": [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"],
    "reported": [lib["num_threads"] for lib in pools.blas_libraries],
    "same": again is pools,
    "env": {k: os.environ.get(k) for k in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")},
}))
"""


def probe(blas: int, tokenizers: int) -> dict[str, object]:
    unset = ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(blas), str(tokenizers)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_one_thread_each() -> None:
    result = probe(1, 1)
    assert result["blas"], "numpy's BLAS was not found by threadpoolctl"
    assert result["blas"] == [1] * len(result["blas"])  # type: ignore[arg-type]
    assert result["reported"] == result["blas"]
    assert result["same"] is True
    assert result["env"] == {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": None}


def test_zero_leaves_the_libraries_alone() -> None:
    result = probe(0, 0)
    assert result["env"] == {"TOKENIZERS_PARALLELISM": None, "RAYON_NUM_THREADS": None}
    assert result["reported"] == result["blas"]


@pytest.mark.parametrize(
    ("threads", "env"),
    [
        (0, {}),
        (1, {"TOKENIZERS_PARALLELISM": "false"}),
        (3, {"TOKENIZERS_PARALLELISM": "true", "RAYON_NUM_THREADS": "3"}),
    ],
)
def test_tokenizer_env(threads: int, env: dict[str, str]) -> None:
    assert tokenizer_env(threads) == env
