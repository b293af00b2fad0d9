"""`modstream eval`: dataset formats, metric arithmetic, and runs on the shipped labelled sample
against the simulator, whose answers are recomputed here from its pure script to check every pair."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from funnel import FunnelResult
from tests.conftest import POLICIES_DIR
from tests.kafka_support import PROJECT_ROOT
from worker.cascade.escalate import escalation_reasons, settle
from worker.cascade.verdict import policy_decision
from worker.cli.eval import api_base
from worker.cli.main import cli
from worker.config import EscalationSettings
from worker.contracts import AuditCall, JudgeAnswer
from worker.eval.scoring import DatasetError, PairResult, changed_decisions, parse_dataset, score
from worker.judges.client import JudgeCall
from worker.policies.files import Policy, load_policy_dir
from worker.sim.process import SimulatorProcess
from worker.sim.script import script

DATASET = PROJECT_ROOT / "datasets" / "eval_sample.jsonl"
SEED = 13


# ---- pure parts --------------------------------------------------------------------------------


def test_dataset_formats() -> None:
    lines = [
        '{"id": "a", "text": "x", "labels": {"spam": 1, "hate": 0}}',
        '{"id": "b", "text": "y", "label": 1, "policy": "hate"}',
        "",
        '{"id": "c", "text": "z", "label": true, "policy": "spam", "lang": "en"}',
    ]
    items = parse_dataset(lines, ["spam", "hate"])
    assert [(i.post.id, i.labels) for i in items] == [("a", {"spam": 1, "hate": 0}), ("b", {"hate": 1}),
                                                      ("c", {"spam": 1})]  # fmt: skip
    (single,) = parse_dataset(['{"id": "d", "text": "w", "label": 0}'], ["spam"])
    assert single.labels == {"spam": 0}


@pytest.mark.parametrize(
    ("line", "policies", "message"),
    [
        ('{"id": "d", "text": "w", "label": 0}', ["spam", "hate"], "needs a 'policy' field"),
        ('{"id": "d", "text": "w", "labels": {"spam": 2}}', ["spam"], "must be 0 or 1"),
        ('{"id": "d", "text": "w"}', ["spam"], "needs 'labels'"),
        ('{"id": "d", "labels": {"spam": 1}}', ["spam"], "not a post"),
        ("[1, 2]", ["spam"], "JSON object"),
        ("{not json", ["spam"], "not JSON"),
    ],
)
def test_dataset_errors_name_the_line(line: str, policies: list[str], message: str) -> None:
    with pytest.raises(DatasetError, match=message) as caught:
        parse_dataset(['{"id": "ok", "text": "fine", "labels": {}}', line], policies, "set.jsonl")
    assert "set.jsonl:2" in str(caught.value)


def result(label: int, predicted: int | None, decision: str = "allow", **extra: Any) -> PairResult:
    return PairResult(post_id=extra.pop("post_id", "p"), policy_id="spam", policy_version="v", label=label,
                      predicted=predicted, decision=decision, tier="t1", confidence="high", **extra)  # type: ignore[arg-type]  # fmt: skip


def test_metric_arithmetic() -> None:
    results = [result(1, 1), result(1, 1), result(1, 0), result(0, 1), result(0, 0), result(0, 0), result(0, 0),
               result(1, None, "review", escalation_reasons=["invalid_answer"], latency_ms=40.0)]  # fmt: skip
    m = score(results)
    assert (m.tp, m.fp, m.tn, m.fn, m.no_answer, m.n, m.positives) == (2, 1, 3, 1, 1, 8, 4)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3) and m.fpr == pytest.approx(1 / 4)
    assert m.escalation_rate == pytest.approx(1 / 8) and m.review_rate == pytest.approx(1 / 8)
    assert m.latency_ms_mean == pytest.approx(5.0)
    empty = score([result(0, 0)])
    assert empty.precision is None and empty.recall is None and empty.f1 is None and empty.fpr == 0.0


def test_changed_decisions_and_fixed_flag() -> None:
    old = [result(1, 0, post_id="a"), result(0, 0, post_id="b"), result(0, 0, post_id="c")]
    new = [result(1, 1, "hide", post_id="a"), result(0, 1, "hide", post_id="b"), result(0, 0, post_id="c")]
    changes = changed_decisions(old, new)
    assert [(c.post_id, c.fixed) for c in changes] == [("a", True), ("b", False)]


def test_api_base_accepts_a_root_or_a_v1_url() -> None:
    assert api_base("http://h:8000") == api_base("http://h:8000/") == "http://h:8000/v1"
    assert api_base("http://h:8000/v1/") == "http://h:8000/v1"


# ---- against the simulator -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(speed=0, max_num_seqs=32, seed=SEED) as running:
        yield running


def scripted_call(policy: Policy, text: str, effort: str) -> JudgeCall:
    """What the simulator answers, computed from its pure script (no HTTP)."""
    outcome = script(policy.prompt, text, effort, SEED)
    answer = JudgeAnswer.model_validate_json(outcome.content or "")
    audit = AuditCall(tier="t1", policy_id=policy.id, policy_version=policy.version, model="m", endpoint="e",
                      reasoning_effort="low", request={}, reasoning=None, content=None, finish_reason="stop",
                      error=None, latency_ms=0.0)  # fmt: skip
    # The simulator's logprobs put p_violation on its violation digit: escalation reads it.
    p = outcome.p_violations[-1] if outcome.p_violations else None
    return JudgeCall("t1" if effort == "low" else "t2", policy, answer, None, audit, p)


def run_eval(args: list[str]) -> tuple[str, dict[str, Any]]:
    outcome = CliRunner().invoke(cli, ["eval", *args])
    assert outcome.exit_code == 0, outcome.output + repr(outcome.exception)
    report_path = Path(args[args.index("--report") + 1])
    return outcome.output, orjson.loads(report_path.read_bytes())


@pytest.mark.integration
@pytest.mark.parametrize("tier", ["t1", "cascade"])
def test_eval_on_the_shipped_sample(sim: SimulatorProcess, tmp_path: Path, tier: str) -> None:
    report_path = tmp_path / "report.json"
    output, report = run_eval(["--policies", str(POLICIES_DIR), "--dataset", str(DATASET), "--judge", sim.url,
                               "--tier", tier, "--report", str(report_path), "--concurrency", "16"])  # fmt: skip
    policies = load_policy_dir(POLICIES_DIR).by_id()
    texts = {orjson.loads(line)["id"]: orjson.loads(line)["text"] for line in DATASET.read_text().splitlines()}
    pairs = [(pid, post_id) for post_id, line in zip(texts, DATASET.read_text().splitlines(), strict=True)
             for pid in orjson.loads(line)["labels"] if pid in policies]  # fmt: skip
    assert len(texts) >= 240 and len(report["results"]) == len(pairs)
    for pid in policies:
        assert pid in output
        assert report["metrics"][pid]["n"] == sum(1 for p, _ in pairs if p == pid) > 0
    assert "ALL" in output and "F1" in output and f"report written to {report_path}" in output
    assert report["overall"]["n"] == len(pairs) and report["tier"] == tier
    rules = EscalationSettings()
    escalated = 0
    for r in report["results"]:
        policy, text = policies[r["policy_id"]], texts[r["post_id"]]
        t1 = scripted_call(policy, text, "low")
        if tier == "t1":
            expected_reasons: list[str] = []
            deciding = t1
            expected_decision = "hide" if t1.answer and t1.answer.violation else "allow"
        else:
            unscreened = FunnelResult(candidates=[policy.id], scores={}, signals={}, very_sure=[])
            reasons = escalation_reasons(t1, unscreened, r["post_id"], rules)
            outcome = settle(t1, reasons, scripted_call(policy, text, "high") if reasons else None, rules)
            expected_reasons, deciding, expected_decision = list(reasons), outcome.deciding, policy_decision(outcome)
            escalated += bool(reasons)
        assert deciding.answer is not None
        assert (r["predicted"], r["decision"], r["escalation_reasons"], r["tier"]) == (
            deciding.answer.violation, expected_decision, expected_reasons, deciding.tier
        ), r  # fmt: skip
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0
    if tier == "cascade":
        assert escalated > 0 and report["overall"]["escalated"] == escalated


@pytest.mark.integration
def test_compare_lists_the_posts_whose_decision_changed(sim: SimulatorProcess, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for directory in (old, new):
        directory.mkdir()
        for name in ("spam-scams.md", "game-cheating.md"):
            shutil.copy(POLICIES_DIR / name, directory)
    # The new spam policy's (simulated) model never flags anything: every spam "hide" must change.
    with open(new / "spam-scams.md", "a", encoding="utf-8") as f:
        f.write("\n[[sim: violation=0 confidence=high]]\n")
    report_path = tmp_path / "compare.json"
    output, report = run_eval(["--policies", str(new), "--dataset", str(DATASET), "--judge", sim.base_url,
                               "--compare", str(old), "--report", str(report_path)])  # fmt: skip
    changed = {(c["post_id"], c["policy_id"]) for c in report["compare"]["changed"]}
    spam = load_policy_dir(old).by_id()["spam-scams"]
    texts = {orjson.loads(line)["id"]: orjson.loads(line) for line in DATASET.read_text().splitlines()}
    expected = {
        (post_id, "spam-scams")
        for post_id, data in texts.items()
        if "spam-scams" in data["labels"] and scripted_call(spam, data["text"], "low").answer.violation == 1  # type: ignore[union-attr]
    }
    assert expected and changed == expected
    assert all(c["old"]["decision"] == "hide" and c["new"] == {"predicted": 0, "decision": "allow"}
               for c in report["compare"]["changed"])  # fmt: skip
    assert report["compare"]["old"]["policy_versions"]["spam-scams"] != report["policy_versions"]["spam-scams"]
    assert report["compare"]["old"]["policy_versions"]["game-cheating"] == report["policy_versions"]["game-cheating"]
    assert f"decisions that changed ({len(expected)})" in output
    assert (
        report["metrics"]["spam-scams"]["recall"] == 0.0
        and report["compare"]["old"]["metrics"]["spam-scams"]["recall"] > 0.0
    )


@pytest.mark.integration
def test_single_label_dataset_and_a_dead_judge(sim: SimulatorProcess, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(POLICIES_DIR / "spam-scams.md", policies)
    dataset = tmp_path / "one.jsonl"
    dataset.write_text('{"id": "1", "text": "free money, click this link", "label": 1}\n'
                       '{"id": "2", "text": "lentil soup recipe", "label": 0}\n')  # fmt: skip
    _, report = run_eval(["--policies", str(policies), "--dataset", str(dataset), "--judge", sim.url,
                          "--report", str(tmp_path / "r.json")])  # fmt: skip
    assert report["metrics"]["spam-scams"]["n"] == 2
    dead = CliRunner().invoke(cli, ["eval", "--policies", str(policies), "--dataset", str(dataset), "--judge",
                                    "http://127.0.0.1:9/v1"])  # fmt: skip
    assert dead.exit_code != 0 and "does not answer GET /models" in dead.output
