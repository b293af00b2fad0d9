"""Measure judge_mode per_policy vs multi_policy against the vLLM simulator (docs/judges.md).

    .venv/bin/python bench/judge_modes.py [--json out.json]

Posts: every text of datasets/eval_sample.jsonl and datasets/funnel_dev.jsonl, screened by the
real funnel under the shipped policies; posts with no candidate are dropped (no judge call in
either mode). Each mode then sends every remaining post through the real JudgeClient (tier 1 only,
the code path the worker uses: `worker.cascade.pipeline.ask`) against a fresh simulator, and reads the
simulator's own counters: requests, prompt tokens, prefix-cache hit rate, generated tokens.
Latency is the simulator's time model (prefill of uncached tokens + decode, `--speed 20` =
0.4 ms per uncached prompt token and 4 ms per generated token, ~250 tokens/s per sequence), not a
GPU's, and the simulator has no batch slowdown: compare the two modes with it, do not quote it.

Two scenarios: the posts as they are (short, ~25 words), and the same posts padded with neutral
text to ~400 words (long posts: per_policy repeats the post once per candidate policy).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.cascade.pipeline import ask  # noqa: E402
from worker.config import Tier1JudgeSettings  # noqa: E402
from worker.contracts import Post  # noqa: E402
from worker.judges.client import JudgeClient  # noqa: E402
from worker.policies.files import Policy, load_policy_dir  # noqa: E402
from worker.policies.screening import PolicyRuntime  # noqa: E402
from worker.sim.process import SimulatorProcess  # noqa: E402

DATASETS = [ROOT / "datasets" / "eval_sample.jsonl", ROOT / "datasets" / "funnel_dev.jsonl"]


# Neutral words for the long-post scenario; drawn per post (seeded by its id) so that no two posts
# share a padded prefix, which would flatter the prefix cache.
FILLER = [
    "week", "weather", "train", "late", "again", "garden", "neighbour", "kitchen", "window", "morning",
    "coffee", "letter", "parcel", "holiday", "photos", "bicycle", "repair", "library", "book", "chapter",
    "river", "walk", "market", "bread", "cheese", "apples", "meeting", "notes", "project", "schedule",
    "office", "printer", "paper", "folder", "music", "concert", "ticket", "evening",
]  # fmt: skip


def load_posts(pad_words: int = 0) -> list[Post]:
    posts: list[Post] = []
    for path in DATASETS:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                data = orjson.loads(line)
                text = data["text"]
                if pad_words:
                    rng = random.Random(data["id"])
                    text = text + "\n\n" + " ".join(rng.choice(FILLER) for _ in range(pad_words))
                posts.append(Post(id=data["id"], text=text))
    return posts


async def run_mode(
    mode: str, work: list[tuple[Post, list[Policy]]], base_url: str, concurrency: int
) -> tuple[list[float], float]:
    # The worker's defaults: tier 1 keeps up to 64 requests in flight, whatever the mode.
    settings = Tier1JudgeSettings(base_urls=[base_url], max_in_flight=64)
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with JudgeClient("t1", settings) as client:
        many = client.judge_many if mode == "multi_policy" else None

        async def one(post: Post, policies: list[Policy]) -> None:
            async with slots:
                started = time.perf_counter()
                calls = await ask(client.judge, many, policies, post)
                latencies.append((time.perf_counter() - started) * 1000)
                assert all(c.answer is not None for c in calls), [c.failure for c in calls]

        started = time.perf_counter()
        await asyncio.gather(*(one(post, policies) for post, policies in work))
        return latencies, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Low enough that the simulator's time model, not this machine's CPU (the Python simulator and
    # client share 2 cores), sets the latency.
    parser.add_argument("--concurrency", type=int, default=4, help="posts in flight at once")
    parser.add_argument("--max-num-seqs", type=int, default=64)
    parser.add_argument("--speed", type=float, default=20.0, help="simulator time multiplier")
    parser.add_argument("--long-words", type=int, default=400, help="padding of the long-post scenario")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    runtime = PolicyRuntime.build(load_policy_dir(ROOT / "policies"))
    figures: dict[str, Any] = {
        "simulator": {"max_num_seqs": args.max_num_seqs, "speed": args.speed, "seed": 7},
        "concurrency": args.concurrency,
        "scenarios": {},
    }
    for scenario, pad in (("short posts", 0), (f"long posts (+{args.long_words} words)", args.long_words)):
        posts = load_posts(pad)
        screened = runtime.funnel.score_batch([p.text for p in posts])
        work = [(post, runtime.candidates(s)) for post, s in zip(posts, screened, strict=True)]
        work = [(post, policies) for post, policies in work if policies]
        sizes = [len(policies) for _, policies in work]
        entry: dict[str, Any] = {
            "posts": len(work),
            "candidates_per_post": {str(k): sizes.count(k) for k in sorted(set(sizes))},
            "modes": {},
        }
        for mode in ("per_policy", "multi_policy"):
            with SimulatorProcess(max_num_seqs=args.max_num_seqs, speed=args.speed, seed=7) as sim:
                latencies, wall_s = asyncio.run(run_mode(mode, work, sim.base_url, args.concurrency))
                stats = sim.stats()
            entry["modes"][mode] = {
                "requests": stats["requests"],
                "prompt_tokens": stats["prompt_tokens"],
                "prefix_cache_hit_rate": round(stats["prefix_cache_hits"] / max(1, stats["prefix_cache_queries"]), 3),
                "uncached_prompt_tokens": stats["prefix_cache_queries"] - stats["prefix_cache_hits"],
                "generation_tokens": stats["generation_tokens"],
                "latency_ms_p50": round(percentile(latencies, 50), 1),
                "latency_ms_p95": round(percentile(latencies, 95), 1),
                "wall_s": round(wall_s, 2),
            }
        figures["scenarios"][scenario] = entry
        print(f"\n### {scenario}: {len(work)} posts with candidates, per post {entry['candidates_per_post']}\n")
        print(table(entry["modes"]))
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")


def table(modes: dict[str, Any]) -> str:
    rows = [
        ("requests", "requests"),
        ("prompt tokens", "prompt_tokens"),
        ("prefix-cache hit rate", "prefix_cache_hit_rate"),
        ("uncached prompt tokens (prefill work)", "uncached_prompt_tokens"),
        ("generated tokens", "generation_tokens"),
        ("post latency p50, ms (simulated)", "latency_ms_p50"),
        ("post latency p95, ms (simulated)", "latency_ms_p95"),
        ("wall time, s", "wall_s"),
    ]
    lines = ["| | per_policy | multi_policy |", "|---|---:|---:|"]
    for label, key in rows:
        lines.append(f"| {label} | {modes['per_policy'][key]} | {modes['multi_policy'][key]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
