"""The judge protocol, pure: requests, answers and the judge call's result, no HTTP.

docs/judges.md §3: the policy is the system message and the post the (last) user message, so every
request for one policy version shares a byte-identical prefix and vLLM's prefix cache reuses
the policy's KV. Effort goes in the top-level `reasoning_effort`. The answer is validated here,
whatever `response_format` promised. A post too long for the tier's context is cut before it is sent
(worker/judges/budget.py), and the answer's logprobs give `p_violation`, the probability of the
violation digit (worker/judges/confidence.py). `judge_many` asks about several policies in one request
(judge_mode multi_policy, worker/judges/multipolicy.py).

`read_completion` takes a response as status and body bytes and `single_call` / `multi_calls` turn it
into `JudgeCall`s with their audit record: the HTTP client (worker/judges/client.py) only moves bytes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from worker.config import JudgeTierSettings
from worker.contracts import AuditCall, JudgeAnswer, Post
from worker.judges.budget import TEMPLATE_OVERHEAD_TOKENS, cut_middle, estimate_tokens, output_cap, plan_budget
from worker.judges.confidence import p_violation
from worker.judges.multipolicy import multi_prompt, multi_schema
from worker.policies.files import Policy

TierName = Literal["t1", "t2"]
# Why a call produced no verdict; each one is an escalation reason upstream.
Failure = Literal["truncated", "empty", "invalid_json", "invalid_answer", "rejected"]

# Bounds are for servers that enforce the schema with a grammar (vLLM + xgrammar on small models,
# llama.cpp): without them a small model can ramble inside a string until max_tokens. The verdict
# keeps 500 characters of rationale anyway.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "violation": {"type": "integer", "enum": [0, 1]},
        "policy_category": {"type": ["string", "null"], "maxLength": 64},
        "rule_ids": {"type": "array", "items": {"type": "string", "maxLength": 32}, "maxItems": 8},
        "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
        "rationale": {"type": "string", "maxLength": 500},
    },
    "required": ["violation", "policy_category", "rule_ids", "confidence", "rationale"],
    "additionalProperties": False,
}


class JudgeUnavailable(Exception):
    """Transport error, timeout, 429 or 5xx: the judge is not answering; retry later."""


@dataclass(frozen=True, slots=True)
class JudgeCall:
    """One judge call as it ended: a validated answer, or the failure that prevented one."""

    tier: TierName
    policy: Policy
    answer: JudgeAnswer | None
    failure: Failure | None
    audit: AuditCall
    # P(violation digit = 1) from the answer's logprobs (None: none returned, or no digit found).
    p_violation: float | None = None
    # The post was cut to fit the context.
    truncated: bool = False


def user_message(post: Post) -> str:
    """The post as the user message. Only the post's own text goes here, after any context turns."""
    if not post.context:
        return post.text
    turns = "\n".join(f"[{turn.role}] {turn.text}" for turn in post.context)
    return f"Conversation so far:\n{turns}\n\nContent to classify:\n{post.text}"


