import pytest

from worker.contracts import Post
from worker.stream.decode import DecodeError, decode_post

LIMIT = 10_000


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        (None, "empty_value"),
        (b"", "empty_value"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_utf8"),
        (b'"\xed\xa0\x80"', "invalid_utf8"),
        (b"[1, 2]", "invalid_post"),
        (b'{"id": "a"}', "invalid_post"),
        (b'{"id": "a", "text": 42}', "invalid_post"),
        (b'{"id": 7, "text": "hi"}', "invalid_post"),
        (b'{"id": "a", "text": ""}', "invalid_post"),
        (b'{"id": "a", "text": "hi", "created_at": "yesterday"}', "invalid_post"),
        (b'{"id": "a", "text": "hi", "context": [{"role": "system", "text": "x"}]}', "invalid_post"),
        (b'{"id": "a", "text": "' + b"x" * LIMIT + b'"}', "too_large"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
    ],
)
def test_bad_values_are_rejected_with_a_reason(value: bytes | None, error_type: str) -> None:
    result = decode_post(value, LIMIT)
    assert isinstance(result, DecodeError)
    assert result.type == error_type
    assert result.message


def test_a_full_post_decodes() -> None:
    value = (
        b'{"id": "p1", "text": "hello", "author_id": "u1", "created_at": "2026-11-22T10:00:00Z", "lang": "en",'
        b' "context": [{"role": "user", "text": "before"}], "metadata": {"k": 1}, "unknown": true}'
    )
    post = decode_post(value, LIMIT)
    assert isinstance(post, Post)
    assert post.id == "p1" and post.text == "hello" and post.created_at is not None
    assert post.context is not None and post.context[0].text == "before"
