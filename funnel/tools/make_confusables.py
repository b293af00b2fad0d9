"""Generate `funnel/data/confusables.json` from decancer-py (MIT), ONCE, offline.

decancer knows which characters people use to dress Latin letters up (Cyrillic і for i,
Greek ο for o, small capitals, enclosed letters ...). Calling it per post would add a
dependency and ~20 µs; instead this script asks it about every code point once and keeps
a small table that `str.translate` applies in the hot path.

decancer is deliberately aggressive (it turns 🙂 into "o" and 日 into "8"), so only
letters, letter-like number forms and enclosed/squared letters are kept: symbols, emoji,
CJK and punctuation stay as they are. The table is applied after NFKC + casefold, so keys
are characters that survive those two steps.

    pip install decancer-py==0.4.1
    python funnel/tools/make_confusables.py
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import unicodedata
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "confusables.json"
# Scripts that are not look-alike sources: mapping them would only turn real words into noise.
SKIP_RANGES = (
    (0x0590, 0x08FF),  # Hebrew, Arabic, Syriac, Thaana, NKo ...
    (0x0900, 0x0DFF),  # Indic scripts
    (0x0E00, 0x0FFF),  # Thai, Lao, Tibetan
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0xA4CF),  # CJK, kana, Hangul, Yi
    (0xAC00, 0xD7FF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility
    (0x1F1E6, 0x1F1FF),  # regional indicators: flags, not letters
    (0x20000, 0x3FFFF),  # CJK extensions
)
LETTER_LIKE_SYMBOLS = ((0x2460, 0x24FF), (0x1F100, 0x1F1E5))  # enclosed and squared letters


def in_ranges(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def wanted(ch: str) -> bool:
    cp = ord(ch)
    if cp < 0x80 or in_ranges(cp, SKIP_RANGES):
        return False
    category = unicodedata.category(ch)
    return category[0] in "LN" or in_ranges(cp, LETTER_LIKE_SYMBOLS)


def build_table() -> dict[str, str]:
    from decancer_py import parse  # imported late: only the tool venv has it

    table: dict[str, str] = {}
    for cp in range(0x80, 0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        # The hot path runs NFKC + casefold first; only what survives needs an entry.
        for ch in unicodedata.normalize("NFKC", chr(cp)).casefold():
            if ch in table or not wanted(ch):
                continue
            cured = str(parse(ch))
            if cured and cured.isascii() and cured.isalnum() and len(cured) <= 3 and cured != ch:
                table[ch] = cured
    return dict(sorted(table.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    table = build_table()
    document = {
        "source": f"decancer-py=={importlib.metadata.version('decancer-py')} (MIT)",
        "generated_by": "funnel/tools/make_confusables.py",
        "applied_after": "NFKC + casefold",
        "map": table,
    }
    args.out.write_text(json.dumps(document, ensure_ascii=False, indent=0, sort_keys=False) + "\n")
    print(f"{len(table)} entries -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
