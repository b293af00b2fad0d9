"""Classify Kafka client errors: what to do about each (pure logic, no I/O).

- `retriable`: the broker is unreachable, slow, electing a leader, rebalancing... wait and try
  again; the data is kept (never dropped) and readiness says the broker is in trouble.
- `fatal`: the client instance is unusable (librdkafka's fatal error: an idempotent producer
  whose sequence state the broker no longer accepts, e.g. after a broker lost its state; a
  fenced producer; a consumer whose static membership was fenced). Recreate the client.
- `permanent`: this record can never be delivered as it is (too large for the broker). Retrying
  would loop forever; the caller must change the record (the DLQ keeps a marker instead).
- `config`: authentication, authorisation or configuration is wrong. Retried with backoff (an
  operator can fix ACLs or secrets without a restart) and reported loudly; never dropped.
"""

from __future__ import annotations

from typing import Literal

from confluent_kafka import KafkaError, KafkaException

ErrorClass = Literal["retriable", "fatal", "permanent", "config"]

PERMANENT_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
    }
)
CONFIG_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError._SSL,
        KafkaError._INVALID_ARG,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
    }
)
# Errors that mean "cannot talk to the cluster right now" (readiness turns false on these).
BROKER_DOWN_CODES = frozenset(
    {
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TRANSPORT,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)
# With an idempotent producer these leave the producer's sequence state out of step with the
# broker (it lost or reset its producer state, as a memory-only broker does on restart).
# librdkafka raises most of them as fatal itself; these are the ones we recreate for anyway.
PRODUCER_STATE_CODES = frozenset(
    {
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError._GAPLESS_GUARANTEE,
        KafkaError._FATAL,
    }
)


def classify(error: KafkaError) -> ErrorClass:
    code = error.code()
    if error.fatal() or code in PRODUCER_STATE_CODES:
        return "fatal"
    if code in PERMANENT_CODES:
        return "permanent"
    if code in CONFIG_CODES:
        return "config"
    return "retriable"


def is_broker_down(error: KafkaError) -> bool:
    return error.code() in BROKER_DOWN_CODES


def error_of(exc: BaseException) -> KafkaError | None:
    """The KafkaError a KafkaException carries (None for any other exception, or none attached).
    The one place that unpacks confluent-kafka's `KafkaException(KafkaError)` convention."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_fatal(exc: BaseException) -> bool:
    """The exception carries a fatal KafkaError: the client instance is unusable, recreate it."""
    error = error_of(exc)
    return error is not None and error.fatal()


def describe(error: KafkaError) -> str:
    return f"{error.name()}: {error.str()}"
