"""Normalisation against evasion: make obfuscated text and keywords meet in one form.

Each post is turned into three strings (the original stays untouched for the judge):

* `clean` — NFKC/NFKD compatibility folding, casefold, zero-width/bidi/variation-selector/zalgo marks removed,
  look-alike letters folded to ASCII (table derived once from decancer-py, see
  funnel/tools/make_confusables.py), whitespace collapsed. Punctuation survives, so
  regex `patterns:` (URLs, prices, handles) run on this form.
* `words` — `clean` with spaced-out letters joined ("k i l l", "k.i.l.l" → "kill"),
  leetspeak undone inside tokens that mix letters and digits/symbols ("fr33 m0ney" →
  "free money"), every other non-word character turned into a space. The embedding stage
  reads this form.
* `key` — `words` with every run of a repeated character squeezed to one ("kiiilll" →
  "kil"). Keywords are normalised the same way and matched here as whole words; the
  keyword stage checks run lengths afterwards (see keywords.py) so that squeezing never
  makes "ass" match "as".

"1", "!" and "|" are ambiguous in leetspeak (i or l), so they become "1" and the keyword
stage adds keyword variants with "1" in place of i/l; no guess is made on the text side.
All of it is applied identically to keywords, so matching is symmetric by construction.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources

# Characters that render as nothing (or only change direction) and are used to split words
# invisibly: zero-width space/joiners, bidi controls, variation selectors, tags, fillers.
_INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE007F),
    (0xE0100, 0xE01EF),
)
# Combining marks stacked on Latin letters ("zalgo"); Indic/Arabic marks are left alone
# because there they are part of the spelling, not decoration.
_ZALGO_RANGES: tuple[tuple[int, int], ...] = (
    (0x0300, 0x036F),
    (0x0483, 0x0489),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)

# Unambiguous leetspeak, applied only inside tokens that also hold a letter, so numbers,
# prices and dates are left alone. "1", "!" and "|" are handled separately (see above).
LEET_TABLE: dict[int, str] = str.maketrans({"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})

# A letter next to a digit or leet symbol: a cheap test that most posts fail, so the
# token-by-token pass below runs only where leetspeak may be. A leading "@" is a mention,
# not leetspeak ("@sam"), so it does not count.
_LEET_HINT = re.compile(r"[a-z][0-9$|]|[0-9$!|][a-z]|[a-z][!@](?=[a-z0-9])")
# Tokens that hold a digit and a letter: only these may be leetspeak.
_MIXED_TOKEN = re.compile(r"(?<!\S)(?=\S*[a-z])(?=\S*[0-9@$!|])\S+")
# Links are codes, not words: "t.co/ab3x" must not become "t.co/abex".
_LINK = re.compile(r"[a-z][a-z0-9+.-]*://|www\.")
# A number with a unit or ordinal suffix ("5min", "3rd", "$20k", "4k"): not leetspeak.
_NUMBERISH = re.compile(
    r"[$€£#+(-]?\d[\d.,:/%x-]*"
    r"(?:st|nd|rd|th|s|k|m|b|d|h|am|pm|yo|yrs?|hrs?|mins?|secs?|kg|km|lbs?|gb|mb|tb|cm|mm|ft|px|fps|hz|p|x)?"
    r"[%.,!?:;)]*"
)
# "!" followed by a letter or digit stands for i/l ("k!ll"); at the end it is just "!".
# "|" is hardly ever punctuation inside a word, so after a letter it is i/l too ("ki||").
_INNER_BANG = re.compile(r"[!|]+(?=[^\W_])|(?<=[^\W_])\|+")

# Three or more single letters separated by spaces or punctuation: "k i l l", "k.i.l.l",
# "f-r-e-e". Runs of two ("e.g") are normal writing and are left alone.
# The same separator must repeat ("i'm a" is not "k-i-l-l"); apostrophes never separate.
_UNIT = r"[\w@$]"
_SEPARATOR = r"[ .\-_*,·•/\\+~]{1,3}"
_SPACED_OUT = re.compile(rf"(?<![\w@$'’]){_UNIT}({_SEPARATOR}){_UNIT}(?:\1{_UNIT})+(?![\w@$])")
_SEPARATORS = re.compile(_SEPARATOR)


def _mark_class() -> str:
    """A regex class body of every combining mark (Mn/Mc/Me): in Indic scripts these are
    part of the word, but `re`'s \\w does not include them."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x0300, 0x20000):
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges)


_NON_WORD = re.compile(rf"[^\w{_mark_class()}]+|_+")
# Every non-alphanumeric ASCII byte becomes a space: bytes.translate is ~0.2 µs per post.
_ASCII_PUNCT_TO_SPACE = bytes((c if chr(c).isascii() and chr(c).isalnum() else 0x20) for c in range(256))
# Deleting each character that equals the next one squeezes runs; a literal replacement
# keeps re.sub in C (a "\\1" template is 3x slower on CPython 3.11).
_RUN_TAIL = re.compile(r"(.)(?=\1)")


