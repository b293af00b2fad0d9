"""The slice of vLLM's OpenAI-compatible chat API the simulator accepts and answers."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .script import Outcome


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema", "structural_tag"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError('response_format type "json_schema" needs a "json_schema" object')
        return self


class ChatRequest(BaseModel):
    """Like vLLM: unknown extra fields are accepted and ignored; wrong types are a 400."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1)
    stream: bool | None = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)  # vLLM's default --max-logprobs is 20

    @model_validator(mode="after")
    def _has_user_message(self) -> ChatRequest:
        # A judge call always carries the post as a user message; anything else is a client bug.
        if not any(m.role == "user" for m in self.messages):
            raise ValueError("messages must include a user message (the content to classify)")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("when using `top_logprobs`, `logprobs` must be set to true")  # vLLM's message
        return self

    def policy_text(self) -> str:
        return "\n\n".join(m.text() for m in self.messages if m.role in ("system", "developer"))

    def post_text(self) -> str:
        return next(m.text() for m in reversed(self.messages) if m.role == "user")

    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """vLLM's ErrorResponse shape (OpenAI-style)."""
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "Error"),
            "param": param,
            "code": status,
        }
    }


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def completion_body(
    model: str, outcome: Outcome, prompt_tokens: int, cached_tokens: int, logprobs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A non-streaming chat.completion as vLLM returns it for gpt-oss (--reasoning-parser openai_gptoss)."""
    completion_tokens = outcome.completion_tokens
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": outcome.content,
                    # Newer vLLM names it `reasoning`, older ones `reasoning_content`: send both.
                    "reasoning": outcome.reasoning,
                    "reasoning_content": outcome.reasoning,
                    "refusal": None,
                    "tool_calls": [],
                },
                "logprobs": logprobs,
                "finish_reason": outcome.finish_reason,
                "stop_reason": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": outcome.reasoning_tokens},
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        },
        "system_fingerprint": None,
        "prompt_logprobs": None,
    }
