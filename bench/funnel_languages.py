"""Language ID and language routing figures for docs/funnel.md ("Languages").

    .venv/bin/python bench/funnel_languages.py [--shared DATA_DIR]

(with `py3langid==0.4.0` installed, which the project does not need, it is compared too)

1. Language ID (funnel/language.py) accuracy on short posts written for this project
   (tests/data/funnel_languages_tune.jsonl + datasets/funnel_languages_heldout.jsonl: 116
   non-English posts in 13 languages, 22 English), on the English dev/eval sets (how many English
   posts would be routed to the judge by mistake), and, when `--shared` points at the public sets,
   on COLD (Chinese) and Davidson tweets (slang-heavy English); speed in posts/s on one core.
2. Routing on the held-out file (never used to choose keywords): share of violating posts that
   reach a judge for their policy (candidate by keyword/pattern/embedding, or by the language rule),
   with the default settings and with every language made readable (keywords alone), and the share
   of benign posts that become candidates.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import time
from collections import Counter
from pathlib import Path

import orjson

from funnel import Funnel, load_thresholds
from funnel.language import LanguageConfig, LanguageDetector
from worker.policies.files import load_policy_dir
from worker.policies.screening import specs_from_policies

ROOT = Path(__file__).resolve().parents[1]
TUNE = ROOT / "tests" / "data" / "funnel_languages_tune.jsonl"
HELDOUT = ROOT / "datasets" / "funnel_languages_heldout.jsonl"


def rows(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def accuracy(detector: LanguageDetector, items: list[tuple[str, str]]) -> tuple[float, list[tuple[str, str, str]]]:
    wrong = []
    for lang, text in items:
        got, _ = detector.detect(text)
        if got != lang:
            wrong.append((lang, got, text))
    return 1 - len(wrong) / len(items), wrong


def speed(detector: LanguageDetector, texts: list[str], repeat: int = 3) -> float:
    """Posts per CPU-second of this process (robust to other jobs sharing the machine)."""
    best = 0.0
    for _ in range(repeat):
        started = time.process_time()
        for text in texts:
            detector.detect(text)
        best = max(best, len(texts) / max(time.process_time() - started, 1e-9))
    return best


def routed(funnel: Funnel, posts: list[dict[str, object]]) -> tuple[int, int, int, int]:
    """(violating reaching their policy's judge, violating, benign candidates, benign)."""
    results = funnel.score_batch([str(p["text"]) for p in posts])
    reached = violating = benign_candidates = benign = 0
    for post, result in zip(posts, results, strict=True):
        labels = dict(post["labels"])  # type: ignore[call-overload]
        if labels:
            violating += 1
            reached += all(pid in result.candidates for pid in labels)
        else:
            benign += 1
            benign_candidates += result.is_candidate
    return reached, violating, benign_candidates, benign


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=None, help="folder of the public data sets (optional)")
    args = parser.parse_args()
    detector = LanguageDetector()
    written = rows(TUNE) + rows(HELDOUT)
    foreign = [(str(r["lang"]), str(r["text"])) for r in written if r["lang"] != "en"]
    english = [
        ("en", str(orjson.loads(line)["text"]))
        for name in ("funnel_dev.jsonl", "eval_sample.jsonl")
        for line in (ROOT / "datasets" / name).read_bytes().splitlines()
        if line.strip()
    ]
    acc, wrong = accuracy(detector, foreign)
    print(
        f"language ID, project posts: {acc:.3f} of {len(foreign)} non-English posts "
        f"({len(Counter(lang for lang, _ in foreign))} languages); wrong: {wrong}"
    )
    acc, wrong = accuracy(detector, english)
    print(f"language ID, English dev+eval posts: {acc:.3f} of {len(english)} read as English")
    texts = [t for _, t in foreign + english]
    if args.shared is not None:
        cold = args.shared / "cold-chinese" / "COLDataset" / "test.csv"
        if cold.is_file():
            with cold.open(encoding="utf-8-sig") as handle:
                zh = [("zh", r["TEXT"]) for r in csv.DictReader(handle)][:2000]
            acc, _ = accuracy(detector, zh)
            print(f"language ID, COLD test (Chinese), first {len(zh)}: {acc:.3f}")
        davidson = args.shared / "davidson_labeled_data.csv"
        if davidson.is_file():
            with davidson.open(encoding="utf-8") as handle:
                tweets = [r["tweet"] for r in csv.DictReader(handle)]
            acc, _ = accuracy(detector, [("en", t) for t in tweets])
            print(f"language ID, Davidson tweets ({len(tweets)}): {acc:.3f} read as English")
            texts = tweets[:10000]
    rate = speed(detector, texts)
    if importlib.util.find_spec("py3langid") is not None:  # the alternative considered (not a dependency)
        import py3langid  # type: ignore[import-not-found]

        wrong_py = sum(py3langid.classify(t)[0] != lang for lang, t in foreign)
        started = time.process_time()
        for text in texts:
            py3langid.classify(text)
        py_rate = len(texts) / max(time.process_time() - started, 1e-9)
        print(
            f"py3langid: {1 - wrong_py / len(foreign):.3f} right on the non-English posts, {py_rate:,.0f} posts/CPU-s"
        )
    mean = sum(map(len, texts)) / len(texts)
    print(f"language ID speed: {rate:,.0f} posts per CPU-second ({1e6 / rate:.0f} µs/post, mean {mean:.0f} chars)")

    policies = load_policy_dir(ROOT / "policies")
    specs = specs_from_policies(policies.policies, load_thresholds(ROOT / "policies"))
    for name, languages in (("off", None), ("on", LanguageConfig())):
        whole = Funnel.build(specs, languages=languages)
        whole.score_batch(texts[:512])  # first use allocates buffers
        best = 0.0
        for _ in range(3):
            started = time.process_time()
            for at in range(0, len(texts), 512):
                whole.score_batch(texts[at : at + 512])
            best = max(best, len(texts) / max(time.process_time() - started, 1e-9))
        print(f"whole funnel, language step {name}: {best:,.0f} posts per CPU-second (same posts, batches of 512)")
    held = rows(HELDOUT)
    every = frozenset(str(r["lang"]) for r in held)
    for name, config in (
        ("default routing (readable: en)", LanguageConfig()),
        ("every language readable (keywords/patterns/embedding only)", LanguageConfig(readable=every)),
    ):
        funnel = Funnel.build(specs, languages=config)
        for subset, posts in (
            ("non-English", [r for r in held if r["lang"] != "en"]),
            ("English", [r for r in held if r["lang"] == "en"]),
        ):
            reached, violating, benign_candidates, benign = routed(funnel, posts)
            benign_share = f"{benign_candidates}/{benign} benign candidates" if benign else "no benign posts"
            print(
                f"held-out, {name}, {subset}: {reached}/{violating} violating reach their policy's judge; "
                f"{benign_share}"
            )


if __name__ == "__main__":
    main()
