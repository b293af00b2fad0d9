"""Pattern stage: each policy's regex `patterns:`, matched on the `clean` form.

`clean` keeps punctuation (URLs, prices, "@handles") but is already casefolded and free of
look-alikes and invisible characters. Patterns are compiled once per policy set: into one
Hyperscan database when available, else (and for any pattern Hyperscan rejects, e.g. one
with a lookaround) with Python's `re`.

`re` has no multi-pattern mode, so the fallback does what Hyperscan does inside: from each
pattern it extracts literals that every match must contain (`required_literals`), finds
them all in one Aho-Corasick pass, and runs only the patterns whose literals occur — most
posts run none. On the shipped policies this is ~5x faster than searching every pattern.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import Any

import ahocorasick

from funnel import hs
from funnel.normalise import Normalised
from funnel.spec import PolicySpec

# The stdlib's own regex parser (re._parser since 3.11; the old sre_parse name warns).
sre_parse: Any = importlib.import_module("re._parser")
sre_constants: Any = importlib.import_module("re._constants")


class PatternStage:
    def __init__(self, specs: Sequence[PolicySpec], engine: str = "auto") -> None:
        self.patterns: list[tuple[str, str]] = []
        for spec in specs:
            for pattern in spec.patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"policy {spec.id!r}: invalid pattern {pattern!r}: {exc}") from exc
                self.patterns.append((spec.id, pattern))
        use_hs = engine != "pyahocorasick" and hs.available()
        if engine == "hyperscan" and not hs.available():
            raise RuntimeError("engine 'hyperscan' requested but the hyperscan package is not importable")
        self._hs_ids: list[int] = []
        self._re: list[tuple[int, re.Pattern[str]]] = []
        bad = hs.rejected([p for _, p in self.patterns]) if use_hs else set()
        for i, (_, pattern) in enumerate(self.patterns):
            if use_hs and i not in bad:
                self._hs_ids.append(i)
            else:
                self._re.append((i, re.compile(pattern, re.IGNORECASE)))
        self._hs = hs.HyperscanPatternScanner([self.patterns[i][1] for i in self._hs_ids]) if self._hs_ids else None
        self.engine = "hyperscan" if self._hs is not None else "re"
        # Fallback gate: literal → indexes (into self._re) of the patterns that need it.
        self._always: list[int] = []
        self._gate = ahocorasick.Automaton()
        anchors: dict[str, list[int]] = {}
        for k, (i, _) in enumerate(self._re):
            literals = required_literals(self.patterns[i][1])
            if literals is None:
                self._always.append(k)
            else:
                for literal in literals:
                    anchors.setdefault(literal, []).append(k)
        for literal, owners in anchors.items():
            self._gate.add_word(literal, owners)
        self._gated = bool(anchors)
        if self._gated:
            self._gate.make_automaton()

    def match_batch(self, posts: Sequence[Normalised]) -> list[list[tuple[str, str]]]:
        """Per post, the (policy id, pattern) pairs that matched."""
        if not self.patterns:
            return [[] for _ in posts]
        # Each post's `clean` form, plus its `plain` form (leetspeak undone, spelled-out letters
        # joined) where that differs: "fr33 v-bucks" must meet a pattern written for "free v-bucks",
        # while "5star" or a price must still meet patterns written with digits.
        texts = [p.clean for p in posts]
        row_of = list(range(len(posts)))
        for row, post in enumerate(posts):
            if post.plain is not None:
                texts.append(post.plain)
                row_of.append(row)
        found: list[list[int]] = [[] for _ in texts]
        if self._hs is not None:
            for hits, scanned in zip(found, self._hs.scan(texts), strict=True):
                hits.extend(self._hs_ids[j] for j in scanned)
        if self._re:
            for hits, text in zip(found, texts, strict=True):
                wanted = set(self._always)
                if self._gated:
                    for _end, owners in self._gate.iter(text):
                        wanted.update(owners)
                for k in sorted(wanted):
                    i, regex = self._re[k]
                    if regex.search(text) is not None:
                        hits.append(i)
        for extra in range(len(posts), len(texts)):
            found[row_of[extra]].extend(found[extra])
        return [[self.patterns[i] for i in sorted(set(hits))] for hits in found[: len(posts)]]


def _alternatives(items: Any) -> list[str] | None:
    """The strings a parsed (sub)pattern can match if it is only literals and alternations
    of literals, e.g. `(kill|shoot)`; None otherwise."""
    out = [""]
    for op, av in items:
        if op is sre_constants.LITERAL:
            out = [prefix + chr(av) for prefix in out]
        elif op is sre_constants.SUBPATTERN:
            inner = _alternatives(av[-1])
            if inner is None:
                return None
            out = [prefix + tail for prefix in out for tail in inner]
        elif op is sre_constants.BRANCH:
            options: list[str] = []
            for branch in av[1]:
                inner = _alternatives(branch)
                if inner is None:
                    return None
                options.extend(inner)
            out = [prefix + tail for prefix in out for tail in options]
        elif op is sre_constants.AT:  # \b, ^, $: zero width, constrain nothing here
            continue
        else:
            return None
        if len(out) > 64:
            return None
    return out


def required_literals(pattern: str) -> set[str] | None:
    """Literals of which every match of `pattern` contains at least one (lower-cased), or
    None if none can be proven (the pattern then always runs). Taken from the top-level
    item that gives the longest shortest literal: a run of plain characters, or a group of
    literal alternatives."""
    try:
        parsed = sre_parse.parse(pattern, re.IGNORECASE)
    except re.error:
        return None
    best: set[str] | None = None
    best_len = 0
    run: list[Any] = []
    items = [*list(parsed), (None, None)]  # a sentinel flushes the last run
    for op, av in items:
        if op is sre_constants.LITERAL:
            run.append((op, av))
            continue
        candidates: list[list[str] | None] = []
        if run:
            candidates.append(_alternatives(run))
            run = []
        if op in (sre_constants.SUBPATTERN, sre_constants.BRANCH):
            candidates.append(_alternatives([(op, av)]))
        for literals in candidates:
            if literals and min(map(len, literals)) > best_len:
                best = {lit.lower() for lit in literals}
                best_len = min(map(len, literals))
    return best
