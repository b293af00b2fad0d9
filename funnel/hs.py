"""Hyperscan (Vectorscan) backends: optional, used when the `hyperscan` extra is installed.

Compiled databases are cached in memory and on disk (serialised with `dumpb`, ~5 ms to
load) so a policy reload does not pay the compile again; a database that fails to load
(other CPU, other library version) is simply recompiled.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from bisect import bisect_right
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_hs: Any
try:  # the extra is optional: without it the funnel uses pyahocorasick and `re`
    _hs = importlib.import_module("hyperscan")
except ImportError:  # pragma: no cover - exercised only where no wheel exists
    _hs = None

_MEMORY_CACHE: dict[str, bytes] = {}


def available() -> bool:
    return _hs is not None


def cache_dir() -> Path:
    root = os.environ.get("MODSTREAM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "modstream")
    return Path(root) / "hyperscan"


def compile_database(expressions: Sequence[bytes], flags: Sequence[int], *, literal: bool) -> Any:
    """A block-mode database for `expressions`, from the cache when it was compiled before."""
    assert _hs is not None
    digest = hashlib.sha256(repr((_hs.__version__, literal, list(expressions), list(flags))).encode()).hexdigest()
    blob = _MEMORY_CACHE.get(digest)
    path = cache_dir() / f"{digest}.db"
    if blob is None and path.is_file():
        blob = path.read_bytes()
    if blob is not None:
        try:
            database = _hs.loadb(blob, _hs.HS_MODE_BLOCK)
            _MEMORY_CACHE[digest] = blob
            return database
        except Exception:  # stale or foreign serialisation: compile afresh
            pass
    database = _hs.Database(mode=_hs.HS_MODE_BLOCK)
    database.compile(
        expressions=list(expressions),
        ids=list(range(len(expressions))),
        elements=len(expressions),
        flags=list(flags),
        literal=literal,
    )
    blob = _hs.dumpb(database)
    _MEMORY_CACHE[digest] = blob
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
    except OSError:  # a read-only home is fine: the memory cache still helps
        pass
    return database


class HyperscanLiteralScanner:
    """Fixed strings, all posts of a batch scanned as one buffer joined by newlines (no
    literal contains a newline, so no match spans two posts)."""

    engine = "hyperscan"

    def __init__(self, literals: Sequence[str]) -> None:
        assert _hs is not None
        self._empty = not literals
        if not self._empty:
            self._db = compile_database([lit.encode() for lit in literals], [0] * len(literals), literal=True)
            self._scratch = _hs.Scratch(self._db)

    def scan(self, haystacks: Sequence[str]) -> list[list[tuple[int, int]]]:
        out: list[list[tuple[int, int]]] = [[] for _ in haystacks]
        if self._empty or not haystacks:
            return out
        encoded = [h.encode() for h in haystacks]
        starts: list[int] = []
        position = 0
        for chunk in encoded:
            starts.append(position)
            position += len(chunk) + 1
        found: list[tuple[int, int]] = []

        def on_match(literal_id: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
            found.append((literal_id, to))

        self._db.scan(b"\n".join(encoded), match_event_handler=on_match, scratch=self._scratch)
        for literal_id, to in found:
            i = bisect_right(starts, to - 1) - 1
            local = to - starts[i]
            if not haystacks[i].isascii():  # offsets are bytes; the keyword stage counts characters
                local = len(encoded[i][:local].decode())
            out[i].append((literal_id, local))
        return out


class HyperscanPatternScanner:
    """Regex patterns, one scan per post (a pattern such as `.{0,60}` must not run from one
    post into the next); each pattern is reported at most once per post.

    Byte mode, not UTF-8 mode: it compiles ~5x faster (0.4 s vs 1.9 s for the shipped
    policies) and `clean` text is mostly ASCII; `.` then counts bytes, not characters."""

    def __init__(self, patterns: Sequence[str]) -> None:
        assert _hs is not None
        flags = _hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_CASELESS
        self._db = compile_database([p.encode() for p in patterns], [flags] * len(patterns), literal=False)
        self._scratch = _hs.Scratch(self._db)

    def scan(self, texts: Sequence[str]) -> list[list[int]]:
        found: list[int] = []

        def on_match(pattern_id: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
            found.append(pattern_id)

        out: list[list[int]] = []
        scan, scratch = self._db.scan, self._scratch
        for text in texts:
            scan(text.encode(), match_event_handler=on_match, scratch=scratch)
            out.append(found.copy() if found else [])
            found.clear()
        return out


def rejected(patterns: Sequence[str]) -> set[int]:
    """Indexes of the patterns hyperscan cannot compile (backreferences, lookarounds ...).

    One compile of the whole set first (cached, so free on the next build); only if that
    fails is each pattern tried alone."""
    assert _hs is not None
    if not patterns:
        return set()
    flags = _hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_CASELESS
    try:
        compile_database([p.encode() for p in patterns], [flags] * len(patterns), literal=False)
        return set()
    except _hs.error:
        pass
    bad: set[int] = set()
    for i, pattern in enumerate(patterns):
        try:
            database = _hs.Database(mode=_hs.HS_MODE_BLOCK)
            database.compile(expressions=[pattern.encode()], flags=flags)
        except _hs.error:
            bad.add(i)
    return bad
