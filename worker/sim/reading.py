"""How the simulated judge reads the policy it is given and the frame a post is written in.

A real judge is taught by the policy: its labelled examples (`Content: "..." → {"violation": 0|1, ...}`)
and the phrases its VIOLATES and SAFE rules quote. The simulator has no language model, so it
approximates that with word overlap: a post close to one of the policy's labelled texts gets
that text's label. A post close to none falls back to the trigger words of worker/sim/script.py,
unless it is written in a frame that makes a trigger word a mention rather than a use (offering
help, recovery, a warning, a report, a joke). Pure functions; no I/O.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache

# Cosine similarity of content-word sets at or above which a post takes a labelled text's label.
EXAMPLE_MATCH = 0.5

# Frames that turn a trigger word into a mention: help and recovery, warnings and reports, jokes.
# Whole words or phrases, lower-cased; one list so tests can pick a neutral vocabulary.
MENTION_FRAMES: tuple[str, ...] = (
    # offering help, crisis resources, recovery
    "call or text", "helpline", "hotline", "crisis line", "lifeline", "reach out", "you are not alone",
    "it gets better", "years clean", "clean from", "in recovery",
    # warning about it or reporting it
    "psa", "warning", "beware", "reporting", "i reported", "don't send", "do not send",
    # joking hyperbole
    "literally", "lol", "lmao", "jk", "😂", "🤣",
)  # fmt: skip
_FRAME_RE = re.compile(r"(?<!\w)(" + "|".join(re.escape(p) for p in MENTION_FRAMES) + r")(?!\w)")

_STOP_WORDS = frozenset(
    ("a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "for", "is", "are", "was", "were", "be", "been",
     "it", "its", "this", "that", "these", "those", "i", "me", "my", "you", "your", "he", "him", "his", "she",
     "her", "we", "us", "our", "they", "them", "their", "with", "as", "by", "from", "so", "if", "but", "not",
     "no", "do", "does", "did", "just", "will", "would", "can", "could", "im", "i'm", "i'll", "you're", "it's")
)  # fmt: skip
_WORD_RE = re.compile(r"[\w@$']+")
# Leetspeak inside words that have letters: "l0ser" reads "loser", "sw1tches" reads "switches".
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "@": "a", "$": "s", "5": "s", "7": "t"})
_EXAMPLE_RE = re.compile(r'^\s*(?:[-*]\s*)?Content:\s*"(.*)"\s*(?:→|->|=>)\s*(\{.*\})\s*$', re.MULTILINE)
_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_QUOTED_RE = re.compile(r'"([^"\n]{3,})"')


@dataclass(frozen=True, slots=True)
class Labelled:
    """A text the policy labels: an example answer, or a phrase quoted by a VIOLATES or SAFE rule."""

    text: str
    violation: int
    policy_category: str | None = None
    rule_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Match:
    example: Labelled
    similarity: float


def content_words(text: str) -> frozenset[str]:
    """Lower-cased words without stop words, leetspeak read as letters, an `-ing` or a plural `s` dropped."""
    words: set[str] = set()
    for raw in _WORD_RE.findall(text.lower()):
        word = raw.translate(_LEET) if any(c.isalpha() for c in raw) else raw
        word = word.strip("'")
        if not word or word in _STOP_WORDS:
            continue
        if len(word) > 5 and word.endswith("ing"):
            word = word[:-3]
        elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        words.add(word)
    return frozenset(words)


def _example(text: str, answer_json: str) -> Labelled | None:
    try:
        answer = json.loads(answer_json)
    except json.JSONDecodeError:
        return None
    if not isinstance(answer, dict) or answer.get("violation") not in (0, 1):
        return None
    category = answer.get("policy_category")
    rules = answer.get("rule_ids")
    return Labelled(
        text=text,
        violation=int(answer["violation"]),
        policy_category=category if isinstance(category, str) else None,
        rule_ids=tuple(r for r in rules if isinstance(r, str)) if isinstance(rules, list) else (),
    )


@cache
def labelled_texts(policy: str) -> tuple[Labelled, ...]:
    """The policy's labelled texts: its examples, then the phrases quoted in VIOLATES (1) and SAFE (0) rules."""
    found = [ex for m in _EXAMPLE_RE.finditer(policy) if (ex := _example(m.group(1), m.group(2))) is not None]
    section: int | None = None
    for line in policy.splitlines():
        heading = _HEADING_RE.match(line)
        if heading:
            title = heading.group(1).strip().upper()
            section = 1 if title.startswith("VIOLATES") else 0 if title.startswith("SAFE") else None
        elif section is not None and line.lstrip().startswith(("-", "*")):
            found.extend(Labelled(text=q, violation=section) for q in _QUOTED_RE.findall(line))
    return tuple(found)


@cache
def _example_words(text: str) -> frozenset[str]:
    return content_words(text)


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Cosine similarity of two word sets (0 when either is empty)."""
    if not a or not b:
        return 0.0
    return len(a & b) / math.sqrt(len(a) * len(b))


def nearest_example(policy: str, text: str) -> Match | None:
    """The policy's labelled text closest to `text`, if it is at least EXAMPLE_MATCH close.
    A tie between a violating and a safe text goes to the safe one (the policy's own carve-out)."""
    words = content_words(text)
    best: Match | None = None
    for example in labelled_texts(policy):
        score = similarity(words, _example_words(example.text))
        if score < EXAMPLE_MATCH:
            continue
        if best is None or score > best.similarity or (score == best.similarity and example.violation == 0):
            best = Match(example, score)
    return best


def find_frame(text: str) -> str | None:
    """The first mention frame in `text` (whole words, case-insensitive), or None."""
    match = _FRAME_RE.search(text.lower())
    return str(match.group(1)) if match else None
