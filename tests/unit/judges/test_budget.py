"""Per-tier output budgets and post truncation (worker/judges/budget.py, worker/judges/protocol.py), pure; the
settings' defaults against what compose and Helm serve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.helpers_policies import make_policy
from worker.config import Tier1JudgeSettings, Tier2JudgeSettings
from worker.contracts import ContextTurn, Post
from worker.judges.budget import MIN_POST_TOKENS, TEMPLATE_OVERHEAD_TOKENS, cut_middle, estimate_tokens, plan_budget
from worker.judges.protocol import build_request, fit_user_message, prepare_request

ROOT = Path(__file__).resolve().parents[3]


def prompt_estimate(body: dict[str, Any]) -> int:
    """What the judge client counts as the prompt of a body it built (policy, schema, post, template)."""
    fixed = TEMPLATE_OVERHEAD_TOKENS + sum(estimate_tokens(m["content"]) for m in body["messages"])
    if "response_format" in body:
        fixed += estimate_tokens(orjson.dumps(body["response_format"]).decode())
    return fixed


def test_estimate_is_the_o200k_count() -> None:
    assert estimate_tokens("") == 0
    assert 0 < estimate_tokens("hello world, how are you?") < len("hello world, how are you?") / 2
    assert estimate_tokens("<|end|>") > 1, "a special-token look-alike in text is plain text"


@given(st.text(min_size=0, max_size=600), st.integers(min_value=0, max_value=200))
@settings(max_examples=300, deadline=None)
def test_cut_middle_never_exceeds_its_budget_beyond_the_marker(text: str, budget: int) -> None:
    cut = cut_middle(text, budget)
    if estimate_tokens(text) <= budget:
        assert cut == text
        return
    assert "removed by modstream" in cut
    # Within budget, except that a budget smaller than the marker still gets the marker.
    assert estimate_tokens(cut) <= max(budget, estimate_tokens(cut_middle(text, 0)))


def test_cut_middle_keeps_head_and_tail_and_says_how_much_went() -> None:
    text = "HEAD " + "x" * 10_000 + " TAIL"
    cut = cut_middle(text, 500)
    assert cut.startswith("HEAD ") and cut.endswith(" TAIL") and estimate_tokens(cut) <= 500
    removed = int(re.search(r"\[\.\.\. (\d+) characters", cut).group(1))  # type: ignore[union-attr]
    assert removed == len(text) - (len(cut) - len(re.search(r"\n\n\[.*\]\n\n", cut).group(0)))  # type: ignore[union-attr]


def test_plan_budget() -> None:
    assert plan_budget(1000, 16384, 4096, 4096).post_tokens == 4096  # the post budget binds
    assert plan_budget(1000, 8000, 4096, 4096).post_tokens == 8000 - 1000 - 4096  # the context binds
    assert plan_budget(1000, 32768, 8192, None).post_tokens == 8192  # uncapped: the budget alone
    assert plan_budget(9000, 8000, 4096, 4096).post_tokens == MIN_POST_TOKENS  # a floor, then max_tokens gives


def test_short_post_is_sent_whole_with_the_tier_cap() -> None:
    body, truncated = prepare_request(make_policy(), Post(id="p", text="hello"), Tier1JudgeSettings())
    assert not truncated and body["max_tokens"] == 4096
    assert body["messages"][-1]["content"] == "hello"


def test_tier_2_sends_no_output_cap_by_default() -> None:
    body = build_request(make_policy(), Post(id="p", text="hello"), Tier2JudgeSettings())
    assert "max_tokens" not in body
    assert list(body) == ["model", "reasoning_effort", "response_format", "logprobs", "top_logprobs", "messages"]


@pytest.mark.parametrize(
    "tier",
    [
        Tier1JudgeSettings(max_model_len=4096, max_tokens=1024, max_post_tokens=2048),
        Tier1JudgeSettings(max_model_len=4096, max_tokens=300, max_post_tokens=3500),  # the context binds
        Tier2JudgeSettings(max_model_len=8192, max_post_tokens=4096),
    ],
)
def test_long_post_is_cut_to_fit_prompt_plus_cap_in_the_context(tier: Tier1JudgeSettings) -> None:
    text = "START " + "lorem ipsum dolor sit amet " * 5_000 + " END"
    body, truncated = prepare_request(make_policy(), Post(id="p", text=text), tier)
    sent = body["messages"][-1]["content"]
    assert truncated and sent.startswith("START ") and sent.endswith(" END") and "removed by modstream" in sent
    assert estimate_tokens(sent) <= tier.max_post_tokens
    assert prompt_estimate(body) + body.get("max_tokens", 0) <= tier.max_model_len
    assert body["messages"][0]["content"] == make_policy().prompt, "the policy is never cut"


def test_a_policy_that_leaves_less_than_the_cap_lowers_the_cap() -> None:
    policy = make_policy(prompt=" ".join(str(n) for n in range(1_350)))  # about 3,000 tokens
    tier = Tier1JudgeSettings(max_model_len=4096, max_tokens=1024, max_post_tokens=2048)
    body, truncated = prepare_request(policy, Post(id="p", text=" ".join(str(n) for n in range(5_000))), tier)
    assert truncated and estimate_tokens(body["messages"][-1]["content"]) <= MIN_POST_TOKENS
    assert body["max_tokens"] < 1024
    assert prompt_estimate(body) + body["max_tokens"] <= tier.max_model_len


def test_context_turns_get_at_most_a_third_and_the_post_keeps_its_ends() -> None:
    turns = [ContextTurn(role="user", text="earlier " * 2_000), ContextTurn(role="assistant", text="reply")]
    post = Post(id="p", text="FIRST " + "z" * 6_000 + " LAST", context=turns)
    sent, truncated = fit_user_message(post, 3_000)
    assert truncated and estimate_tokens(sent) <= 3_000
    assert sent.startswith("Conversation so far:\n[user] earlier")
    context, content = sent.split("\n\nContent to classify:\n")
    assert estimate_tokens(context) <= 1_100
    assert content.startswith("FIRST ") and content.endswith(" LAST")


def test_settings_refuse_budgets_that_cannot_fit() -> None:
    with pytest.raises(ValidationError, match="max_tokens"):
        Tier1JudgeSettings(max_model_len=4096, max_tokens=4096)
    with pytest.raises(ValidationError, match="no room"):
        Tier1JudgeSettings(max_model_len=4096, max_tokens=1024, max_post_tokens=3072)
    Tier2JudgeSettings(max_model_len=4096, max_post_tokens=2048)  # uncapped: fine


def _compose_default(command: list[str], flag: str) -> int:
    value = str(command[command.index(flag) + 1])
    match = re.fullmatch(r"\$\{\w+:-(\d+)\}", value)
    return int(match.group(1) if match else value)


def test_max_model_len_defaults_match_what_compose_and_helm_serve() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    values = yaml.safe_load((ROOT / "deploy/helm/modstream/values.yaml").read_text(encoding="utf-8"))
    for tier, service, setting in (("t1", "vllm-20b", Tier1JudgeSettings()), ("t2", "vllm-120b", Tier2JudgeSettings())):
        served = _compose_default(compose[service]["command"], "--max-model-len"), values["vllm"][tier]["maxModelLen"]
        assert served == (setting.max_model_len, setting.max_model_len), tier