def _ranges_to_table(ranges: tuple[tuple[int, int], ...]) -> dict[int, None]:
    return {cp: None for lo, hi in ranges for cp in range(lo, hi + 1)}


@cache
def fold_table() -> dict[int, str | None]:
    """The one `str.translate` table: invisibles and zalgo removed, look-alikes folded."""
    data = json.loads(resources.files("funnel").joinpath("data/confusables.json").read_text("utf-8"))
    table: dict[int, str | None] = {ord(k): v for k, v in data["map"].items()}
    table.update(_ranges_to_table(_INVISIBLE_RANGES))
    table.update(_ranges_to_table(_ZALGO_RANGES))
    return table


@dataclass(frozen=True, slots=True)
class Normalised:
    clean: str
    words: str
    key: str
    # Tokens that were spelled out letter by letter ("k i l l y o u r s e l f"), in `key`
    # form: they are searched for keywords without word boundaries (see keywords.py).
    squashed: tuple[str, ...] = ()
    # `clean` with spelled-out letters joined and leetspeak undone, punctuation kept
    # ("fr33 v-bucks at bit.ly/x" → "free v-bucks at bit.ly/x"); None when it equals `clean`.
    # Patterns are matched on both forms (see patterns.py).
    plain: str | None = None


def fold(text: str) -> str:
    """Compatibility-fold, casefold, invisibles/zalgo out, look-alikes folded; whitespace collapsed."""
    if text.isascii():
        # ASCII has nothing NFKC or the table would change: skip both (most posts).
        return " ".join(text.lower().split())
    # NFKD, not NFKC: it also splits accented letters into letter + combining mark, so the
    # zalgo ranges strip decoration from "ẗ" or "ǎ" even where no precomposed look-alike is in
    # the table; NFC afterwards recomposes what is left (Hangul, Indic scripts).
    folded = unicodedata.normalize("NFKD", text).casefold().translate(fold_table())
    return " ".join(unicodedata.normalize("NFC", folded).split())


def _deleet_token(match: re.Match[str]) -> str:
    token = match.group()
    if _NUMBERISH.fullmatch(token) or _LINK.match(token):
        return token
    mention = token.startswith("@")
    token = _INNER_BANG.sub(lambda m: "1" * len(m.group()), token).translate(LEET_TABLE)
    return "@" + token[1:] if mention else token


def deleet(text: str) -> str:
    """Undo leetspeak inside tokens that mix letters with digits or @ $ ! |."""
    if _LEET_HINT.search(text) is None:
        return text
    return _MIXED_TOKEN.sub(_deleet_token, text)


def punct_to_space(text: str) -> str:
    """Every character that is not a letter or digit becomes a space; spaces collapsed."""
    if text.isascii():
        return " ".join(text.encode("ascii").translate(_ASCII_PUNCT_TO_SPACE).decode("ascii").split())
    return " ".join(_NON_WORD.sub(" ", text).split())


def squeeze(text: str) -> str:
    """Every run of one repeated character becomes one character: "kiiilll" → "kil"."""
    return _RUN_TAIL.sub("", text)


def run_lengths(text: str) -> list[int]:
    """Length of each run of equal characters; aligned with `squeeze(text)` position by position."""
    lengths: list[int] = []
    previous = ""
    for ch in text:
        if ch == previous:
            lengths[-1] += 1
        else:
            lengths.append(1)
            previous = ch
    return lengths


def normalise(text: str) -> Normalised:
    clean = fold(text)
    joined = clean
    squashed: list[str] = []
    if _SPACED_OUT.search(clean) is not None:

        def join(match: re.Match[str]) -> str:
            token = _SEPARATORS.sub("", match.group())
            squashed.append(token)
            return token

        joined = _SPACED_OUT.sub(join, clean)
    deleeted = deleet(joined)
    words = punct_to_space(deleeted)
    key = squeeze(words)
    plain = deleeted if deleeted != clean else None
    if squashed:
        squashed_keys = tuple(squeeze(punct_to_space(deleet(token))).replace(" ", "") for token in squashed)
        return Normalised(clean, words, key, squashed_keys, plain)
    return Normalised(clean, words, key, plain=plain)


def normalise_batch(texts: list[str]) -> list[Normalised]:
    return [normalise(text) for text in texts]


def normalise_keyword(keyword: str) -> str:
    """A keyword in `words` form (leet undone, punctuation to spaces), before squeezing."""
    normalised = normalise(keyword)
    return normalised.words
