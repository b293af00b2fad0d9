"""The one Kafka-error helper: what a KafkaException carries and what to do about it."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from worker.kafka.errors import classify, describe, error_of, is_broker_down, is_fatal


def test_error_of_unpacks_a_kafka_exception_only() -> None:
    error = KafkaError(KafkaError._TRANSPORT, "connection refused")
    assert error_of(KafkaException(error)) is error
    assert error_of(KafkaException("no error object")) is None
    assert error_of(RuntimeError(error)) is None
    assert error_of(KafkaException()) is None


def test_is_fatal_follows_the_error_flag() -> None:
    assert is_fatal(KafkaException(KafkaError(KafkaError._FATAL, "fenced", fatal=True)))
    assert not is_fatal(KafkaException(KafkaError(KafkaError._TRANSPORT, "down")))
    assert not is_fatal(ValueError("x"))


def test_classes() -> None:
    assert classify(KafkaError(KafkaError._TRANSPORT, "down")) == "retriable"
    assert classify(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "big")) == "permanent"
    assert classify(KafkaError(KafkaError._AUTHENTICATION, "bad")) == "config"
    assert classify(KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "seq")) == "fatal"
    assert classify(KafkaError(KafkaError._TRANSPORT, "down", fatal=True)) == "fatal"
    assert is_broker_down(KafkaError(KafkaError._ALL_BROKERS_DOWN, "down"))
    assert not is_broker_down(KafkaError(KafkaError._AUTHENTICATION, "bad"))


def test_describe_names_the_error_and_its_reason() -> None:
    assert describe(KafkaError(KafkaError._TRANSPORT, "connection refused")) == "_TRANSPORT: connection refused"
