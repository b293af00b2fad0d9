"""The reviewer's console (`modstream review serve`) through a real broker, as a real process:
who may see what (tokens, the chain of thought, CSRF), then a real headless Chromium confirming one
post and overturning another, `modstream review apply` turning both clicks into superseding verdicts
on the actions topic, and the downstream auto-hide table following them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import IN_CI
from tests.integration.test_autohide import autohide, rows
from tests.kafka_support import FAST_GROUP, PROJECT_ROOT, produce, read_topic, wait_for
from tests.review_support import policy, result, review_record, stream_verdict
from worker.contracts import AuditCall, AuditRecord, ReviewRecord
from worker.local.broker import EmbeddedBroker, create_topics, free_port

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
# Headless, offline, and no state shared with any other run (a fresh user-data-dir per test).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ALICE = "alice-token-0123456789abcdef"  # may see the chain of thought (--cot-reviewers alice)
BOB = "bob-token-0123456789abcdef"
TOPICS = {"actions": 4, "audit": 2, "dlq": 1, "review": 2, "review-decisions": 2}


@dataclass
class Queue:
    records: list[ReviewRecord]
    console: str  # base URL
    log: Path


def audit_of(record: ReviewRecord) -> AuditRecord:
    call = AuditCall(
        tier="t1", policy_id="spam", policy_version="1", model="openai/gpt-oss-safeguard-20b", endpoint="sim",
        reasoning_effort="low", request={}, reasoning=f"COT-SECRET {record.post.id}", content='{"violation": 1}',
        finish_reason="stop", error=None, latency_ms=1.0,
    )  # fmt: skip
    assert record.source is not None
    return AuditRecord(post_id=record.post.id, verdict_id=record.verdict_id, decision=record.decision, calls=[call],
                       source=record.source)  # fmt: skip


def spawn(args: list[str], bootstrap: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MODSTREAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "MODSTREAM_KAFKA__SESSION_TIMEOUT_MS": str(FAST_GROUP["session_timeout_ms"]),
        "MODSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": str(FAST_GROUP["heartbeat_interval_ms"]),
        "MODSTREAM_LOG_FORMAT": "json",
    }
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "worker", "review", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def metric(base: str, name: str) -> float | None:
    try:
        text = httpx.get(f"{base}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


@pytest.fixture
def queue(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Queue]:
    """Three posts in review (verdicts, review records, audit records on the broker) and the console."""
    bootstrap = broker.bootstrap_servers
    create_topics(bootstrap, TOPICS)
    records = [
        review_record(f"rv-{i}", [policy("spam", True, t1=result("spam", None))], text=f"post number {i}", offset=i)
        for i in (1, 2, 3)
    ]
    for topic, values in (
        ("actions", [stream_verdict(r).model_dump_json() for r in records]),
        ("audit", [audit_of(r).model_dump_json() for r in records]),
        ("review", [r.model_dump_json() for r in records]),
    ):
        produce(bootstrap, topic, [(r.post.id.encode(), v.encode()) for r, v in zip(records, values, strict=True)])
    port, log = free_port(), tmp_path / "console.log"
    console = spawn(["serve", "--port", str(port), "--token", f"alice={ALICE}", "--token", f"bob={BOB}",
                     "--cot-reviewers", "alice"], bootstrap, log)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: console.poll() is None and metric(base, "modstream_review_queue_pending") == 3.0, 60,
                 "the console listing the three posts")  # fmt: skip
        yield Queue(records, base, log)
    finally:
        stop(console)


def test_only_signed_in_reviewers_see_the_queue_and_only_authorised_ones_the_chain_of_thought(queue: Queue) -> None:
    base, review_id = queue.console, queue.records[0].review_id
    anonymous = httpx.get(f"{base}/", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
    assert httpx.get(f"{base}/reviews/{review_id}/reasoning").status_code == 401
    spoofed = httpx.get(f"{base}/", headers={"X-Forwarded-User": "mallory"}, follow_redirects=False)
    assert spoofed.status_code == 303, "the trusted header counts only when enabled"

    bob = httpx.get(f"{base}/", headers={"Authorization": f"Bearer {BOB}"})
    assert bob.status_code == 200 and "post number 1" in bob.text and "COT-SECRET" not in bob.text
    assert "rationale of spam" not in bob.text
    assert httpx.get(f"{base}/reviews/{review_id}/reasoning", headers={"Authorization": f"Bearer {BOB}"}
                     ).status_code == 403  # fmt: skip
    alice_headers = {"Authorization": f"Bearer {ALICE}"}
    alice = httpx.get(f"{base}/", headers=alice_headers)
    assert alice.status_code == 200 and "COT-SECRET rv-1" in alice.text and "rationale of spam" in alice.text
    assert alice.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in alice.headers[
        "content-security-policy"]  # fmt: skip
    cot = httpx.get(f"{base}/reviews/{review_id}/reasoning", headers=alice_headers).json()
    assert cot["calls"][0]["reasoning"] == "COT-SECRET rv-1"

    # POSTs: a cross-origin one, one without Origin/Referer, one without the CSRF token: all refused.
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', alice.text)
    assert csrf is not None
    url, form = f"{base}/reviews/{review_id}", {"all": "confirm", "csrf": csrf.group(1)}
    assert httpx.post(url, data=form, headers={**alice_headers, "Origin": "http://evil.example"}).status_code == 403
    assert httpx.post(url, data=form, headers=alice_headers).status_code == 403
    assert httpx.post(url, data={"all": "confirm"}, headers={**alice_headers, "Origin": base}).status_code == 403
    assert httpx.post(url, data=form, headers={"Origin": base}).status_code == 401
    assert metric(base, "modstream_review_queue_pending") == 3.0, "nothing was decided"
    assert (metric(base, "modstream_review_queue_oldest_age_seconds") or 0) > 0
    # The one accepted POST: it answers only once review-decisions has the decision.
    accepted = httpx.post(url, data=form, headers={**alice_headers, "Origin": base}, follow_redirects=False)
    assert accepted.status_code == 303 and metric(base, "modstream_review_queue_pending") == 2.0
    again = httpx.post(url, data=form, headers={**alice_headers, "Origin": base}, follow_redirects=False)
    assert again.status_code == 409, "one decision per review from the console"


def test_browser_confirm_and_overturn_supersede_the_verdicts_downstream(
    queue: Queue, broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    bootstrap = broker.bootstrap_servers
    shots = tmp_path_factory.mktemp("review-screenshots")  # under the system temp dir, never the repo
    work = tmp_path_factory.mktemp("review-work")
    applier = spawn(["apply", "--db", str(work / "apply.sqlite3")], bootstrap, work / "apply.log")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(work / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page()
                page.goto(f"{queue.console}/")
                assert page.url.endswith("/login")
                page.fill("#token", ALICE)
                page.click("#sign-in")
                page.wait_for_selector("#review-rv-1")
                assert page.inner_text("#reviewer") == "alice" and page.inner_text("#pending") == "3"
                page.screenshot(path=str(shots / "queue.png"), full_page=True)
                page.click("#review-rv-1 button.confirm")
                page.wait_for_selector("#flash")
                page.click("#review-rv-2 button.overturn")
                page.wait_for_selector("#flash >> text=rv-2")
                assert page.locator("#review-rv-1").count() == 0 and page.locator("#review-rv-2").count() == 0
                assert page.inner_text("#pending") == "1"
                page.screenshot(path=str(shots / "after.png"), full_page=True)
            finally:
                browser.close()
        for shot in ("queue.png", "after.png"):
            assert (shots / shot).stat().st_size > 0, f"screenshot {shot} is empty"

        labels = [orjson.loads(m.value()) for m in read_topic(bootstrap, "review-decisions", 2, timeout_s=30)]
        assert sorted((d["post_id"], d["reviewer"], d["calls"][0]["outcome"]) for d in labels) == [
            ("rv-1", "alice", "confirm"), ("rv-2", "alice", "overturn"),
        ]  # fmt: skip
        verdicts: dict[str, dict[str, object]] = {}
        wait_for(lambda: len(_human_verdicts(bootstrap, verdicts)) == 2, 60, "both superseding verdicts")
        assert verdicts["rv-1"]["decision"] == "hide" and verdicts["rv-2"]["decision"] == "allow"
        assert all(v["revision"] == 2 and v["tier"] == "human" and v["route"] == "review" for v in verdicts.values())
        assert verdicts["rv-1"]["supersedes"] == queue.records[0].verdict_id
    finally:
        stop(applier)
    with autohide(bootstrap, work / "posts.sqlite3", "autohide") as seen:
        wait_for(lambda: seen.read >= 5, 60, "the auto-hide service reading all five verdicts")
    assert rows(work / "posts.sqlite3") == {
        "rv-1": ("hidden", "hide", 2),
        "rv-2": ("visible", "allow", 2),
        "rv-3": ("visible", "review", 1),
    }
    assert metric(queue.console, "modstream_review_queue_pending") == 1.0


def _human_verdicts(bootstrap: str, into: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    for msg in read_topic(bootstrap, "actions", 5, timeout_s=5):
        verdict = orjson.loads(msg.value())
        if verdict["tier"] == "human":
            into[verdict["post_id"]] = verdict
    return into
