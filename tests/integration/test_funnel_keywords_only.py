"""`funnel_embeddings: false` through the worker: real Tansu broker, simulator judges.

The worker screens with keywords and patterns only: every published verdict lists exactly the
candidates of the keywords-only funnel (none from exemplar similarity, no `embedding:` signal),
and a post only the embedding stage would have sent to a judge is allowed by the funnel.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable

import orjson
import pytest

from tests.conftest import POLICIES_DIR, worker_env
from tests.kafka_support import (
    WorkerProcess,
    committed_offsets,
    post_value,
    produce,
    read_topic,
    verdicts_by_id,
    wait_for,
)
from worker.local.broker import EmbeddedBroker
from worker.policies.files import load_policy_dir
from worker.policies.screening import PolicyRuntime
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

TEXTS = [
    "selling aimbot undetected",  # a keyword candidate
    "paid review 5 stars",  # a keyword candidate
    "this product changed my life, five stars, everyone buy it",  # the exemplars' catch
    "I am going to find where you live",  # the exemplars' catch
    "Had a lovely walk by the river this morning",
    "Does anyone know a good recipe for lentil soup?",
]


def test_keywords_only_worker_publishes_the_keyword_funnels_candidates(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    rng = random.Random(20261205)
    posts = {f"kw-{i}": f"{rng.choice(TEXTS)} #{i}" for i in range(120)}
    ids = list(posts)
    policies = load_policy_dir(POLICIES_DIR)
    lexical = PolicyRuntime.build(policies, embeddings=False).funnel.score_batch([posts[i] for i in ids])
    full = PolicyRuntime.build(policies).funnel.score_batch([posts[i] for i in ids])
    expected = {i: r.candidates for i, r in zip(ids, lexical, strict=True)}
    embedding_only = {i for i, r in zip(ids, full, strict=True) if r.candidates and not expected[i]}
    assert embedding_only and any(expected.values()), "the stream must hold both kinds of candidates"

    produced = produce(broker.bootstrap_servers, "posts", [(i.encode(), post_value(i, posts[i])) for i in ids])
    env = worker_env(broker, sims, group="g-keywords-only", MODSTREAM_FUNNEL_EMBEDDINGS="false")
    worker = spawn_worker(env)

    def all_committed() -> bool:
        committed = committed_offsets(broker.bootstrap_servers, "g-keywords-only", "posts", topics["posts"])
        return all(committed.get(p) == last + 1 for p, last in produced.last_offsets.items())

    wait_for(all_committed, 180, "committed offsets to cover every post")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]

    verdicts = {k: v[0] for k, v in verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", len(ids))).items()}
    assert set(verdicts) == set(ids)
    for post_id, verdict in verdicts.items():
        funnel = verdict["funnel"]
        assert funnel["candidates"] == expected[post_id], post_id
        assert "signals" not in funnel, "schema 2: matched signals are on the audit record only"
        assert funnel["fit"] is None
    for post_id in embedding_only:
        assert verdicts[post_id]["tier"] == "funnel" and verdicts[post_id]["decision"] == "allow"
    judged = [k for k, v in verdicts.items() if v["tier"] != "funnel"]
    audit = [orjson.loads(m.value()) for m in read_topic(broker.bootstrap_servers, "audit", len(judged))]
    assert len(audit) == len(judged) and any(record["funnel_signals"] for record in audit)
    fired = [s for record in audit for signals in record["funnel_signals"].values() for s in signals]
    assert fired and not any(s.startswith("embedding:") for s in fired)
