"""judge_mode multi_policy: prompt layout, answer parsing, and the simulator's side of the contract."""

from __future__ import annotations

import orjson
import pytest

from tests.helpers_policies import make_policy
from worker.config import Tier1JudgeSettings
from worker.contracts import JudgeAnswer, Post
from worker.judges.multipolicy import MULTI_HEADER, multi_prompt, split_sections
from worker.judges.protocol import build_multi_request, build_request, parse_multi_answer
from worker.sim.script import script

# The simulator files a violation under the first category the OUTPUT FORMAT section allows.
SPAM = make_policy("spam", prompt='# Spam\n## INSTRUCTIONS\nSpam rules.\n## OUTPUT FORMAT\npolicy_category is "spam"\n')
HATE = make_policy("hate", prompt='# Hate\n## INSTRUCTIONS\nHate rules.\n## OUTPUT FORMAT\npolicy_category is "hate"\n')
SETTINGS = Tier1JudgeSettings()


def entry(violation: int = 0, confidence: str = "high") -> dict[str, object]:
    return {"violation": violation, "policy_category": None, "rule_ids": [], "confidence": confidence,
            "rationale": "r"}  # fmt: skip


def test_prompt_round_trips_through_split_sections() -> None:
    prompt = multi_prompt([("spam", SPAM.prompt), ("hate", HATE.prompt)])
    assert prompt.startswith(MULTI_HEADER)
    assert split_sections(prompt) == [("spam", SPAM.prompt), ("hate", HATE.prompt)]
    assert split_sections(SPAM.prompt) is None, "a single policy is not a multi-policy prompt"


def test_same_candidate_set_same_prefix_and_post_last() -> None:
    a = orjson.dumps(build_multi_request([SPAM, HATE], Post(id="1", text="first post"), SETTINGS))
    b = orjson.dumps(build_multi_request([SPAM, HATE], Post(id="2", text="another, longer post"), SETTINGS))
    assert a.endswith(b'"first post"}]}') and b.endswith(b'"another, longer post"}]}')
    assert a[: -len(b'"first post"}]}')] == b[: -len(b'"another, longer post"}]}')]
    body = orjson.loads(a)
    schema = body["response_format"]["json_schema"]["schema"]["properties"]["results"]
    assert list(schema["properties"]) == schema["required"] == ["spam", "hate"]
    assert schema["additionalProperties"] is False


def test_parse_good_answer_per_policy() -> None:
    content = orjson.dumps({"results": {"hate": entry(1), "spam": entry()}}).decode()
    parsed = parse_multi_answer(content, "stop", ["spam", "hate"])
    assert isinstance(parsed["spam"], JudgeAnswer) and parsed["spam"].violation == 0
    assert isinstance(parsed["hate"], JudgeAnswer) and parsed["hate"].violation == 1
    # Tolerated: a list of entries naming their policy; the first entry for an id wins.
    listed = [{"policy_id": "spam", **entry(1)}, {"policy_id": "spam", **entry(0)}, {"policy_id": "hate", **entry()}]
    parsed = parse_multi_answer(orjson.dumps({"results": listed}).decode(), "stop", ["spam", "hate"])
    assert isinstance(parsed["spam"], JudgeAnswer) and parsed["spam"].violation == 1


@pytest.mark.parametrize(
    ("content", "finish", "expected"),
    [
        (None, "length", {"spam": "truncated", "hate": "truncated"}),
        ("", "stop", {"spam": "empty", "hate": "empty"}),
        ("looks like spam to me", "stop", {"spam": "invalid_json", "hate": "invalid_json"}),
        ('{"verdict": "safe"}', "stop", {"spam": "invalid_answer", "hate": "invalid_answer"}),
    ],
)
def test_a_broken_answer_fails_every_policy(content: str | None, finish: str, expected: dict[str, str]) -> None:
    assert parse_multi_answer(content, finish, ["spam", "hate"]) == expected


def test_a_missing_or_bad_entry_fails_only_its_policy() -> None:
    bad = {**entry(), "confidence": "certain"}
    parsed = parse_multi_answer(orjson.dumps({"results": {"spam": entry(), "hate": bad}}).decode(), "stop",
                                ["spam", "hate"])  # fmt: skip
    assert isinstance(parsed["spam"], JudgeAnswer) and parsed["hate"] == "invalid_answer"
    parsed = parse_multi_answer(orjson.dumps({"results": {"spam": entry()}}).decode(), "stop", ["spam", "hate"])
    assert isinstance(parsed["spam"], JudgeAnswer) and parsed["hate"] == "invalid_answer"


def test_simulator_answers_each_policy_of_a_multi_request() -> None:
    body = build_multi_request([SPAM, HATE], Post(id="1", text="free money [[sim: confidence=high]]"), SETTINGS)
    outcome = script(body["messages"][0]["content"], body["messages"][1]["content"], "low", seed=3)
    parsed = parse_multi_answer(outcome.content, outcome.finish_reason, ["spam", "hate"])
    # Each section is judged on its own: "free money" violates the spam policy, not the hate one.
    assert {pid: (a.violation, a.policy_category) for pid, a in parsed.items() if isinstance(a, JudgeAnswer)} == {
        "spam": (1, "spam"),
        "hate": (0, None),
    }
    single = script(SPAM.prompt, "free money [[sim: confidence=high]]", "low", seed=3)
    assert outcome.completion_tokens > single.completion_tokens, "reasoning covers every policy"


def test_policy_directive_is_a_default_the_post_overrides() -> None:
    quiet = make_policy("quiet", prompt="# Quiet\n[[sim: violation=0 confidence=high]]\n")
    assert orjson.loads(script(quiet.prompt, "free money", "low", 1).content or "")["violation"] == 0
    assert (
        orjson.loads(script(quiet.prompt, "free money [[sim: violation=1]]", "low", 1).content or "")["violation"] == 1
    )
    # The same post under a policy without a directive follows the heuristic.
    assert orjson.loads(script(SPAM.prompt, "free money", "low", 1).content or "")["violation"] == 1


def test_single_and_multi_requests_share_key_order() -> None:
    single = list(build_request(SPAM, Post(id="1", text="x"), SETTINGS))
    multi = list(build_multi_request([SPAM, HATE], Post(id="1", text="x"), SETTINGS))
    assert single == multi == [
        "model", "reasoning_effort", "max_tokens", "response_format", "logprobs", "top_logprobs", "messages"
    ]  # fmt: skip
