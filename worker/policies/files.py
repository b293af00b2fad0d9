"""Policy files (docs/writing-policies.md): Markdown with YAML front matter, one policy per file.

The body is the prompt sent to the judge as the system message, byte for byte; the front
matter carries the funnel hints and escalation knobs. `version` is a hash of the whole file,
so any edit (prompt or hints) yields a new version that is stamped on every verdict.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.contracts import Action, Confidence, PViolationBand, Severity

LanguageRoute = Literal["judge", "funnel", "allow"]
# A violated policy's action when its front matter names none for the result's severity.
DEFAULT_ACTION: Action = "hide"
FRONT_MATTER_FENCE = "---"


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the problem."""


class FunnelHints(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keywords: list[str] = Field(default_factory=list)
    # Keywords in other languages ({"es": [...], "ru": [...]}), matched on every post like
    # `keywords` (same normaliser); see docs/funnel.md, "Languages".
    keywords_by_lang: dict[str, list[str]] = Field(default_factory=dict)
    patterns: list[str] = Field(default_factory=list)
    exemplars: list[str] = Field(default_factory=list)
    # Score at or above which a post becomes a judge candidate for this policy.
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # Score at or above which the funnel is "very sure" (a tier-1 "safe" then escalates).
    very_sure: float = Field(default=0.95, ge=0.0, le=1.0)
    # Share of the posts the funnel clears for this policy that tier 1 judges anyway (funnel
    # recall measured in production); unset: the worker's `escalation.bypass_sample_rate`.
    bypass_sample_rate: float | None = Field(default=None, ge=0.0, le=1.0)


class EscalationHints(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Tier-1 answers below this confidence escalate to tier 2.
    min_confidence: Confidence = "high"
    # Categories whose "violation" must be confirmed by tier 2 before it hides anything.
    severe_categories: list[str] = Field(default_factory=list)
    # [low, high]: a tier-1 p_violation strictly inside escalates (`uncertain_probability`); unset =
    # the worker's `escalation.p_violation_band`; [0.5, 0.5] turns it off for this policy.
    p_violation_band: PViolationBand | None = None


class PolicyFrontMatter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,63}$")
    title: str
    severity: Severity = "medium"
    # Shadow policies are judged and audited but never change the decision.
    shadow: bool = False
    # The live policy a shadow policy is a candidate replacement for: the funnel screens the shadow
    # with its twin's candidates, and agreement with the twin is counted per post.
    shadow_of: str | None = None
    funnel: FunnelHints = Field(default_factory=FunnelHints)
    # Per language (ISO 639 code) or `default` (languages the funnel cannot read): `judge` (a
    # candidate whatever the funnel's score), `funnel` (the funnel decides) or `allow` (never a
    # candidate). Unlisted: readable languages `funnel`, others `default` (itself `judge`).
    languages: dict[str, LanguageRoute] = Field(default_factory=dict)
    escalation: EscalationHints = Field(default_factory=EscalationHints)
    # What a violation of this policy asks downstream to do (docs/workflow.md, "Verdicts"): one action
    # (`action: label`) or one per severity of the result (`action: {high: age_gate, severe: hide}`;
    # a result is `severe` when the policy is or its category is in `escalation.severe_categories`).
    # Unset, or a severity not listed: `hide`. `review`: a human decides before anything is applied.
    action: Action | dict[Severity, Action] = "hide"

    @field_validator("languages")
    @classmethod
    def _language_keys(cls, value: dict[str, LanguageRoute]) -> dict[str, LanguageRoute]:
        bad = [key for key in value if not re.fullmatch(r"[a-z]{2,3}|default", key)]
        if bad:
            raise ValueError(f"language keys must be 2-3 letter ISO 639 codes or 'default', not {bad}")
        return value

    @model_validator(mode="after")
    def _shadow_of_needs_shadow(self) -> PolicyFrontMatter:
        if self.shadow_of is not None and not self.shadow:
            raise ValueError("shadow_of is only allowed on a shadow policy (set `shadow: true`)")
        if self.shadow_of == self.id:
            raise ValueError("a shadow policy cannot be the shadow of itself")
        return self

    def severity_of(self, category: str | None) -> Severity:
        """A result's severity: `severe` when its category is one of `escalation.severe_categories`,
        else the policy's."""
        folded = (category or "").casefold()
        if folded and any(folded == c.casefold() for c in self.escalation.severe_categories):
            return "severe"
        return self.severity

    def action_for(self, severity: Severity) -> Action:
        if isinstance(self.action, str):
            return self.action
        return self.action.get(severity, DEFAULT_ACTION)


@dataclass(frozen=True, slots=True)
class Policy:
    meta: PolicyFrontMatter
    prompt: str
    version: str
    path: Path

    @property
    def id(self) -> str:
        return self.meta.id


def content_version(data: bytes) -> str:
    """A short, stable content hash: sha256 of the file bytes, first 16 hex chars."""
    return hashlib.sha256(data).hexdigest()[:16]


def parse_policy(data: bytes, path: Path) -> Policy:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{path}: not UTF-8 ({exc})") from exc
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != FRONT_MATTER_FENCE:
        raise PolicyError(f"{path}: must start with a '---' line opening the YAML front matter")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == FRONT_MATTER_FENCE)
    except StopIteration:
        raise PolicyError(f"{path}: front matter is not closed by a '---' line") from None
    try:
        raw_meta = yaml.safe_load("".join(lines[1:end])) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: front matter is not valid YAML: {exc}") from exc
    try:
        meta = PolicyFrontMatter.model_validate(raw_meta)
    except ValidationError as exc:
        raise PolicyError(f"{path}: invalid front matter:\n{exc}") from exc
    prompt = "".join(lines[end + 1 :]).strip() + "\n"
    if len(prompt.strip()) == 0:
        raise PolicyError(f"{path}: the policy prompt (the text after the front matter) is empty")
    return Policy(meta=meta, prompt=prompt, version=content_version(data), path=path)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """An immutable snapshot of a policy directory; a post is judged under one snapshot."""

    policies: tuple[Policy, ...]
    directory: Path

    @property
    def version(self) -> str:
        joined = "\n".join(f"{p.id}:{p.version}" for p in self.policies).encode()
        return content_version(joined)

    def by_id(self) -> dict[str, Policy]:
        return {p.id: p for p in self.policies}

    @property
    def live(self) -> tuple[Policy, ...]:
        return tuple(p for p in self.policies if not p.meta.shadow)

    def shadows_of(self, live_id: str) -> tuple[Policy, ...]:
        return tuple(p for p in self.policies if p.meta.shadow_of == live_id)


