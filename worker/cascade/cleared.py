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
from funnel.spec import RoundedScores
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
    """`revisions.verdict_id("stream", post_id, FIRST_REVISION, basis)`, ASCII bytes. The version
    (5) and variant bits are set on the hex digits: digit 12 is the version, digit 16's two high
    bits the variant (RFC 4122)."""
    digest = _STREAM_ID_PREFIX.copy()
    digest.update(f"{post_id}{_STREAM_ID_SUFFIX}{basis}".encode())
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}".encode()


_VARIANT = {digit: "89ab"[int(digit, 16) & 0x3] for digit in "0123456789abcdef"}


# `round(v, 4)` of the non-zero Python floats seen (a pure function of the value; the funnel's
# scores are already rounded to 4 places, so few distinct values recur): a dict lookup instead of
# a `round()` call. Bounded: past the limit, values are rounded without being remembered.
_ROUNDED: dict[float, float] = {}
_ROUNDED_MAX = 1 << 16


def _scores(scores: Mapping[str, Any]) -> Mapping[str, Any]:
    """As `funnel_summary` + pydantic: round first (numpy scalars round in their own type), then
    float. The funnel's own `RoundedScores` are returned unchanged (round(v, 4) == v for each
    already), and so is a dict of nothing but float zeros; a float zero rounds to itself, sign
    included: kept as is."""
    if type(scores) is RoundedScores:
        return scores
    values = scores.values()
    if type(scores) is dict and not any(values) and set(map(type, values)) <= _FLOAT:
        return scores
    memo = _ROUNDED
    out: dict[str, float] = {}
    for k, v in scores.items():
        if type(v) is not float:
            out[k] = float(round(v, 4))
        elif v == 0.0:
            out[k] = v
        else:
            rounded = memo.get(v)
            if rounded is None:
                rounded = round(v, 4)
                if len(memo) < _ROUNDED_MAX:
                    memo[v] = rounded
            out[k] = rounded
    return out


_FLOAT = {float}


def _verdict(
    snap: _Snapshot,
    post_id: str,
    screened: FunnelResult,
    latency: bytes,
    source: tuple[bytes, bytes, str],
    offset: int,
) -> bytes:
    """One verdict's bytes; `latency`: the encoded `latency_ms` (`_latency`); `source`:
    `_after_latency`'s parts, around the offset, and the verdict id's basis before the offset
    (`revisions.source_basis`)."""
    dumps = orjson.dumps
    candidates = screened.candidates
    return b"".join(
        (
            snap.head,
            dumps(post_id),
            b',"verdict_id":"',
            stream_id(post_id, f"{source[2]}{offset}"),
            b'"',
            snap.middle,
            dumps(list(candidates)) if candidates else b"[]",
            b',"scores":',
            dumps(_scores(screened.scores)),
            snap.tail,
            latency,
            source[0],
            b"%d" % offset,
            source[1],
        )
    )


def _latency(latency_ms: float) -> bytes:
    """`latency_ms` as the verdict carries it: rounded to 2 places (pydantic's float JSON)."""
    return orjson.dumps(round(float(latency_ms), 2))


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
    return _verdict(_snapshot(runtime), post.id, screened, _latency(latency_ms), parts, source.offset)


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
    out: list[bytes] = []
    last: tuple[float, bytes] | None = None  # a group's posts mostly share one latency: encode it once
    for post, result, offset, latency in zip(posts, screened, offsets, latency_ms, strict=True):
        # Equal non-zero floats are the same value (only 0.0 and -0.0 compare equal unlike).
        if last is None or latency != last[0] or latency == 0.0:
            last = (latency, _latency(latency))
        out.append(_verdict(snap, post.id, result, last[1], parts, offset))
    return out
