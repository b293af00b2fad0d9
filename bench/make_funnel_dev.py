"""Write datasets/funnel_dev.jsonl: the hand-written posts plus seeded obfuscated copies.

    .venv/bin/python bench/make_funnel_dev.py

Every line is `{"id", "text", "labels": {policy_id: 0|1 for all 11 policies}, "kind"}`;
kind is obvious | implicit | obfuscated | benign-trigger | benign | benign-obfuscated.
Obfuscated copies disguise the salient words of a post with one of the tricks the
normaliser must undo (leetspeak, spacing, dots, look-alikes, zero-width characters,
fullwidth, mathematical bold, zalgo, elongation, a mix); the seed makes the file stable.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from funnel_dev_posts import BENIGN_EVERYDAY, BENIGN_TRIGGER, VIOLATING

POLICIES = (
    "spam-scams",
    "game-cheating",
    "fake-reviews",
    "self-harm",
    "harassment",
    "hate",
    "hate-threats",
    "sexual-content",
    "sexual-minors",
    "violence",
    "violent-extremism",
)
OUT = Path(__file__).resolve().parents[1] / "datasets" / "funnel_dev.jsonl"
SEED = 20261122
OBFUSCATED_PER_POLICY = 8
BENIGN_OBFUSCATED = 16

# Words an evader would disguise first; otherwise the longest words of the post are chosen.
SALIENT = {
    "kill",
    "killing",
    "die",
    "dead",
    "shoot",
    "bomb",
    "burn",
    "hang",
    "stab",
    "murder",
    "suicide",
    "cuts",
    "nudes",
    "nude",
    "porn",
    "sex",
    "horny",
    "escort",
    "onlyfans",
    "cp",
    "pthc",
    "jailbait",
    "underage",
    "aimbot",
    "wallhack",
    "cheat",
    "undetected",
    "spoofer",
    "boost",
    "robux",
    "bitcoin",
    "crypto",
    "free",
    "money",
    "giveaway",
    "password",
    "reviews",
    "review",
    "refund",
    "vermin",
    "savages",
    "jews",
    "muslims",
    "immigrants",
    "gas",
    "loser",
    "worthless",
    "whore",
    "ugly",
    "idiot",
    "moron",
    "manifesto",
    "caliphate",
    "isis",
    "ghost",
    "gun",
    "mosque",
    "yourself",
    "myself",
    "pills",
    "faggot",
    "minor",
    "pics",
}
CYRILLIC = {"a": "а", "c": "с", "e": "е", "i": "і", "j": "ј", "o": "о", "p": "р", "s": "ѕ", "x": "х", "y": "у"}
LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "l": "1", "g": "9"}
ZALGO_MARKS = [chr(c) for c in range(0x0300, 0x0315)]


def leet(word: str, rng: random.Random) -> str:
    out = "".join(LEET[c] if c in LEET and rng.random() < 0.7 else c for c in word.lower())
    return out if out != word.lower() else word.lower().replace("o", "0").replace("e", "3")


def spaced(word: str, rng: random.Random) -> str:
    return " ".join(word)


def dotted(word: str, rng: random.Random) -> str:
    return rng.choice([".", "-", "*"]).join(word)


def lookalike(word: str, rng: random.Random) -> str:
    return "".join(CYRILLIC.get(c, c) for c in word)


def zero_width(word: str, rng: random.Random) -> str:
    return "\u200b".join(word) if rng.random() < 0.5 else "\u200d".join(word)


def fullwidth(word: str, rng: random.Random) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in word)


def math_bold(word: str, rng: random.Random) -> str:
    def bold(c: str) -> str:
        if "a" <= c <= "z":
            return chr(0x1D41A + ord(c) - ord("a"))
        if "A" <= c <= "Z":
            return chr(0x1D400 + ord(c) - ord("A"))
        return c

    return "".join(bold(c) for c in word)


def zalgo(word: str, rng: random.Random) -> str:
    return "".join(c + "".join(rng.choice(ZALGO_MARKS) for _ in range(rng.randint(1, 3))) for c in word)


def elongate(word: str, rng: random.Random) -> str:
    vowels = [i for i, c in enumerate(word) if c.lower() in "aeiouy"]
    i = rng.choice(vowels) if vowels else len(word) - 1
    return word[: i + 1] + word[i] * rng.randint(2, 5) + word[i + 1 :]


def mixed(word: str, rng: random.Random) -> str:
    return elongate(leet(word, rng), rng).upper()


def bidi_wrapped(word: str, rng: random.Random) -> str:
    # Right-to-left override + pop: invisible controls around and inside the word.
    half = len(word) // 2
    return "\u202d" + word[:half] + "\u2066\u2069" + word[half:] + "\u202c"


TRICKS: list[tuple[str, Callable[[str, random.Random], str]]] = [
    ("leet", leet),
    ("spaced", spaced),
    ("dotted", dotted),
    ("lookalike", lookalike),
    ("zero-width", zero_width),
    ("fullwidth", fullwidth),
    ("math-bold", math_bold),
    ("zalgo", zalgo),
    ("elongate", elongate),
    ("mixed", mixed),
    ("bidi", bidi_wrapped),
]
WORD = re.compile(r"[A-Za-z]+")


def obfuscate(text: str, rng: random.Random, trick: Callable[[str, random.Random], str]) -> str:
    words = [(m.start(), m.end(), m.group()) for m in WORD.finditer(text)]
    salient = [w for w in words if w[2].lower() in SALIENT]
    longest = sorted((w for w in words if len(w[2]) >= 4), key=lambda w: -len(w[2]))
    chosen = {w[:2]: w for w in (salient[:2] or longest[:2] or words[:1])}
    out, last = [], 0
    for start, end, word in sorted(chosen.values()):
        out.append(text[last:start])
        out.append(trick(word, rng))
        last = end
    out.append(text[last:])
    return "".join(out)


def labels(violated: tuple[str, ...]) -> dict[str, int]:
    unknown = set(violated) - set(POLICIES)
    if unknown:
        raise ValueError(f"unknown policy ids {unknown}")
    return {p: int(p in violated) for p in POLICIES}


def build() -> list[dict[str, object]]:
    rng = random.Random(SEED)
    rows: list[dict[str, object]] = []

    def add(text: str, violated: tuple[str, ...], kind: str) -> None:
        rows.append({"id": f"dev-{len(rows) + 1:04d}", "text": text, "labels": labels(violated), "kind": kind})

    for text, violated, kind in VIOLATING:
        add(text, violated, kind)
    for text in BENIGN_TRIGGER:
        add(text, (), "benign-trigger")
    for text in BENIGN_EVERYDAY:
        add(text, (), "benign")
    trick_index = 0
    for policy in POLICIES:
        own = [(t, v) for t, v, k in VIOLATING if v[0] == policy and k == "obvious"]
        for text, violated in rng.sample(own, OBFUSCATED_PER_POLICY):
            _name, trick = TRICKS[trick_index % len(TRICKS)]
            trick_index += 1
            add(obfuscate(text, rng, trick), violated, "obfuscated")
    for text in rng.sample(BENIGN_TRIGGER, BENIGN_OBFUSCATED):
        _name, trick = TRICKS[trick_index % len(TRICKS)]
        trick_index += 1
        add(obfuscate(text, rng, trick), (), "benign-obfuscated")
    return rows


def main() -> int:
    rows = build()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    violating = sum(1 for r in rows if any(r["labels"].values()))  # type: ignore[union-attr]
    print(f"{len(rows)} posts ({violating} violating, {len(rows) - violating} benign) -> {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
