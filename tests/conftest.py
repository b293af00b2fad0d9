"""Shared fixtures: a real Tansu broker and real HTTP judge servers (the vLLM simulator)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.kafka_support import FAST_GROUP, PROJECT_ROOT, WorkerProcess
from tests.vllm_cpu_support import GptOssServer, require_tiny_gptoss_env, start_tiny_gptoss_server
from worker.local.broker import EmbeddedBroker, create_topics
from worker.sim.process import SimulatorProcess

POLICIES_DIR = PROJECT_ROOT / "policies"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as running:
        yield running


@pytest.fixture
def topics(broker: EmbeddedBroker) -> dict[str, int]:
    wanted = {"posts": 4, "actions": 4, "audit": 4, "dlq": 1, "review": 2}
    create_topics(broker.bootstrap_servers, wanted)
    return wanted


@pytest.fixture
def sims() -> Iterator[tuple[SimulatorProcess, SimulatorProcess]]:
    with (
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-20b", seed=11, speed=0.2) as t1,
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-120b", seed=12, speed=0.2) as t2,
    ):
        yield t1, t2


def worker_env(
    broker: EmbeddedBroker,
    sims: tuple[SimulatorProcess, SimulatorProcess],
    group: str = "modstream-test",
    policies_dir: Path = POLICIES_DIR,
    **extra: str,
) -> dict[str, str]:
    t1, t2 = sims
    env = {
        "MODSTREAM_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "MODSTREAM_KAFKA__GROUP_ID": group,
        "MODSTREAM_KAFKA__SESSION_TIMEOUT_MS": str(FAST_GROUP["session_timeout_ms"]),
        "MODSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": str(FAST_GROUP["heartbeat_interval_ms"]),
        "MODSTREAM_KAFKA__COMMIT_INTERVAL_S": "0.2",
        "MODSTREAM_JUDGE_T1__BASE_URLS": f'["{t1.base_url}"]',
        "MODSTREAM_JUDGE_T2__BASE_URLS": f'["{t2.base_url}"]',
        "MODSTREAM_JUDGE_T1__RETRY_MAX_S": "0.5",
        "MODSTREAM_JUDGE_T2__RETRY_MAX_S": "0.5",
        "MODSTREAM_POLICIES_DIR": str(policies_dir),
        "MODSTREAM_LOG_LEVEL": "info",
    }
    env.update(extra)
    return env


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def spawn(env: dict[str, str]) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log").start()
        started.append(worker)
        return worker

    yield spawn
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def tiny_gptoss_server() -> Iterator[GptOssServer]:
    """One real vLLM serving the tiny random-weight gpt-oss model per session (start-up 2-3 min).
    Skips without the env (scripts/tiny_gptoss_env.sh), fails under CI=true; see docs/vllm-cpu.md."""
    require_tiny_gptoss_env()
    with start_tiny_gptoss_server() as server:
        yield server
