"""The fast path's verdicts for cleared posts are byte-for-byte what the per-post path publishes
(`judge_post(...).verdict.model_dump_json()`), once both carry the same latency and timestamp."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnel import Funnel, FunnelResult
from tests.judges_support import write_policy
from worker.cascade.cleared import encode_cleared, encode_cleared_batch, is_cleared, stream_id
from worker.cascade.pipeline import Judges, judge_post
from worker.cascade.revisions import stream_verdict_id
from worker.config import EscalationSettings
from worker.contracts import Post, SourceRef
from worker.judges.client import JudgeCall
from worker.policies.files import Policy, PolicySet, load_policy_dir
from worker.policies.screening import PolicyRuntime, screen, with_bypass

ROOT = Path(__file__).resolve().parents[3]


async def _no_judge(policy: Policy, post: Post) -> JudgeCall:
    raise AssertionError(f"a cleared post must not be judged ({policy.id})")


NO_JUDGES = Judges(t1=_no_judge, t2=_no_judge, rules=EscalationSettings())


def per_post_bytes(
    post: Post, screened: FunnelResult, runtime: PolicyRuntime, source: SourceRef, latency_ms: float, at: datetime
) -> bytes:
    """What the per-post path publishes, with its measured timings replaced by the given ones."""
    judged = asyncio.run(judge_post(post, screened, runtime, NO_JUDGES, source, time.perf_counter()))
    assert judged.audit is None and not judged.calls
    verdict = judged.verdict.model_copy(update={"latency_ms": round(latency_ms, 2), "decided_at": at})
    return verdict.model_dump_json().encode()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    directory = tmp_path_factory.mktemp("policies")
    write_policy(directory, "template", ["templateword"])
    return load_policy_dir(directory).policies[0]


POLICY_ID = st.from_regex(r"[a-z0-9][a-z0-9_-]{1,20}", fullmatch=True)
VERSION = st.text(min_size=0, max_size=20)
TEXT = st.text(max_size=300)  # any unicode but surrogates: controls, emoji, quotes, backslashes
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1),
    st.floats(min_value=0, max_value=1).map(np.float32),  # the funnel's scores may be numpy scalars
    st.floats(min_value=0, max_value=1).map(np.float64),
)


@st.composite
def runtimes(draw: st.DrawFn, template: Policy) -> PolicyRuntime:
    """Several policies (some shadow), arbitrary versions, heads fit id or not. The funnel itself is
    not used on this path: only its `fit_id`."""
    ids = draw(st.lists(POLICY_ID, min_size=0, max_size=6, unique=True))
    policies = []
    for index, policy_id in enumerate(ids):
        shadow = index > 0 and draw(st.booleans())
        meta = template.meta.model_copy(
            update={"id": policy_id, "shadow": shadow, "shadow_of": ids[0] if shadow else None}
        )
        policies.append(replace(template, meta=meta, version=draw(VERSION)))
    fit = draw(st.none() | st.text(max_size=40))
    funnel = cast(Funnel, SimpleNamespace(fit_id=fit))
    return PolicyRuntime(PolicySet(tuple(policies), template.path.parent), funnel)


@st.composite
def cleared_results(draw: st.DrawFn, runtime: PolicyRuntime) -> FunnelResult:
    known = [p.id for p in runtime.policies.policies]
    keys = st.sampled_from(known) | POLICY_ID if known else POLICY_ID
    return FunnelResult(
        candidates=[],
        scores=draw(st.dictionaries(keys, FLOATS, max_size=8)),
        signals=draw(st.dictionaries(keys, st.lists(TEXT, max_size=4), max_size=4)),
        very_sure=[],
        lang=draw(st.none() | st.sampled_from(["en", "de", "und", "xx"])),
        route=draw(st.sampled_from(["funnel", "allow"])),
    )


POSTS = st.builds(
    Post,
    id=st.text(min_size=1, max_size=512),
    text=st.text(min_size=1, max_size=2000),
    lang=st.none() | st.text(max_size=5),
    metadata=st.none() | st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3),
)
SOURCES = st.builds(SourceRef, topic=TEXT, partition=st.integers(0, 2**31 - 1), offset=st.integers(0, 2**63 - 1))
LATENCY = st.floats(min_value=0, max_value=1e7, allow_nan=False) | st.floats(min_value=0, max_value=10)
DECIDED_AT = st.datetimes(timezones=st.just(UTC))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), post=POSTS, source=SOURCES, latency=LATENCY, at=DECIDED_AT)
def test_one_cleared_verdict_is_byte_for_byte_the_per_post_one(
    template: Policy, data: st.DataObject, post: Post, source: SourceRef, latency: float, at: datetime
) -> None:
    runtime = data.draw(runtimes(template))
    screened = data.draw(cleared_results(runtime))
    assert is_cleared(screened, runtime)
    expected = per_post_bytes(post, screened, runtime, source, latency, at)
    assert encode_cleared(post, screened, runtime, source, latency, at) == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), source=SOURCES, at=DECIDED_AT)
def test_a_batch_encodes_each_post_as_the_per_post_path(
    template: Policy, data: st.DataObject, source: SourceRef, at: datetime
) -> None:
    runtime = data.draw(runtimes(template))
    size = data.draw(st.integers(0, 8))
    posts = data.draw(st.lists(POSTS, min_size=size, max_size=size))
    results = [data.draw(cleared_results(runtime)) for _ in range(size)]
    offsets = data.draw(st.lists(st.integers(0, 2**63 - 1), min_size=size, max_size=size))
    latencies = data.draw(st.lists(LATENCY, min_size=size, max_size=size))
    encoded = encode_cleared_batch(posts, results, offsets, runtime, source.topic, source.partition, latencies, at)
    assert encoded == [
        per_post_bytes(post, result, runtime, source.model_copy(update={"offset": offset}), latency, at)
        for post, result, offset, latency in zip(posts, results, offsets, latencies, strict=True)
    ]


def test_batch_parts_must_line_up(template: Policy) -> None:
    runtime = PolicyRuntime(PolicySet((template,), template.path.parent), cast(Funnel, SimpleNamespace(fit_id=None)))
    post = Post(id="p", text="t")
    with pytest.raises(ValueError, match="differ in length"):
        encode_cleared_batch([post], [], [0], runtime, "posts", 0, [1.0], datetime.now(UTC))


@pytest.mark.parametrize("use_heads", [False, True])
def test_real_funnel_on_shipped_policies(use_heads: bool) -> None:
    """The shipped policies and the real funnel (heads on: a fit id in every verdict): every post it
    clears encodes as the per-post path would; the ones it does not clear are not `is_cleared`."""
    runtime = PolicyRuntime.build(load_policy_dir(ROOT / "policies"), use_heads=use_heads)
    assert (runtime.fit_id is not None) == use_heads
    texts = [
        "gg wp, see you tomorrow",
        "free v-bucks at bit.ly/x, dm me now",
        "Ich gehe heute einkaufen.",
        "I will kill you",
        '🙂🙂 \u2028 "quoted" \\ back',
        "what a lovely day for a walk in the park",
        "I baked bread this morning and it came out great.",
        "Photosynthesis converts light into chemical energy.",
    ]
    rates = runtime.bypass_rates(0.0)
    screened = [with_bypass(r, f"p{i}", rates) for i, r in enumerate(asyncio.run(screen(runtime, texts)))]
    at = datetime(2026, 12, 5, 0, 0, 1, 250, tzinfo=UTC)
    cleared = 0
    for index, (text, result) in enumerate(zip(texts, screened, strict=True)):
        if not is_cleared(result, runtime):
            assert result.candidates or result.sampled
            continue
        cleared += 1
        post = Post(id=f"p{index}", text=text)
        source = SourceRef(topic="posts", partition=3, offset=1000 + index)
        expected = per_post_bytes(post, result, runtime, source, 12.3456, at)
        assert encode_cleared(post, result, runtime, source, 12.3456, at) == expected
        parsed: dict[str, Any] = orjson.loads(expected)
        assert parsed["funnel"]["policy_versions"] == runtime.versions and parsed["funnel"]["fit"] == runtime.fit_id
        assert parsed["decided_at"] == "2026-12-05T00:00:01.000250Z" and math.isclose(parsed["latency_ms"], 12.35)
    assert 0 < cleared < len(texts)


@given(post_id=TEXT, topic=TEXT, partition=st.integers(0, 10_000), offset=st.integers(0, 2**62))
def test_the_fast_verdict_id_is_the_uuid5_of_revisions(post_id: str, topic: str, partition: int, offset: int) -> None:
    source = SourceRef(topic=topic, partition=partition, offset=offset)
    assert stream_id(post_id, f"{topic}/{partition}/{offset}").decode() == stream_verdict_id(post_id, source)
