"""Verdict identity and supersession: pure, shared by the stream, reviews, appeals and the sweep.

A verdict's id is a UUIDv5 of what produced it, so the same input always yields the same id: a
post replayed after a crash repeats its verdict (same id, same revision) and a consumer that keeps
the greatest (revision, verdict_id) per post is idempotent. A superseding verdict takes the next
revision of the one it replaces.
"""

from __future__ import annotations

import uuid

from worker.contracts import Route, SourceRef

# Fixed namespace for modstream verdict ids (a random UUID chosen once; never change it).
VERDICT_NAMESPACE = uuid.UUID("6f0c2a8e-3d1b-4c55-9e7a-2b8d5f4a9c31")
FIRST_REVISION = 1


def verdict_id(route: Route, post_id: str, revision: int, basis: str) -> str:
    """`basis` names the input that produced the verdict: the source record for the stream, the
    reviewer decision id, the appeal id, the sweep run id."""
    return str(uuid.uuid5(VERDICT_NAMESPACE, f"{route}\x1f{post_id}\x1f{revision}\x1f{basis}"))


def source_basis(source: SourceRef) -> str:
    return f"{source.topic}/{source.partition}/{source.offset}"


def stream_verdict_id(post_id: str, source: SourceRef) -> str:
    return verdict_id("stream", post_id, FIRST_REVISION, source_basis(source))


def next_revision(superseded_revision: int) -> int:
    return superseded_revision + 1


def newer(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """Is the verdict keyed `a` = (revision, verdict_id) newer than `b`? The rule every consumer uses."""
    return a > b
