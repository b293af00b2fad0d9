"""The vLLM simulator over real HTTP: a subprocess on a real port, driven with httpx (no mocks)."""

from __future__ import annotations

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

MODEL = "openai/gpt-oss-safeguard-20b"
POLICY = "# Spam Policy\n\n## INSTRUCTIONS\n" + " ".join(f"rule{i}" for i in range(200))
SLOTS = 4


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


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
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


def test_reasoning_effort_changes_output_length(client: httpx.Client, sim: SimulatorProcess) -> None:
    tokens = {}
    for effort in ("low", "medium", "high", None):
        r = chat(client, "a quiet post", effort=effort)
        tokens[effort] = r.json()["usage"]["completion_tokens"]
    assert tokens["low"] < tokens["medium"] < tokens["high"]
    assert tokens[None] == tokens["medium"]  # vLLM's default effort
    assert sim.stats()["by_effort"] == {"low": 1, "medium": 2, "high": 1}


def test_max_num_seqs_queues_the_rest(client: httpx.Client, sim: SimulatorProcess) -> None:
    delay_s = 1.5
    post = f"slow [[sim: delay_ms={int(delay_s * 1000)}]]"
    started = time.monotonic()
    with ThreadPoolExecutor(2 * SLOTS) as pool:
        futures = [pool.submit(chat, client, post) for _ in range(2 * SLOTS)]
        wait_until(lambda: sim.stats()["waiting"] == SLOTS, timeout_s=delay_s)
        metrics = sim.metrics()
        assert f'vllm:num_requests_running{{model_name="{MODEL}"}} {SLOTS}.0' in metrics
        assert f'vllm:num_requests_waiting{{model_name="{MODEL}"}} {SLOTS}.0' in metrics
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * (2 * SLOTS)
    assert time.monotonic() - started >= 2 * delay_s  # two waves, never more than SLOTS at once
    stats = sim.stats()
    assert stats["max_running"] == SLOTS
    assert stats["queued_total"] == SLOTS and stats["waiting"] == 0 and stats["running"] == 0


def test_prefix_cache_reuses_the_policy(client: httpx.Client, sim: SimulatorProcess) -> None:
    def cached(post: str, **kw: Any) -> int:
        return int(chat(client, post, **kw).json()["usage"]["prompt_tokens_details"]["cached_tokens"])

    assert cached("first post") == 0
    assert cached("second post") >= 200  # the 200-word policy came from cache
    # Another policy shares only harmony's system header (a block or two), not the policy's 200 words.
    assert cached("third post", policy="# Other\n" + " ".join(f"x{i}" for i in range(200))) < 64
    assert cached("second post", effort="high") < 64  # effort sits in the system header, before the policy
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
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, "hello [[sim: fault=timeout]]")
    assert time.monotonic() - started >= 0.3
    sim.set_faults(timeout_then="answer")
    started = time.monotonic()
    assert chat(client, "hello [[sim: fault=timeout]]").status_code == 200
    assert time.monotonic() - started >= 0.3
    assert sim.stats()["by_status"] == {"dropped": 1, "200": 1}


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
    assert client.get("/health").status_code == 200  # like vLLM: /health is not readiness
    sim.set_faults(outage=False)
    assert chat(client, "hello").status_code == 200
    assert client.get("/v1/models").json()["data"][0]["id"] == MODEL


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
        (body("x [[sim: violation=maybe]]"), 400),
        (body("x", max_tokens=5000), 400),  # prompt + max_tokens > max_model_len
        (body("x " * 5000), 400),
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


def test_latency_model_decode_time() -> None:
    # 2 ms per output token: a high-effort answer (~400 reasoning tokens) needs at least 0.8 s.
    with SimulatorProcess(speed=1.0, decode_ms_per_token=2.0, prefill_ms_per_token=0.0) as slow:
        with httpx.Client(base_url=slow.url, timeout=10.0, trust_env=False) as c:
            started = time.monotonic()
            r = chat(c, "hello", effort="high")
            elapsed = time.monotonic() - started
        tokens = r.json()["usage"]["completion_tokens"]
        assert tokens >= 400 and elapsed >= tokens * 0.002
        assert "vllm:e2e_request_latency_seconds_sum" in slow.metrics()


def test_simulator_process_rejects_unknown_options() -> None:
    with pytest.raises(TypeError):
        SimulatorProcess(max_num_seq=4)


def test_cli_help_lists_the_options() -> None:
    result = CliRunner().invoke(sim_vllm, ["--help"])
    assert result.exit_code == 0
    for flag in ("--max-num-seqs", "--speed", "--fail-5xx-rate", "--timeout-hold-s", "--served-model-name"):
        assert flag in result.output
