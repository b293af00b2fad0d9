"""The downstream auto-hide example (examples/autohide) through a real broker: the worker's own
verdicts land in the posts table, later revisions supersede them in any order, and replays,
duplicates and unreadable records change nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from examples.autohide.service import Counts, run
from examples.autohide.store import open_store
from tests.conftest import worker_env
from tests.kafka_support import (
    WorkerProcess,
    post_value,
    produce,
    read_topic,
    running_in_thread,
    verdicts_by_id,
    wait_for,
)
from worker.local.broker import EmbeddedBroker
from worker.sim.process import SimulatorProcess

pytestmark = pytest.mark.integration

TEXTS = [
    "Had a lovely walk by the river this morning",
    "FREE MONEY!!! crypto giveaway, send 1 BTC and get 2 back",
    "selling aimbot and wallhack, undetected, dm me",
    "Does anyone know a good recipe for lentil soup?",
]


@contextmanager
def autohide(bootstrap: str, db_path: Path, group: str) -> Iterator[Counts]:
    """The service on a thread (its own consumer, its own SQLite connection), stopped on exit."""
    counts = Counts()

    def service(stop: threading.Event) -> None:
        run(bootstrap, open_store(str(db_path)), stop, group=group, extra={"session.timeout.ms": 6000}, counts=counts)

    with running_in_thread(service, "the auto-hide service"):
        yield counts


def rows(db_path: Path) -> dict[str, tuple[str, str, int]]:
    db = open_store(str(db_path))
    try:
        return {r[0]: (r[1], r[2], r[3]) for r in db.execute("SELECT post_id, state, decision, revision FROM posts")}
    finally:
        db.close()


def test_worker_verdicts_then_superseding_revisions_land_once_in_any_order(
    broker: EmbeddedBroker,
    topics: dict[str, int],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    tmp_path: Path,
) -> None:
    bootstrap = broker.bootstrap_servers
    posts = [(f"ah-{i}".encode(), post_value(f"ah-{i}", f"{TEXTS[i % len(TEXTS)]} #{i}")) for i in range(40)]
    produce(bootstrap, "posts", posts)
    worker = spawn_worker(worker_env(broker, sims, group="g-autohide"))
    messages = read_topic(bootstrap, "actions", len(posts), timeout_s=120, producer_alive=worker.alive)
    verdicts = {pid: vs[0] for pid, vs in verdicts_by_id(messages).items()}
    assert len(verdicts) == len(posts)
    expected_state = {"allow": "visible", "hide": "hidden", "review": "visible"}

    db_path = tmp_path / "posts.sqlite3"
    with autohide(bootstrap, db_path, "autohide") as counts:
        wait_for(lambda: len(rows(db_path)) == len(posts), 60, "every post in the table")
        assert {pid: row[0] for pid, row in rows(db_path).items()} == {
            pid: expected_state[v["decision"]] for pid, v in verdicts.items()
        }
        # Later decisions on the same posts (a reviewer, an appeal): revision 2 is produced BEFORE
        # revision 1, each twice, plus an unreadable record. Revision 2 must win every time.
        later: list[tuple[bytes | None, bytes | None]] = []
        for i in range(10):
            pid = f"ah-{i}"
            for revision, decision in ((2, "allow"), (1, "hide")):
                value = orjson.dumps({**verdicts[pid], "revision": revision, "verdict_id": f"{pid}-r{revision}",
                                      "decision": decision})  # fmt: skip
                later += [(pid.encode(), value), (pid.encode(), value)]
        later.append((b"garbage", b"not json"))
        produce(bootstrap, "actions", later)
        wait_for(lambda: counts.read >= len(posts) + len(later), 60, "the superseding verdicts read")
    table = rows(db_path)
    for i in range(10):
        assert table[f"ah-{i}"] == ("visible", "allow", 2), f"ah-{i}: revision 2 wins over 1 and the original"
    assert (counts.skipped == 1 and "JSON" in counts.reasons[0]) or counts.reasons
    assert counts.changed == len(posts) + 10, "the first verdict and revision 2 change a row; the rest are no-ops"

    # A replay from the beginning (a new consumer group, as after losing committed offsets)
    # reads everything again and changes nothing.
    with autohide(bootstrap, db_path, "autohide-replay") as replay:
        wait_for(lambda: replay.read >= len(posts) + len(later), 60, "the replay read")
    assert replay.changed == 0
    assert rows(db_path) == table

    # The same group again: committed offsets, so nothing is re-read.
    produce(bootstrap, "actions", [(b"ah-39", orjson.dumps({**verdicts["ah-39"], "revision": 5, "verdict_id": "z"}))])
    with autohide(bootstrap, db_path, "autohide") as resumed:
        wait_for(lambda: resumed.read >= 1, 60, "the one new verdict")
    assert resumed.read == 1 and resumed.changed == 1
