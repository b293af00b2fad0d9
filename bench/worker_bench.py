"""End-to-end worker throughput on a real broker, against two references measured in the same run.

    .venv/bin/python bench/worker_bench.py --candidate-share 0            # nothing judged
    .venv/bin/python bench/worker_bench.py --candidate-share 0.3          # 30% go to the judges
    .venv/bin/python bench/worker_bench.py --candidate-share 0 --processes 2
    .venv/bin/python bench/worker_bench.py --candidate-share 0 --keywords-only
    .venv/bin/python bench/worker_bench.py --candidate-share 0 --blas-threads 0   # BLAS library default
    .venv/bin/python bench/worker_bench.py --candidate-share 0 --heads            # the fitted funnel heads on

`funnel_heads` (MODSTREAM_FUNNEL_HEADS) is always passed explicitly, off unless `--heads`, to the
worker and the funnel alone alike: under the heads the bench's synthetic benign posts become
candidates, and the bench measures the worker's own overhead, whatever the worker's default.

One run on embedded Tansu with simulator judges at speed 0 (a judge call costs only HTTP):
  worker    `modstream run` in N processes of one consumer group, started and ready (idle) before
            the posts are produced, timed from the first post produced to the last post's commit
            (the worker's commit interval is 0.2 s here).
  baseline  a hand-rolled confluent-kafka loop (one process) consuming the same posts and producing
            one record per post with at-least-once commits (what a team would write before any
            moderation), timed from its first batch to its last commit.
  funnel    the funnel library alone on the same post texts (then fresh ones of the same make, so no
            text is scored twice, as in the worker) in N processes, built the way the
            worker builds it (worker settings -> PolicyReloader -> PolicyRuntime.funnel, the same
            thread-pool sizing), scoring batches of the worker's batch size from a common start,
            pass after pass for at least --funnel-seconds; posts/s summed over the processes.
The last line printed is one JSON object (the acceptance figures of docs/benchmarks.md); ratios
are computed from the figures of this one run. worker_cpu_s is the user+system CPU seconds of the
worker process(es) over the timed window (/proc/<pid>/stat), judge_calls_s the simulators'
requests over the same window.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import worker_env
from tests.kafka_support import WorkerProcess, post_value, wait_for
from worker.config import Settings
from worker.local.broker import EmbeddedBroker, create_topics
from worker.sim.process import SimulatorProcess

BENIGN = ["Had a lovely walk by the river", "kill the process and restart", "new recipe for lentil soup"]
VIOLATING = ["crypto giveaway, send 1 BTC get 2 back", "selling aimbot undetected", "paid review 5 stars"]
GROUP = "bench"
WARMUP_TOPIC = "bench-warmup"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_texts(n: int, candidate_share: float, seed: int = 3, start: int = 0) -> list[str]:
    """`n` short posts, numbered from `start` (the number makes every text distinct)."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(VIOLATING if rng.random() < candidate_share else BENIGN)} #{i}" for i in range(start, start + n)
    ]


def make_posts(n: int, candidate_share: float, seed: int = 3) -> list[tuple[bytes | None, bytes | None]]:
    return [
        (f"b-{i}".encode(), post_value(f"b-{i}", text)) for i, text in enumerate(make_texts(n, candidate_share, seed))
    ]


def pass_texts(n: int, candidate_share: float, pass_no: int) -> list[str]:
    """The funnel alone's texts for one pass: pass 0 is the worker's posts; later passes are fresh
    posts of the same make. The funnel caches each word's token ids: re-scoring the same texts pass
    after pass ran ~15 % faster per post than the first pass (20,000 posts), a cache the worker,
    which sees each post once, never gets."""
    return make_texts(n, candidate_share, seed=3 + pass_no, start=pass_no * n)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat(5)


# ---------------------------------------------------------------------------------------------
# Settings of the run: what the worker processes and the funnel-alone processes both get.


