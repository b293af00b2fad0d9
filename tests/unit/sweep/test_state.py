"""Sweep identity and the state file."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.sweep.report import Counts
from worker.sweep.state import (
    PartitionRange,
    StateMismatch,
    SweepSpec,
    SweepState,
    load_state,
    save_state,
    state_path,
)

SPEC = SweepSpec(
    since=datetime(2026, 12, 1, tzinfo=UTC),
    until=datetime(2026, 12, 2, tzinfo=UTC),
    policies=("hate", "spam-scams"),
    policy_set="abc",
    tier="t2",
    effort="high",
    funnel=False,
    dry_run=False,
    posts_topic="posts",
    output_topic="actions",
)


def test_run_id_is_deterministic_and_covers_every_argument() -> None:
    assert SPEC.run_id == replace(SPEC).run_id
    assert len(SPEC.run_id) == 32
    variants = [
        replace(SPEC, since=datetime(2026, 11, 30, tzinfo=UTC)),
        replace(SPEC, policies=("hate",)),
        replace(SPEC, policy_set="abd"),
        replace(SPEC, tier="cascade"),
        replace(SPEC, effort=None),
        replace(SPEC, funnel=True),
        replace(SPEC, dry_run=True, output_topic="actions-dry-run"),
    ]
    assert len({v.run_id for v in variants} | {SPEC.run_id}) == len(variants) + 1
    assert SPEC.group("modstream") == f"modstream-sweep-{SPEC.run_id[:12]}"


def make_state(run_id: str) -> SweepState:
    return SweepState(
        run_id=run_id,
        group="g",
        spec=SPEC.as_dict(),
        topic="posts",
        created_at=datetime(2026, 12, 3, tzinfo=UTC),
        partitions={0: PartitionRange(start=5, end=15, position=8), 1: PartitionRange(start=0, end=0, position=0)},
    )


def test_state_round_trip_and_progress(tmp_path: Path) -> None:
    path = state_path(tmp_path / "sub", "modstream-sweep-1/x")
    assert path.name == "modstream-sweep-1_x.json"
    state = make_state(SPEC.run_id)
    state.counts.bump("changed", 3)
    save_state(path, state)
    loaded = load_state(path, SPEC.run_id)
    assert loaded is not None and loaded == state
    assert (loaded.total, loaded.completed) == (10, 3)
    assert loaded.partitions[1].done and not loaded.partitions[0].done
    assert not list(path.parent.glob("*.tmp")), "the temporary file is renamed away"


def test_state_of_other_arguments_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    save_state(path, make_state("other-run"))
    with pytest.raises(StateMismatch, match="another --group"):
        load_state(path, SPEC.run_id)
    assert load_state(tmp_path / "missing.json", SPEC.run_id) is None


def test_counts_survive_the_state_file(tmp_path: Path) -> None:
    state = make_state(SPEC.run_id)
    state.counts.add(Counts(decisions={"allow->hide": 2}, by_policy={"hate": {"allow->hide": 2}}))
    save_state(tmp_path / "s.json", state)
    loaded = load_state(tmp_path / "s.json", SPEC.run_id)
    assert loaded is not None and loaded.counts.by_policy == {"hate": {"allow->hide": 2}}
