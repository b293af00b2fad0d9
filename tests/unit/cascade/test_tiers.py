"""The one cascade function (t1 -> escalate -> t2 -> settle) that the worker and `modstream eval` both run,
with plain async functions as judges."""

from __future__ import annotations

from pathlib import Path

import pytest

from funnel import FunnelResult
from tests.judges_support import write_policy
from worker.cascade.tiers import Judges, cascade
from worker.cascade.verdict import policy_decision
from worker.config import EscalationSettings
from worker.contracts import AuditCall, JudgeAnswer, Post
from worker.judges.client import JudgeCall, TierName
from worker.policies.files import Policy, load_policy_dir

POST = Post(id="p", text="some text")


@pytest.fixture
def policies(tmp_path: Path) -> list[Policy]:
    for pid in ("alpha", "beta", "gamma"):
        write_policy(tmp_path, pid, [pid])
    return list(load_policy_dir(tmp_path).policies)


def _audit(tier: TierName, policy: Policy) -> AuditCall:
    return AuditCall(
        tier=tier, policy_id=policy.id, policy_version="v", model="m", endpoint="e", reasoning_effort="low",
        request={}, reasoning=None, content=None, finish_reason="stop", error=None, latency_ms=1.0,
    )  # fmt: skip


def scripted(script: dict[str, tuple[str, str]], asked: list[tuple[str, str]]) -> Judges:
    """Judges answering per policy id: (t1 answer, t2 answer), each "violation:confidence" or "none"."""

    def tier(name: TierName):  # type: ignore[no-untyped-def]
        async def judge(policy: Policy, post: Post) -> JudgeCall:
            asked.append((name, policy.id))
            kind = script[policy.id][0 if name == "t1" else 1]
            if kind == "none":
                return JudgeCall(name, policy, None, "invalid_json", _audit(name, policy))
            violation, confidence = kind.split(":")
            answer = JudgeAnswer(violation=int(violation), confidence=confidence, rationale="r")  # type: ignore[arg-type]
            return JudgeCall(name, policy, answer, None, _audit(name, policy))

        return judge

    return Judges(t1=tier("t1"), t2=tier("t2"), rules=EscalationSettings(audit_sample_rate=0.0))


def screened(policies: list[Policy], very_sure: tuple[str, ...] = ()) -> FunnelResult:
    return FunnelResult(candidates=[p.id for p in policies], scores={}, signals={}, very_sure=list(very_sure))


async def test_only_escalated_policies_reach_tier_two(policies: list[Policy]) -> None:
    asked: list[tuple[str, str]] = []
    judges = scripted({"alpha": ("1:high", "0:high"), "beta": ("0:low", "1:high"), "gamma": ("none", "0:high")}, asked)
    done = await cascade(POST, policies, judges, screened(policies))
    assert sorted(asked) == [("t1", "alpha"), ("t1", "beta"), ("t1", "gamma"), ("t2", "beta"), ("t2", "gamma")]
    assert done.reasons == [[], ["low_confidence"], ["invalid_answer"]]
    assert [o.deciding.tier for o in done.outcomes] == ["t1", "t2", "t2"]
    assert [policy_decision(o) for o in done.outcomes] == ["hide", "hide", "allow"]
    assert done.t2_for("alpha") is None and done.t2_for("beta") is not None


async def test_a_tier_two_that_fails_or_is_unsure_leaves_the_policy_to_review(policies: list[Policy]) -> None:
    judges = scripted({"alpha": ("0:low", "none"), "beta": ("0:low", "1:low"), "gamma": ("0:high", "1:high")}, [])
    done = await cascade(POST, policies, judges, screened(policies))
    assert [o.unresolved for o in done.outcomes] == [True, True, False]
    assert [policy_decision(o) for o in done.outcomes] == ["review", "review", "allow"]


async def test_the_funnel_being_very_sure_escalates_a_safe_answer(policies: list[Policy]) -> None:
    judges = scripted({p.id: ("0:high", "1:high") for p in policies}, [])
    done = await cascade(POST, policies, judges, screened(policies, very_sure=("beta",)))
    assert done.reasons == [[], ["funnel_disagreement"], []]
    assert [policy_decision(o) for o in done.outcomes] == ["allow", "hide", "allow"]


async def test_nothing_escalated_means_no_tier_two_call(policies: list[Policy]) -> None:
    asked: list[tuple[str, str]] = []
    done = await cascade(
        POST, policies, scripted({p.id: ("0:high", "1:high") for p in policies}, asked), screened(policies)
    )
    assert {tier for tier, _ in asked} == {"t1"} and done.t2_calls == []
