"""Verdicts for posts the funnel cleared, encoded straight to JSON bytes (the batched fast path).

A post is *cleared* when, after language routing, no policy is a candidate and the bypass sample
sends it to no judge (`is_cleared`). Its verdict needs no judge call: `allow`, tier `funnel`, no
results. `worker.cascade.pipeline.judge_post` would build it as a pydantic `Verdict`
(`assemble_verdict` with no outcomes) and publish `verdict.model_dump_json()`; this module writes
the same bytes with orjson from plain data, without a model per post. The parts that depend only
on the policy snapshot (schema version, policy versions, fit id, worker version) are encoded once
per `PolicyRuntime`; per post only the id, its verdict id, the funnel's candidates and scores, the
source offset and the timings are spliced in (the funnel's signals are never on a verdict).
tests/unit/cascade/test_cleared.py checks the bytes against the per-post path's (timings set equal).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from funnel import FunnelResult
from worker.cascade.revisions import FIRST_REVISION, VERDICT_NAMESPACE
from worker.cascade.verdict import WORKER_VERSION
from worker.contracts import VERDICT_SCHEMA_VERSION, Post, SourceRef
from worker.policies.screening import PolicyRuntime

# pydantic renders an aware UTC datetime with "Z" and microseconds only when non-zero: so does
# orjson with OPT_UTC_Z. Other offsets and naive datetimes (never produced by the worker) render
# the same in both too.
_OPTIONS = orjson.OPT_UTC_Z


def is_cleared(screened: FunnelResult, runtime: PolicyRuntime) -> bool:
    """True when `judge_post` would call no judge for this post: no candidate policy (language
    routing already applied by the funnel) and no bypass-sampled policy (`screened` must already
    carry `with_bypass`'s `sampled`). Costs nothing for the usual post with empty lists."""
    if not screened.candidates and not screened.sampled:
        return True
    return not runtime.candidates(screened) and not runtime.sampled(screened)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What every cleared verdict under one policy snapshot shares, pre-encoded: the JSON before
    the post id, between the verdict id and the funnel's candidates, and between the scores and
    the latency. `Verdict`'s field order is the JSON order."""

    runtime: PolicyRuntime
    head: bytes
    middle: bytes
    tail: bytes


_last: _Snapshot | None = None


def _snapshot(runtime: PolicyRuntime) -> _Snapshot:
    """The runtime's constant parts, computed once per runtime (a reload swaps the runtime whole,
    so remembering the last one is enough; the check is by identity)."""
    global _last
    cached = _last
    if cached is not None and cached.runtime is runtime:
        return cached
    dumps = orjson.dumps
    head = b'{"schema_version":%b,"post_id":' % dumps(VERDICT_SCHEMA_VERSION)
    middle = (
        b',"revision":%d,"supersedes":null,"route":"stream","decision":"allow","interim_action":null,'
        b'"results":[],"tier":"funnel","model":null,"reasoning_effort":null,'
        b'"escalated":false,"escalation_reasons":[],"funnel":{"candidates":'
    ) % FIRST_REVISION
    tail = b',"policy_versions":%b,"fit":%b},"latency_ms":' % (dumps(runtime.versions), dumps(runtime.fit_id))
    cached = _Snapshot(runtime, head, middle, tail)
    _last = cached
    return cached


# `revisions.stream_verdict_id` without a uuid.UUID per post (about 3x faster): the UUIDv5 is
# sha1(namespace + name)[:16] with the version and variant bits set; the name's constant prefix
# is hashed once. tests/unit/cascade/test_cleared.py checks it against `revisions.verdict_id`.
_STREAM_ID_PREFIX = hashlib.sha1(VERDICT_NAMESPACE.bytes + b"stream\x1f", usedforsecurity=False)
_STREAM_ID_SUFFIX = f"\x1f{FIRST_REVISION}\x1f"


def stream_id(post_id: str, basis: str) -> bytes:
    """`revisions.verdict_id("stream", post_id, FIRST_REVISION, basis)`, ASCII bytes."""
    digest = _STREAM_ID_PREFIX.copy()
    digest.update(f"{post_id}{_STREAM_ID_SUFFIX}{basis}".encode())
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()


def _scores(scores: Mapping[str, Any]) -> dict[str, float]:
    """As `funnel_summary` + pydantic: round first (numpy scalars round in their own type), then
    float. A float zero (most scores of a cleared post) rounds to itself, sign included: kept as is,
    since `round(x, 4)` is the costly part (~0.3 µs a call)."""
    return {k: v if v == 0.0 and type(v) is float else float(round(v, 4)) for k, v in scores.items()}


def _verdict(
    snap: _Snapshot,
    post_id: str,
    screened: FunnelResult,
    latency_ms: float,
    source: tuple[bytes, bytes, str],
    offset: int,
) -> bytes:
    """One verdict's bytes; `source`: `_after_latency`'s parts, around the offset, and the verdict
    id's basis before the offset (`revisions.source_basis`)."""
    dumps = orjson.dumps
    return b"".join(
        (
            snap.head,
            dumps(post_id),
            b',"verdict_id":"',
            stream_id(post_id, f"{source[2]}{offset}"),
            b'"',
            snap.middle,
            dumps(list(screened.candidates)),
            b',"scores":',
            dumps(_scores(screened.scores)),
            snap.tail,
            dumps(round(float(latency_ms), 2)),
            source[0],
            dumps(offset),
            source[1],
        )
    )


def _after_latency(decided_at: datetime, topic: str, partition: int) -> tuple[bytes, bytes, str]:
    """The JSON after the latency up to the source offset, what closes it, and the verdict id's
    basis up to the offset (as `revisions.source_basis`)."""
    source = b'"worker_version":%b,"source":{"topic":%b,"partition":%b,"offset":' % (
        orjson.dumps(WORKER_VERSION),
        orjson.dumps(topic),
        orjson.dumps(partition),
    )
    return b',"decided_at":%b,%b' % (orjson.dumps(decided_at, option=_OPTIONS), source), b"}}", f"{topic}/{partition}/"


def encode_cleared(
    post: Post,
    screened: FunnelResult,
    runtime: PolicyRuntime,
    source: SourceRef,
    latency_ms: float,
    decided_at: datetime,
) -> bytes:
    """The JSON bytes `judge_post(...).verdict.model_dump_json().encode()` gives for a cleared post
    (`is_cleared`), with `latency_ms` (unrounded, as `judge_post` measures it: ms since consumed)
    and `decided_at` (aware UTC, `datetime.now(UTC)`) in place of the values it would take itself."""
    parts = _after_latency(decided_at, source.topic, source.partition)
    return _verdict(_snapshot(runtime), post.id, screened, latency_ms, parts, source.offset)


def encode_cleared_batch(
    posts: Sequence[Post],
    screened: Sequence[FunnelResult],
    offsets: Sequence[int],
    runtime: PolicyRuntime,
    topic: str,
    partition: int,
    latency_ms: Sequence[float],
    decided_at: datetime,
) -> list[bytes]:
    """`encode_cleared` for cleared posts of one (topic, partition) consumed batch, all decided at
    `decided_at`: element i is post i's verdict, with source (`topic`, `partition`, `offsets[i]`)
    and `latency_ms[i]`. The snapshot's constant parts, the topic and the timestamp are encoded once
    for the batch."""
    count = len(posts)
    if not len(screened) == len(offsets) == len(latency_ms) == count:
        raise ValueError(
            f"batch parts differ in length: {count} posts, {len(screened)} results, "
            f"{len(offsets)} offsets, {len(latency_ms)} latencies"
        )
    snap = _snapshot(runtime)
    parts = _after_latency(decided_at, topic, partition)
    return [
        _verdict(snap, post.id, result, latency, parts, offset)
        for post, result, offset, latency in zip(posts, screened, offsets, latency_ms, strict=True)
    ]
