"""The vLLM simulator over real HTTP: a subprocess on a real port, driven with httpx (no mocks)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from worker.contracts import JudgeAnswer
from worker.sim import SimulatorProcess
from worker.sim.cli import sim_vllm
from worker.sim.engine import prompt_token_ids
from worker.sim.script import script

MODEL = "openai/gpt-oss-safeguard-20b"
POLICY = (
    "# Spam Policy\n\n## INSTRUCTIONS\n" + " ".join(f"rule{i}" for i in range(200))
    + '\n\n## OUTPUT FORMAT\npolicy_category is "spam" or "scam" (null when 0).\n'
)  # fmt: skip
SLOTS = 4
BLOCK = 128


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(max_num_seqs=SLOTS, speed=0, max_model_len=4096, seed=3) as proc:
        yield proc


@pytest.fixture
def client(sim: SimulatorProcess) -> Iterator[httpx.Client]:
    sim.reset()
    with httpx.Client(base_url=sim.url, timeout=10.0, trust_env=False) as c:
        yield c


def body(post: str, effort: str | None = "low", policy: str = POLICY, **extra: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "system", "content": policy}, {"role": "user", "content": post}],
        **extra,
    }
    if effort is not None:
        req["reasoning_effort"] = effort
    return req


def chat(client: httpx.Client, post: str, **kw: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json=body(post, **kw))


def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def test_response_has_vllm_shape(client: httpx.Client) -> None:
    r = chat(client, "cheap crypto giveaway here", response_format={"type": "json_object"})
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "chat.completion" and data["model"] == MODEL and data["id"].startswith("chatcmpl-")
    choice = data["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    assert choice["message"]["reasoning"] == choice["message"]["reasoning_content"]
    assert "cheap crypto giveaway here" in choice["message"]["reasoning"]
    answer = JudgeAnswer.model_validate_json(choice["message"]["content"])
    assert answer.violation == 1 and answer.policy_category == "spam"
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "cached_tokens" in usage["prompt_tokens_details"]
    assert choice["logprobs"] is None, "only when asked for"


def test_usage_counts_o200k_tokens(client: httpx.Client) -> None:
    post = "Ünïcode, emoji 👍🏽 and punctuation!!! count as o200k tokens, not words"
    r = chat(client, post, effort="medium")
    usage = r.json()["usage"]
    messages = [("system", POLICY), ("user", post)]
    assert usage["prompt_tokens"] == len(prompt_token_ids(messages, "medium"))
    expected = script(POLICY, post, "medium", seed=3, response_format=None)
    assert usage["completion_tokens"] == expected.completion_tokens
    assert usage["completion_tokens_details"] == {"reasoning_tokens": expected.reasoning_tokens}
    assert r.json()["choices"][0]["message"]["content"] == expected.content


def test_reasoning_effort_changes_output_length(client: httpx.Client, sim: SimulatorProcess) -> None:
    tokens = {}
    for effort in ("low", "medium", "high", None):
        r = chat(client, "a quiet post", effort=effort)
        tokens[effort] = r.json()["usage"]["completion_tokens"]
    assert tokens["low"] < tokens["medium"] < tokens["high"]
    assert tokens[None] == tokens["medium"]  # vLLM's default effort
    assert script(POLICY, "a quiet post", "high", seed=3, response_format=None).completion_tokens == tokens["high"]
    assert sim.stats()["by_effort"] == {"low": 1, "medium": 2, "high": 1}


def test_max_num_seqs_queues_the_rest(client: httpx.Client, sim: SimulatorProcess) -> None:
    post = "slow [[sim: delay_ms=4000]]"  # long enough to see the queue while the first wave runs
    with ThreadPoolExecutor(2 * SLOTS) as pool:
        futures = [pool.submit(chat, client, post) for _ in range(2 * SLOTS)]
        wait_until(lambda: sim.stats()["waiting"] == SLOTS, timeout_s=30)
        metrics = sim.metrics()
        assert f'vllm:num_requests_running{{model_name="{MODEL}"}} {SLOTS}.0' in metrics
        assert f'vllm:num_requests_waiting{{model_name="{MODEL}"}} {SLOTS}.0' in metrics
        usage = float(metrics.split(f'vllm:kv_cache_usage_perc{{model_name="{MODEL}"}} ')[1].split()[0])
        assert usage > 0, "running requests hold KV blocks"
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * (2 * SLOTS)
    assert f'vllm:kv_cache_usage_perc{{model_name="{MODEL}"}} 0.0' in sim.metrics(), "all blocks released"
    stats = sim.stats()
    assert stats["max_running"] == SLOTS, "never more than SLOTS at once"
    assert stats["queued_total"] == SLOTS and stats["waiting"] == 0 and stats["running"] == 0


def test_prefix_cache_reuses_the_policy_in_128_token_blocks(client: httpx.Client, sim: SimulatorProcess) -> None:
    def cached(post: str, **kw: Any) -> int:
        return int(chat(client, post, **kw).json()["usage"]["prompt_tokens_details"]["cached_tokens"])

    def shared_blocks(a: str, b: str, effort: str = "low", policy: str = POLICY) -> int:
        x = prompt_token_ids([("system", POLICY), ("user", a)], "low")
        y = prompt_token_ids([("system", policy), ("user", b)], effort)
        common = next((i for i, (s, t) in enumerate(zip(x, y, strict=False)) if s != t), min(len(x), len(y)))
        return (common // BLOCK) * BLOCK

    assert cached("first post") == 0
    assert cached("second post") == shared_blocks("first post", "second post") >= 3 * BLOCK  # the policy
    # Another policy shares only harmony's system header (under one block), not the policy.
    other = "# Other\n" + " ".join(f"x{i}" for i in range(200))
    assert cached("third post", policy=other) == shared_blocks("first post", "third post", policy=other) == 0
    assert cached("second post", effort="high") == 0  # effort sits in the system header, before the policy
    stats = sim.stats()
    assert 0 < stats["prefix_cache_hits"] < stats["prefix_cache_queries"]
    metrics = sim.metrics()
    assert f'vllm:prefix_cache_hits_total{{model_name="{MODEL}"}} {float(stats["prefix_cache_hits"])}' in metrics


@pytest.mark.parametrize("fault", ["truncate", "invalid_json", "empty"])
def test_content_faults_by_directive(client: httpx.Client, sim: SimulatorProcess, fault: str) -> None:
    r = chat(client, f"hello [[sim: fault={fault}]]")
    assert r.status_code == 200
    message = r.json()["choices"][0]["message"]
    with pytest.raises((ValueError, TypeError)):  # pydantic's ValidationError is a ValueError
        JudgeAnswer.model_validate_json(message["content"])
    assert message["reasoning"]
    assert r.json()["choices"][0]["finish_reason"] == ("length" if fault == "truncate" else "stop")
    assert sim.stats()["by_fault"] == {fault: 1}


def test_5xx_fault_by_directive_and_by_rate(client: httpx.Client, sim: SimulatorProcess) -> None:
    r = chat(client, "hello [[sim: fault=5xx]]")
    assert r.status_code == 500 and r.json()["error"]["code"] == 500
    sim.set_faults(fail_5xx_rate=1.0)
    assert chat(client, "plain post").status_code == 500
    assert chat(client, "pinned [[sim: fault=none]]").status_code == 200
    sim.set_faults(fail_5xx_rate=0.3)
    failed = sum(chat(client, f"post {i}").status_code == 500 for i in range(60))
    assert 6 < failed < 36
    assert sim.stats()["by_status"]["500"] == 2 + failed


def test_rates_must_not_exceed_one(sim: SimulatorProcess) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        sim.set_faults(fail_5xx_rate=0.7, empty_rate=0.7)
    with pytest.raises(httpx.HTTPStatusError):
        sim.set_faults(no_such_fault=1)


def test_timeout_fault_drops_or_answers_late(client: httpx.Client, sim: SimulatorProcess) -> None:
    sim.set_faults(timeout_hold_s=0.3, timeout_then="drop")
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, "hello [[sim: fault=timeout]]")
    sim.set_faults(timeout_then="answer")
    assert chat(client, "hello [[sim: fault=timeout]]").status_code == 200
    assert sim.stats()["by_status"] == {"dropped": 1, "200": 1}
    assert sim.stats()["by_fault"] == {"timeout": 2}


def test_client_giving_up_frees_the_request(client: httpx.Client, sim: SimulatorProcess) -> None:
    sim.set_faults(timeout_rate=1.0, timeout_hold_s=60)
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json=body("stuck"), timeout=0.3)
    wait_until(lambda: sim.stats()["by_status"].get("cancelled") == 1)


def test_outage_toggle(client: httpx.Client, sim: SimulatorProcess) -> None:
    sim.set_faults(outage=True)
    r = chat(client, "hello")
    assert r.status_code == 503 and r.json()["error"]["type"] == "ServiceUnavailableError"
    assert client.get("/v1/models").status_code == 503
    assert client.get("/health").status_code == 503
    sim.set_faults(outage=False)
    assert chat(client, "hello").status_code == 200
    assert client.get("/v1/models").json()["data"][0]["id"] == MODEL


def test_health_and_models_as_current_vllm(client: httpx.Client, sim: SimulatorProcess) -> None:
    health = client.get("/health")
    assert (health.status_code, health.content) == (200, b""), "200 with an empty body when well"
    sim.set_faults(engine_dead=True)
    assert (client.get("/health").status_code, client.get("/health").content) == (503, b"")
    models = client.get("/v1/models")
    assert models.status_code == 200 and models.json()["data"][0]["id"] == MODEL, "/v1/models never asks the engine"
    r = chat(client, "hello")
    assert (r.status_code, r.content) == (500, b""), "vLLM's EngineDeadError handler: a bare 500"
    assert sim.stats()["by_status"] == {"500": 1}
    sim.set_faults(engine_dead=False)
    assert client.get("/health").status_code == 200 and chat(client, "hello").status_code == 200


def test_started_with_a_dead_engine() -> None:
    with SimulatorProcess(engine_dead=True, speed=0) as dead, httpx.Client(base_url=dead.url, trust_env=False) as c:
        assert c.get("/health").status_code == 503 and c.get("/v1/models").status_code == 200


def test_logprobs_over_http(client: httpx.Client) -> None:
    r = chat(client, "borderline [[sim: p_violation=0.55 confidence=high]]", logprobs=True, top_logprobs=3,
             response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})  # fmt: skip
    data = r.json()
    entries = data["choices"][0]["logprobs"]["content"]
    content = data["choices"][0]["message"]["content"]
    # The server's default --logprobs-scope covers the final content only (tests/unit/sim/test_logprobs.py: "all").
    assert "".join(e["token"] for e in entries) == content
    assert set(entries[0]) == {"token", "logprob", "bytes", "top_logprobs"}
    assert json.loads(content)["violation"] == 1
    (digit,) = [e for e in entries if {"0", "1"} <= {a["token"] for a in e["top_logprobs"]}]
    top = {a["token"]: a["logprob"] for a in digit["top_logprobs"]}
    assert (
        digit["token"] == "1"
        and top["1"] == pytest.approx(math.log(0.55))
        and top["0"] == pytest.approx(math.log(0.45))
    )
    assert len(digit["top_logprobs"]) == 3 and digit["top_logprobs"][2]["logprob"] == -9999.0
    assert chat(client, "x", logprobs=True).json()["choices"][0]["logprobs"]["content"][0]["top_logprobs"] == []


def test_response_format_enforced_unless_the_fault_says_not(client: httpx.Client, sim: SimulatorProcess) -> None:
    short = POLICY + '\n## EXAMPLES\nContent: "buy followers" → {"violation": 1, "rule_ids": ["SP1"]}\n'
    schema = {"type": "json_schema", "json_schema": {"name": "policy_verdict", "schema": {"type": "object"}}}

    def content(post: str, **kw: Any) -> str:
        return str(chat(client, post, policy=short, **kw).json()["choices"][0]["message"]["content"])

    JudgeAnswer.model_validate_json(content("a scam", response_format=schema))  # held to the schema
    assert json.loads(content("a scam")) == {"violation": 1, "rule_ids": ["R1"]}, "no schema: copies the examples"
    not_enforced = content("a scam [[sim: fault=unenforced]]", response_format=schema)
    with pytest.raises(ValueError):
        JudgeAnswer.model_validate_json(not_enforced)
    sim.set_faults(unenforced_rate=1.0)
    with pytest.raises(ValueError):
        JudgeAnswer.model_validate_json(content("another scam", response_format=schema))
    assert sim.stats()["by_fault"] == {"unenforced": 2}


def test_models_endpoint(client: httpx.Client) -> None:
    data = client.get("/v1/models").json()
    assert data["object"] == "list"
    model = data["data"][0]
    assert (model["id"], model["object"], model["owned_by"], model["max_model_len"]) == (
        MODEL, "model", "modstream-sim", 4096,
    )  # fmt: skip


def test_metrics_use_vllm_names(client: httpx.Client) -> None:
    chat(client, "hello")
    text = client.get("/metrics").text
    for name in (
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "vllm:request_success_total",
        "vllm:e2e_request_latency_seconds_bucket", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
    ):  # fmt: skip
        lines = [line for line in text.splitlines() if line.startswith(name + "{")]
        assert lines and all(f'model_name="{MODEL}"' in line for line in lines), name
    assert f'vllm:request_success_total{{finished_reason="stop",model_name="{MODEL}"}} 1.0' in text


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{not json", 400),
        ({"model": MODEL}, 400),
        ({"model": MODEL, "messages": []}, 400),
        ({"model": MODEL, "messages": [{"role": "system", "content": "policy only"}]}, 400),
        (body("x", effort="extreme"), 400),
        (body("x", stream=True), 400),
        (body("x", max_tokens=0), 400),
        (body("x", response_format={"type": "json_schema"}), 400),
        (body("x", top_logprobs=2), 400),  # top_logprobs needs logprobs: true
        (body("x", logprobs=True, top_logprobs=21), 400),
        (body("x [[sim: p_violation=2]]"), 400),
        (body("x [[sim: violation=maybe]]"), 400),
        (body("x", max_tokens=4000), 400),  # prompt + max_tokens > max_model_len
        (body(" ".join(f"w{i}" for i in range(3000))), 400),  # a prompt over max_model_len
        ({**body("x"), "model": "openai/gpt-oss-120b"}, 404),
    ],
)
def test_bad_requests(client: httpx.Client, payload: Any, status: int) -> None:
    if isinstance(payload, bytes):
        r = client.post("/v1/chat/completions", content=payload, headers={"content-type": "application/json"})
    else:
        r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["code"] == status and error["message"] and error["type"]


def test_request_log_shows_prompts(client: httpx.Client, sim: SimulatorProcess) -> None:
    for i in range(3):
        chat(client, f"post number {i}")
    logged = sim.requests()
    assert len(logged) == 3 and sim.requests(limit=2) == logged[1:]
    for i, req in enumerate(logged):
        system, user = req["messages"]
        assert system == {"role": "system", "content": POLICY}
        assert user["content"] == f"post number {i}" and user["content"] not in system["content"]


def test_reset_clears_counters(client: httpx.Client, sim: SimulatorProcess) -> None:
    chat(client, "hello")
    sim.set_faults(empty_rate=0.5)
    sim.reset()
    stats = sim.stats()
    assert stats["requests"] == 0 and stats["prefix_cache_queries"] == 0 and stats["faults"]["empty_rate"] == 0
    assert sim.requests() == []


def test_decode_runs_in_steps_that_hold_more_kv_as_they_go() -> None:
    # 20 ms per token: a high-effort answer decodes for seconds, so its KV blocks can be watched growing.
    with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=120.0, trust_env=False) as c:
        with SimulatorProcess(speed=1.0, decode_ms_per_token=20.0, prefill_ms_per_token=0.0, kv_cache_tokens=4096,
                              max_num_seqs=2) as slow:  # fmt: skip

            def usage() -> float:
                return float(slow.metrics().split("vllm:kv_cache_usage_perc{")[1].split("} ")[1].split()[0])

            future = pool.submit(c.post, f"{slow.url}/v1/chat/completions", json=body("hello", effort="high"))
            wait_until(lambda: usage() > 0, timeout_s=30)
            first = usage()
            wait_until(lambda: usage() > first, timeout_s=30)  # decode steps add generated tokens
        with pytest.raises(httpx.HTTPError):
            future.result()  # the server was stopped before the end


def test_simulator_process_rejects_unknown_options() -> None:
    with pytest.raises(TypeError):
        SimulatorProcess(max_num_seq=4)


def test_cli_help_lists_the_options() -> None:
    result = CliRunner().invoke(sim_vllm, ["--help"])
    assert result.exit_code == 0
    for flag in ("--max-num-seqs", "--speed", "--fail-5xx-rate", "--timeout-hold-s", "--served-model-name"):
        assert flag in result.output
