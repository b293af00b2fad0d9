"""Who is reviewing: the console's authentication and CSRF rules. Pure (no aiohttp here).

Two ways in (docs/workflow.md, "Review queue and console"):
- bearer tokens, one per reviewer (`name=token`, from --token / MODSTREAM_CONSOLE_TOKENS): sent as
  `Authorization: Bearer <token>`, or once through the /login form, which keeps it in an HttpOnly,
  SameSite=Strict cookie. Compared in constant time (hmac.compare_digest) against every token;
- a trusted header set by an authenticating proxy (e.g. `X-Forwarded-User`), only when enabled with
  --trusted-header: the proxy must strip any copy the client sends.
Without either, nothing but /login, /healthz and /metrics is served; the chain of thought
additionally needs the reviewer to be in --cot-reviewers when that list is given.

POSTs are CSRF-safe twice over: the Origin (else Referer) must be the console's own origin, and the
form carries a token derived from the reviewer's identity with the process's secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

COOKIE = "modstream_review"


def parse_tokens(specs: Iterable[str]) -> dict[str, str]:
    """`name=token` items (comma-separated too) -> {token: name}. Raises ValueError on a bad item."""
    tokens: dict[str, str] = {}
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, sep, token = item.partition("=")
            if not sep or not name.strip() or len(token.strip()) < 16:
                raise ValueError("a reviewer token is name=token with a token of at least 16 characters")
            tokens[token.strip()] = name.strip()
    return tokens


@dataclass(frozen=True)
class Auth:
    tokens: Mapping[str, str] = field(default_factory=dict)  # token -> reviewer
    trusted_header: str | None = None
    cot_reviewers: frozenset[str] | None = None  # None: every authenticated reviewer

    def reviewer_for_token(self, presented: str) -> str | None:
        found = None
        for token, name in self.tokens.items():  # no early exit: same work whichever token matches
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = name
        return found

    def reviewer(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
        """The authenticated reviewer of a request, or None."""
        authorization = headers.get("Authorization", "")
        if authorization[:7].lower() == "bearer ":
            return self.reviewer_for_token(authorization[7:].strip())
        if cookies.get(COOKIE):
            return self.reviewer_for_token(cookies[COOKIE])
        if self.trusted_header:
            user = headers.get(self.trusted_header, "").strip()
            return user or None
        return None

    def may_see_reasoning(self, reviewer: str | None) -> bool:
        return reviewer is not None and (self.cot_reviewers is None or reviewer in self.cot_reviewers)


def csrf_token(secret: bytes, reviewer: str) -> str:
    return hmac.new(secret, f"csrf\x1f{reviewer}".encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, reviewer: str, presented: str) -> bool:
    return hmac.compare_digest(csrf_token(secret, reviewer), presented)


def same_origin(headers: Mapping[str, str], scheme: str, host: str) -> bool:
    """The request came from a page of this console: Origin (else Referer) names scheme://host.
    A POST with neither is refused (browsers send Origin on every form POST)."""
    origin = headers.get("Origin")
    if origin is None or origin == "null":
        referer = headers.get("Referer")
        if referer is None:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin.lower() == f"{scheme}://{host}".lower()
