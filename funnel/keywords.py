"""Keyword stage: whole-word keyword matching on the normalised `key` form, per policy.

Keywords go through the same normaliser as posts, so "Fr33 M0ney" in a policy and
"ｆｒｅｅ money" in a post meet as "fre money". Each keyword becomes literals padded with
one space on each side (the `key` form has single spaces between words and is padded the
same way), so a literal match *is* a whole-word match and any engine that finds plain
strings will do: Hyperscan (Vectorscan) when importable, pyahocorasick otherwise.

Two details keep the squeezing in normalise.py honest:

* run lengths: "kill" is stored as "kil" plus the run lengths (k1 i1 l2); a hit is kept
  only if the post (in `words` form) has those letters with runs at least as long
  (a regex `k+i+l{2,}`, run only on posts that hit such a keyword), so "kiiilll" matches
  "kill" but "as" does not match "ass";
* "1" variants: a post's "1", "!" or "|" stays "1" (it may be i or l), so each keyword is
  also stored with "1" in place of any subset of its i/l letters ("k1ll", "ki11", ...).

Posts spelled letter by letter ("k i l l y o u r s e l f") become one token; those few
tokens are searched for keywords with their spaces removed, without word boundaries.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import ahocorasick

from funnel.normalise import Normalised, normalise, run_lengths, squeeze
from funnel.spec import PolicySpec

# A keyword with more i/l letters than this gets only the all-or-nothing "1" variants:
# 2**6 = 64 variants is plenty, and longer phrases are rarely leeted letter by letter.
MAX_AMBIGUOUS_POSITIONS = 6
# Without word boundaries short keywords hit inside unrelated words ("ass" in "assessment").
MIN_COMPACT_LENGTH = 4
# Posts scanned as one buffer (512 posts per scan is ~2.4x faster than one by one; docs/funnel.md).
SCAN_BATCH = 512


@dataclass(frozen=True, slots=True)
class KeywordEntry:
    policy_id: str
    keyword: str
    # Minimum run length at each position of the padded literal; None when all are 1.
    min_runs: tuple[int, ...] | None
    # Checks those run lengths on the padded `words` form; None when there is nothing to check.
    verifier: re.Pattern[str] | None
    # More than one word: a phrase is more specific evidence than a single word.
    phrase: bool


@dataclass(frozen=True, slots=True)
class KeywordHit:
    policy_id: str
    keyword: str
    phrase: bool
    # Where it matched: (start, end) in the post's `key` form, or (-1 - i, -1 - i) for the
    # i-th letter-by-letter token. Overlapping hits of one policy count once (see evidence).
    span: tuple[int, int]


def evidence_counts(hits: Sequence[KeywordHit]) -> dict[str, tuple[int, int]]:
    """Per policy, (single-word hits, phrase hits), where overlapping hits ("5 star reviews"
    and "star reviews") count as one — a phrase if any of them is a phrase. Nested keyword
    lists would otherwise turn one phrase into several independent-looking signals."""
    by_policy: dict[str, list[KeywordHit]] = {}
    for hit in hits:
        by_policy.setdefault(hit.policy_id, []).append(hit)
    counts: dict[str, tuple[int, int]] = {}
    for policy_id, group in by_policy.items():
        group.sort(key=lambda h: h.span)
        words = phrases = 0
        end = None
        phrase = False
        for hit in group:
            if end is not None and hit.span[0] < end:
                end = max(end, hit.span[1])
                phrase = phrase or hit.phrase
                continue
            if end is not None:
                phrases, words = (phrases + 1, words) if phrase else (phrases, words + 1)
            end, phrase = hit.span[1], hit.phrase
            if hit.span[0] < 0:  # letter-by-letter token: everything inside it overlaps
                end = hit.span[0] + 1
        if end is not None:
            phrases, words = (phrases + 1, words) if phrase else (phrases, words + 1)
        counts[policy_id] = (words, phrases)
    return counts


def _ambiguous_variants(words: str) -> list[str]:
    positions = [i for i, ch in enumerate(words) if ch in "il"]
    if len(positions) > MAX_AMBIGUOUS_POSITIONS:
        subsets: list[tuple[int, ...]] = [(), tuple(positions)]
    else:
        subsets = [c for r in range(len(positions) + 1) for c in itertools.combinations(positions, r)]
    variants: list[str] = []
    for subset in subsets:
        chars = list(words)
        for i in subset:
            chars[i] = "1"
        variants.append("".join(chars))
    return variants


def plural_forms(words: str) -> list[str]:
    """The keyword and its regular plurals ("idiot" → "idiots", "ass" → "asses", "pussy" →
    "pussies"): policy authors list the singular, posts use both."""
    last = words.rsplit(" ", 1)[-1]
    if len(last) < 3 or not last[-1].isalpha() or not last.isascii():
        return [words]
    if last.endswith(("s", "x", "z", "ch", "sh")):
        return [words, words + "es"]
    if last.endswith("y") and last[-2] not in "aeiou":
        return [words, words[:-1] + "ies", words + "s"]
    return [words, words + "s"]


def keyword_literals(keyword: str) -> list[tuple[str, tuple[int, ...] | None]]:
    """The padded `key`-form literals of one keyword (and its plurals) with their minimum
    run lengths."""
    words = normalise(keyword).words
    if not words:
        return []
    literals: dict[str, tuple[int, ...] | None] = {}
    variants = [v for form in plural_forms(words) for v in _ambiguous_variants(form)]
    for variant in variants:
        padded = f" {variant} "
        runs = tuple(run_lengths(padded))
        literal = squeeze(padded)
        needed = runs if any(r > 1 for r in runs) else None
        if literal not in literals:
            literals[literal] = needed
        else:
            # Two variants squeeze to one literal ("kil1" and "kill"?): require the weaker runs.
            previous = literals[literal]
            literals[literal] = (
                None
                if previous is None or needed is None
                else tuple(min(a, b) for a, b in zip(previous, needed, strict=True))
            )
    return list(literals.items())


def run_verifier(literal: str, min_runs: tuple[int, ...] | None) -> re.Pattern[str] | None:
    """A regex for the padded `words` form that requires the literal's letters with at least
    `min_runs` repeats each: " kil " with runs (1,1,1,2,1) → " k+i+l{2,} "."""
    if min_runs is None:
        return None
    parts = [re.escape(ch) + ("+" if need == 1 else f"{{{need},}}") for ch, need in zip(literal, min_runs, strict=True)]
    return re.compile("".join(parts))


def keyword_compacts(keyword: str) -> set[str]:
    """Keyword forms for letter-by-letter tokens: spaces removed, squeezed, with "1" variants."""
    words = normalise(keyword).words
    return {squeeze(v.replace(" ", "")) for v in _ambiguous_variants(words)} if words else set()


class LiteralScanner(Protocol):
    """Finds fixed strings; returns, per haystack, (literal id, end offset in characters)."""

    def scan(self, haystacks: Sequence[str]) -> list[list[tuple[int, int]]]: ...


class AhoScanner:
    """pyahocorasick: ~150k posts/s per core; the fallback where no hyperscan wheel exists."""

    engine = "pyahocorasick"

    def __init__(self, literals: Sequence[str]) -> None:
        self._automaton = ahocorasick.Automaton()
        for i, literal in enumerate(literals):
            self._automaton.add_word(literal, i)
        self._empty = not literals
        if not self._empty:
            self._automaton.make_automaton()

    def scan(self, haystacks: Sequence[str]) -> list[list[tuple[int, int]]]:
        if self._empty:
            return [[] for _ in haystacks]
        automaton = self._automaton
        # pyahocorasick reports the inclusive end index; +1 makes it an exclusive end.
        return [[(i, end + 1) for end, i in automaton.iter(h)] for h in haystacks]


def make_scanner(literals: Sequence[str], engine: str = "auto") -> LiteralScanner:
    """`engine`: "auto" (hyperscan if importable), "hyperscan" or "pyahocorasick"."""
    if engine not in ("auto", "hyperscan", "pyahocorasick"):
        raise ValueError(f"unknown matcher engine {engine!r}")
    if engine != "pyahocorasick":
        from funnel import hs

        if hs.available():
            return hs.HyperscanLiteralScanner(literals)
        if engine == "hyperscan":
            raise RuntimeError("engine 'hyperscan' requested but the hyperscan package is not importable")
    return AhoScanner(literals)


class KeywordStage:
    """All policies' keywords compiled into one scanner; built once per policy set."""

    def __init__(self, specs: Sequence[PolicySpec], engine: str = "auto") -> None:
        entries: dict[str, list[KeywordEntry]] = {}
        compact_entries: dict[str, list[KeywordEntry]] = {}
        for spec in specs:
            for keyword in spec.keywords:
                phrase = " " in normalise(keyword).words
                for literal, min_runs in keyword_literals(keyword):
                    entry = KeywordEntry(spec.id, keyword, min_runs, run_verifier(literal, min_runs), phrase)
                    entries.setdefault(literal, []).append(entry)
                for compact in keyword_compacts(keyword):
                    compact_entries.setdefault(compact, []).append(KeywordEntry(spec.id, keyword, None, None, phrase))
        self.literals: list[str] = list(entries)
        self._entries: list[tuple[KeywordEntry, ...]] = [tuple(entries[lit]) for lit in self.literals]
        self.scanner = make_scanner(self.literals, engine)
        self.engine: str = getattr(self.scanner, "engine", type(self.scanner).__name__)
        self._compact = ahocorasick.Automaton()
        for compact, owners in compact_entries.items():
            self._compact.add_word(compact, (compact, tuple(owners)))
        self._compact_empty = not compact_entries
        if not self._compact_empty:
            self._compact.make_automaton()

    def match_batch(self, posts: Sequence[Normalised]) -> list[list[KeywordHit]]:
        hits: list[list[KeywordHit]] = []
        for start in range(0, len(posts), SCAN_BATCH):
            chunk = posts[start : start + SCAN_BATCH]
            found = self.scanner.scan([f" {p.key} " for p in chunk])
            hits.extend(self._confirm(post, matches) for post, matches in zip(chunk, found, strict=True))
        return hits

    def _confirm(self, post: Normalised, matches: list[tuple[int, int]]) -> list[KeywordHit]:
        out: dict[tuple[str, str], KeywordHit] = {}
        for literal_id, end in matches:
            literal = self.literals[literal_id]
            for entry in self._entries[literal_id]:
                if (entry.policy_id, entry.keyword) in out:
                    continue
                if entry.verifier is not None and entry.verifier.search(f" {post.words} ") is None:
                    continue
                # The inner span (without the padding spaces), so neighbouring words don't overlap.
                span = (end - len(literal) + 1, end - 1)
                out[(entry.policy_id, entry.keyword)] = KeywordHit(entry.policy_id, entry.keyword, entry.phrase, span)
        if post.squashed and not self._compact_empty:
            self._confirm_compact(post, out)
        return list(out.values())

    def _confirm_compact(self, post: Normalised, out: dict[tuple[str, str], KeywordHit]) -> None:
        """Keywords in and around letter-by-letter tokens, searched without spaces.

        The whole post is searched with its spaces removed, but a hit counts only if it
        overlaps a spelled-out token: "put a b u l l e t in" joins to "put abullet in" (the
        article is a single letter too), and only the compact form still reads "putabulet"."""
        compact_post = post.key.replace(" ", "")
        regions: list[tuple[int, int]] = []
        for token in post.squashed:
            at = compact_post.find(token)
            if at >= 0:
                regions.append((at, at + len(token)))
        for end, (compact, owners) in self._compact.iter(compact_post):
            start = end + 1 - len(compact)
            inside = [i for i, (lo, hi) in enumerate(regions) if start < hi and end + 1 > lo]
            if not inside:
                continue
            lo, hi = regions[inside[0]]
            if len(compact) < MIN_COMPACT_LENGTH and (start, end + 1) != (lo, hi):
                continue
            for entry in owners:
                span = (-1 - inside[0], -1 - inside[0])
                hit = KeywordHit(entry.policy_id, entry.keyword, entry.phrase, span)
                out.setdefault((entry.policy_id, entry.keyword), hit)
