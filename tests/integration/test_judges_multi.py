"""judge_mode multi_policy in the running worker: one request per tier for a post's candidates."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.conftest import worker_env
from tests.judges_support import write_policy
from tests.kafka_support import WorkerProcess, post_value, produce, read_topic, verdicts_by_id
from worker.judges.multipolicy import MULTI_HEADER
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

POSTS = {
    "both-sure": "alphaword betaword [[sim: violation=1 confidence=high]]",
    "both-unsure": "alphaword betaword [[sim: violation=0 confidence=low confidence_t2=high]]",
    "alpha-only": "alphaword [[sim: violation=0 confidence=high]]",
}


def test_multi_policy_mode_sends_one_request_per_tier(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    write_policy(policies, "alpha", ["alphaword"])
    write_policy(policies, "beta", ["betaword"])
    produce(broker.bootstrap_servers, "posts", ((k.encode(), post_value(k, t)) for k, t in POSTS.items()))
    worker = spawn_worker(
        worker_env(broker, sims, group="g-multi", policies_dir=policies, MODSTREAM_JUDGE_MODE="multi_policy")
    )
    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", len(POSTS), timeout_s=60))
    audit = {m.key().decode(): orjson.loads(m.value()) for m in read_topic(broker.bootstrap_servers, "audit", 3)}
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]

    def results(post_id: str) -> dict[str, bool]:
        return {r["policy_id"]: r["violation"] for r in verdicts[post_id][0]["results"]}

    assert verdicts["both-sure"][0]["decision"] == "hide" and results("both-sure") == {"alpha": True, "beta": True}
    assert verdicts["both-unsure"][0]["tier"] == "t2" and results("both-unsure") == {"alpha": False, "beta": False}
    assert results("alpha-only") == {"alpha": False}
    calls = {k: [(c["tier"], c["policy_id"]) for c in v["calls"]] for k, v in audit.items()}
    assert calls == {
        "both-sure": [("t1", "alpha+beta")],
        "both-unsure": [("t1", "alpha+beta"), ("t2", "alpha+beta")],
        "alpha-only": [("t1", "alpha")],  # a single candidate is an ordinary request
    }
    t1, t2 = sims
    t1_multi = [b for b in t1.requests() if b["messages"][0]["content"].startswith(MULTI_HEADER)]
    assert len(t1.requests()) == 3 and len(t1_multi) == 2
    assert len(t2.requests()) == 1 and t2.requests()[0]["messages"][0]["content"].startswith(MULTI_HEADER)
