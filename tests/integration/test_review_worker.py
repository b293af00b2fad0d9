"""The whole review route with the real worker: posts the judges cannot settle -> the worker's
verdicts (decision review) and review records -> the console (real process, real audit records) ->
a confirm and an overturn -> `modstream review apply` -> superseding verdicts -> the auto-hide table."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import worker_env
from tests.integration.test_autohide import autohide, rows
from tests.integration.test_review_console import ALICE, metric, spawn, stop
from tests.judges_support import write_policy
from tests.kafka_support import WorkerProcess, post_value, produce, read_topic, verdicts_by_id, wait_for
from worker.contracts import ReviewRecord
from worker.local.broker import EmbeddedBroker, create_topics, free_port
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

# Tier 1 unsure, tier 2 unsure too: the cascade cannot settle it -> review.
UNSURE = "alphaword [[sim: violation=1 confidence=low confidence_t2=low p_violation=0.9]]"


def test_worker_review_records_are_decided_in_the_console_and_applied(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    bootstrap = broker.bootstrap_servers
    create_topics(bootstrap, {"review": 2, "review-decisions": 2})
    policies = tmp_path / "policies"
    write_policy(policies, "alpha", ["alphaword"])
    ids = ["wk-1", "wk-2"]
    produce(bootstrap, "posts", [(pid.encode(), post_value(pid, f"{UNSURE} {pid}")) for pid in ids])
    worker = spawn_worker(worker_env(broker, sims, group="g-review", policies_dir=policies))
    verdicts = {pid: vs[0] for pid, vs in verdicts_by_id(read_topic(bootstrap, "actions", 2, timeout_s=90)).items()}
    assert sorted(verdicts) == ids and all(v["decision"] == "review" for v in verdicts.values()), worker.log()[-2000:]
    records = {
        r.post.id: r for r in (ReviewRecord.model_validate_json(m.value()) for m in read_topic(bootstrap, "review", 2))
    }
    assert {pid: r.verdict_id for pid, r in records.items()} == {pid: v["verdict_id"] for pid, v in verdicts.items()}

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = [
        spawn(["serve", "--port", str(port), "--token", f"alice={ALICE}"], bootstrap, tmp_path / "console.log"),
        spawn(["apply", "--db", str(tmp_path / "apply.sqlite3")], bootstrap, tmp_path / "apply.log"),
    ]
    try:
        wait_for(lambda: metric(base, "modstream_review_queue_pending") == 2.0, 60, "both posts in the queue")
        headers = {"Authorization": f"Bearer {ALICE}", "Origin": base}
        page = httpx.get(f"{base}/", headers=headers)
        assert page.status_code == 200 and "Chain of thought (2 judge calls)" in page.text, "t1 and t2 audited"
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        for pid, outcome in (("wk-1", "confirm"), ("wk-2", "overturn")):
            answer = httpx.post(f"{base}/reviews/{records[pid].review_id}", headers=headers,
                                data={"all": outcome, "csrf": csrf.group(1)}, follow_redirects=False)  # fmt: skip
            assert answer.status_code == 303, answer.text
        assert metric(base, "modstream_review_queue_pending") == 0.0

        def human() -> dict[str, dict[str, object]]:
            found = (orjson.loads(m.value()) for m in read_topic(bootstrap, "actions", 4, timeout_s=5))
            return {v["post_id"]: v for v in found if v["tier"] == "human"}

        wait_for(lambda: len(human()) == 2, 60, "both superseding verdicts")
    finally:
        for process in processes:
            stop(process)
    superseding = human()
    proposed = {pid: r.policies[0].proposed_violation for pid, r in records.items()}
    action = records["wk-1"].policies[0].action
    expected = {"wk-1": action if proposed["wk-1"] else "allow", "wk-2": "allow" if proposed["wk-2"] else action}
    assert {pid: v["decision"] for pid, v in superseding.items()} == expected
    assert all(v["revision"] == 2 and v["supersedes"] == verdicts[pid]["verdict_id"] for pid, v in superseding.items())

    with autohide(bootstrap, tmp_path / "posts.sqlite3", "autohide") as seen:
        wait_for(lambda: seen.read >= 4, 60, "the auto-hide service reading all four verdicts")
    assert {pid: (state, revision) for pid, (state, _, revision) in rows(tmp_path / "posts.sqlite3").items()} == {
        pid: ({"hide": "hidden", "allow": "visible"}.get(d, "labelled"), 2) for pid, d in expected.items()
    }
