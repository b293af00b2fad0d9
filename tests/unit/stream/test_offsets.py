import random

import pytest

from worker.stream.offsets import OffsetTracker

TP = ("posts", 0)


def test_commits_only_contiguous_finished_offsets() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12, 13):
        tracker.start(TP, offset)
    tracker.finish(TP, 12)
    tracker.finish(TP, 11)
    assert tracker.to_commit() == {}  # 10 still running: nothing is safe
    tracker.finish(TP, 10)
    assert tracker.to_commit() == {TP: 13}  # next offset to read after 12
    tracker.mark_committed({TP: 13})
    assert tracker.to_commit() == {}
    assert tracker.in_flight(TP) == 1
    tracker.finish(TP, 13)
    assert tracker.to_commit() == {TP: 14}


def test_gaps_in_offsets_are_fine() -> None:
    tracker = OffsetTracker()
    for offset in (5, 9, 20):  # compacted topics and transaction markers leave gaps
        tracker.start(TP, offset)
    for offset in (20, 5, 9):
        tracker.finish(TP, offset)
    assert tracker.to_commit() == {TP: 21}
    assert tracker.total_in_flight == 0


def test_offsets_must_increase() -> None:
    tracker = OffsetTracker()
    tracker.start(TP, 3)
    with pytest.raises(ValueError, match="must increase"):
        tracker.start(TP, 3)


def test_finishing_a_forgotten_partition_is_ignored() -> None:
    tracker = OffsetTracker()
    tracker.start(TP, 1)
    tracker.forget(TP)
    tracker.finish(TP, 1)
    assert tracker.to_commit() == {}
    assert tracker.partitions() == []


def test_random_completion_order_never_commits_past_an_unfinished_offset() -> None:
    rng = random.Random(7)
    tracker = OffsetTracker()
    offsets = list(range(1000))
    for offset in offsets:
        tracker.start(TP, offset)
    order = offsets[:]
    rng.shuffle(order)
    finished: set[int] = set()
    for offset in order:
        tracker.finish(TP, offset)
        finished.add(offset)
        committable = tracker.to_commit().get(TP)
        if committable is not None:
            assert all(o in finished for o in range(committable))
            tracker.mark_committed({TP: committable})
        lowest_unfinished = min(set(offsets) - finished, default=None)
        if lowest_unfinished is not None:
            assert committable is None or committable <= lowest_unfinished
    assert tracker.to_commit() == {} and tracker.total_in_flight == 0


def test_finish_many_equals_finishing_one_by_one() -> None:
    rng = random.Random(13)
    for _ in range(200):
        offsets = sorted(rng.sample(range(100), rng.randint(1, 30)))
        bulk, single = OffsetTracker(), OffsetTracker()
        for offset in offsets:
            bulk.start(TP, offset)
            single.start(TP, offset)
        done = rng.sample(offsets, rng.randint(0, len(offsets)))
        groups = [done[i : i + 5] for i in range(0, len(done), 5)]
        for group in groups:
            bulk.finish_many(TP, group)
            for offset in group:
                single.finish(TP, offset)
            assert bulk.to_commit() == single.to_commit()
            assert bulk.in_flight(TP) == single.in_flight(TP)


def test_finish_many_of_a_forgotten_partition_is_ignored() -> None:
    tracker = OffsetTracker()
    tracker.start(TP, 1)
    tracker.forget(TP)
    tracker.finish_many(TP, [1])
    assert tracker.to_commit() == {}
    assert tracker.total_in_flight == 0


def test_finish_many_waits_for_an_earlier_gap() -> None:
    tracker = OffsetTracker()
    for offset in range(10):
        tracker.start(TP, offset)
    tracker.finish_many(TP, list(range(1, 10)))
    assert tracker.to_commit() == {}
    tracker.finish_many(TP, [0])
    assert tracker.to_commit() == {TP: 10}
    assert tracker.total_in_flight == 0
