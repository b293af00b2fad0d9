"""The simulator's trigger words: what makes a post a violation when no example of the policy is near.

Grouped by harm; a policy that names any phrase of a group is judged on the whole group, so a
simulated judge reading a hate policy does not call "Cheat Engine" a violation of it, as a real
judge reading that policy would not.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Violation iff the lower-cased post contains one of these as whole words (so "die" does not
# fire on "diet", nor "hate" on "whatever"), grouped by harm: a policy that names any phrase of a
# group is judged on the whole group (see find_trigger). One list, so tests can pick a safe vocabulary.
TRIGGER_GROUPS: dict[str, tuple[str, ...]] = {
    "spam": ("scam", "free money", "crypto giveaway", "wire transfer", "click this link", "double your"),
    "cheating": ("aimbot", "wallhack", "cheat engine", "undetected cheat"),
    "violence": ("kill you", "shoot up", "gun"),
    "extremism": ("bomb", "terrorist", "nazi"),
    "hate": ("hate",),
    "self-harm": ("die", "kys", "self harm", "self-harm", "cut myself", "suicide"),
    "sexual": ("nude", "nudes"),
    "reviews": ("paid review", "5 stars", "five stars", "fake review"),
}
TRIGGER_PHRASES: tuple[str, ...] = tuple(p for group in TRIGGER_GROUPS.values() for p in group)
_GROUP_OF: dict[str, str] = {p: name for name, group in TRIGGER_GROUPS.items() for p in group}
_TRIGGER_RE = re.compile(r"(?<!\w)(" + "|".join(re.escape(p) for p in TRIGGER_PHRASES) + r")(?!\w)")


@lru_cache(maxsize=64)
def policy_groups(policy: str) -> frozenset[str]:
    """The trigger groups a policy's text names a phrase of (`scam` in a scams policy: "spam")."""
    return frozenset(_GROUP_OF[m.group(1)] for m in _TRIGGER_RE.finditer(policy.lower()))


def find_trigger(text: str, policy: str = "") -> str | None:
    """The first trigger phrase in `text`. With a `policy` that names trigger phrases, only the
    phrases of the groups it names count, as a judge reading a hate policy does not call "Cheat
    Engine" a violation of it. A policy that names none (a short test policy) is triggered by all."""
    found = [m.group(1) for m in _TRIGGER_RE.finditer(text.lower())]
    groups = policy_groups(policy) if policy else frozenset()
    if groups:
        found = [t for t in found if _GROUP_OF[t] in groups]
    return str(found[0]) if found else None
