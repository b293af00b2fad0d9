"""Decode + validate: raw Kafka value bytes -> Post, or a DecodeError saying exactly why not."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from worker.contracts import Post


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why a record is not a valid Post; becomes the DLQ headers `error.type` / `error.message`."""

    type: str
    message: str


# Posts validated together (decode_posts): the same validation as `Post.model_validate` each.
_POSTS = TypeAdapter(list[Post])


def decode_post(value: bytes | None, max_bytes: int) -> Post | DecodeError:
    parsed = _parse(value, max_bytes)
    return parsed if isinstance(parsed, DecodeError) else _validate(parsed)


def decode_posts(values: Sequence[bytes | None], max_bytes: int) -> list[Post | DecodeError]:
    """`decode_post` of each value, the same results: the parsed objects are validated in one
    pydantic call (its per-call overhead was about half a post's validation), and one by one only
    when that call finds an invalid post, so each error names its own post."""
    parsed = [_parse(value, max_bytes) for value in values]
    objects = [obj for obj in parsed if not isinstance(obj, DecodeError)]
    validated: Iterator[Post | DecodeError]
    try:
        validated = iter(_POSTS.validate_python(objects))
    except (ValidationError, RecursionError):
        validated = iter([_validate(obj) for obj in objects])
    return [obj if isinstance(obj, DecodeError) else next(validated) for obj in parsed]


def _parse(value: bytes | None, max_bytes: int) -> dict[str, Any] | DecodeError:
    if value is None:
        return DecodeError("empty_value", "record has no value (null or tombstone)")
    if len(value) == 0:
        return DecodeError("empty_value", "record value is empty (0 bytes)")
    if len(value) > max_bytes:
        return DecodeError("too_large", f"record value is {len(value)} bytes, limit is {max_bytes} (max_record_bytes)")
    try:
        # orjson rejects invalid UTF-8 and lone surrogates itself.
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        kind = "invalid_utf8" if "utf-8" in str(exc).lower() else "invalid_json"
        return DecodeError(kind, f"value is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return DecodeError("invalid_post", f"value must be a JSON object, got {type(data).__name__}")
    return data


def _validate(data: dict[str, Any]) -> Post | DecodeError:
    try:
        return Post.model_validate(data)
    except ValidationError as exc:
        return DecodeError("invalid_post", _summarise(exc))
    except RecursionError:
        return DecodeError("invalid_post", "value is nested too deeply")


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
