import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.contracts import Post
from worker.stream.decode import DecodeError, decode_post, decode_posts

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


VALUES = [
    None,
    b"",
    b"{not json",
    b'"\xed\xa0\x80"',
    b"[1, 2]",
    b'{"id": "a"}',
    b'{"id": 7, "text": "hi"}',
    b'{"id": "a", "text": "hi", "created_at": "yesterday"}',
    b'{"id": "ok-1", "text": "hello"}',
    b'{"id": "ok-2", "text": "hi", "author_id": "u", "lang": "de", "created_at": "2026-11-22T10:00:00Z"}',
    b'{"id": "ok-3", "text": "hi", "metadata": {"k": [1, 2]}, "extra": null}',
    b'{"id": "a", "text": "hi", "context": ' + b"[" * 3000 + b"]" * 3000 + b"}",
]


@given(st.lists(st.sampled_from(VALUES) | st.binary(max_size=40), max_size=30))
def test_a_batch_decodes_as_each_post_alone(values: list[bytes | None]) -> None:
    # One pydantic call for the batch; when it finds an invalid post, each error is still its own.
    assert decode_posts(values, LIMIT) == [decode_post(value, LIMIT) for value in values]
