"""Schema-2 verdicts and review records through the broker: the worker as a process, simulator judges,
real Tansu. A spam hide beside an unresolved severe policy is `review` (interim hide) with a review
record; a tier-2 overturn of a severe tier-1 violation is a `severe_negative` review; the public
verdict carries neither the funnel's signals nor the rationale; the audit record has both, under the
same verdict id. In exactly-once mode the review record travels in the verdict's transaction."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.conftest import worker_env
from tests.judges_support import write_policy
from tests.kafka_support import WorkerProcess, committed_offsets, post_value, produce, read_topic, wait_for
from worker.cascade.revisions import stream_verdict_id
from worker.contracts import AuditRecord, ReviewRecord, SourceRef, Verdict
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

POSTS = {
    # t1 sure of a violation on both; minors is severe, so tier 2 must confirm, and tier 2 fails.
    "mixed": "spamword minorword [[sim: violation=1 confidence=high fault_t2=invalid_json]]",
    # t1 finds a severe violation, tier 2 confidently clears it: a severe negative.
    "overturned": "minorword [[sim: violation=1 confidence=high violation_t2=0 confidence_t2=high]]",
    "spam": "spamword [[sim: violation=1 confidence=high]]",
    "quiet": "a walk by the river this morning",
}


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_review_records_and_schema_2_verdicts(
    exactly_once: bool,
    tmp_path: Path,
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    policies = tmp_path / "policies"
    write_policy(policies, "spam", ["spamword"], severity="low", action="hide")
    write_policy(policies, "minors", ["minorword"], severity="severe")
    produced = produce(broker.bootstrap_servers, "posts", [(k.encode(), post_value(k, v)) for k, v in POSTS.items()])
    group = f"g-v2-{exactly_once}"
    extra = {"MODSTREAM_EXACTLY_ONCE": "true", "MODSTREAM_TRANSACTIONAL_ID": f"{group}-0"} if exactly_once else {}
    worker = spawn_worker(worker_env(broker, sims, group=group, policies_dir=policies, **extra))

    def all_committed() -> bool:
        committed = committed_offsets(broker.bootstrap_servers, group, "posts", topics["posts"])
        return all(committed.get(p) == last + 1 for p, last in produced.last_offsets.items())

    wait_for(all_committed, 120, "committed offsets to cover every post")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]

    actions = read_topic(broker.bootstrap_servers, "actions", len(POSTS))
    verdicts = {m.key().decode(): Verdict.model_validate_json(m.value()) for m in actions}
    assert set(verdicts) == set(POSTS) and len(actions) == len(POSTS)
    for post_id, verdict in verdicts.items():
        assert verdict.schema_version == "2" and (verdict.revision, verdict.supersedes, verdict.route) == (
            1, None, "stream",
        )  # fmt: skip
        assert verdict.verdict_id == stream_verdict_id(post_id, verdict.source)
    raw = {m.key().decode(): orjson.loads(m.value()) for m in actions}
    assert all("signals" not in v["funnel"] for v in raw.values())
    assert all(r["rationale"] == "" for v in raw.values() for r in v["results"])

    decided = {k: (v.decision, v.interim_action) for k, v in verdicts.items()}
    assert decided == {
        "mixed": ("review", "hide"),
        "overturned": ("review", "hide"),
        "spam": ("hide", None),
        "quiet": ("allow", None),
    }
    mixed = {r.policy_id: r for r in verdicts["mixed"].results}
    assert mixed["minors"].violation is None and mixed["minors"].unresolved and mixed["minors"].severity == "severe"
    assert mixed["spam"].violation is True and mixed["spam"].action == "hide" and not mixed["spam"].unresolved

    reviews = read_topic(broker.bootstrap_servers, "review", 2)
    records = {m.key().decode(): ReviewRecord.model_validate_json(m.value()) for m in reviews}
    assert set(records) == {"mixed", "overturned"} and len(reviews) == 2
    assert records["mixed"].reasons == ["unresolved"] and records["overturned"].reasons == ["severe_negative"]
    for post_id, record in records.items():
        verdict = verdicts[post_id]
        assert (record.review_id, record.verdict_id, record.revision) == (verdict.verdict_id, verdict.verdict_id, 1)
        assert record.audit.verdict_id == verdict.verdict_id and record.audit.topic == "audit"
        assert record.post.id == post_id and record.priority > 0
        assert record.source == SourceRef(
            topic="posts", partition=verdict.source.partition, offset=verdict.source.offset
        )
    (overturned,) = records["overturned"].policies
    assert overturned.t1 is not None and overturned.t1.violation is True
    assert overturned.t2 is not None and overturned.t2.violation is False

    judged = [k for k, v in verdicts.items() if v.tier != "funnel"]
    audit = read_topic(broker.bootstrap_servers, "audit", len(judged))
    audits = {m.key().decode(): AuditRecord.model_validate_json(m.value()) for m in audit}
    assert set(audits) == set(judged)
    for post_id, record in audits.items():
        assert (record.verdict_id, record.revision) == (verdicts[post_id].verdict_id, 1)
        assert record.funnel_signals and all(r.rationale for r in record.results)
