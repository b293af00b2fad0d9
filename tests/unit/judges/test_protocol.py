"""The judge protocol without HTTP (worker/judges/protocol.py): a response as (status, body bytes) becomes
a Completion, then JudgeCalls with their audit record; readiness's model list; URLs."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from tests.helpers_policies import make_policy
from worker.config import Tier1JudgeSettings
from worker.contracts import Post
from worker.judges.protocol import (
    Completion,
    Sent,
    build_multi_request,
    build_request,
    chat_url,
    error_failure,
    lists_model,
    multi_calls,
    read_completion,
    server_root,
    single_call,
)

SETTINGS = Tier1JudgeSettings(base_urls=["http://judge:8000/v1"], model="m")
POST = Post(id="p1", text="buy cheap watches")
ANSWER = {"violation": 1, "policy_category": "spam", "rule_ids": ["SP1"], "confidence": "high", "rationale": "ad"}


def tok(text: str, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    alternatives = top if top is not None else [(text, -0.01)]
    top_logprobs = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in alternatives]
    return {"token": text, "logprob": alternatives[0][1], "bytes": list(text.encode()), "top_logprobs": top_logprobs}


def response(content: str | None, *, finish: str = "stop", logprobs: list[Any] | None = None, **message: Any) -> bytes:
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content, **message},
                              "finish_reason": finish}  # fmt: skip
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return orjson.dumps({"id": "x", "choices": [choice], "usage": {"prompt_tokens": 10, "completion_tokens": 5}})


def sent(status: int, body: bytes, request: dict[str, Any] | None = None) -> Sent:
    request = request if request is not None else {"model": "m"}
    done = read_completion(status, body)
    return Sent("t1", SETTINGS, request, False, "http://judge:8000/v1", 12.5, status, done)


def test_read_completion_takes_content_reasoning_usage_and_logprobs() -> None:
    lp = [tok("{")]
    done = read_completion(200, response("{}", finish="length", logprobs=lp, reasoning="thinking"))
    assert done == Completion(content="{}", reasoning="thinking", finish_reason="length",
                              usage={"prompt_tokens": 10, "completion_tokens": 5}, logprobs=lp)  # fmt: skip


def test_read_completion_accepts_the_older_reasoning_content_field() -> None:
    assert read_completion(200, response("{}", reasoning_content="old")).reasoning == "old"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, b'{"error": "too long"}', 'HTTP 400: {"error": "too long"}'),
        (404, "é".encode() * 600, "HTTP 404: " + "é" * 500),  # cut to 500 characters, not bytes
        (200, b"not json", "malformed response body: JSONDecodeError"),
        (200, b'{"choices": []}', "malformed response body: IndexError"),
        (200, b'{"nothing": 1}', "malformed response body: KeyError"),
    ],
)
def test_read_completion_errors(status: int, body: bytes, error: str) -> None:
    done = read_completion(status, body)
    assert done.error is not None and done.error.startswith(error)
    assert done.content is None and done.finish_reason is None


def test_error_failure_tells_a_refusal_from_an_unreadable_answer() -> None:
    assert error_failure(400) == "rejected"
    assert error_failure(200) == "invalid_json"


def test_single_call_with_a_valid_answer_and_its_probability() -> None:
    policy = make_policy("spam")
    request = build_request(policy, POST, SETTINGS)
    text = orjson.dumps(ANSWER).decode()
    head, tail = text.split('"violation":', 1)
    logprobs = [tok(head), tok('"violation":'), tok("1", [("1", math.log(0.8)), ("0", math.log(0.2))]), tok(tail[1:])]
    call = single_call(sent(200, response(text, logprobs=logprobs), request), policy)
    assert call.failure is None and call.answer is not None and call.answer.violation == 1
    assert call.p_violation == pytest.approx(0.8)
    audit = call.audit
    assert (audit.tier, audit.policy_id, audit.policy_version) == ("t1", "spam", policy.version)
    assert audit.request == request and audit.model == "m" and audit.endpoint == "http://judge:8000/v1"
    assert audit.latency_ms == 12.5 and audit.p_violation == pytest.approx(0.8) and audit.policy_versions is None
    assert audit.usage == {"prompt_tokens": 10, "completion_tokens": 5} and audit.error is None


@pytest.mark.parametrize(
    ("status", "body", "failure"),
    [
        (400, b"prompt too long", "rejected"),
        (200, b"<html>", "invalid_json"),
        (200, response('{"violation": 1', finish="length"), "truncated"),
        (200, response("no json here"), "invalid_json"),
        (200, response('{"violation": 7}'), "invalid_answer"),
    ],
)
def test_single_call_failures_carry_no_answer_and_no_probability(status: int, body: bytes, failure: str) -> None:
    call = single_call(sent(status, body), make_policy("spam"))
    assert call.answer is None and call.failure == failure and call.p_violation is None
    assert (call.audit.error is not None) == (failure in ("rejected",) or body == b"<html>")


def test_multi_calls_share_one_audit_record_and_fail_per_policy() -> None:
    spam, scam = make_policy("spam"), make_policy("scam", shadow=True, shadow_of="spam")
    request = build_multi_request([spam, scam], POST, SETTINGS)
    text = orjson.dumps({"results": {"spam": ANSWER, "scam": {"violation": "maybe"}}}).decode()
    calls = multi_calls(sent(200, response(text), request), [spam, scam])
    assert [c.policy.id for c in calls] == ["spam", "scam"]
    assert calls[0].answer is not None and calls[0].failure is None
    assert calls[1].answer is None and calls[1].failure == "invalid_answer"
    assert calls[0].audit is calls[1].audit
    audit = calls[0].audit
    assert audit.policy_id == "spam+scam" and audit.policy_versions == {"spam": spam.version, "scam": scam.version}
    assert audit.shadow and audit.p_violations == {"spam": None, "scam": None}


def test_multi_calls_refused_fail_every_policy() -> None:
    calls = multi_calls(sent(400, b"no"), [make_policy("a1"), make_policy("b1")])
    assert [c.failure for c in calls] == ["rejected", "rejected"]


@pytest.mark.parametrize(
    ("status", "body", "listed"),
    [
        (200, b'{"data": [{"id": "other"}, {"id": "m"}]}', True),
        (200, b'{"data": [{"id": "other"}]}', False),
        (200, b'{"data": []}', False),
        (503, b'{"data": [{"id": "m"}]}', False),
        (200, b"not json", False),
        (200, b"[1, 2]", False),
        (200, b'{"data": [1]}', False),
    ],
)
def test_lists_model(status: int, body: bytes, listed: bool) -> None:
    assert lists_model(status, body, "m") is listed


def test_urls() -> None:
    assert server_root("http://vllm:8000/v1") == "http://vllm:8000"
    assert chat_url("http://vllm:8000/v1") == "http://vllm:8000/v1/chat/completions"
