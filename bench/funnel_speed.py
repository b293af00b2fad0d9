"""The funnel library alone on bench/worker_bench.py's short posts: posts per CPU-second, one thread.

    .venv/bin/python bench/funnel_speed.py [--posts 20000] [--candidate-share 0] [--repeats 3]

The funnel is built the way the worker builds it (worker settings -> PolicyReloader ->
PolicyRuntime.funnel: language step per the settings, heads per `funnel_heads`), once with the
embedding stage and once keywords-only (`funnel_embeddings: false`), and scores the texts of
`worker_bench.make_posts` (a few short sentences, each with a unique `#n` suffix) in batches of
the worker's `kafka.batch_size`. BLAS, OpenMP and tokenizers are pinned to one thread by env vars
before anything imports them. Best of --repeats, CPU seconds of this process
(`time.process_time`). The last line printed is one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import orjson  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.worker_bench import make_posts  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.policies.reload import PolicyReloader  # noqa: E402


def rate(reloader: PolicyReloader, texts: list[str], batch: int, repeats: int) -> float:
    funnel = reloader.runtime.funnel
    funnel.score_batch(texts[:50], None)  # warm-up: lazy loads, first-call buffers
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.process_time()
        for i in range(0, len(texts), batch):
            funnel.score_batch(texts[i : i + batch], None)
        best = min(best, time.process_time() - start)
    return len(texts) / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--candidate-share", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    settings = Settings()
    texts = [str(orjson.loads(value or b"{}")["text"]) for _, value in make_posts(args.posts, args.candidate_share)]
    batch = settings.kafka.batch_size
    figures: dict[str, float | int | bool] = {"posts": len(texts), "candidate_share": args.candidate_share}
    for name, embeddings in (("funnel_posts_cpu_s", True), ("keywords_only_posts_cpu_s", False)):
        reloader = PolicyReloader(
            settings.policies_dir,
            languages=settings.languages.config(),
            use_heads=settings.funnel_heads,
            embeddings=embeddings,
        )
        figures[name] = round(rate(reloader, texts, batch, args.repeats))
    figures["heads"] = settings.funnel_heads
    print(
        f"{len(texts)} short posts, batch {batch}, 1 thread, best of {args.repeats}: "
        f"full funnel {figures['funnel_posts_cpu_s']:,} posts per CPU-second, "
        f"keywords only {figures['keywords_only_posts_cpu_s']:,}"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
