"""What the sweep decides per post: the current-verdict fold, the plan (changed or not, counts by
transition), the superseding verdict, and the report's ledger."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.cascade.revisions import verdict_id
from worker.contracts import Action, FunnelSummary, PolicyResult, Route, Severity, SourceRef, Verdict
from worker.sweep.current import CurrentVerdicts, Known
from worker.sweep.outcome import Judging, already_swept, label, merged_results, plan, superseding_verdict
from worker.sweep.report import TOTALS, Counts, Ledger, report_document, summary_text

RUN = "run-1"
NOW = datetime(2026, 12, 5, tzinfo=UTC)
SOURCE = SourceRef(topic="posts", partition=1, offset=7)


def res(
    pid: str,
    violation: bool | None,
    action: Action = "hide",
    severity: Severity = "medium",
    unresolved: bool = False,
    sampled: bool = False,
) -> PolicyResult:
    return PolicyResult(
        policy_id=pid, policy_version="v", violation=violation, severity=severity, action=action,
        unresolved=unresolved or violation is None, confidence="high", rationale="why", sampled=sampled,
    )  # fmt: skip


def verdict(
    post_id: str, revision: int, vid: str, results: list[PolicyResult], route: Route = "stream", **extra: object
) -> Verdict:
    from worker.cascade.precedence import decide

    decision, interim = decide(results)
    return Verdict(
        post_id=post_id, verdict_id=vid, revision=revision, route=route, decision=decision, interim_action=interim,
        results=results, tier="t1", escalated=False, funnel=FunnelSummary(candidates=[], scores={}), latency_ms=1,
        decided_at=NOW, worker_version="t", source=SOURCE, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def test_fold_keeps_the_newest_and_sets_own_verdicts_apart() -> None:
    index = CurrentVerdicts(RUN)
    first = verdict("p", 1, "b", [])
    review = verdict("p", 2, "a", [res("spam", True)], route="review")
    index.observe(review)
    index.observe(first)  # read after the newer one: ignored
    assert index.base["p"].verdict_id == "a" and index.base["p"].route == "review"
    own_id = verdict_id("sweep", "q", 2, RUN)
    index.observe(verdict("q", 1, "x", []))
    index.observe(verdict("q", 2, own_id, [res("spam", True)], route="sweep", supersedes="x"))
    assert index.base["q"].verdict_id == "x" and index.own["q"].verdict_id == own_id
    assert index.swept_by_us("q") is not None and index.swept_by_us("p") is None
    # Another run's sweep verdict is just a newer verdict.
    index.observe(verdict("q", 3, verdict_id("sweep", "q", 3, "other-run"), [], route="sweep"))
    assert index.base["q"].revision == 3 and index.swept_by_us("q") is None
    # The dry-run topic: only this run's verdicts count there.
    index.observe(verdict("r", 5, "zz", []), own_only=True)
    assert "r" not in index.base and "r" not in index.own
    index.observe_bytes(b"not json")
    assert index.unreadable == 1


def known(results: list[PolicyResult], revision: int = 1, vid: str = "cur") -> Known:
    return Known.of(verdict("p", revision, vid, results))


def test_plan_changed_and_unchanged() -> None:
    live = {"spam", "hate", "nudity"}
    # allow -> hide: the swept policy now finds a violation.
    p = plan(known([]), [res("spam", True)], {"spam"}, live)
    assert (p.decision, p.interim_action, p.changed) == ("hide", None, True)
    assert p.counts.decisions == {"allow->hide": 1} and p.counts.by_policy == {"spam": {"allow->hide": 1}}
    assert p.counts.totals == {"swept": 1, "changed": 1}
    # Same decision, from another policy: unchanged, but the policy's own call changed is counted.
    p = plan(known([res("spam", True), res("hate", True)]), [res("spam", False)], {"spam"}, live)
    assert (p.decision, p.changed) == ("hide", False)
    assert p.counts.decisions == {} and p.counts.by_policy == {"spam": {"hide->allow": 1}}
    # A policy no longer live is dropped; a sampled result never counts.
    p = plan(known([res("gone", True)]), [res("spam", False), res("hate", True, sampled=True)], {"spam"}, live)
    assert (p.decision, p.changed) == ("allow", True)
    assert [r.policy_id for r in p.results] == ["spam", "hate"]
    # Unresolved severe -> review with interim hide, never hidden behind a plain action.
    p = plan(known([res("nudity", True, action="label")]), [res("spam", None, severity="severe")], {"spam"}, live)
    assert (p.decision, p.interim_action) == ("review", "hide")
    assert p.counts.decisions == {"label->review(hide)": 1}


def test_merged_results_keep_other_policies() -> None:
    current = known([res("spam", True), res("hate", True), res("old", True)])
    merged = merged_results(current, [res("spam", False)], {"spam"}, {"spam", "hate"})
    assert [(r.policy_id, r.violation) for r in merged] == [("spam", False), ("hate", True)]


def test_already_swept_counts_the_change_once() -> None:
    current = known([])
    own = Known.of(verdict("p", 2, verdict_id("sweep", "p", 2, RUN), [res("spam", True)], supersedes="cur"))
    counts = already_swept(current, own)
    assert counts.totals == {"swept": 1, "changed": 1, "already_swept": 1}
    assert counts.decisions == {"allow->hide": 1} and counts.by_policy == {"spam": {"allow->hide": 1}}


def test_superseding_verdict_fields() -> None:
    current = known([], revision=3, vid="cur")
    decided = plan(current, [res("spam", True)], {"spam"}, {"spam"})
    how = Judging("t2", "m-120b", "high", ["low_confidence"], FunnelSummary(candidates=["spam"], scores={}), 12.345)
    v = superseding_verdict("p", current, decided, how, RUN, SOURCE, NOW, "9.9")
    assert (v.revision, v.supersedes, v.route, v.decision) == (4, "cur", "sweep", "hide")
    assert v.verdict_id == verdict_id("sweep", "p", 4, RUN)
    assert v.results[0].rationale == "" and decided.results[0].rationale == "why"
    assert (v.tier, v.model, v.reasoning_effort, v.escalated, v.latency_ms) == ("t2", "m-120b", "high", True, 12.35)


def test_label() -> None:
    assert label("review", "hide") == "review(hide)"
    assert label("hide", None) == "hide"


def test_ledger_settles_only_committed_offsets() -> None:
    ledger = Ledger(Counts())
    for offset in (3, 4, 5):
        c = Counts()
        c.bump("read")
        c.transition("allow", "hide")
        ledger.record(0, offset, c)
    ledger.settle(0, 5)  # offsets 3 and 4 committed
    assert ledger.settled.totals == {"read": 2} and ledger.settled.decisions == {"allow->hide": 2}
    assert ledger.preview().totals == {"read": 3}
    ledger.settle(0, 6)
    ledger.settle(1, 100)  # nothing pending there
    assert ledger.settled.totals == {"read": 3}


def test_report_document_and_summary() -> None:
    counts = Counts(totals={"read": 4, "changed": 2}, decisions={"allow->hide": 1, "hide->allow": 1})
    counts.policy_transition("spam", "allow", "hide")
    doc = report_document(counts, {"run_id": "r", "since": "a", "until": "b", "dry_run": True})
    assert list(doc["totals"]) == list(TOTALS) and doc["totals"]["unchanged"] == 0
    text = summary_text(doc)
    assert text.startswith("sweep r over a .. b (dry run)")
    assert "allow->hide 1" in text and "spam: allow->hide 1" in text