def fit_user_message(post: Post, budget: int) -> tuple[str, bool]:
    """The user message cut to `budget` tokens, and whether anything was cut. The post text keeps
    its head and tail; conversation context, if any, gets at most a third of the budget."""
    full = user_message(post)
    if estimate_tokens(full) <= budget:
        return full, False
    if not post.context:
        return cut_middle(post.text, budget), True
    frame = estimate_tokens("Conversation so far:\n\n\nContent to classify:\n")
    turns = "\n".join(f"[{turn.role}] {turn.text}" for turn in post.context)
    turns = cut_middle(turns, min(estimate_tokens(turns), max(budget - frame, 0) // 3))
    message = ""
    for slack in (0, 8, 64):  # tokens may merge differently across the joins than apart
        text = cut_middle(post.text, max(budget - frame - estimate_tokens(turns) - slack, 0))
        message = f"Conversation so far:\n{turns}\n\nContent to classify:\n{text}"
        if estimate_tokens(message) <= budget:
            break
    return message, True


def build_request(policy: Policy, post: Post, settings: JudgeTierSettings) -> dict[str, Any]:
    """The request body. Key order is fixed and `messages` comes last, with the post at the very end,
    so bodies for one policy version are byte-identical up to the post text."""
    return prepare_request(policy, post, settings)[0]


def prepare_request(policy: Policy, post: Post, settings: JudgeTierSettings) -> tuple[dict[str, Any], bool]:
    """`build_request`, and whether the post had to be cut to fit the context."""
    return _body(policy.prompt, ANSWER_SCHEMA, "policy_verdict", post, settings)


def build_multi_request(policies: Sequence[Policy], post: Post, settings: JudgeTierSettings) -> dict[str, Any]:
    """One request for several policies (judge_mode multi_policy); same layout, policy sections in
    the order given (callers pass policy-set order, so one candidate set is one prefix)."""
    return prepare_multi_request(policies, post, settings)[0]


def prepare_multi_request(
    policies: Sequence[Policy], post: Post, settings: JudgeTierSettings
) -> tuple[dict[str, Any], bool]:
    prompt = multi_prompt([(p.id, p.prompt) for p in policies])
    schema = multi_schema(ANSWER_SCHEMA, [p.id for p in policies])
    return _body(prompt, schema, "policy_verdicts", post, settings)


def _body(
    system: str, schema: dict[str, Any], schema_name: str, post: Post, settings: JudgeTierSettings
) -> tuple[dict[str, Any], bool]:
    response_format: dict[str, Any] | None = None
    if settings.response_format == "json_schema":
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": schema_name, "schema": schema, "strict": True},
        }
    elif settings.response_format == "json_object":
        response_format = {"type": "json_object", "schema": schema}
    # Counted as prompt in case the server renders the schema into it (harmony can).
    fixed = _fixed_tokens(system, orjson.dumps(response_format).decode() if response_format else "")
    budget = plan_budget(fixed, settings.max_model_len, settings.max_post_tokens, settings.max_tokens)
    user, truncated = fit_user_message(post, budget.post_tokens)
    max_tokens = output_cap(budget.max_tokens, settings.max_model_len, fixed + estimate_tokens(user))
    body: dict[str, Any] = {"model": settings.model, "reasoning_effort": settings.reasoning_effort}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if response_format is not None:
        body["response_format"] = response_format
    if settings.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = settings.top_logprobs
    body["messages"] = [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
    ]
    return body, truncated


@functools.lru_cache(maxsize=1024)
def _fixed_tokens(system: str, response_format: str) -> int:
    """Prompt tokens of everything but the post: the same for every request of one policy version (and
    tier), so counted once, not per request."""
    schema_tokens = estimate_tokens(response_format) if response_format else 0
    return TEMPLATE_OVERHEAD_TOKENS + estimate_tokens(system) + schema_tokens


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def decode_object(content: str | None, finish_reason: str | None) -> dict[str, Any] | Failure:
    """The JSON object in the model's answer text, or why there is none."""
    if finish_reason == "length":
        return "truncated"
    if content is None or not content.strip():
        return "empty"
    text = _FENCE.sub("", content.strip())
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        # Small models sometimes wrap the object in prose; accept exactly one outer object.
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start:
            return "invalid_json"
        try:
            data = orjson.loads(text[start : end + 1])
        except orjson.JSONDecodeError:
            return "invalid_json"
    if not isinstance(data, dict):
        return "invalid_json"
    return data


def validate_answer(data: Any) -> JudgeAnswer | Failure:
    try:
        return JudgeAnswer.model_validate(data)
    except ValidationError:
        return "invalid_answer"


def parse_answer(content: str | None, finish_reason: str | None) -> JudgeAnswer | Failure:
    """Validate the model's answer text. Never trusts `response_format` to have been enforced."""
    data = decode_object(content, finish_reason)
    return data if isinstance(data, str) else validate_answer(data)


def parse_multi_answer(
    content: str | None, finish_reason: str | None, policy_ids: Sequence[str]
) -> dict[str, JudgeAnswer | Failure]:
    """Per policy id: its validated entry of a multi-policy answer, or why there is none. A broken
    answer fails every policy; a missing or invalid entry fails only its own policy."""
    data = decode_object(content, finish_reason)
    if isinstance(data, str):
        return dict.fromkeys(policy_ids, data)
    entries = data.get("results")
    found: dict[str, JudgeAnswer | Failure] = {}
    if isinstance(entries, dict):  # the format asked for: {"results": {policy_id: answer}}
        found = {pid: validate_answer(entries[pid]) for pid in policy_ids if pid in entries}
    elif isinstance(entries, list):  # tolerated: [{"policy_id": ..., ...answer}], first entry per id wins
        for entry in entries:
            if isinstance(entry, dict) and entry.get("policy_id") in policy_ids:
                found.setdefault(str(entry["policy_id"]), validate_answer(entry))
    return {pid: found.get(pid, "invalid_answer") for pid in policy_ids}


def server_root(base_url: str) -> str:
    """`http://vllm:8000/v1` -> `http://vllm:8000`: vLLM serves /health and /metrics beside /v1."""
    return base_url.removesuffix("/v1")


def chat_url(base_url: str) -> str:
    """Where a judge's chat completions are posted."""
    return f"{base_url}/chat/completions"


def lists_model(status: int, body: bytes, model: str) -> bool:
    """A `/v1/models` answer names `model`."""
    if status != 200:
        return False
    try:
        models = orjson.loads(body).get("data", [])
        return any(m.get("id") == model for m in models)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return False


@dataclass(frozen=True, slots=True)
class Completion:
    """What the judge client reads from a chat completion response."""

    content: str | None = None
    reasoning: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    # choices[0].logprobs.content: [{token, logprob, bytes, top_logprobs: [...]}, ...]
    logprobs: list[Any] | None = None


def read_completion(status: int, body: bytes) -> Completion:
    """A chat completion response (HTTP status, body bytes) as the client reads it."""
    if status != 200:
        # 4xx: the server refused this request (unknown model, prompt too long). No verdict.
        return Completion(error=f"HTTP {status}: {body[:2000].decode('utf-8', 'replace')[:500]}")
    try:
        data = orjson.loads(body)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        # `reasoning` on current vLLM; `reasoning_content` on servers before vllm#33402.
        reasoning = message.get("reasoning") or message.get("reasoning_content")
        logprobs = (choice.get("logprobs") or {}).get("content")
        return Completion(
            content=message.get("content"),
            reasoning=reasoning,
            finish_reason=choice.get("finish_reason"),
            usage=data.get("usage"),
            logprobs=logprobs if isinstance(logprobs, list) else None,
        )
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return Completion(error=f"malformed response body: {type(exc).__name__}: {exc}")


def error_failure(status: int) -> Failure:
    """Why a response that carries an error gave no verdict: refused (4xx) or unreadable (200)."""
    return "rejected" if status != 200 else "invalid_json"


@dataclass(frozen=True, slots=True)
class Sent:
    """One request as it was sent and answered: what the audit record needs beside the answer."""

    tier: TierName
    settings: JudgeTierSettings
    body: dict[str, Any]
    truncated: bool
    endpoint: str
    latency_ms: float
    status: int
    done: Completion


def single_call(sent: Sent, policy: Policy) -> JudgeCall:
    """The result of a single-policy request."""
    done = sent.done
    outcome = parse_answer(done.content, done.finish_reason) if done.error is None else error_failure(sent.status)
    p = p_violation(done.logprobs) if isinstance(outcome, JudgeAnswer) else None
    return make_call(sent.tier, policy, outcome, audit_call(sent, [policy], p, None), p, sent.truncated)


def multi_calls(sent: Sent, policies: Sequence[Policy]) -> list[JudgeCall]:
    """The results of a multi-policy request: one per policy, all sharing the request's audit record."""
    done = sent.done
    ids = [p.id for p in policies]
    if done.error is None:
        outcomes = parse_multi_answer(done.content, done.finish_reason, ids)
    else:
        outcomes = dict.fromkeys(ids, error_failure(sent.status))
    ps = {pid: p_violation(done.logprobs, after=pid) if isinstance(outcomes[pid], JudgeAnswer) else None
          for pid in ids}  # fmt: skip
    audit = audit_call(sent, policies, None, ps)
    return [make_call(sent.tier, p, outcomes[p.id], audit, ps[p.id], sent.truncated) for p in policies]


def audit_call(
    sent: Sent, policies: Sequence[Policy], p: float | None, ps: dict[str, float | None] | None
) -> AuditCall:
    done = sent.done
    return AuditCall(
        tier=sent.tier,
        # A multi-policy call names every policy it asked about, joined with "+".
        policy_id="+".join(p.id for p in policies),
        policy_version="+".join(p.version for p in policies),
        policy_versions={p.id: p.version for p in policies} if len(policies) > 1 else None,
        shadow=any(p.meta.shadow for p in policies),
        model=sent.settings.model,
        endpoint=sent.endpoint,
        reasoning_effort=sent.settings.reasoning_effort,
        request=sent.body,
        reasoning=done.reasoning,
        content=done.content,
        finish_reason=done.finish_reason,
        error=done.error,
        latency_ms=sent.latency_ms,
        usage=done.usage,
        p_violation=p,
        p_violations=ps,
        truncated=sent.truncated,
    )


def make_call(
    tier: TierName,
    policy: Policy,
    outcome: JudgeAnswer | Failure,
    audit: AuditCall,
    p: float | None = None,
    truncated: bool = False,
) -> JudgeCall:
    if isinstance(outcome, JudgeAnswer):
        return JudgeCall(tier, policy, outcome, None, audit, p, truncated)
    return JudgeCall(tier, policy, None, outcome, audit, None, truncated)


JudgeFn = Callable[[Policy, Post], Awaitable[JudgeCall]]
JudgeManyFn = Callable[[Sequence[Policy], Post], Awaitable[list[JudgeCall]]]
