"""Shadow policies (unit level): front matter rules, screening as the live twin, never deciding,
agreement with the twin. The worker-level test is tests/integration/test_shadow.py."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from funnel import FunnelResult
from tests.judges_support import write_policy
from worker.cascade.escalate import escalation_reasons
from worker.cascade.pipeline import Judges, judge_post
from worker.config import EscalationSettings
from worker.contracts import AuditCall, JudgeAnswer, Post, SourceRef
from worker.judges.protocol import JudgeCall
from worker.policies.files import Policy, PolicyError, load_policy_dir
from worker.policies.screening import PolicyRuntime

SOURCE = SourceRef(topic="posts", partition=0, offset=0)


@pytest.fixture
def runtime(tmp_path: Path) -> PolicyRuntime:
    write_policy(tmp_path, "alpha", ["alphaword"])
    # Its own keyword must not matter: it is screened as alpha.
    write_policy(tmp_path, "alpha-next", ["shadowonly"], shadow=True, shadow_of="alpha")
    write_policy(tmp_path, "beta", ["betaword"])
    return PolicyRuntime.build(load_policy_dir(tmp_path))


def test_shadow_of_needs_shadow_true(tmp_path: Path) -> None:
    write_policy(tmp_path, "alpha", ["a"])
    write_policy(tmp_path, "alpha-next", ["a"], shadow_of="alpha")
    with pytest.raises(PolicyError, match="shadow_of is only allowed on a shadow policy"):
        load_policy_dir(tmp_path)


def test_shadow_of_must_name_a_live_policy(tmp_path: Path) -> None:
    write_policy(tmp_path, "alpha", ["a"], shadow=True)
    write_policy(tmp_path, "alpha-next", ["a"], shadow=True, shadow_of="alpha")
    with pytest.raises(PolicyError, match="'alpha', which is not a live policy"):
        load_policy_dir(tmp_path)
    (tmp_path / "alpha.md").unlink()
    with pytest.raises(PolicyError, match="not a live policy"):
        load_policy_dir(tmp_path)


def test_shadow_is_screened_with_its_twins_candidates(runtime: PolicyRuntime) -> None:
    assert runtime.funnel.policy_ids == ["alpha", "beta"], "no funnel column of its own"
    by_text = dict(zip(["alphaword", "shadowonly", "betaword"], runtime.funnel.score_batch(
        ["alphaword", "shadowonly", "betaword"]), strict=True))  # fmt: skip
    # Policy-set order is file-name order ("alpha-next.md" sorts before "alpha.md").
    assert [p.id for p in runtime.candidates(by_text["alphaword"])] == ["alpha-next", "alpha"]
    assert runtime.candidates(by_text["shadowonly"]) == []
    assert [p.id for p in runtime.candidates(by_text["betaword"])] == ["beta"]


def test_funnel_disagreement_for_a_shadow_uses_its_twins_funnel_result(runtime: PolicyRuntime) -> None:
    shadow = runtime.policies.by_id()["alpha-next"]
    sure = FunnelResult(candidates=["alpha"], scores={"alpha": 0.99}, signals={}, very_sure=["alpha"])
    assert escalation_reasons(answered(shadow, 0), sure, "p", EscalationSettings()) == ["funnel_disagreement"]


def answered(policy: Policy, violation: int, tier: str = "t1") -> JudgeCall:
    answer = JudgeAnswer(violation=violation, confidence="high", rationale="r")  # type: ignore[arg-type]
    audit = AuditCall(
        tier=tier, policy_id=policy.id, policy_version=policy.version, shadow=policy.meta.shadow, model="m",
        endpoint="e", reasoning_effort="low", request={}, reasoning=None, content=None, finish_reason="stop",
        error=None, latency_ms=1.0,
    )  # type: ignore[arg-type]  # fmt: skip
    return JudgeCall("t1" if tier == "t1" else "t2", policy, answer, None, audit)


def scripted(flags: dict[str, int]) -> Judges:
    """Judges answering a fixed violation flag per policy id, with high confidence (no escalation)."""

    async def judge(policy: Policy, post: Post) -> JudgeCall:
        return answered(policy, flags[policy.id])

    async def judge_many(policies: Sequence[Policy], post: Post) -> list[JudgeCall]:
        raise AssertionError("per_policy mode must not batch")

    return Judges(t1=judge, t2=judge, rules=EscalationSettings())


@pytest.mark.parametrize(
    ("live", "shadow", "decision", "agree"),
    [(1, 1, "hide", True), (0, 1, "allow", False), (1, 0, "hide", False), (0, 0, "allow", True)],
)
async def test_shadow_never_decides_and_its_agreement_is_reported(
    runtime: PolicyRuntime, live: int, shadow: int, decision: str, agree: bool
) -> None:
    screened = runtime.funnel.score("alphaword and betaword")
    judged = await judge_post(
        Post(id="p1", text="alphaword and betaword"), screened, runtime,
        scripted({"alpha": live, "alpha-next": shadow, "beta": 0}), SOURCE, time.perf_counter(),
    )  # fmt: skip
    assert judged.verdict.decision == decision
    assert [r.policy_id for r in judged.verdict.results] == ["alpha", "beta"], "shadow results stay off the verdict"
    assert [(a.policy_id, a.agree) for a in judged.shadow] == [("alpha-next", agree)]
    assert judged.audit is not None
    assert [(c.policy_id, c.shadow) for c in judged.audit.calls] == [
        ("alpha-next", True),
        ("alpha", False),
        ("beta", False),
    ]
