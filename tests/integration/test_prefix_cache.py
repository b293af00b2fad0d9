"""Prompting for vLLM's prefix cache: for one policy version, every request body is byte-identical up
to the post text (policy first, post last). Checked on what the server received (the simulator's
request log), for 1,000 varied posts, and as a property of build_request for arbitrary posts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import POLICIES_DIR
from worker.config import Tier1JudgeSettings
from worker.contracts import ContextTurn, Post
from worker.judges.client import JudgeClient, build_multi_request, build_request, user_message
from worker.policies.files import Policy, load_policy_dir
from worker.sim.process import SimulatorProcess

# Anything a user may type, but no "[[" (the simulator reads [[sim: ...]] directives).
ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,!?'\"\\/\n\t{}<>:;-_()@#$%&*+=éüßçØ日本語👍🏽\u200b"


def random_post(rng: random.Random, i: int) -> Post:
    text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 400))).replace("[", "")
    if not text.strip():
        text = f"post {i}"
    context = None
    if rng.random() < 0.1:
        context = [ContextTurn(role=rng.choice(["user", "assistant"]), text=f"earlier turn {j}") for j in range(2)]
    return Post(id=f"p{i}", text=text, context=context)


def split_at_post(raw: bytes, user_content: str) -> bytes:
    """The body's bytes before the post: the post's JSON string must be the last value in the body."""
    tail = orjson.dumps(user_content) + b"}]}"
    assert raw.endswith(tail), "the post must be the very end of the request body"
    return raw[: -len(tail)]


@pytest.fixture(scope="module")
def spam() -> Policy:
    return load_policy_dir(POLICIES_DIR).by_id()["spam-scams"]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(speed=0, max_num_seqs=64, request_log_size=2000, seed=5) as running:
        yield running


@pytest.mark.integration
def test_1000_posts_share_one_prefix_as_received_by_the_server(spam: Policy, sim: SimulatorProcess) -> None:
    rng = random.Random(20261122)
    posts = [random_post(rng, i) for i in range(1000)]

    async def send_all() -> None:
        async with JudgeClient("t1", Tier1JudgeSettings(base_urls=[sim.base_url], max_in_flight=32)) as client:
            calls = await asyncio.gather(*(client.judge(spam, post) for post in posts))
        assert all(c.answer is not None for c in calls)

    sim.reset()
    asyncio.run(send_all())
    received = sim.requests(limit=2000)
    assert len(received) == 1000
    prefixes = set()
    posts_seen = set()
    for body in received:
        user = body["messages"][-1]
        assert body["messages"][0] == {"role": "system", "content": spam.prompt}, "policy first, byte for byte"
        assert user["role"] == "user"
        prefixes.add(split_at_post(orjson.dumps(body), user["content"]))
        posts_seen.add(user["content"])
    assert len(prefixes) == 1, f"{len(prefixes)} different prefixes for one policy version"
    assert posts_seen == {user_message(p) for p in posts}, "every post arrived, unaltered"
    # What the prefix buys: the simulator's prefix cache (vLLM's block hashing) served most prompt tokens.
    stats = sim.stats()
    assert stats["prefix_cache_hits"] / stats["prefix_cache_queries"] > 0.8


@settings(max_examples=200, deadline=None)
@given(a=st.text(min_size=1), b=st.text(min_size=1))
def test_build_request_prefix_property(spam: Policy, a: str, b: str) -> None:
    config = Tier1JudgeSettings()
    first = build_request(spam, Post(id="1", text=a), config)
    second = build_request(spam, Post(id="2", text=b), config)
    assert split_at_post(orjson.dumps(first), a) == split_at_post(orjson.dumps(second), b)


@settings(max_examples=50, deadline=None)
@given(a=st.text(min_size=1), b=st.text(min_size=1))
def test_multi_policy_prefix_property_for_one_candidate_set(spam: Policy, a: str, b: str) -> None:
    hate = load_policy_dir(POLICIES_DIR).by_id()["hate"]
    config = Tier1JudgeSettings()
    first = build_multi_request([spam, hate], Post(id="1", text=a), config)
    second = build_multi_request([spam, hate], Post(id="2", text=b), config)
    assert split_at_post(orjson.dumps(first), a) == split_at_post(orjson.dumps(second), b)
