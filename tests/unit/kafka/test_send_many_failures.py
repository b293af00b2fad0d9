"""`Publisher.send_many` shares one delivery callback among a group's records: a failed delivery
report names its record by the message only, and `_failure_indices` maps it back to its index."""

from __future__ import annotations

from typing import cast

from confluent_kafka import KafkaError, Message

from worker.kafka.producer import Output, _failure_indices


class Reported:
    """What a delivery report's message offers: the record as produced."""

    def __init__(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._key, self._value = topic, key, value

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


def msg(topic: str, key: bytes | None, value: bytes | None) -> Message:
    return cast(Message, Reported(topic, key, value))


OUTPUTS: list[Output] = [
    ("actions", b"a", b"1", ()),
    ("actions", b"b", b"2", ()),
    ("actions", b"a", b"1", ()),  # the same record twice: each report takes the next one
    ("audit", b"a", b"1", ()),
]
TIMED_OUT = KafkaError(KafkaError._MSG_TIMED_OUT)


def test_no_failure_means_no_lookup() -> None:
    assert _failure_indices(OUTPUTS, [], 0) == []


def test_failed_reports_map_back_to_their_indices_in_order() -> None:
    failed = [
        (msg("audit", b"a", b"1"), TIMED_OUT),
        (msg("actions", b"a", b"1"), TIMED_OUT),
        (msg("actions", b"a", b"1"), TIMED_OUT),
    ]
    got = _failure_indices(OUTPUTS, failed, 3)
    assert [index for index, _ in got] == [0, 2, 3]
    assert all(exc.generation == 3 and exc.error.code() == KafkaError._MSG_TIMED_OUT for _, exc in got)


def test_a_refused_produce_is_named_by_its_index() -> None:
    failed = [(1, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)), (msg("actions", b"a", b"1"), TIMED_OUT)]
    assert [index for index, _ in _failure_indices(OUTPUTS, failed, 0)] == [0, 1]


def test_a_report_of_no_record_of_the_group_fails_the_whole_group() -> None:
    # Never seen; if it were, no record of the group may count as delivered on a guess.
    got = _failure_indices(OUTPUTS, [(msg("actions", b"z", b"9"), TIMED_OUT)], 0)
    assert [index for index, _ in got] == [0, 1, 2, 3]
