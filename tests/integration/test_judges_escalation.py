"""Every escalation reason, tier 2 deciding, and tier 2 failing or unsure -> review, end to end:
real Tansu broker, two simulator processes (20b and 120b), the worker as a process. The posts'
[[sim: ...]] directives script each tier's answer, so every outcome is exact."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.conftest import worker_env
from tests.judges_support import metric, scrape, write_policy
from tests.kafka_support import WorkerProcess, post_value, produce, read_topic, verdicts_by_id, wait_for
from worker.cascade.escalate import in_audit_sample
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

AUDIT_RATE = 0.05
# id -> (text, decision, tier, escalation reasons). "alpha" is an ordinary policy (escalates below
# high confidence), "beta" is severe, "gamma" has very_sure 0.9 (three keywords reach 0.91). The
# simulator reads a low confidence as p_violation 0.6 (inside the default band): cases about
# low_confidence pin p_violation outside it, so that each case shows one reason.
CASES: dict[str, tuple[str, str, str, list[str]]] = {
    "clean": ("alphaword [[sim: violation=0 confidence=high]]", "allow", "t1", []),
    "low": ("alphaword [[sim: violation=1 confidence=low confidence_t2=high p_violation=0.9]]", "hide", "t2",
            ["low_confidence"]),
    "medium": ("alphaword [[sim: violation=0 confidence=medium confidence_t2=high]]", "allow", "t2",
               ["low_confidence"]),
    "truncated": ("alphaword [[sim: violation=1 confidence=high fault=truncate fault_t2=none]]", "hide", "t2",
                  ["invalid_answer"]),
    "invalid-json": ("alphaword [[sim: violation=0 confidence=high fault=invalid_json fault_t2=none]]", "allow",
                     "t2", ["invalid_answer"]),
    "empty": ("alphaword [[sim: violation=1 confidence=high fault=empty fault_t2=none]]", "hide", "t2",
              ["invalid_answer"]),
    "severe": ("betaword [[sim: violation=1 confidence=high]]", "hide", "t2", ["severe_category"]),
    # Tier 2 clearing a severe tier-1 violation is a severe negative: a human decides.
    "severe-overturned": ("betaword [[sim: violation=1 confidence=high violation_t2=0]]", "review", "t2",
                          ["severe_category"]),
    "severe-safe": ("betaword [[sim: violation=0 confidence=high]]", "allow", "t1", []),
    "funnel-sure": ("gammaone gammatwo gammathree [[sim: violation=0 confidence=high violation_t2=1]]", "hide",
                    "t2", ["funnel_disagreement"]),
    "audit": ("alphaword [[sim: violation=0 confidence=high]]", "allow", "t2", ["audit_sample"]),
    "t2-invalid": ("alphaword [[sim: violation=1 confidence=low fault_t2=invalid_json p_violation=0.9]]", "review",
                   "t2", ["low_confidence"]),
    "t2-truncated": ("alphaword [[sim: violation=1 confidence=low fault_t2=truncate p_violation=0.9]]", "review",
                     "t2", ["low_confidence"]),
    "t2-unsure": ("alphaword [[sim: violation=1 confidence=low confidence_t2=low p_violation=0.9]]", "review", "t2",
                  ["low_confidence"]),
    # Confident in words, not in its probabilities: p_violation 0.4 is inside the default band.
    "uncertain": ("alphaword [[sim: violation=0 confidence=high p_violation=0.4 violation_t2=1 p_violation_t2=0.97]]",
                  "hide", "t2", ["uncertain_probability"]),
    "both-fail": ("alphaword [[sim: fault=empty]]", "review", "t2", ["invalid_answer"]),
    "no-candidate": ("a walk by the river", "allow", "funnel", []),
}  # fmt: skip
POLICY_OF = {"beta": "beta", "gamma": "gamma"}


def policy_of(text: str) -> str:
    return next((pid for word, pid in POLICY_OF.items() if text.startswith(word)), "alpha")


def post_ids() -> dict[str, str]:
    """Case name -> post id: the audit case gets an id inside the audit sample, all others ids outside."""
    ids: dict[str, str] = {}
    for case, (text, *_rest) in CASES.items():
        want = case == "audit"
        n = 0
        while in_audit_sample(f"esc-{case}-{n}", policy_of(text), AUDIT_RATE) != want:
            n += 1
        ids[case] = f"esc-{case}-{n}"
    return ids


def test_every_escalation_reason_and_tier_2_outcome(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    write_policy(policies, "alpha", ["alphaword"])
    write_policy(policies, "beta", ["betaword"], severity="severe")
    write_policy(policies, "gamma", ["gammaone", "gammatwo", "gammathree"], funnel={"very_sure": 0.9})
    ids = post_ids()
    produce(broker.bootstrap_servers, "posts",
            ((ids[c].encode(), post_value(ids[c], text)) for c, (text, *_r) in CASES.items()))  # fmt: skip
    env = worker_env(broker, sims, group="g-escalate", policies_dir=policies,
                     MODSTREAM_ESCALATION__AUDIT_SAMPLE_RATE=str(AUDIT_RATE))  # fmt: skip
    worker = spawn_worker(env)

    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", len(CASES), timeout_s=90))
    assert sorted(verdicts) == sorted(ids.values()), worker.log()[-3000:]
    for case, (text, decision, tier, reasons) in CASES.items():
        (verdict,) = verdicts[ids[case]]
        got = (verdict["decision"], verdict["tier"], verdict["escalation_reasons"])
        assert got == (decision, tier, reasons), f"{case}: {text}"
        assert verdict["escalated"] == bool(reasons)
        if tier == "t2":
            assert verdict["model"] == "openai/gpt-oss-safeguard-120b" and verdict["reasoning_effort"] == "high"
        if decision == "review":
            assert verdict["results"][0]["policy_id"] == policy_of(text)

    judged = sum(1 for _, _, tier, _ in CASES.values() if tier != "funnel")
    audit = {m.key().decode(): orjson.loads(m.value()) for m in read_topic(broker.bootstrap_servers, "audit", judged)}
    for case, (_, _, tier, reasons) in CASES.items():
        if tier == "funnel":
            assert ids[case] not in audit
            continue
        tiers = [(c["tier"], c["reasoning_effort"]) for c in audit[ids[case]]["calls"]]
        assert tiers == ([("t1", "low"), ("t2", "high")] if reasons else [("t1", "low")]), case

    expected = {"low_confidence": 5, "invalid_answer": 4, "severe_category": 2, "funnel_disagreement": 1,
                "audit_sample": 1, "uncertain_probability": 1}  # fmt: skip

    def counted() -> dict[str, float]:
        text = scrape(worker.metrics_url)
        return {r: metric(text, "modstream_escalations_total", reason=r) for r in expected}

    wait_for(lambda: counted() == expected, 20, f"escalation metrics {expected}")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]
