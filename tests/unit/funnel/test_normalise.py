"""Normalisation rules, one by one, with adversarial examples.

Each case is an obfuscation that defeats a naive matcher (casefold + whole-word regex) and
must be caught after normalisation by the funnel's keyword stage. Cases that must *not*
match guard against normalising too eagerly.
"""

from __future__ import annotations

import random
import re

import pytest

from funnel import PolicySpec
from funnel.keywords import KeywordStage
from funnel.normalise import deleet, fold, normalise, punct_to_space, run_lengths, squeeze

STAGE = KeywordStage(
    [
        PolicySpec("p", keywords=("kill", "kill yourself", "free money", "sex", "ass", "idiot", "loser", "fire")),
    ],
    engine="pyahocorasick",
)


def naive(keyword: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(keyword)}\b", text.casefold()) is not None


def caught(keyword: str, text: str) -> bool:
    hits = STAGE.match_batch([normalise(text)])[0]
    return any(hit.keyword == keyword for hit in hits)


ADVERSARIAL = [
    # (rule, keyword, obfuscated text)
    ("fullwidth (NFKC)", "kill", "i will ｋｉｌｌ you"),
    ("mathematical bold (NFKC)", "kill", "𝐤𝐢𝐥𝐥 them"),
    ("circled letters (NFKC)", "kill", "ⓚⓘⓛⓛ"),
    ("superscript letters (NFKC)", "kill", "ᵏⁱˡˡ"),
    ("Cyrillic look-alikes", "kill", "кіll"),
    ("Greek look-alikes", "idiot", "ιdιοt"),
    ("small capitals", "kill", "ᴋɪʟʟ"),
    ("zero-width space", "kill", "ki\u200bll"),
    ("zero-width joiner", "free money", "fr\u200dee mon\u200dey"),
    ("soft hyphen", "idiot", "idi\u00adot"),
    ("bidi override", "kill", "ki\u202ell\u202c"),
    ("bidi isolates inside a word", "loser", "lo\u2066\u2069ser"),
    ("variation selector", "kill", "ki\ufe0fll"),
    ("zalgo combining marks", "kill", "k̶i̷l̸l̵"),
    ("accents", "idiot", "ìdíöt"),
    ("leet digits", "kill", "k1ll"),
    ("leet 0 and 3", "free money", "fr33 m0ney"),
    ("leet 4 and 5", "ass", "4s5"),
    ("leet @", "ass", "a$$"),
    ("leet $", "sex", "$ex"),
    ("leet ! as i", "kill", "k!ll"),
    ("leet | as l", "kill", "ki||"),
    ("leet 1 as l", "kill", "ki11"),
    ("spaced letters", "kill", "k i l l"),
    ("dotted letters", "kill", "k.i.l.l"),
    ("hyphenated letters", "idiot", "i-d-i-o-t"),
    ("starred letters", "loser", "l*o*s*e*r"),
    ("spaced phrase", "kill yourself", "k i l l y o u r s e l f"),
    ("spaced word inside a phrase", "kill yourself", "k i l l yourself"),
    ("repeated letters", "kill", "kiiiiilllll"),
    ("repeated letters in a phrase", "free money", "freeeee moneyyyy"),
    ("mixed tricks", "kill yourself", "K1LLLL Y0URSELF"),
    ("mixed script and leet", "free money", "ｆｒ33 mоnеy"),
]


@pytest.mark.parametrize(("rule", "keyword", "text"), ADVERSARIAL, ids=[case[0] for case in ADVERSARIAL])
def test_obfuscation_defeats_naive_matcher_but_not_the_funnel(rule: str, keyword: str, text: str) -> None:
    assert not naive(keyword, text), f"{rule}: the naive matcher already catches {text!r}; not adversarial"
    assert caught(keyword, text), f"{rule}: {text!r} → {normalise(text)} did not match {keyword!r}"


NOT_MATCHES = [
    ("a shorter word is not an elongation", "ass", "as i said"),
    ("no match inside a longer word", "kill", "skills and killer apps"),
    ("numbers stay numbers", "sex", "5 ex-partners"),
    ("units are not leet", "ass", "45min ago"),
    ("a mention is not leet", "ass", "@ss_official said hi"),
    ("two letters are not a spelled-out word", "sex", "s e"),
    ("spelled-out tokens need 4+ letters for in-word hits", "ass", "a s s e s s m e n t"),
]


@pytest.mark.parametrize(("why", "keyword", "text"), NOT_MATCHES, ids=[case[0] for case in NOT_MATCHES])
def test_no_false_match(why: str, keyword: str, text: str) -> None:
    assert not caught(keyword, text), f"{why}: {text!r} → {normalise(text)}"


def test_apostrophes_do_not_join_letters() -> None:
    assert normalise("i'm a b c").words == "i m abc"
    assert normalise("I'm a big fan").squashed == ()


def test_case_and_glued_punctuation() -> None:
    assert caught("kill", "...KILL!!!")
    assert caught("idiot", "(idiot)")


def test_forms() -> None:
    n = normalise("Fr33  M0NEY!!! at ｂｉｔ.ly/x")
    assert n.clean == "fr33 m0ney!!! at bit.ly/x"  # punctuation kept for patterns
    assert n.words == "free money at bit ly x"
    assert n.key == "fre money at bit ly x"


def test_ascii_fast_path_equals_unicode_path() -> None:
    text = "Kill The Process, NOW"
    assert fold(text) == fold(text + "\u200b").rstrip()


def test_non_latin_scripts_survive() -> None:
    assert normalise("नमस्ते दुनिया").words == "नमस्ते दुनिया"
    assert normalise("한국어 텍스트").words == "한국어 텍스트"


def test_deleet_keeps_numbers_links_and_units() -> None:
    assert deleet("won 3 - 1 at 5pm, 2nd place, $20k") == "won 3 - 1 at 5pm, 2nd place, $20k"
    assert deleet("see http://t.co/ab3x") == "see http://t.co/ab3x"
    assert deleet("m0n3y") == "money"


def test_punct_to_space() -> None:
    assert punct_to_space("a,b;c — d_e") == "a b c d e"


def test_squeeze_and_run_lengths_align() -> None:
    text = " kiiilll  you "
    assert squeeze(text) == " kil you "
    assert len(run_lengths(text)) == len(squeeze(text))
    assert run_lengths("aabccc") == [2, 1, 3]


def test_original_text_is_not_changed() -> None:
    original = "k1ll\u200b"
    normalise(original)
    assert original == "k1ll\u200b"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_obfuscations_of_keywords_are_caught(seed: int) -> None:
    """Property: any mix of the tricks above on a keyword is still caught (seeded)."""
    rng = random.Random(seed)
    cyrillic = {"a": "а", "e": "е", "i": "і", "o": "о", "s": "ѕ", "y": "у"}
    leet = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "l": "1"}

    def obfuscate(word: str) -> str:
        out = []
        for ch in word:
            roll = rng.random()
            if ch != " " and roll < 0.2:
                ch = cyrillic.get(ch, ch)
            elif ch != " " and roll < 0.4:
                ch = leet.get(ch, ch)
            elif ch != " " and roll < 0.5:
                ch = ch * rng.randint(2, 4)
            elif ch != " " and roll < 0.6:
                ch = ch.upper()
            out.append(ch + ("\u200b" if rng.random() < 0.2 else ""))
        return "".join(out)

    for keyword in ("kill", "kill yourself", "free money", "idiot", "loser"):
        for _ in range(20):
            text = f"so {obfuscate(keyword)} now"
            assert caught(keyword, text), f"{text!r} → {normalise(text)}"
