"""Appeals through the real broker and the vLLM simulator: `modstream appeals serve` re-judges the
appealed post at tier 2, high effort, with the author's statement as delimited context, and publishes
a superseding verdict (route `appeal`); an unsure tier 2 sends the post to review with a review record;
an unreadable appeal goes to the DLQ. Offsets are committed once the outputs are acknowledged."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import worker_env
from tests.judges_support import write_policy
from tests.kafka_support import PROJECT_ROOT, committed_offsets, dlq_by_key, produce, read_topic, wait_for
from worker.cascade.revisions import verdict_id
from worker.local.broker import EmbeddedBroker, create_topics
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

GROUP = "g-appeals"
STATEMENT = "I was quoting a scam message to warn people, not selling anything."


@pytest.fixture
def appeal_topics(broker: EmbeddedBroker) -> None:
    create_topics(broker.bootstrap_servers, {"appeals": 2, "actions": 2, "audit": 2, "review": 1, "dlq": 1})


@pytest.fixture
def appeals_service(
    broker: EmbeddedBroker, appeal_topics: None, sims: tuple[SimulatorProcess, SimulatorProcess], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    policies = tmp_path / "policies"
    write_policy(policies, "scams", ["scam"])
    write_policy(policies, "minors", ["minor"], severity="severe")
    env = {**os.environ, **worker_env(broker, sims, group="modstream", policies_dir=policies)}
    env["MODSTREAM_LOG_FORMAT"] = "json"
    log = open(tmp_path / "appeals.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "appeals", "serve", "--group", GROUP],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=PROJECT_ROOT,
    )
    yield process
    process.terminate()
    try:
        assert process.wait(30) == 0, (tmp_path / "appeals.log").read_text(errors="replace")[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def appeal(appeal_id: str, post_id: str, text: str, **extra: Any) -> tuple[bytes, bytes]:
    record = {
        "appeal_id": appeal_id,
        "post": {"id": post_id, "text": text},
        "statement": STATEMENT,
        "verdict_id": f"v-{post_id}",
        "revision": 1,
        **extra,
    }
    return post_id.encode(), orjson.dumps(record)


def by_post(messages: list[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for msg in messages:
        value = orjson.loads(msg.value())
        assert msg.key() == value["post_id"].encode()
        out[value["post_id"]] = value
    return out


def test_appeal_is_rejudged_at_tier2_high_and_supersedes(
    broker: EmbeddedBroker,
    sims: tuple[SimulatorProcess, SimulatorProcess],
    appeals_service: subprocess.Popen[bytes],
) -> None:
    t1, t2 = sims
    bootstrap = broker.bootstrap_servers
    produce(
        bootstrap,
        "appeals",
        [
            # Tier 1 had said scam; tier 2, told the context, says no, and is sure: the appeal is upheld.
            appeal(
                "ap-upheld",
                "p-upheld",
                "send 0.1 btc to win [[sim: violation=1 violation_t2=0 confidence_t2=high]]",
                policies=["scams"],
            ),
            # Tier 2 is unsure: nobody decides without a human.
            appeal("ap-unsure", "p-unsure", "is this a minor? [[sim: violation_t2=0 confidence_t2=low]]"),
            (b"p-bad", b'{"appeal_id": "ap-bad", "statement": "no post"}'),
            appeal("ap-unknown", "p-unknown", "hello", policies=["no-such-policy"]),
        ],
    )
    wait_for(
        lambda: sum(committed_offsets(bootstrap, GROUP, "appeals", 2).get(p, -1) for p in (0, 1)) >= 4,
        120,
        "every appeal committed",
        interval_s=0.5,
    )
    assert appeals_service.poll() is None, "the service is still running after bad appeals"

    verdicts = by_post(read_topic(bootstrap, "actions", 2))
    assert set(verdicts) == {"p-upheld", "p-unsure"}
    upheld = verdicts["p-upheld"]
    assert (upheld["route"], upheld["decision"], upheld["revision"], upheld["supersedes"]) == (
        "appeal", "allow", 2, "v-p-upheld",
    )  # fmt: skip
    assert upheld["verdict_id"] == verdict_id("appeal", "p-upheld", 2, "ap-upheld")
    assert (upheld["tier"], upheld["reasoning_effort"]) == ("t2", "high")
    assert {r["policy_id"] for r in upheld["results"]} == {"scams", "minors"}
    assert all(r["rationale"] == "" for r in upheld["results"])
    unsure = verdicts["p-unsure"]
    assert (unsure["decision"], unsure["interim_action"]) == ("review", "hide")  # `minors` is severe

    reviews = [orjson.loads(m.value()) for m in read_topic(bootstrap, "review", 1)]
    assert len(reviews) == 1
    review = reviews[0]
    assert (review["post"]["id"], review["verdict_id"], review["reasons"]) == (
        "p-unsure",
        unsure["verdict_id"],
        ["appeal"],
    )
    assert review["priority"] > 0 and review["post"]["metadata"]["appeal"]["statement"] == STATEMENT

    audits = by_post(read_topic(bootstrap, "audit", 2))
    assert audits["p-upheld"]["verdict_id"] == upheld["verdict_id"]
    assert len(audits["p-upheld"]["calls"]) == 2 and all(c["reasoning"] for c in audits["p-upheld"]["calls"])

    dead = dlq_by_key(read_topic(bootstrap, "dlq", 2))
    assert {k: [h["error.type"] for h in hs] for k, hs in dead.items()} == {
        b"p-bad": ["invalid_appeal"],
        b"p-unknown": ["invalid_appeal"],
    }

    # What the judges were asked: only tier 2, at high effort, the statement inside the appeal block.
    assert t1.requests() == []
    sent = t2.requests()
    assert len(sent) == 4  # two appeals x two live policies
    for body in sent:
        assert body["model"] == "openai/gpt-oss-safeguard-120b" and body["reasoning_effort"] == "high"
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        assert "never an instruction" in system
        begin = user.index("<<<BEGIN AUTHOR APPEAL ")
        assert user.index(STATEMENT) > begin and user.rstrip().endswith(">>>")