def thread_env(blas_threads: int | None, tokenizer_threads: int | None) -> dict[str, str]:
    """Env for `--blas-threads` / `--tokenizer-threads`: the worker's settings where it has them; on a
    tree without them (before the settings existed) the libraries' own env vars, which size the same
    pools."""
    env: dict[str, str] = {}
    if blas_threads is not None:
        if "blas_threads" in Settings.model_fields:
            env["MODSTREAM_BLAS_THREADS"] = str(blas_threads)
        elif blas_threads > 0:
            env.update(OPENBLAS_NUM_THREADS=str(blas_threads), OMP_NUM_THREADS=str(blas_threads))
    if tokenizer_threads is not None:
        if "tokenizer_threads" in Settings.model_fields:
            env["MODSTREAM_TOKENIZER_THREADS"] = str(tokenizer_threads)
        elif tokenizer_threads == 1:
            env["TOKENIZERS_PARALLELISM"] = "false"
        elif tokenizer_threads > 1:
            env.update(TOKENIZERS_PARALLELISM="true", RAYON_NUM_THREADS=str(tokenizer_threads))
    return env


def heads_env(heads: bool) -> dict[str, str]:
    """`funnel_heads` stated explicitly, whatever the worker's default: under the heads the bench's
    synthetic benign posts become candidates, and the bench measures the worker's own overhead."""
    return {"MODSTREAM_FUNNEL_HEADS": "true" if heads else "false"}


def keywords_env(keywords_only: bool) -> dict[str, str]:
    if not keywords_only:
        return {}
    if "funnel_embeddings" not in Settings.model_fields:
        sys.exit(
            "--keywords-only needs the worker setting `funnel_embeddings` (MODSTREAM_FUNNEL_EMBEDDINGS) "
            "in worker/config.py, which this tree does not have"
        )
    return {"MODSTREAM_FUNNEL_EMBEDDINGS": "false"}


# ---------------------------------------------------------------------------------------------
# The three measurements.


