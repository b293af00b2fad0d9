"""judge_post's wiring of tiers in both judge modes, with plain async functions as judges (the HTTP
client itself is exercised against the simulator in the integration tests)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.judges_support import write_policy
from worker.cascade.pipeline import Judges, judge_post
from worker.cascade.verdict import assemble_verdict
from worker.config import EscalationSettings
from worker.contracts import AuditCall, JudgeAnswer, Post, SourceRef
from worker.judges.client import Failure, JudgeCall, TierName
from worker.policies.files import Policy, load_policy_dir
from worker.policies.screening import PolicyRuntime

SOURCE = SourceRef(topic="posts", partition=0, offset=0)
TEXT = "alphaword betaword gammaword"


@pytest.fixture
def runtime(tmp_path: Path) -> PolicyRuntime:
    write_policy(tmp_path, "alpha", ["alphaword"])
    write_policy(tmp_path, "beta", ["betaword"])
    write_policy(tmp_path, "gamma", ["gammaword"])
    write_policy(tmp_path, "gamma-next", ["x"], shadow=True, shadow_of="gamma")
    return PolicyRuntime.build(load_policy_dir(tmp_path))


class Recorder:
    """Judges that log what each tier was asked, answering per a script: policy id -> (t1, t2)."""

    def __init__(self, script: dict[str, tuple[str, str]]) -> None:
        self.script = script
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def call(self, tier: TierName, policy: Policy, audit: AuditCall) -> JudgeCall:
        kind = self.script[policy.id][0 if tier == "t1" else 1]
        if kind in ("truncated", "invalid_json"):
            failure: Failure = "truncated" if kind == "truncated" else "invalid_json"
            return JudgeCall(tier, policy, None, failure, audit)
        violation, confidence = kind.split(":")
        answer = JudgeAnswer(violation=int(violation), confidence=confidence, rationale="r")  # type: ignore[arg-type]
        return JudgeCall(tier, policy, answer, None, audit)

    def audit(self, tier: TierName, policies: Sequence[Policy]) -> AuditCall:
        return AuditCall(
            tier=tier, policy_id="+".join(p.id for p in policies), policy_version="v", model="m", endpoint="e",
            reasoning_effort="low", request={}, reasoning=None, content=None, finish_reason="stop", error=None,
            latency_ms=1.0,
        )  # fmt: skip

    def judges(self, multi: bool) -> Judges:
        def one(tier: TierName):  # type: ignore[no-untyped-def]
            async def judge(policy: Policy, post: Post) -> JudgeCall:
                self.asked.append((tier, (policy.id,)))
                return self.call(tier, policy, self.audit(tier, [policy]))

            return judge

        def many(tier: TierName):  # type: ignore[no-untyped-def]
            async def judge_many(policies: Sequence[Policy], post: Post) -> list[JudgeCall]:
                self.asked.append((tier, tuple(p.id for p in policies)))
                shared = self.audit(tier, policies)
                return [self.call(tier, p, shared) for p in policies]

            return judge_many

        return Judges(
            t1=one("t1"), t2=one("t2"), rules=EscalationSettings(),
            t1_many=many("t1") if multi else None, t2_many=many("t2") if multi else None,
        )  # fmt: skip


SCRIPT = {
    "alpha": ("1:high", "1:high"),  # decided at tier 1
    "beta": ("0:low", "1:high"),  # escalated, tier 2 says violation
    "gamma": ("truncated", "0:high"),  # no answer at tier 1, tier 2 says safe
    "gamma-next": ("0:low", "0:high"),  # shadow: escalates like any policy, asked alone
}


async def run(runtime: PolicyRuntime, multi: bool) -> tuple[Recorder, object]:
    recorder = Recorder(SCRIPT)
    judged = await judge_post(
        Post(id="p", text=TEXT), runtime.funnel.score(TEXT), runtime, recorder.judges(multi), SOURCE,
        time.perf_counter(),
    )  # fmt: skip
    return recorder, judged


async def test_per_policy_asks_one_request_per_policy_and_tier(runtime: PolicyRuntime) -> None:
    recorder, judged = await run(runtime, multi=False)
    assert sorted(recorder.asked) == sorted(
        [("t1", ("alpha",)), ("t1", ("beta",)), ("t1", ("gamma",)), ("t1", ("gamma-next",)),
         ("t2", ("beta",)), ("t2", ("gamma",)), ("t2", ("gamma-next",))]
    )  # fmt: skip
    verdict = judged.verdict  # type: ignore[attr-defined]
    assert verdict.decision == "hide" and verdict.tier == "t2"
    assert verdict.escalation_reasons == ["invalid_answer", "low_confidence"]
    assert {r.policy_id: r.violation for r in verdict.results} == {"alpha": True, "beta": True, "gamma": False}


async def test_multi_policy_batches_live_policies_and_asks_shadows_alone(runtime: PolicyRuntime) -> None:
    recorder, judged = await run(runtime, multi=True)
    assert sorted(recorder.asked) == sorted(
        [("t1", ("alpha", "beta", "gamma")), ("t1", ("gamma-next",)), ("t2", ("beta", "gamma")),
         ("t2", ("gamma-next",))]
    )  # fmt: skip
    verdict = judged.verdict  # type: ignore[attr-defined]
    assert {r.policy_id: r.violation for r in verdict.results} == {"alpha": True, "beta": True, "gamma": False}
    audit = judged.audit  # type: ignore[attr-defined]
    assert [c.policy_id for c in audit.calls] == ["alpha+beta+gamma", "gamma-next", "beta+gamma", "gamma-next"], (
        "a shared multi-policy call is audited once"
    )


async def test_multi_policy_with_one_escalated_policy_is_a_single_request(runtime: PolicyRuntime) -> None:
    recorder = Recorder({**SCRIPT, "gamma": ("0:high", "0:high"), "gamma-next": ("0:high", "0:high")})
    await judge_post(
        Post(id="p", text=TEXT), runtime.funnel.score(TEXT), runtime, recorder.judges(True), SOURCE,
        time.perf_counter(),
    )  # fmt: skip
    assert ("t2", ("beta",)) in recorder.asked


async def test_every_verdict_names_the_policy_versions_and_fit_it_was_screened_under(runtime: PolicyRuntime) -> None:
    live = {p.id: p.version for p in runtime.policies.live}
    assert set(live) == {"alpha", "beta", "gamma"}, "shadow policies never decide: not listed"
    _, judged = await run(runtime, multi=False)
    verdict = judged.verdict  # type: ignore[attr-defined]
    assert verdict.tier == "t2"
    assert verdict.funnel.policy_versions == live, "the whole snapshot, not only the candidates"
    assert verdict.funnel.fit is None and runtime.fit_id is None, "no heads in use"
    quiet = "nothing to see here"
    funnel_only = await judge_post(
        Post(id="q", text=quiet), runtime.funnel.score(quiet), runtime, Recorder(SCRIPT).judges(False), SOURCE,
        time.perf_counter(),
    )  # fmt: skip
    assert funnel_only.verdict.tier == "funnel" and funnel_only.audit is None
    assert funnel_only.verdict.funnel.policy_versions == live
    assert funnel_only.verdict.funnel.fit is None
    # The fit id is passed through from the runtime's funnel when heads are in use.
    with_heads = assemble_verdict(
        "r", [], runtime.funnel.score(quiet), SOURCE, 1.0, policy_versions=live, fit="fit-1234"
    )
    assert with_heads.funnel.fit == "fit-1234" and with_heads.funnel.policy_versions == live
