"""Language step: no post in a language the funnel cannot read passes without a judge.

Posts written for this project in 14 languages (tests/data/funnel_languages_tune.jsonl: the
per-language keywords and the English gap patterns were chosen while looking at these;
datasets/funnel_languages_heldout.jsonl: written at the same time, never used to choose
keywords, the file docs/funnel.md reports figures on). Real language-ID model, real policies,
real Prometheus registry.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from funnel import Funnel, PolicySpec, load_thresholds
from funnel.language import (
    LanguageConfig,
    LanguageDetector,
    load_detector,
    normalise_tag,
    route_for,
    validate_rules,
)
from funnel.normalise import normalise
from worker.cli.funnel import funnel_group
from worker.config import load_settings
from worker.ops.metrics import Metrics
from worker.policies.files import PolicyError, load_policy_dir
from worker.policies.screening import PolicyRuntime, count_screened, screen, specs_from_policies

ROOT = Path(__file__).resolve().parents[3]
TUNE = ROOT / "tests" / "data" / "funnel_languages_tune.jsonl"
HELDOUT = ROOT / "datasets" / "funnel_languages_heldout.jsonl"
KEYWORD_LANGS = {"es", "fr", "de", "ru", "pt", "it", "tr", "pl"}


def rows(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def labels(row: dict[str, object]) -> dict[str, int]:
    value = row["labels"]
    assert isinstance(value, dict)
    return value


@pytest.fixture(scope="module")
def shipped_specs() -> list[PolicySpec]:
    policies = load_policy_dir(ROOT / "policies")
    return specs_from_policies(policies.policies, load_thresholds(ROOT / "policies"))


@pytest.fixture(scope="module")
def funnel(shipped_specs: list[PolicySpec]) -> Funnel:
    return Funnel.build(shipped_specs)


# ---- pure rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("es", "es"),
        ("pt-BR", "pt"),
        ("EN_us", "en"),
        ("zh-Hant-TW", "zh"),
        ("", None),
        (None, None),
        ("x", None),
        ("english", None),
        ("12", None),
    ],
)
def test_producer_tags_are_reduced_to_their_primary_subtag(tag: str | None, expected: str | None) -> None:
    assert normalise_tag(tag) == expected


def test_route_precedence() -> None:
    plain = LanguageConfig()
    rules = validate_rules({"es": "funnel", "ja": "allow", "default": "judge"}, "t")
    assert route_for("en", {}, plain) == "funnel"  # readable
    assert route_for("und", {}, plain) == "funnel"  # nothing to read
    assert route_for("ru", {}, plain) == "judge"  # unreadable, no rule: judge
    assert route_for("es", rules, plain) == "funnel"  # the policy's own entry
    assert route_for("ja", rules, plain) == "allow"
    assert route_for("ru", {"default": "allow"}, plain) == "allow"  # the policy's default
    assert route_for("en", {"en": "judge"}, plain) == "judge"  # an entry beats readability
    project = LanguageConfig(overrides={"ja": "judge", "default": "allow"})
    assert route_for("ja", rules, project) == "judge"  # project entry beats the policy's
    assert route_for("ru", rules, project) == "allow"  # project default beats the policy's default
    assert route_for("es", rules, project) == "funnel"  # but not the policy's explicit entry
    assert route_for("de", {}, LanguageConfig(readable=frozenset({"en", "de"}))) == "funnel"


@pytest.mark.parametrize(("rules", "message"), [({"spanish": "judge"}, "2-3 letter"), ({"es": "skip"}, "one of")])
def test_bad_rules_are_refused(rules: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_rules(rules, "t")
    with pytest.raises(ValueError, match=message):
        LanguageConfig(overrides=rules)  # type: ignore[arg-type]


# ---- language ID ---------------------------------------------------------------------------


def test_language_id_on_short_written_posts() -> None:
    detector = load_detector()
    foreign = [r for r in rows(TUNE) + rows(HELDOUT) if r["lang"] != "en"]
    assert len({r["lang"] for r in foreign}) >= 12
    right = sum(detector.detect(str(r["text"]))[0] == r["lang"] for r in foreign)
    assert right / len(foreign) >= 0.95
    # Whatever the exact language, none of them is taken for English (they would skip the judge).
    assert not any(detector.detect(str(r["text"]))[1] for r in foreign)


def test_english_posts_are_read_as_english() -> None:
    detector = load_detector()
    texts = [orjson.loads(line)["text"] for line in (ROOT / "datasets" / "funnel_dev.jsonl").read_bytes().splitlines()]
    readable = sum(detector.detect(text)[1] for text in texts)
    assert readable / len(texts) >= 0.97
    assert detector.detect("kill the process, it is hung")[0] == "en"
    # Invisible and bidi control characters say nothing about the language.
    assert detector.detect("plain post 3 \u202eevil\u202c\u200b") == ("en", True)


def test_posts_too_short_to_tell_are_undetermined() -> None:
    detector = LanguageDetector()
    for text in ("😂😂😂", "https://t.co/abc123 @someone #tag", "100%!!! 42", "ok", "lol!!", "matate"):
        assert detector.detect(text) == ("und", True), text
    # One word in another script still says which language it is; two short Spanish words are
    # at least not English (language ID calls them Romansh), so they still go to the judge.
    assert detector.detect("Повесься") == ("ru", False)
    assert detector.detect("Mátate ya")[1] is False


# ---- the funnel with the shipped policies --------------------------------------------------


@pytest.mark.parametrize("path", [TUNE, HELDOUT], ids=["tune", "heldout"])
def test_every_violating_post_in_every_language_reaches_a_judge(funnel: Funnel, path: Path) -> None:
    posts = rows(path)
    assert len({r["lang"] for r in posts}) >= 8
    results = funnel.score_batch([str(r["text"]) for r in posts])
    missed = []
    for post, result in zip(posts, results, strict=True):
        for policy_id in labels(post):
            if policy_id not in result.candidates:
                missed.append((post["text"], policy_id, result.candidates))
        if post["lang"] != "en":
            assert result.route == "judge" and result.lang not in (None, "en"), post["text"]
            # Sent by the language rule, and the signal says so.
            assert all(f"language:{result.lang}" in result.signals[p] for p in result.candidates), result.signals
        else:
            assert result.lang == "en" and result.route == "funnel"
    assert missed == []


def test_the_english_gap_posts_are_candidates_by_their_content(funnel: Funnel) -> None:
    # Instructions for violence, pro-anorexia, gore, implicit threats, dehumanisation (issue 12):
    # caught by keywords/patterns, not by a language rule.
    posts = [r for r in rows(TUNE) + rows(HELDOUT) if r["lang"] == "en"]
    assert len(posts) >= 20
    for post, result in zip(posts, funnel.score_batch([str(r["text"]) for r in posts]), strict=True):
        for policy_id in labels(post):
            assert policy_id in result.candidates, (post["text"], result.signals)
            assert not any(s.startswith("language:") for s in result.signals.get(policy_id, []))


def test_keywords_by_lang_catch_the_written_violations_when_the_funnel_reads_those_languages(
    shipped_specs: list[PolicySpec],
) -> None:
    readable = LanguageConfig(readable=frozenset(KEYWORD_LANGS | {"en"}))
    funnel = Funnel.build(shipped_specs, languages=readable)
    posts = [r for r in rows(TUNE) if r["lang"] in KEYWORD_LANGS]
    results = funnel.score_batch([str(r["text"]) for r in posts])
    for post, result in zip(posts, results, strict=True):
        assert result.route == "funnel"
        for policy_id in labels(post):
            assert policy_id in result.candidates, (post["text"], result.signals)
            assert any(s.startswith(("keyword:", "pattern:")) for s in result.signals[policy_id]), result.signals
    benign = [r for r in rows(TUNE) + rows(HELDOUT) if r["lang"] in KEYWORD_LANGS and not labels(r)]
    passed = sum(r.is_candidate for r in funnel.score_batch([str(r["text"]) for r in benign]))
    # Readable benign posts are screened, not waved through: most are not candidates.
    assert passed < len(benign) / 2, passed


@pytest.mark.parametrize("engine", ["pyahocorasick", "hyperscan"])
def test_non_ascii_keywords_match_on_both_engines(engine: str) -> None:
    if engine == "hyperscan":
        pytest.importorskip("hyperscan")
    spec = PolicySpec("p", keywords=("убей себя", "mátate", "häng dich auf", "orospu çocuğu"))
    funnel = Funnel.build([spec], model_dir=None, engine=engine, languages=None)
    texts = ["УБЕЙ   СЕБЯ!!", "matate ya", "Häng dich doch auf", "sen bir orospu çocuğusun", "orospu çocuğu"]
    got = [r.is_candidate for r in funnel.score_batch(texts)]
    # Case and accents fold on both sides; whole words only ("çocuğusun" is another word).
    assert got == [True, True, False, False, True]


def test_the_producers_tag_wins_over_detection(funnel: Funnel) -> None:
    text = "Te voy a matar cuando salgas del trabajo"
    detected, tagged_en, tagged_es, tagged_und = funnel.score_batch([text] * 4, [None, "en", "es-MX", "und"])
    assert (tagged_und.lang, tagged_und.route) == ("und", "funnel")  # BCP 47 "undetermined"
    assert (detected.lang, detected.route) == ("es", "judge")
    assert (tagged_es.lang, tagged_es.route) == ("es", "judge")
    # The producer says English: the funnel decides (here its Spanish keywords still catch it).
    assert (tagged_en.lang, tagged_en.route) == ("en", "funnel")
    assert "violence" in tagged_en.candidates
    assert not any(s.startswith("language:") for sig in tagged_en.signals.values() for s in sig)


def write_policy(directory: Path, policy_id: str, languages: str) -> None:
    directory.mkdir(exist_ok=True)
    body = textwrap.dedent(
        f"""\
        ---
        id: {policy_id}
        title: Test {policy_id}
        funnel:
          keywords: [kill you]
          keywords_by_lang:
            es: [te voy a matar]
        {languages}
        ---
        ## INSTRUCTIONS
        Classify threats.
        """
    )
    (directory / f"{policy_id}.md").write_text(body, encoding="utf-8")


def test_policy_language_rules_and_project_overrides(tmp_path: Path) -> None:
    write_policy(tmp_path, "strict", "")
    write_policy(tmp_path, "local", "languages: {es: funnel, ja: allow, default: judge}")
    write_policy(tmp_path, "english-only", "languages: {default: allow}")
    specs = specs_from_policies(load_policy_dir(tmp_path).policies)
    funnel = Funnel.build(specs, model_dir=None)
    texts = ["hola, ¿qué tal el fin de semana?", "Te voy a matar", "明日は友達と映画を見に行きます", "Я тебя найду"]
    es_benign, es_threat, ja, ru = funnel.score_batch(texts)
    assert es_benign.candidates == ["strict"] and es_benign.signals["strict"] == ["language:es"]
    assert es_threat.candidates == ["local", "strict"]  # "local": by keyword; "strict": by language
    assert es_threat.signals["local"] == ["keyword:te voy a matar"]
    assert ja.candidates == ["strict"] and ja.route == "judge"
    assert ru.candidates == ["local", "strict"]
    # Project-level: Russian never judged, Japanese judged everywhere.
    project = LanguageConfig(overrides={"ru": "allow", "ja": "judge"})
    _, ja2, ru2 = Funnel.build(specs, model_dir=None, languages=project).score_batch(texts[1:])
    assert ja2.candidates == ["english-only", "local", "strict"]
    assert ru2.candidates == [] and ru2.route == "allow"
    # Off: the pre-language behaviour (only the funnel's own signals).
    assert Funnel.build(specs, model_dir=None, languages=None).score_batch(texts[:1])[0].candidates == []


def test_bad_language_keys_in_front_matter_are_refused(tmp_path: Path) -> None:
    write_policy(tmp_path, "bad", "languages: {spanish: judge}")
    with pytest.raises(PolicyError, match="ISO 639"):
        load_policy_dir(tmp_path)
    write_policy(tmp_path, "bad", "languages: {es: maybe}")
    with pytest.raises(PolicyError, match="languages"):
        load_policy_dir(tmp_path)


# ---- the worker: screen, metric, settings, CLI ------------------------------------------------


def sample(metrics: Metrics, lang: str, route: str) -> float:
    value = metrics.registry.get_sample_value("modstream_funnel_posts_total", {"lang": lang, "route": route})
    return value or 0.0


def test_worker_screen_counts_posts_per_language_and_route() -> None:
    runtime = PolicyRuntime.build(load_policy_dir(ROOT / "policies"))
    metrics = Metrics()
    posts = rows(HELDOUT)
    results = asyncio.run(screen(runtime, [str(r["text"]) for r in posts], [None] * len(posts)))
    count_screened(metrics, [*results, RuntimeError("a post the funnel failed on is not counted")])
    by_lang: dict[str, int] = {}
    for post in posts:
        by_lang[str(post["lang"])] = by_lang.get(str(post["lang"]), 0) + 1
    # Every detected language matches the written one here except where language ID is wrong,
    # so compare totals per route and the per-language counts of the well-detected languages.
    assert sample(metrics, "en", "funnel") == by_lang["en"]
    # Languages language ID gets right on every held-out post are counted exactly (pt and tr
    # each have one post read as es / de: still judged, counted under the detected language).
    for lang in ("ru", "zh", "ja", "ar", "hi", "it", "nl", "fr", "pl"):
        assert sample(metrics, lang, "judge") == by_lang[lang], lang
    samples = [s for m in metrics.registry.collect() if m.name == "modstream_funnel_posts" for s in m.samples]
    counted = {(s.labels["lang"], s.labels["route"]): s.value for s in samples if s.name.endswith("_total")}
    assert sum(counted.values()) == len(posts)
    assert sum(v for (_, route), v in counted.items() if route == "judge") == len(posts) - by_lang["en"]


def test_settings_carry_the_language_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODSTREAM_LANGUAGES__READABLE", '["en", "es"]')
    monkeypatch.setenv("MODSTREAM_LANGUAGES__ROUTES", '{"ja": "allow"}')
    config = load_settings().languages.config()
    assert config is not None
    assert config.readable == frozenset({"en", "es"}) and dict(config.overrides) == {"ja": "allow"}
    monkeypatch.setenv("MODSTREAM_LANGUAGES__DETECT", "false")
    assert load_settings().languages.config() is None
    monkeypatch.setenv("MODSTREAM_LANGUAGES__ROUTES", '{"japanese": "allow"}')
    with pytest.raises(Exception, match="languages"):
        load_settings()


def test_funnel_score_cli_reports_language_and_route(tmp_path: Path) -> None:
    posts = tmp_path / "posts.jsonl"
    posts.write_bytes(
        b"\n".join(
            orjson.dumps(p)
            for p in (
                {"id": "ru", "text": "Я тебя убью, я знаю где ты живёшь"},
                {"id": "tagged", "text": "Я тебя убью", "lang": "ru-RU"},
                {"id": "en", "text": "see you at the game tonight"},
            )
        )
        + b"\n"
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        funnel_group, ["score", "--policies", str(ROOT / "policies"), "--input", str(posts), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    ru, tagged, en = (orjson.loads(line) for line in out.read_bytes().splitlines())
    assert (ru["lang"], ru["route"], ru["candidate"]) == ("ru", "judge", True)
    assert "language:ru" in ru["signals"]["hate"]
    assert (tagged["lang"], tagged["route"]) == ("ru", "judge")
    assert (en["lang"], en["route"]) == ("en", "funnel")
    result = CliRunner().invoke(
        funnel_group,
        [
            "score",
            "--policies",
            str(ROOT / "policies"),
            "--input",
            str(posts),
            "--output",
            str(out),
            "--readable",
            "en,ru",
        ],
    )
    assert result.exit_code == 0, result.output
    ru = orjson.loads(out.read_bytes().splitlines()[0])
    assert (ru["lang"], ru["route"]) == ("ru", "funnel")
    assert "violence" in ru["policies"] and "hate" not in ru["policies"]  # by its Russian keyword only


# ---- item 6: patterns and keywords see de-leeted, de-spaced text ----------------------------


def test_the_docs_leet_example_is_a_candidate(funnel: Funnel) -> None:
    result = funnel.score("fr33 v-bucks at bit.ly/x")
    assert "game-cheating" in result.candidates
    assert any(s.startswith("pattern:") for s in result.signals["game-cheating"])


def test_patterns_see_the_plain_form_and_still_the_clean_one() -> None:
    assert normalise("fr33 v-bucks at bit.ly/x").plain == "free v-bucks at bit.ly/x"
    assert normalise("f r e e robux here").plain == "free robux here"
    assert normalise("plain text").plain is None
    spec = PolicySpec("p", patterns=(r"\bfree\s+(robux|v-?bucks)\b", r"\b5\s*star\b"))
    funnel = Funnel.build([spec], model_dir=None, languages=None)
    texts = ["fr33 v-bucks", "f r e e robux", "FREE V-BUCKS", "5star reviews", "free time"]
    assert [r.is_candidate for r in funnel.score_batch(texts)] == [True, True, True, True, False]
