"""Policy hot reload: users edit a policy file and the worker judges with it within seconds.

The worker reads `reloader.runtime` once per consumed batch, so every post is screened and
judged under one `PolicyRuntime` (policy snapshot + compiled funnel). A reload reads the
directory once, builds a complete new runtime in a thread (the funnel compile is CPU work), and
only then swaps the reference. A broken edit (bad YAML, invalid front matter, a pattern that does
not compile, a dangling `shadow_of`) is logged and counted as `result="error"`; the old version
keeps serving until a later edit fixes it.

Triggers: polling the content hash of the directory's policy files and funnel-thresholds sidecar
every `policy_reload_interval_s` (no extra dependency, works on every volume type including
Kubernetes ConfigMap symlink swaps), and SIGHUP (`request()`), which reloads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import structlog

from funnel import SIDECAR_NAME
from funnel.core import DEFAULT_LANGUAGES
from funnel.heads import HEADS_NAME
from funnel.language import LanguageConfig
from worker.policies.files import PolicyError, files_fingerprint, load_policy_files, read_policy_files
from worker.policies.screening import PolicyRuntime

log = structlog.get_logger("modstream.reload")

ReloadResult = Literal["ok", "error", "unchanged"]


def build_runtime(
    directory: Path,
    files: dict[Path, bytes],
    languages: LanguageConfig | None = DEFAULT_LANGUAGES,
    use_heads: bool = False,
    embeddings: bool = True,
) -> PolicyRuntime:
    return PolicyRuntime.build(load_policy_files(directory, files), languages, use_heads, embeddings)


def read_watched(directory: Path) -> tuple[dict[Path, bytes], str]:
    """The policy files and the fingerprint of everything a runtime is built from: the policy files
    and the funnel's sidecars (calibrated thresholds, fitted heads)."""
    files = read_policy_files(directory)
    extra: dict[Path, bytes] = {}
    # The funnel's sidecars: calibrated thresholds and fitted heads (`modstream funnel fit`).
    for sidecar in (directory / SIDECAR_NAME, directory / HEADS_NAME):
        try:
            extra[sidecar] = sidecar.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise PolicyError(f"cannot read {sidecar}: {exc.strerror}") from exc
    return files, files_fingerprint({**files, **extra})


class PolicyReloader:
    """Owns the current PolicyRuntime of one policy directory."""

    def __init__(
        self,
        directory: Path,
        count: Callable[[ReloadResult], None] | None = None,
        languages: LanguageConfig | None = DEFAULT_LANGUAGES,
        use_heads: bool = False,
        embeddings: bool = True,
    ) -> None:
        """Loads the directory now: a broken directory at start-up is a start-up error (PolicyError).
        `languages`: the project's language settings for every funnel built (None: no language step);
        `use_heads`: score with the directory's fitted heads (Settings.funnel_heads); `embeddings`:
        the funnel's embedding stage (Settings.funnel_embeddings; False: keywords and patterns only)."""
        self.directory = directory
        self.languages = languages
        self.use_heads = use_heads
        self.embeddings = embeddings
        files, self._seen = read_watched(directory)
        self.runtime = build_runtime(directory, files, languages, use_heads, embeddings)
        self._serving = self._seen  # fingerprint of what `runtime` was built from
        self._count = count
        self._wake = asyncio.Event()

    def request(self) -> None:
        """Reload now (SIGHUP), even if the content hash looks unchanged. Call on the loop thread."""
        self._wake.set()

    async def watch(self, interval_s: float) -> None:
        """Poll every `interval_s` (0: only on request()) until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval_s if interval_s > 0 else None)
            forced = self._wake.is_set()
            self._wake.clear()
            await self.check(force=forced)

    async def check(self, force: bool = False) -> ReloadResult:
        try:
            files, fingerprint = await asyncio.to_thread(read_watched, self.directory)
        except PolicyError as exc:  # the directory is gone or unreadable: report it once, not every poll
            marker = f"unreadable: {exc}"
            if marker == self._seen and not force:
                return "unchanged"
            self._seen = marker
            return self._failed(str(exc), None)
        if fingerprint == self._seen and not force:
            return "unchanged"
        # Remember what we tried even if it fails: one error per broken edit, not one per poll.
        self._seen = fingerprint
        try:
            runtime = await asyncio.to_thread(
                build_runtime, self.directory, files, self.languages, self.use_heads, self.embeddings
            )
        except Exception as exc:  # PolicyError, a funnel pattern that does not compile, ...
            return self._failed(f"{type(exc).__name__}: {exc}", fingerprint)
        old = self.runtime.policies
        if fingerprint == self._serving:  # e.g. SIGHUP with nothing changed, or an edit reverted
            self._record("unchanged")
            return "unchanged"
        # A thresholds-only change keeps every policy_version but still gets the new funnel.
        self.runtime, self._serving = runtime, fingerprint
        before = {p.id: p.version for p in old.policies}
        after = {p.id: p.version for p in runtime.policies.policies}
        log.info(
            "policies_reloaded",
            directory=str(self.directory),
            version=runtime.policies.version,
            changed=sorted(pid for pid in after if before.get(pid) != after[pid]),
            removed=sorted(set(before) - set(after)),
            policies=[f"{pid}@{version}" for pid, version in after.items()],
        )
        self._record("ok")
        return "ok"

    def _failed(self, error: str, fingerprint: str | None) -> ReloadResult:
        log.error(
            "policy_reload_failed",
            directory=str(self.directory),
            error=error,
            fingerprint=fingerprint,
            serving=self.runtime.policies.version,
        )
        self._record("error")
        return "error"

    def _record(self, result: ReloadResult) -> None:
        if self._count is not None:
            self._count(result)
