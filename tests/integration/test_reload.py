"""A policy file edited under a running worker (file poll, and SIGHUP): the next verdicts carry the
new policy_version, no post is judged half under each version, and a broken edit is rejected
while the old version keeps serving."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import worker_env
from tests.judges_support import metric, scrape, write_policy
from tests.kafka_support import WorkerProcess, post_value, produce, read_topic, verdicts_by_id, wait_for
from worker.local.broker import EmbeddedBroker
from worker.policies.files import load_policy_dir
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

# Both policies are candidates for every post; confidence pinned so nothing escalates.
TEXT = "alphaword and betaword [[sim: violation=0 confidence=high]] #{i}"


def publish(broker: EmbeddedBroker, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    produce(broker.bootstrap_servers, "posts", ((k.encode(), post_value(k, TEXT.format(i=k))) for k in ids))
    return ids


def reloads(worker: WorkerProcess, result: str) -> float:
    return metric(scrape(worker.metrics_url), "modstream_policy_reloads_total", result=result)


def snapshot(policies: Path) -> tuple[str, str]:
    """(alpha's version, alpha's prompt) as the directory holds it now."""
    alpha = load_policy_dir(policies).by_id()["alpha"]
    return alpha.version, alpha.prompt


def check_consistency(
    verdicts: dict[str, list[dict[str, Any]]], audit: dict[str, dict[str, Any]], prompts: dict[str, str]
) -> None:
    """Each verdict's results carry one version per policy, and each judge call's system prompt is
    exactly the prompt of the version stamped on the verdict."""
    for post_id, (verdict,) in verdicts.items():
        stamped = {r["policy_id"]: r["policy_version"] for r in verdict["results"]}
        assert set(stamped) == {"alpha", "beta"}, post_id
        for call in audit[post_id]["calls"]:
            assert call["policy_version"] == stamped[call["policy_id"]], post_id
            if call["policy_id"] == "alpha":
                assert call["request"]["messages"][0]["content"] == prompts[call["policy_version"]], post_id


def read_all(broker: EmbeddedBroker, n: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", n, timeout_s=60))
    audit = {m.key().decode(): orjson.loads(m.value()) for m in read_topic(broker.bootstrap_servers, "audit", n)}
    return verdicts, audit


def alpha_versions(verdicts: dict[str, list[dict[str, Any]]], ids: list[str]) -> set[str]:
    return {r["policy_version"] for k in ids for r in verdicts[k][0]["results"] if r["policy_id"] == "alpha"}


def test_edit_under_load_broken_edit_and_fix_via_file_poll(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    write_policy(policies, "alpha", ["alphaword"])
    write_policy(policies, "beta", ["betaword"])
    v1, prompt1 = snapshot(policies)
    env = worker_env(broker, sims, group="g-reload", policies_dir=policies, MODSTREAM_POLICY_RELOAD_INTERVAL_S="0.2")
    worker = spawn_worker(env)

    first = publish(broker, "first", 20)
    read_topic(broker.bootstrap_servers, "actions", len(first), timeout_s=60)
    # Edit while a large batch is being judged: posts straddle the swap.
    during = publish(broker, "during", 300)
    write_policy(policies, "alpha", ["alphaword"], extra="Edited: quotes of scams are safe.")
    v2, prompt2 = snapshot(policies)
    wait_for(lambda: reloads(worker, "ok") == 1, 20, "the edit to be reloaded")
    after = publish(broker, "after", 20)

    (policies / "alpha.md").write_text("---\nid: alpha\ntitle: [broken\n---\nbody\n", encoding="utf-8")
    wait_for(lambda: reloads(worker, "error") == 1, 20, "the broken edit to be rejected")
    while_broken = publish(broker, "broken", 20)
    # Everything so far must be judged before the fix lands, or it could be judged under the fix.
    so_far = len(first) + len(during) + len(after) + len(while_broken)
    read_topic(broker.bootstrap_servers, "actions", so_far, timeout_s=60)

    write_policy(policies, "alpha", ["alphaword"], extra="Fixed again.")
    v3, prompt3 = snapshot(policies)
    wait_for(lambda: reloads(worker, "ok") == 2, 20, "the fix to be reloaded")
    fixed = publish(broker, "fixed", 20)

    total = len(first) + len(during) + len(after) + len(while_broken) + len(fixed)
    verdicts, audit = read_all(broker, total)
    assert len(verdicts) == total and len(audit) == total
    check_consistency(verdicts, audit, {v1: prompt1, v2: prompt2, v3: prompt3})
    assert alpha_versions(verdicts, first) == {v1}
    assert alpha_versions(verdicts, during) <= {v1, v2}
    assert alpha_versions(verdicts, after) == {v2}
    assert alpha_versions(verdicts, while_broken) == {v2}, "the old version keeps serving a broken edit"
    assert alpha_versions(verdicts, fixed) == {v3}
    assert "policy_reload_failed" in worker.log()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]


def test_sighup_reloads_at_once(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    write_policy(policies, "alpha", ["alphaword"])
    write_policy(policies, "beta", ["betaword"])
    v1, prompt1 = snapshot(policies)
    # Polling off: only SIGHUP can pick the edit up.
    env = worker_env(broker, sims, group="g-sighup", policies_dir=policies, MODSTREAM_POLICY_RELOAD_INTERVAL_S="0")
    worker = spawn_worker(env)
    first = publish(broker, "first", 10)
    read_topic(broker.bootstrap_servers, "actions", len(first), timeout_s=60)

    write_policy(policies, "alpha", ["alphaword"], extra="Edited for SIGHUP.")
    v2, prompt2 = snapshot(policies)
    worker.signal(signal.SIGHUP)
    wait_for(lambda: reloads(worker, "ok") == 1, 20, "SIGHUP to reload the edit")
    after = publish(broker, "after", 10)

    verdicts, audit = read_all(broker, len(first) + len(after))
    check_consistency(verdicts, audit, {v1: prompt1, v2: prompt2})
    assert alpha_versions(verdicts, first) == {v1} and alpha_versions(verdicts, after) == {v2}
    assert worker.alive(), "SIGHUP must not stop the worker"
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]
