"""librdkafka's mock Kafka cluster as a separate broker process, controllable from a test.

confluent-kafka gives Python no API for the mock cluster (`test.mock.num.brokers` only builds one
inside the configuring client, unreachable for the worker's own process and without down/up
controls). But the librdkafka shipped inside the confluent-kafka wheel exports the C mock API,
so this script creates a cluster through ctypes, prints its bootstrap servers, and then obeys
one command per stdin line:

    topic NAME PARTITIONS     create a topic            -> "ok topic"
    down / up                 stop / restart every broker (connections refused meanwhile;
                              logs, offsets and groups are kept: a transparent outage)
    produce_error CODE COUNT  the next COUNT Produce requests fail with Kafka error CODE
    quit

Run: python -m tests.mock_cluster BROKERS   (used by kafka_support.MockKafkaCluster).
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys

import confluent_kafka

PRODUCE_API_KEY = 0


def load_librdkafka() -> ctypes.CDLL:
    site = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
    candidates = sorted(glob.glob(os.path.join(site, "confluent_kafka.libs", "librdkafka*.so*")))
    if not candidates:
        raise FileNotFoundError("librdkafka from the confluent-kafka wheel not found")
    lib = ctypes.CDLL(candidates[0])
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    c_str = ctypes.c_char_p
    lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, c_str, c_str, c_str, ctypes.c_size_t]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
    lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
    lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    lib.rd_kafka_mock_broker_set_down.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.rd_kafka_mock_broker_set_up.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    lib.rd_kafka_mock_push_request_errors_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int16,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_int),
    ]
    return lib


def main(brokers: int) -> None:
    lib = load_librdkafka()
    errstr = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    # The owning handle only hosts the cluster; keep it quiet.
    lib.rd_kafka_conf_set(conf, b"log_level", b"0", errstr, 512)
    rk = lib.rd_kafka_new(0, conf, errstr, 512)
    if not rk:
        raise RuntimeError(errstr.value.decode())
    cluster = lib.rd_kafka_mock_cluster_new(rk, brokers)
    if not cluster:
        raise RuntimeError("rd_kafka_mock_cluster_new failed")
    print(lib.rd_kafka_mock_cluster_bootstraps(cluster).decode(), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        cmd = words[0]
        if cmd == "topic":
            err = lib.rd_kafka_mock_topic_create(cluster, words[1].encode(), int(words[2]), 1)
            print(f"ok topic {err}", flush=True)
        elif cmd in ("down", "up"):
            setter = lib.rd_kafka_mock_broker_set_down if cmd == "down" else lib.rd_kafka_mock_broker_set_up
            for broker_id in range(1, brokers + 1):
                setter(cluster, broker_id)
            print(f"ok {cmd}", flush=True)
        elif cmd == "produce_error":
            code, count = int(words[1]), int(words[2])
            errors = (ctypes.c_int * count)(*([code] * count))
            lib.rd_kafka_mock_push_request_errors_array(cluster, PRODUCE_API_KEY, count, errors)
            print("ok produce_error", flush=True)
        elif cmd == "quit":
            break
        else:
            print(f"error unknown command {cmd}", flush=True)
    os._exit(0)  # the mock cluster's threads need no orderly goodbye


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
