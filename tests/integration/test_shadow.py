"""Shadow mode end to end: a candidate new version of a policy runs next to the live one, is judged
on exactly the live policy's posts, is audited as shadow, never changes a decision, and its
agreement with the live version is counted in modstream_shadow_agreement_total."""

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


def test_shadow_policy_is_judged_audited_and_compared_but_never_decides(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    # Live: the simulator's heuristic decides ("scam" is a trigger word). Shadow: a stricter-looking
    # rewrite whose (simulated) model never flags anything. Both answer with high confidence.
    write_policy(policies, "alpha", ["alphaword"], extra="[[sim: confidence=high]]")
    write_policy(policies, "alpha-v2", ["shadowword"], extra="[[sim: violation=0 confidence=high]]",
                 shadow=True, shadow_of="alpha")  # fmt: skip
    posts = {
        **{f"scam-{i}": f"alphaword this is a scam {i}" for i in range(6)},  # live 1, shadow 0: disagree
        **{f"fine-{i}": f"alphaword lovely weather {i}" for i in range(4)},  # both 0: agree
        "shadow-only": "shadowword is not screened on its own",  # the shadow's own hints are unused
    }
    produce(broker.bootstrap_servers, "posts", ((k.encode(), post_value(k, t)) for k, t in posts.items()))
    worker = spawn_worker(worker_env(broker, sims, group="g-shadow", policies_dir=policies))

    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", len(posts), timeout_s=60))
    assert set(verdicts) == set(posts)
    for post_id, (verdict,) in verdicts.items():
        if post_id == "shadow-only":
            assert verdict["tier"] == "funnel" and verdict["results"] == []
            continue
        assert [r["policy_id"] for r in verdict["results"]] == ["alpha"], "shadow results stay off the verdict"
        assert verdict["decision"] == ("hide" if post_id.startswith("scam") else "allow"), post_id

    audit = {m.key().decode(): orjson.loads(m.value()) for m in read_topic(broker.bootstrap_servers, "audit", 10)}
    assert set(audit) == set(posts) - {"shadow-only"}
    for record in audit.values():
        calls = {c["policy_id"]: c for c in record["calls"]}
        assert set(calls) == {"alpha", "alpha-v2"}
        assert calls["alpha-v2"]["shadow"] is True and calls["alpha"]["shadow"] is False
        assert orjson.loads(calls["alpha-v2"]["content"])["violation"] == 0

    def agreement() -> tuple[float, float]:
        text = scrape(worker.metrics_url)
        name = "modstream_shadow_agreement_total"
        return metric(text, name, policy_id="alpha-v2", agree="true"), metric(
            text, name, policy_id="alpha-v2", agree="false"
        )

    wait_for(lambda: agreement() == (4, 6), 20, "shadow agreement 4 true / 6 false")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]
