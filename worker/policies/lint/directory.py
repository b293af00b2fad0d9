"""Lint a file or a whole policy directory (duplicate ids and dangling shadows need the directory)."""

from __future__ import annotations

from pathlib import Path

from worker.policies.files import Policy, PolicyError, parse_policy, policy_files
from worker.policies.lint.report import DEFAULT_TOKEN_BOUNDS, LintFinding, TokenBounds
from worker.policies.lint.rules import lint_policy


def _body_first_line(data: bytes) -> int:
    """1-based file line number of the first body line `parse_policy` keeps (after the fence)."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    fences = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if len(fences) < 2:
        return 1
    index = fences[1] + 1
    while index < len(lines) and not lines[index].strip():
        index += 1
    return index + 1


def lint_policy_bytes(
    data: bytes, path: Path, token_bounds: TokenBounds = DEFAULT_TOKEN_BOUNDS
) -> tuple[Policy | None, list[LintFinding]]:
    """Parse one file and lint it; an unparsable file yields one `invalid-policy` error."""
    try:
        policy = parse_policy(data, path)
    except PolicyError as exc:
        message = str(exc).removeprefix(f"{path}: ")
        return None, [LintFinding(path, None, "error", "invalid-policy", message)]
    return policy, lint_policy(policy, _body_first_line(data), token_bounds)


def lint_policy_dir(directory: Path, token_bounds: TokenBounds = DEFAULT_TOKEN_BOUNDS) -> list[LintFinding]:
    """Lint every policy file in `directory` (the same files `load_policy_dir` loads)."""
    if not directory.is_dir():
        return [LintFinding(directory, None, "error", "no-policies", f"{directory} is not a directory")]
    files = policy_files(directory)
    if not files:
        return [LintFinding(directory, None, "error", "no-policies", f"{directory} holds no *.md policy files")]
    findings: list[LintFinding] = []
    seen: dict[str, tuple[Path, Policy]] = {}
    for path in files:
        policy, file_findings = lint_policy_bytes(path.read_bytes(), path, token_bounds)
        findings.extend(file_findings)
        if policy is None:
            continue
        if policy.id in seen:
            findings.append(
                LintFinding(
                    path,
                    policy.id,
                    "error",
                    "duplicate-id",
                    f"policy id {policy.id!r} is also used by {seen[policy.id][0]}",
                )
            )
        else:
            seen[policy.id] = (path, policy)
    findings.extend(_dangling_shadows(seen))
    return findings


def _dangling_shadows(policies: dict[str, tuple[Path, Policy]]) -> list[LintFinding]:
    """A shadow twin must name a live policy of the same directory, or the worker refuses to load it."""
    live = {pid for pid, (_, policy) in policies.items() if not policy.meta.shadow}
    return [
        LintFinding(
            path,
            pid,
            "error",
            "shadow-of-unknown",
            f"shadow_of names {policy.meta.shadow_of!r}, which is not a live policy here (live: {sorted(live)})",
        )
        for pid, (path, policy) in policies.items()
        if policy.meta.shadow_of is not None and policy.meta.shadow_of not in live
    ]
