"""Funnel recall measured in production, through the worker: real Tansu broker, simulator judges.

A seeded stream where the funnel is known to miss violations for `spam-scams` (posts the
simulated judge calls violating but that are no spam-scams candidates); `spam-scams` carries
`funnel.bypass_sample_rate: 0.5` in a copy of the shipped policies. The estimate from the
published verdicts (and the worker's gauge) must hold the true recall in its interval, and a
bypass-sampled result must never change a decision.
"""

from __future__ import annotations

import random
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from funnel.recall import bypass_sampled, tracker_from_verdicts
from tests.conftest import POLICIES_DIR, worker_env
from tests.kafka_support import (
    WorkerProcess,
    committed_offsets,
    post_value,
    produce,
    read_topic,
    verdicts_by_id,
    wait_for,
)
from worker.local.broker import EmbeddedBroker
from worker.policies.files import load_policy_dir
from worker.policies.screening import PolicyRuntime
from worker.sim.process import SimulatorProcess
from worker.sim.script import find_trigger

pytestmark = pytest.mark.integration

POLICY = "spam-scams"
RATE = 0.5
SPAM = [
    "FREE MONEY!!! crypto giveaway, send 1 BTC and get 2 back",
    "click this link to double your savings, limited offer",
    "wire transfer the fee today and claim your prize",
]
# The simulated judge calls these violating (a phrase of the spam trigger group, which the
# spam-scams policy names, and no mention frame); the funnel does not send them to spam-scams:
# the misses the bypass sample must reveal.
MISSED = [
    "grandpa says the lottery is a scam but buys tickets anyway",
    "he said the wire transfer from work came through, pizza tonight",
    "the scam artist in the novel was hilarious",
    "want to double your garden harvest? compost",
]
BENIGN = [
    "Had a lovely walk by the river this morning",
    "Does anyone know a good recipe for lentil soup?",
    "Our team won the match last night, so proud",
    "kill the process with ctrl-c and restart the server",
]


def _policies_with_bypass(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, target)
    path = target / f"{POLICY}.md"
    text = path.read_text(encoding="utf-8")
    assert "\nfunnel:\n" in text
    path.write_text(text.replace("\nfunnel:\n", f"\nfunnel:\n  bypass_sample_rate: {RATE}\n", 1), encoding="utf-8")
    return target


def test_bypass_sample_estimates_the_true_funnel_recall(
    tmp_path: Path,
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    policies = _policies_with_bypass(tmp_path)
    rng = random.Random(20261204)
    posts: dict[str, str] = {}
    for i in range(240):
        kind = rng.choices([SPAM, MISSED, BENIGN], weights=[3, 2, 3])[0]
        posts[f"post-{i}"] = f"{rng.choice(kind)} #{i}"
    # The truth, from the same funnel the worker builds and the simulator's own rule.
    policy_set = load_policy_dir(policies)
    # Today's scoring (heads off, in the worker too): its misses on these posts are known and
    # stable; the estimator under test does not depend on how the funnel scores.
    runtime = PolicyRuntime.build(policy_set, use_heads=False)
    ids = list(posts)
    screened = runtime.funnel.score_batch([posts[i] for i in ids])
    [prompt] = [p.prompt for p in policy_set.policies if p.id == POLICY]
    violating = [i for i in ids if find_trigger(posts[i], prompt) is not None]
    caught = [i for i, r in zip(ids, screened, strict=True) if i in set(violating) and POLICY in r.candidates]
    true_recall = len(caught) / len(violating)
    assert 0.3 < true_recall < 0.9, "the stream must have both catches and misses"
    expected_sampled = {
        i for i, r in zip(ids, screened, strict=True) if POLICY not in r.candidates and bypass_sampled(i, POLICY, RATE)
    }

    produced = produce(broker.bootstrap_servers, "posts", [(i.encode(), post_value(i, posts[i])) for i in ids])
    worker = spawn_worker(
        worker_env(broker, sims, group="g-recall", policies_dir=policies, MODSTREAM_FUNNEL_HEADS="false")
    )

    def all_committed() -> bool:
        committed = committed_offsets(broker.bootstrap_servers, "g-recall", "posts", topics["posts"])
        return all(committed.get(p) == last + 1 for p, last in produced.last_offsets.items())

    wait_for(all_committed, 180, "committed offsets to cover every post")
    metrics = httpx.get(f"{worker.metrics_url}/metrics", timeout=5).text
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]

    verdicts = {k: v[0] for k, v in verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", len(ids))).items()}
    assert set(verdicts) == set(ids)
    sampled_ids = {k for k, v in verdicts.items() if any(r.get("sampled") for r in v["results"])}
    assert sampled_ids == expected_sampled
    for verdict in verdicts.values():
        deciding = [r for r in verdict["results"] if not r.get("sampled")]
        for result in verdict["results"]:
            if result.get("sampled"):
                assert result["policy_id"] == POLICY and result["sample_rate"] == RATE
        if not any(r["violation"] for r in deciding):
            # a sampled "violation" alone never hides or reviews a post
            assert verdict["decision"] == "allow", verdict
        if not deciding:
            assert verdict["tier"] == "funnel"

    [estimate] = [e for e in tracker_from_verdicts(verdicts.values()).estimates() if e.policy_id == POLICY]
    print(
        f"\n{POLICY}: true funnel recall {true_recall:.3f} ({len(caught)}/{len(violating)}); estimated "
        f"{estimate.recall:.3f} [{estimate.low:.3f}, {estimate.high:.3f}] from {estimate.candidate_violations} "
        f"candidate violations and {estimate.sampled_violations} of {estimate.sampled_posts} sampled cleared posts"
    )
    assert estimate.sampled_violations > 0
    assert estimate.low <= true_recall <= estimate.high
    gauge = f'modstream_funnel_recall_estimate{{policy_id="{POLICY}"}} '
    [line] = [row for row in metrics.splitlines() if row.startswith(gauge)]
    assert float(line.split()[-1]) == pytest.approx(estimate.recall, abs=1e-6)
