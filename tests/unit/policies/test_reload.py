"""PolicyReloader in-process: swap on change, keep serving on a broken edit, SIGHUP-style requests.
The worker-level test (a file edited under a running worker) is tests/integration/test_reload.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from funnel import SIDECAR_NAME
from tests.judges_support import policy_text, write_policy
from worker.policies.reload import PolicyReloader, ReloadResult


class Counts:
    def __init__(self) -> None:
        self.results: list[ReloadResult] = []

    def __call__(self, result: ReloadResult) -> None:
        self.results.append(result)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    write_policy(tmp_path, "alpha", ["alphaword"])
    write_policy(tmp_path, "beta", ["betaword"])
    return tmp_path


def versions(reloader: PolicyReloader) -> dict[str, str]:
    return {p.id: p.version for p in reloader.runtime.policies.policies}


async def test_unchanged_directory_is_not_reloaded(policy_dir: Path) -> None:
    counts = Counts()
    reloader = PolicyReloader(policy_dir, counts)
    runtime = reloader.runtime
    assert await reloader.check() == "unchanged"
    assert reloader.runtime is runtime and counts.results == []


async def test_an_edit_swaps_in_a_complete_new_runtime(policy_dir: Path) -> None:
    counts = Counts()
    reloader = PolicyReloader(policy_dir, counts)
    before = versions(reloader)
    write_policy(policy_dir, "alpha", ["alphaword", "newword"], extra="Now stricter.")
    assert await reloader.check() == "ok"
    after = versions(reloader)
    assert after["alpha"] != before["alpha"] and after["beta"] == before["beta"]
    assert "Now stricter." in reloader.runtime.policies.by_id()["alpha"].prompt
    # The funnel was rebuilt for the new hints, as part of the same snapshot.
    assert reloader.runtime.funnel.score("newword").candidates == ["alpha"]
    assert counts.results == ["ok"]


@pytest.mark.parametrize(
    "broken",
    [
        "no front matter at all\n",
        "---\nid: alpha\ntitle: [unclosed\n---\nbody\n",
        "---\nid: alpha\ntitle: A\nunknown_field: 1\n---\nbody\n",
        policy_text("alpha", ["a"], shadow=True, shadow_of="nobody"),
        policy_text("alpha", ["a"], funnel={"patterns": ["(unclosed"]}),
    ],
    ids=["no-front-matter", "bad-yaml", "unknown-field", "dangling-shadow-of", "bad-pattern"],
)
async def test_a_broken_edit_is_rejected_and_the_old_version_keeps_serving(policy_dir: Path, broken: str) -> None:
    counts = Counts()
    reloader = PolicyReloader(policy_dir, counts)
    serving = reloader.runtime
    (policy_dir / "alpha.md").write_text(broken, encoding="utf-8")
    assert await reloader.check() == "error"
    assert reloader.runtime is serving
    assert await reloader.check() == "unchanged", "one error per broken edit, not one per poll"
    write_policy(policy_dir, "alpha", ["alphaword"], extra="Fixed.")
    assert await reloader.check() == "ok"
    assert "Fixed." in reloader.runtime.policies.by_id()["alpha"].prompt
    assert counts.results == ["error", "ok"]


async def test_removing_every_policy_is_an_error_not_an_empty_policy_set(policy_dir: Path) -> None:
    reloader = PolicyReloader(policy_dir)
    serving = reloader.runtime
    for path in policy_dir.glob("*.md"):
        path.unlink()
    assert await reloader.check() == "error"
    assert reloader.runtime is serving


async def test_request_reloads_at_once_without_waiting_for_the_poll(policy_dir: Path) -> None:
    counts = Counts()
    reloader = PolicyReloader(policy_dir, counts)
    watching = asyncio.create_task(reloader.watch(interval_s=0))  # polling off: only requests
    try:
        write_policy(policy_dir, "beta", ["betaword"], extra="Edited.")
        reloader.request()
        async with asyncio.timeout(10):
            while counts.results != ["ok"]:
                await asyncio.sleep(0.01)  # poll interval, not a synchronisation
        assert "Edited." in reloader.runtime.policies.by_id()["beta"].prompt
        reloader.request()  # nothing changed: a forced check that finds the same version
        async with asyncio.timeout(10):
            while counts.results != ["ok", "unchanged"]:
                await asyncio.sleep(0.01)
    finally:
        watching.cancel()


async def test_polling_picks_up_an_edit(policy_dir: Path) -> None:
    counts = Counts()
    reloader = PolicyReloader(policy_dir, counts)
    watching = asyncio.create_task(reloader.watch(interval_s=0.05))
    try:
        write_policy(policy_dir, "alpha", ["alphaword"], extra="Polled.")
        async with asyncio.timeout(10):
            while counts.results != ["ok"]:
                await asyncio.sleep(0.01)
        assert "Polled." in reloader.runtime.policies.by_id()["alpha"].prompt
    finally:
        watching.cancel()


async def test_a_new_thresholds_sidecar_is_reloaded_and_a_broken_one_rejected(policy_dir: Path) -> None:
    counts = Counts()
    reloader = PolicyReloader(policy_dir, counts)
    assert reloader.runtime.funnel.score("alphaword").candidates == ["alpha"]  # one keyword: 0.55 >= 0.5
    sidecar = policy_dir / SIDECAR_NAME
    sidecar.write_text("policies:\n  alpha: {threshold: 0.9}\n", encoding="utf-8")
    assert await reloader.check() == "ok"
    assert reloader.runtime.funnel.score("alphaword").candidates == [], "the calibrated threshold applies"
    assert versions(reloader) == versions(PolicyReloader(policy_dir)), "policy versions are unchanged"
    serving = reloader.runtime
    sidecar.write_text("policies: [not, a, mapping]\n", encoding="utf-8")
    assert await reloader.check() == "error"
    assert reloader.runtime is serving
    assert counts.results == ["ok", "error"]


async def test_keywords_only_never_loads_the_embedding_model_and_keeps_keyword_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`funnel_embeddings: false`: the runtime (first build and every reload) has no embedding
    stage, and the keyword and pattern stages decide exactly as with embeddings on."""
    shipped = Path(__file__).resolve().parents[3] / "policies"
    texts = [
        "crypto giveaway, send 1 BTC get 2 back",
        "selling aimbot undetected",
        "paid review 5 stars",
        "Had a lovely walk by the river",
        "k i l l yourself",
        "fr33 v-bucks at bit.ly/x",
    ]
    full = PolicyReloader(shipped).runtime.funnel.score_batch(texts)

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedding model must not be loaded with embeddings off")

    monkeypatch.setattr("funnel.core.load_embedder", no_model)
    reloader = PolicyReloader(shipped, embeddings=False, use_heads=True)
    assert await reloader.check(force=True) == "unchanged"  # a rebuild, still without the model
    funnel = reloader.runtime.funnel
    assert funnel.embedder is None and funnel.exemplars is None and funnel.fit_id is None
    lexical = funnel.score_batch(texts)

    def lexical_signals(signals: dict[str, list[str]]) -> dict[str, list[str]]:
        kept = {k: [s for s in v if s.startswith(("keyword:", "pattern:"))] for k, v in signals.items()}
        return {k: v for k, v in kept.items() if v}

    assert [lexical_signals(r.signals) for r in full] == [r.signals for r in lexical]
    assert any(r.candidates for r in lexical)
    for with_embedding, keywords_only in zip(full, lexical, strict=True):
        # Embeddings only add evidence: every keyword/pattern candidate stays a candidate.
        assert set(keywords_only.candidates) <= set(with_embedding.candidates)
        assert not any(s.startswith("embedding:") for v in keywords_only.signals.values() for s in v)


def test_the_setting_reads_its_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.config import Settings

    assert Settings().funnel_embeddings is True
    monkeypatch.setenv("MODSTREAM_FUNNEL_EMBEDDINGS", "false")
    assert Settings().funnel_embeddings is False