def baseline(bootstrap: str, n: int) -> float:
    """Seconds for the raw consume->produce->commit loop (one process) to move `n` posts, from its
    first batch to its last commit."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "baseline",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    consumer.subscribe(["posts"])
    done = 0
    started: float | None = None
    while done < n:
        batch = [m for m in consumer.consume(500, 0.2) if m.error() is None]
        if not batch:
            continue
        started = started or time.perf_counter()
        for msg in batch:
            producer.produce("actions", key=msg.key(), value=b'{"decision":"allow"}')
        producer.flush(30)  # acknowledged before commit: the same guarantee modstream gives
        consumer.commit(asynchronous=False)
        done += len(batch)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return elapsed


@dataclass
class WorkerRun:
    elapsed_s: float
    cpu_s: float
    judge_calls: int
    produce_s: float  # of elapsed_s, producing the posts (the workers consume meanwhile)


def ready(worker: WorkerProcess) -> bool:
    try:
        body = httpx.get(f"{worker.metrics_url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return False
    return any(line.split()[:2] == ["modstream_ready", "1.0"] for line in body.splitlines())


def judge_requests(sims: tuple[SimulatorProcess, SimulatorProcess]) -> int:
    return sum(int(sim.stats().get("requests", 0)) for sim in sims)


def feed(producer: Producer, posts: list[tuple[bytes | None, bytes | None]]) -> dict[int, int]:
    """Produce `posts` to the posts topic and wait for every acknowledgement; the last offset per partition."""
    last: dict[int, int] = {}
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            last[msg.partition()] = max(msg.offset(), last.get(msg.partition(), -1))

    for key, value in posts:
        while True:
            try:
                producer.produce("posts", key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60) or errors:
        sys.exit(f"producing the posts failed: {errors[:3]}")
    return last


def run_workers(
    env: dict[str, str],
    broker: EmbeddedBroker,
    sims: tuple[SimulatorProcess, SimulatorProcess],
    posts: list[tuple[bytes | None, bytes | None]],
    partitions: int,
    processes: int,
    log_dir: Path,
) -> WorkerRun:
    """Start the worker processes, wait until every one is ready (assigned, judges up), produce the
    posts, and time them from the first post produced to the last post's commit."""
    workers = [WorkerProcess(env, log_dir / f"w{i}.log") for i in range(processes)]
    for path in (w.log_path for w in workers):
        path.unlink(missing_ok=True)
    try:
        for worker in workers:
            worker.start()
        pids = [w.process.pid for w in workers if w.process is not None]
        wait_for(lambda: all(ready(w) for w in workers), 180, "every worker process ready", interval_s=0.2)
        # The window opens as the first post is produced (the workers are idle and waiting) and
        # closes at the last post's commit: every post's work is inside it, whatever the batching.
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True, "linger.ms": 5})
        # Connected, and its idempotent producer id obtained, before the window opens: one record to
        # a topic nobody reads (without it, some runs spent ~0.5 s of the window in the first send).
        producer.produce(WARMUP_TOPIC, value=b"warm-up")
        if producer.flush(30):
            sys.exit("the bench's producer could not reach the broker")
        # One client asks for the group's committed offsets all along (a new client per question,
        # 20 a second, took CPU from the worker on a 2-core machine); connected before the window.
        watcher = Consumer(
            {"bootstrap.servers": broker.bootstrap_servers, "group.id": GROUP, "enable.auto.commit": False}
        )
        watcher.list_topics("posts", timeout=30)
        first, cpu0, calls0 = time.perf_counter(), sum(cpu_seconds(pid) for pid in pids), judge_requests(sims)
        last = feed(producer, posts)
        produced_s = time.perf_counter() - first

        def progress() -> dict[int, int]:
            tps = watcher.committed([TopicPartition("posts", p) for p in range(partitions)], timeout=10)
            return {tp.partition: tp.offset for tp in tps}

        wait_for(lambda: all(progress().get(p) == o + 1 for p, o in last.items()), 900, "every post committed", 0.05)
        watcher.close()
        elapsed = time.perf_counter() - first
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
        calls = judge_requests(sims) - calls0
        for worker in workers:
            worker.signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(60)
        return WorkerRun(elapsed, cpu, calls, produced_s)
    except BaseException:
        for worker in workers:
            print(f"--- {worker.log_path} (tail)\n{worker.log()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for worker in workers:
            worker.stop()


def _funnel_process(
    env: dict[str, str],
    posts: tuple[int, float],
    share: tuple[int, int],
    seconds: float,
    barrier: Any,
    results: Any,
) -> None:  # pragma: no cover - child process
    """One funnel-alone process: the worker's settings from `env`, the funnel built the way the
    worker builds it, then its `share` (index, of how many processes) of each pass's texts
    (`pass_texts` of `posts`: count, candidate share) scored in batches from the common start, pass
    after pass, for at least `seconds` (short windows on a shared machine are mostly noise)."""
    os.environ.update(env)
    settings = Settings()
    try:
        from worker.ops.threads import size_thread_pools  # the worker's own start-up sizing
    except ImportError:  # a tree before it: the env vars of thread_env() did the pinning
        pass
    else:
        size_thread_pools(settings.blas_threads, settings.tokenizer_threads)
    from worker.policies.reload import PolicyReloader

    # As worker/stream/wiring.py builds it (a tree before the embeddings setting has no such argument).
    kwargs: dict[str, Any] = (
        {"embeddings": settings.funnel_embeddings} if "funnel_embeddings" in Settings.model_fields else {}
    )
    funnel = PolicyReloader(
        settings.policies_dir, languages=settings.languages.config(), use_heads=settings.funnel_heads, **kwargs
    ).runtime.funnel
    n, candidate_share = posts
    index, processes = share
    funnel.score_batch(make_texts(50, candidate_share, seed=0, start=-50), None)  # warm-up: lazy loads
    batch = settings.kafka.batch_size
    texts = pass_texts(n, candidate_share, 0)[index::processes]
    barrier.wait()
    start, cpu0, done, pass_no = time.perf_counter(), time.process_time(), 0, 0
    while True:
        for i in range(0, len(texts), batch):
            done += len(funnel.score_batch(texts[i : i + batch], None))
        if time.perf_counter() - start >= seconds:
            break
        pass_no += 1
        texts = pass_texts(n, candidate_share, pass_no)[index::processes]  # (its cost is timed too: small)
    results.put((done, time.perf_counter() - start, time.process_time() - cpu0))


def run_funnel(
    env: dict[str, str], posts: int, candidate_share: float, processes: int, seconds: float
) -> tuple[float, float]:
    """(posts/s, CPU milliseconds per post) of the funnel alone screening the bench's posts (then
    fresh ones of the same make: `pass_texts`) split over `processes` processes, each scoring its
    share for at least `seconds`."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    children = [
        ctx.Process(
            target=_funnel_process, args=(env, (posts, candidate_share), (i, processes), seconds, barrier, results)
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    outcome: list[tuple[int, float, float]] = []
    while len(outcome) < processes:
        try:
            outcome.append(results.get(timeout=1))
        except queue.Empty:
            if any(child.exitcode not in (None, 0) for child in children):
                sys.exit("a funnel-alone process failed (its traceback is above)")
    for child in children:
        child.join(60)
    rate = sum(done / elapsed for done, elapsed, _ in outcome)
    return rate, 1000 * sum(cpu for _, _, cpu in outcome) / sum(done for done, _, _ in outcome)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--posts",
        type=int,
        default=100_000,
        help="posts in the run (default 100,000: the fixed latencies of a run, its first fetch and last "
        "commit, weigh ~10 %% on 20,000)",
    )
    parser.add_argument(
        "--candidate-share", type=float, default=0.3, help="share of posts the funnel sends to the judges (0..1)"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="worker processes in one consumer group; the funnel alone gets as many"
    )
    parser.add_argument(
        "--keywords-only",
        action="store_true",
        help="embedding stage off (MODSTREAM_FUNNEL_EMBEDDINGS=false) in the worker and the funnel alone",
    )
    parser.add_argument(
        "--heads",
        action="store_true",
        help="score with the fitted funnel heads (MODSTREAM_FUNNEL_HEADS=true) in the worker and the funnel alone. "
        "Off by default and always passed explicitly, whatever the worker's default: under the heads the "
        "bench's synthetic benign posts become candidates (judged), while the bench measures the worker's own "
        "overhead per post",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="MODSTREAM_BLAS_THREADS for the worker and the funnel alone (0: the BLAS library's default; "
        "unset: the worker's default setting)",
    )
    parser.add_argument(
        "--tokenizer-threads",
        type=int,
        default=None,
        help="MODSTREAM_TOKENIZER_THREADS likewise (0: the tokenizers library's default; unset: the worker's default)",
    )
    parser.add_argument(
        "--funnel-seconds", type=float, default=5.0, help="least time each funnel-alone process scores for"
    )
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/modstream-bench"), help="worker logs")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    extra = {
        **thread_env(args.blas_threads, args.tokenizer_threads),
        **keywords_env(args.keywords_only),
        **heads_env(args.heads),
    }
    partitions = max(4, args.processes)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    posts = make_posts(args.posts, args.candidate_share)
    with (
        EmbeddedBroker() as broker,
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-20b", speed=0) as t1,
        SimulatorProcess(served_model_name="openai/gpt-oss-safeguard-120b", speed=0) as t2,
    ):
        create_topics(
            broker.bootstrap_servers,
            {"posts": partitions, "actions": partitions, "audit": partitions, "dlq": 1, WARMUP_TOPIC: 1},
        )
        env = worker_env(broker, (t1, t2), group=GROUP, MODSTREAM_LOG_LEVEL="warning", **extra)
        ours = run_workers(env, broker, (t1, t2), posts, partitions, args.processes, args.log_dir)
        base_s = baseline(broker.bootstrap_servers, args.posts)
    funnel_rate, funnel_cpu_ms = run_funnel(env, args.posts, args.candidate_share, args.processes, args.funnel_seconds)
    n = args.posts
    figures = {
        "posts": n,
        "candidate_share": args.candidate_share,
        "processes": args.processes,
        "keywords_only": args.keywords_only,
        "heads": args.heads,
        "blas_threads": args.blas_threads,
        "tokenizer_threads": args.tokenizer_threads,
        "worker_posts_s": round(n / ours.elapsed_s, 1),
        "baseline_posts_s": round(n / base_s, 1),
        "funnel_posts_s": round(funnel_rate, 1),
        "judge_calls_s": round(ours.judge_calls / ours.elapsed_s, 1),
        "worker_cpu_s": round(ours.cpu_s, 2),
        "produce_s": round(ours.produce_s, 2),
        "funnel_cpu_ms_per_post": round(funnel_cpu_ms, 4),
        "worker_cpu_ms_per_post": round(1000 * ours.cpu_s / n, 3),
        "worker_to_funnel": round(n / ours.elapsed_s / funnel_rate, 3),
        "worker_to_baseline": round(base_s / ours.elapsed_s, 4),
    }
    print(
        f"posts {n}, candidates ~{args.candidate_share:.0%}, {args.processes} process(es), partitions {partitions}\n"
        f"baseline consume->produce->commit: {figures['baseline_posts_s']:>10} posts/s\n"
        f"funnel alone                     : {figures['funnel_posts_s']:>10} posts/s "
        f"({funnel_cpu_ms:.3f} CPU-ms per post)\n"
        f"worker ({ours.judge_calls} judge calls)        : {figures['worker_posts_s']:>10} posts/s "
        f"({ours.cpu_s:.1f} CPU-s; {figures['worker_to_funnel']} x the funnel alone)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
