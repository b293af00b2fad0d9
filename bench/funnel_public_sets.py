"""Map the public labelled sets to the shipped policies as labelled JSONL for `modstream funnel fit`.

    .venv/bin/python bench/funnel_public_sets.py --data DIR [--out DIR]

DIR is the folder of public sets described in the project's data notes (Davidson, toxic-spans,
EDOS, SMS Spam Collection, ToxiGen seed prompts; each with its SOURCE.txt and licence). The
output goes to `$MODSTREAM_CACHE/funnel-train/` (default `~/.cache/modstream/funnel-train/`),
never into the repository: the project ships only weights fitted on it (docs/funnel.md).

One file per set, one `{"id","text","labels","source"}` per line. A policy missing from
`labels` means "not labelled". The mapping (docs/funnel.md, "Training data"):

* davidson: class 0 (hate speech, crowd majority) → `hate: 1`; class 2 (neither) → 0 for every
  policy except spam-scams (not judged there); class 1 ("offensive" alone) is left out: it is no
  violation of any policy by itself, yet too often a slur to be a reliable negative.
* toxic-spans (Civil Comments): per comment, the share of its workers who marked a span of a
  type; ≥ 1/2 → Threat: `violence: 1`, Identity based Attack: `hate: 1`, Insult: `harassment: 1`.
  Comments at least half of whose workers said "not toxic" and that got no span of those types
  → 0 for harassment, hate, hate-threats, violence. Others (profanity only, split votes) are left out.
* edos: `train` split only (dev/test untouched). sexist "1. threats…" → `hate-threats: 1, hate: 1`;
  other sexist categories → `hate: 1`; not sexist → `hate: 0, hate-threats: 0`.
* sms-spam-collection: spam → `spam-scams: 1` (and 0 elsewhere); ham → 0 for every policy.
* toxigen-seed-prompts: sentences of hate_* files → `hate: 1`, neutral_* → `hate: 0`; written
  to `toxigen.jsonl` but NOT used by the shipped fit: it is the set the in-domain learning test
  fits on (tests/unit/funnel/test_heads.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ALL = (
    "fake-reviews",
    "game-cheating",
    "harassment",
    "hate-threats",
    "hate",
    "self-harm",
    "sexual-content",
    "sexual-minors",
    "spam-scams",
    "violence",
    "violent-extremism",
)
ABUSE = ("harassment", "hate", "hate-threats", "violence")


def _row(source: str, key: str, text: str, labels: dict[str, int]) -> dict[str, Any]:
    return {"id": f"{source}-{key}", "text": text, "labels": labels, "source": source}


def davidson(root: Path) -> Iterator[dict[str, Any]]:
    with (root / "davidson_labeled_data.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            cls = row["class"]
            if cls == "0":
                yield _row("davidson", row[""], row["tweet"], {"hate": 1})
            elif cls == "2":
                yield _row("davidson", row[""], row["tweet"], {p: 0 for p in ALL if p != "spam-scams"})


def toxic_spans(root: Path) -> Iterator[dict[str, Any]]:
    base = root / "toxic-spans" / "data"
    workers: dict[str, set[str]] = defaultdict(set)
    not_toxic: dict[str, int] = defaultdict(int)
    comment_of: dict[str, str] = {}
    with (base / "annotations.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            workers[row["comment_id"]].add(row["worker"])
            not_toxic[row["comment_id"]] += row["not toxic"] == "True"
            comment_of[row["annotation"]] = row["comment_id"]
    typed: dict[tuple[str, str], set[str]] = defaultdict(set)
    with (base / "spans.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            comment = comment_of.get(row["annotation"])
            if comment is not None:
                typed[(comment, row["type"].strip())].add(row["annotation"])
    policy_of = {"Threat": "violence", "Identity based Attack": "hate", "Insult": "harassment"}
    with (base / "comments.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            cid = row["comment_id"]
            n = len(workers.get(cid, ()))
            if n == 0:
                continue
            labels: dict[str, int] = {}
            any_typed = False
            for span_type, policy in policy_of.items():
                share = len(typed.get((cid, span_type), ())) / n
                any_typed |= share > 0
                if share >= 0.5:
                    labels[policy] = 1
            if labels:
                yield _row("toxic-spans", cid, row["comment_text"], labels)
            elif not any_typed and not_toxic[cid] * 2 >= n:
                yield _row("toxic-spans", cid, row["comment_text"], dict.fromkeys(ABUSE, 0))


def edos(root: Path) -> Iterator[dict[str, Any]]:
    with (root / "edos" / "data" / "edos_labelled_aggregated.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["split"] != "train":
                continue
            if row["label_sexist"] != "sexist":
                labels = {"hate": 0, "hate-threats": 0}
            elif row["label_category"].startswith("1."):
                labels = {"hate": 1, "hate-threats": 1}
            else:
                labels = {"hate": 1}
            yield _row("edos", row["rewire_id"], row["text"], labels)


def sms(root: Path) -> Iterator[dict[str, Any]]:
    path = root / "sms-spam-collection" / "smsspamcollection" / "SMSSpamCollection"
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle):
            kind, _, text = line.rstrip("\n").partition("\t")
            labels = dict.fromkeys(ALL, 0)
            if kind == "spam":
                labels["spam-scams"] = 1
            yield _row("sms", str(number), text, labels)


def toxigen(root: Path) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for path in sorted((root / "toxigen-seed-prompts" / "prompts").glob("*.txt")):
        label = 1 if path.name.startswith("hate_") else 0
        for line in path.read_text(encoding="utf-8").splitlines():
            for part in line.split("\\n"):
                text = part.strip().lstrip("-").strip()
                if len(text) < 8 or text in seen:
                    continue
                seen.add(text)
                yield _row("toxigen", f"{path.stem}-{len(seen)}", text, {"hate": label})


SETS = {"davidson": davidson, "toxic-spans": toxic_spans, "edos": edos, "sms": sms, "toxigen": toxigen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the public sets")
    cache = Path(os.environ.get("MODSTREAM_CACHE", Path.home() / ".cache" / "modstream"))
    parser.add_argument("--out", type=Path, default=cache / "funnel-train")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, reader in SETS.items():
        rows = list(reader(args.data))
        path = args.out / f"{name}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        positives: dict[str, int] = defaultdict(int)
        for row in rows:
            for policy, value in row["labels"].items():
                positives[policy] += value
        print(f"{path}: {len(rows)} posts, positives {dict(positives)}")


if __name__ == "__main__":
    main()