def policy_files(directory: Path) -> list[Path]:
    """The policy files of a directory: `*.md`, not starting with `_` or `.`, sorted by name."""
    return sorted(p for p in directory.glob("*.md") if not p.name.startswith(("_", ".")))


def read_policy_files(directory: Path) -> dict[Path, bytes]:
    """The bytes of every policy file in `directory` (sorted by name), read once: a reload parses
    and fingerprints exactly these bytes, so what is hashed is what is served."""
    if not directory.is_dir():
        raise PolicyError(f"policies directory {directory} does not exist (set MODSTREAM_POLICIES_DIR)")
    try:
        return {path: path.read_bytes() for path in policy_files(directory)}
    except OSError as exc:  # a file removed or unreadable mid-read
        raise PolicyError(f"cannot read {exc.filename}: {exc.strerror}") from exc


def files_fingerprint(files: dict[Path, bytes]) -> str:
    """Content hash of a directory's policy files (names and bytes)."""
    digest = hashlib.sha256()
    for path, data in files.items():
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()[:16]


def load_policy_files(directory: Path, files: dict[Path, bytes]) -> PolicySet:
    """Parse policy files read by `read_policy_files`; refuse duplicates, dangling shadow twins
    and empty directories."""
    if not files:
        raise PolicyError(f"policies directory {directory} holds no *.md policy files")
    policies: list[Policy] = []
    seen: dict[str, Path] = {}
    for path, data in files.items():
        policy = parse_policy(data, path)
        if policy.id in seen:
            raise PolicyError(f"{path}: duplicate policy id {policy.id!r} (also in {seen[policy.id]})")
        seen[policy.id] = path
        policies.append(policy)
    live = {p.id for p in policies if not p.meta.shadow}
    for policy in policies:
        twin = policy.meta.shadow_of
        if twin is not None and twin not in live:
            raise PolicyError(f"{policy.path}: shadow_of names {twin!r}, which is not a live policy in {directory}")
    return PolicySet(policies=tuple(policies), directory=directory)


def load_policy_dir(directory: Path) -> PolicySet:
    """Load every `*.md` policy in `directory` (sorted by name)."""
    return load_policy_files(directory, read_policy_files(directory))
