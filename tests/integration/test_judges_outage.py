"""A tier outage end to end: the judge answers 503, the endpoint's breaker opens, the worker pauses
its partitions, no post gets a verdict while the tier is down (none is silently allowed), and
every post is judged once the tier is back."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.conftest import worker_env
from tests.judges_support import metric, scrape, write_policy
from tests.kafka_support import WorkerProcess, post_value, produce, read_topic, verdicts_by_id, wait_for
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

VIOLATING = "alphaword [[sim: violation=1 confidence=high]]"


@pytest.mark.parametrize("tier", ["t1", "t2"])
def test_tier_outage_pauses_then_everything_is_judged_after_recovery(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
    tier: str,
) -> None:
    policies = tmp_path / "policies"
    # Severe: every violation is confirmed by tier 2, so a tier-2 outage blocks these posts too.
    write_policy(policies, "alpha", ["alphaword"], severity="severe")
    down = sims[0] if tier == "t1" else sims[1]
    breaker = {f"MODSTREAM_JUDGE_{tier.upper()}__BREAKER_FAILURES": "3",
               f"MODSTREAM_JUDGE_{tier.upper()}__BREAKER_COOLDOWN_S": "0.5"}  # fmt: skip
    worker = spawn_worker(worker_env(broker, sims, group=f"g-outage-{tier}", policies_dir=policies, **breaker))

    before = [f"before-{i}" for i in range(5)]
    produce(broker.bootstrap_servers, "posts", ((k.encode(), post_value(k, VIOLATING)) for k in before))
    assert len(read_topic(broker.bootstrap_servers, "actions", len(before), timeout_s=60)) == len(before)

    down.set_faults(outage=True)
    during = [f"during-{i}" for i in range(40)]
    produce(broker.bootstrap_servers, "posts", ((k.encode(), post_value(k, VIOLATING)) for k in during))

    def paused() -> bool:
        text = scrape(worker.metrics_url)
        return (
            metric(text, "modstream_judge_breaker_state", tier=tier) == 2
            and metric(text, "modstream_paused_partitions") == topics["posts"]
        )

    wait_for(paused, 30, f"the {tier} breaker to open and every partition to pause")
    # While the tier is down nothing new is decided: no verdict for any post produced after the outage.
    actions = read_topic(broker.bootstrap_servers, "actions", len(before), timeout_s=10)
    assert {m.key().decode() for m in actions} == set(before), "a post was decided while a tier was down"
    assert paused(), "still paused (the breaker stays open until a probe succeeds)"

    down.set_faults(outage=False)
    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", len(before) + len(during), 90))
    assert set(verdicts) == set(before) | set(during)
    decided = {(v[0]["decision"], v[0]["tier"]) for k, v in verdicts.items() if k in during}
    assert decided == {("hide", "t2")}, "judged by both tiers after recovery; none allowed"
    assert all(len(v) == 1 for v in verdicts.values())

    def recovered() -> bool:
        text = scrape(worker.metrics_url)
        return (
            metric(text, "modstream_judge_breaker_state", tier=tier) == 0
            and metric(text, "modstream_paused_partitions") == 0
        )

    wait_for(recovered, 20, "the breaker to close and partitions to resume")
    audit = read_topic(broker.bootstrap_servers, "audit", len(before) + len(during), timeout_s=30)
    assert all(c["error"] is None for m in audit for c in orjson.loads(m.value())["calls"]), (
        "503s are retried, never recorded as an answer"
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]
