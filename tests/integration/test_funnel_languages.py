"""Languages through the real worker: Tansu broker, simulator judges, `modstream run` as a process.

Every held-out post in a language the funnel cannot read reaches tier 1 for its policy (and for
every other policy, by the default `judge` rule), English benign posts are screened by the funnel
alone (judged only for its candidates, never for every policy by the language rule), the
producer's `lang` wins, and `modstream_funnel_posts_total{lang,route}` counts it all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import POLICIES_DIR, worker_env
from tests.kafka_support import WorkerProcess, post_value, produce, read_topic, verdicts_by_id, wait_for
from worker.config import Settings
from worker.local.broker import EmbeddedBroker
from worker.policies.files import load_policy_dir
from worker.policies.screening import PolicyRuntime
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HELDOUT = ROOT / "datasets" / "funnel_languages_heldout.jsonl"
ENGLISH_BENIGN = [
    "Had a lovely walk by the river this morning",
    "kill the process with ctrl-c and restart the server",
    "this patch is sick, great work on the release",
]
SERIES = re.compile(r'^modstream_funnel_posts_total\{lang="([^"]+)",route="([^"]+)"\} ([0-9.e+]+)$', re.M)


def funnel_posts(worker: WorkerProcess) -> dict[tuple[str, str], float]:
    try:
        text = httpx.get(f"{worker.metrics_url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    return {(lang, route): float(value) for lang, route, value in SERIES.findall(text)}


def test_every_language_reaches_a_judge_through_the_worker(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> None:
    held = [orjson.loads(line) for line in HELDOUT.read_bytes().splitlines() if line.strip()]
    foreign = [p for p in held if p["lang"] != "en"]
    records: list[tuple[bytes | None, bytes | None]] = [
        (str(p["id"]).encode(), post_value(str(p["id"]), str(p["text"]))) for p in foreign
    ]
    records += [(f"en-{i}".encode(), post_value(f"en-{i}", text)) for i, text in enumerate(ENGLISH_BENIGN)]
    # The producer says English for a Spanish post: the funnel decides it (its Spanish keywords fire).
    records.append((b"tagged", post_value("tagged", "Te voy a matar cuando salgas del trabajo", lang="en")))
    # ... and Russian for an ASCII post the detector would call English: the language rule applies.
    records.append((b"tagged-ru", post_value("tagged-ru", "see you at the game tonight", lang="ru-RU")))
    produce(broker.bootstrap_servers, "posts", records)
    worker = spawn_worker(worker_env(broker, sims, group="g-languages"))

    def counted_all() -> bool:
        return sum(funnel_posts(worker).values()) >= len(records)

    wait_for(counted_all, 120, "every post counted by modstream_funnel_posts_total")
    verdicts = {
        k: v[0] for k, v in verdicts_by_id(read_topic(broker.bootstrap_servers, "actions", len(records))).items()
    }
    assert len(verdicts) == len(records)

    for post in foreign:
        verdict = verdicts[str(post["id"])]
        judged = {r["policy_id"] for r in verdict["results"]}
        assert verdict["tier"] != "funnel", (post["text"], verdict)
        assert set(post["labels"]) <= judged, (post["text"], judged)
    # English posts: the funnel's own candidates, as the worker builds it (with the shipped heads,
    # the default, an everyday post can be a candidate for a policy or two; never for all of them).
    settings = Settings()
    runtime = PolicyRuntime.build(load_policy_dir(POLICIES_DIR), settings.languages.config(), settings.funnel_heads)
    for i, screened in enumerate(runtime.funnel.score_batch(ENGLISH_BENIGN)):
        verdict = verdicts[f"en-{i}"]
        assert screened.route == "funnel" and len(screened.candidates) < len(runtime.policies.live)
        assert {r["policy_id"] for r in verdict["results"]} == set(screened.candidates), verdict
        assert (verdict["tier"] == "funnel") == (not screened.candidates)
    assert {r["policy_id"] for r in verdicts["tagged"]["results"]} >= {"violence"}
    assert len(verdicts["tagged-ru"]["results"]) >= 11  # every live policy, by the language rule

    counts = funnel_posts(worker)
    assert counts[("en", "funnel")] == len(ENGLISH_BENIGN) + 1  # + the post tagged "en"
    assert counts[("ru", "judge")] == sum(p["lang"] == "ru" for p in foreign) + 1  # + the post tagged "ru-RU"
    for lang in ("zh", "ja", "ar", "hi", "it", "nl", "fr", "pl"):
        assert counts[(lang, "judge")] == sum(p["lang"] == lang for p in foreign), lang
    assert sum(v for (_, route), v in counts.items() if route == "judge") == len(foreign) + 1
    assert sum(counts.values()) == len(records)
