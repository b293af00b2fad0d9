"""What makes a sweep resumable: its identity (a run id hashed from the arguments) and a small
state file holding each partition's offset range, fixed at the first run, the position reached
(committed together with the sweep group's offsets) and the report's counts up to that position.

The state file, not the group's commit metadata, is the record: Tansu drops commit metadata and
answers ListOffsets (by time, and the high watermark) wrong, so the range is found by reading
(worker/sweep/locate.py) once and kept here. The group's offsets are committed as well, so lag
tools show the sweep's progress. A restart with the same arguments finds the file by group id
and continues from the stored positions; the same group with other arguments is refused.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, Field

from worker.contracts import ReasoningEffort
from worker.sweep.report import Counts

SweepTier = Literal["cascade", "t1", "t2"]
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """Everything that decides what a sweep publishes. The run id is a hash of it: the same
    arguments (and the same policy files) give the same run, hence the same verdict ids."""

    since: datetime
    until: datetime
    policies: tuple[str, ...]  # the policy ids re-judged, sorted
    policy_set: str  # PolicySet.version of the policy directory
    tier: SweepTier
    effort: ReasoningEffort | None
    funnel: bool
    dry_run: bool
    posts_topic: str
    output_topic: str

    def as_dict(self) -> dict[str, object]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "policies": list(self.policies),
            "policy_set": self.policy_set,
            "tier": self.tier,
            "effort": self.effort,
            "funnel": self.funnel,
            "dry_run": self.dry_run,
            "posts_topic": self.posts_topic,
            "output_topic": self.output_topic,
        }

    @property
    def run_id(self) -> str:
        canonical = orjson.dumps(self.as_dict(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:32]

    def group(self, prefix: str) -> str:
        """The sweep's consumer group: never the live worker's (`prefix` is the worker's group id)."""
        return f"{prefix}-sweep-{self.run_id[:12]}"


class PartitionRange(BaseModel):
    """Offsets [start, end) of one partition hold the range; `position`: next offset to read."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    position: int = Field(ge=0)

    @property
    def done(self) -> bool:
        return self.position >= self.end

    @property
    def total(self) -> int:
        return max(0, self.end - self.start)

    @property
    def completed(self) -> int:
        return max(0, min(self.position, self.end) - self.start)


class SweepState(BaseModel):
    version: int = STATE_VERSION
    run_id: str
    group: str
    spec: dict[str, object]
    topic: str
    created_at: datetime
    partitions: dict[int, PartitionRange]
    counts: Counts = Field(default_factory=Counts)
    finished: bool = False

    @property
    def total(self) -> int:
        return sum(p.total for p in self.partitions.values())

    @property
    def completed(self) -> int:
        return sum(p.completed for p in self.partitions.values())


class StateMismatch(Exception):
    """The state file of this group belongs to a sweep with other arguments."""


def state_path(directory: Path, group: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in group)
    return directory / f"{safe}.json"


def load_state(path: Path, run_id: str) -> SweepState | None:
    """The stored state of this run, None when there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    state = SweepState.model_validate_json(data)
    if state.run_id != run_id:
        raise StateMismatch(
            f"{path} holds sweep {state.run_id} ({state.spec}); these arguments are sweep {run_id}: "
            "use another --group (or delete the file to start over)"
        )
    return state


def save_state(path: Path, state: SweepState) -> None:
    """Atomic: write a sibling file, fsync, rename over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as out:
        out.write(state.model_dump_json(indent=1).encode())
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
