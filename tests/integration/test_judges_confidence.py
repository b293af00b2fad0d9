"""p_violation, the `uncertain_probability` escalation, post truncation and judge readiness against
real servers: the vLLM simulator (vLLM-shaped logprobs, driven by a post's `[[sim: p_violation=P]]`
directive; its violation digit is 1 when P >= 0.5), a real Tansu broker and the worker as a process.
The simulators' contexts equal the worker's `max_model_len`, and refuse prompt + max_tokens beyond
them with vLLM's 400, so a post that was not cut would be refused."""

from __future__ import annotations

import random
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.conftest import worker_env
from tests.judges_support import metric, scrape, write_policy
from tests.kafka_support import WorkerProcess, post_value, produce, read_topic, verdicts_by_id, wait_for
from worker.config import Tier1JudgeSettings
from worker.contracts import Post
from worker.judges.budget import estimate_tokens
from worker.judges.client import JudgeClient, user_message
from worker.local.broker import EmbeddedBroker
from worker.policies.files import load_policy_dir
from worker.sim.process import SimulatorProcess, free_port

pytestmark = pytest.mark.integration

T1_LEN, T2_LEN = 4096, 8192
WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
]


def long_text(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


# id -> (text, tier, escalation reasons, the tier-1 call's p_violation)
LONG = "alphaword [[sim: violation=0 confidence=high p_violation=0.02]] " + long_text(20_000, 7) + " THE END"
UNSURE = "alphaword [[sim: violation=1 confidence=high p_violation=0.55]]"
CASES: dict[str, tuple[str, str, list[str], float]] = {
    "unsure": (UNSURE, "t2", ["uncertain_probability"], 0.55),
    "sure": ("alphaword [[sim: violation=1 confidence=high p_violation=0.99]]", "t1", [], 0.99),
    "sure-safe": ("alphaword [[sim: violation=0 confidence=high p_violation=0.02]]", "t1", [], 0.02),
    "long": (LONG, "t1", [], 0.02),
}  # fmt: skip


@pytest.fixture
def small_sims() -> Iterator[tuple[SimulatorProcess, SimulatorProcess]]:
    with (
        SimulatorProcess(
            served_model_name="openai/gpt-oss-safeguard-20b", seed=21, speed=0, max_model_len=T1_LEN
        ) as t1,
        SimulatorProcess(
            served_model_name="openai/gpt-oss-safeguard-120b", seed=22, speed=0, max_model_len=T2_LEN
        ) as t2,
    ):
        yield t1, t2


def test_p_violation_escalates_and_long_posts_are_cut_end_to_end(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    small_sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    policies = tmp_path / "policies"
    write_policy(policies, "alpha", ["alphaword"])
    produce(broker.bootstrap_servers, "posts", ((c.encode(), post_value(c, text)) for c, (text, *_r) in CASES.items()))
    env = worker_env(
        broker, small_sims, group="g-confidence", policies_dir=policies,
        MODSTREAM_JUDGE_T1__MAX_MODEL_LEN=str(T1_LEN), MODSTREAM_JUDGE_T1__MAX_TOKENS="1024",
        MODSTREAM_JUDGE_T1__MAX_POST_TOKENS="2048",
        MODSTREAM_JUDGE_T2__MAX_MODEL_LEN=str(T2_LEN), MODSTREAM_JUDGE_T2__MAX_POST_TOKENS="4096",
    )  # fmt: skip
    worker = spawn_worker(env)

    verdicts = verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", len(CASES), timeout_s=90))
    assert sorted(verdicts) == sorted(CASES), worker.log()[-3000:]
    audit = {m.key().decode(): orjson.loads(m.value()) for m in read_topic(broker.bootstrap_servers, "audit", 4)}
    for case, (_, tier, reasons, p_t1) in CASES.items():
        (verdict,) = verdicts[case]
        (result,) = verdict["results"]
        assert (verdict["tier"], verdict["escalation_reasons"]) == (tier, reasons), case
        calls = audit[case]["calls"]
        assert [c["tier"] for c in calls] == (["t1", "t2"] if reasons else ["t1"]), case
        assert calls[0]["p_violation"] == pytest.approx(p_t1, abs=1e-3), case
        # The verdict carries the deciding call's p_violation (tier 2's when escalated).
        assert result["p_violation"] == pytest.approx(calls[-1]["p_violation"], abs=1e-4), case
        assert result["truncated"] is (case == "long") and calls[0]["truncated"] is (case == "long"), case
    assert verdicts["unsure"][0]["decision"] == "hide" and verdicts["sure"][0]["decision"] == "hide"
    assert verdicts["long"][0]["decision"] == "allow"

    # What the simulator received for the long post: head and tail, the cut marked, within the budget.
    sent = [r for r in httpx.get(f"{small_sims[0].url}/sim/requests").json() if "THE END" in str(r)]
    (body,) = sent
    text = body["messages"][-1]["content"]
    assert text.startswith("alphaword [[sim:") and text.endswith(" THE END") and "removed by modstream" in text
    assert estimate_tokens(text) <= 2048 and body["max_tokens"] <= 1024
    # ...and the same request with the whole post is one vLLM refuses: the cut is what made it a verdict.
    whole = {**body, "messages": [*body["messages"][:-1], {"role": "user", "content": LONG}]}
    assert httpx.post(f"{small_sims[0].base_url}/chat/completions", json=whole).status_code == 400

    def counted() -> tuple[float, float, float]:
        text = scrape(worker.metrics_url)
        return (
            metric(text, "modstream_escalations_total", reason="uncertain_probability"),
            metric(text, "modstream_escalations_total"),
            metric(text, "modstream_judge_calls_total", outcome="rejected"),
        )

    wait_for(lambda: counted() == (1, 1, 0), 20, "one uncertain_probability escalation, no refused call")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.log()[-3000:]


async def test_judge_client_cuts_a_post_longer_than_the_context() -> None:
    """The JudgeClient alone against a 4,096-token simulator: a verdict, flagged, never a 400."""
    policy = next(iter(load_policy_dir(Path(__file__).resolve().parents[2] / "policies").policies))
    with SimulatorProcess(served_model_name="m", seed=5, speed=0, max_model_len=T1_LEN) as sim:
        settings = Tier1JudgeSettings(base_urls=[sim.base_url], model="m", max_model_len=T1_LEN, max_tokens=512,
                                      max_post_tokens=3000)  # fmt: skip
        post = Post(id="long", text=long_text(30_000, 3))
        async with httpx.AsyncClient() as http, JudgeClient("t1", settings) as client:
            call = await client.judge(policy, post)
            whole = {**call.audit.request, "messages": [*call.audit.request["messages"][:-1],
                                                        {"role": "user", "content": user_message(post)}]}  # fmt: skip
            refused = await http.post(f"{sim.base_url}/chat/completions", json=whole)
    assert refused.status_code == 400 and "maximum context length" in refused.text
    assert call.truncated and call.audit.truncated and call.audit.error is None
    assert call.failure in (None, "truncated"), call.audit.content  # an answer, or out of output room: not refused


async def _serve(health: int | None, models: list[str]) -> tuple[web.AppRunner, str]:
    """A real HTTP server answering like vLLM: `/health` with `health`, `/v1/models` listing `models`."""

    async def health_handler(_: web.Request) -> web.Response:
        return web.Response(status=health)

    async def models_handler(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

    app = web.Application()
    if health is not None:  # None: no /health route at all (aiohttp answers 404)
        app.router.add_get("/health", health_handler)
    app.router.add_get("/v1/models", models_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/v1"


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, str]]:
    runners: list[web.AppRunner] = []
    urls: dict[str, str] = {}
    for name, (health, models) in {
        "well": (200, ["m"]),
        "engine-dead": (503, ["m"]),  # current vLLM: /health 503, /v1/models still answers
        "wrong-model": (200, ["other"]),
        "gateway": (None, ["m"]),  # /health not routed (404): /v1/models decides
        "gateway-wrong-model": (None, ["other"]),
    }.items():
        runner, urls[name] = await _serve(health, models)
        runners.append(runner)
    yield urls
    for runner in runners:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("endpoints", "ready"),
    [
        (["well"], True),
        (["engine-dead"], False),
        (["wrong-model"], False),
        (["well", "engine-dead"], False),
        (["gateway"], True),
        (["gateway-wrong-model"], False),
    ],
)
async def test_readiness_uses_health_and_the_model_list(
    servers: dict[str, str], endpoints: list[str], ready: bool
) -> None:
    settings: dict[str, Any] = {"base_urls": [servers[e] for e in endpoints], "model": "m"}
    async with JudgeClient("t1", Tier1JudgeSettings(**settings)) as client:
        assert await client.ready() is ready
