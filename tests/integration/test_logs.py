"""Logs a collector can parse: librdkafka lines through structlog, broker reachability logged per
change of state (not per failed attempt), and one-line errors for a malformed config file."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from tests.kafka_support import FAST_GROUP, PROJECT_ROOT, WorkerProcess, metric_samples, metrics, wait_for
from worker.config import ConfigError, check_yaml_file
from worker.local.broker import EmbeddedBroker, create_topics, free_port
from worker.ops.logs import KafkaReachability, RepeatThrottle, configure_logging, kafka_logger


@pytest.fixture(autouse=True)
def default_structlog() -> Any:
    """Earlier tests in the session may have configured structlog (e.g. `modstream` run in-process at
    level info, which filters the debug events asserted here): start from structlog's defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- pure logic --------------------------------------------------------------------------------


def test_repeat_throttle_lets_one_through_per_window_and_counts_the_rest() -> None:
    clock = FakeClock()
    throttle = RepeatThrottle(60.0, clock)
    assert throttle.admit("a") == 0
    assert [throttle.admit("a") for _ in range(5)] == [-1] * 5
    assert throttle.admit("b") == 0, "keys are independent"
    clock.now += 59.9
    assert throttle.admit("a") == -1
    clock.now += 0.2
    assert throttle.admit("a") == 6, "the next one let through reports how many were held back"
    assert throttle.admit("a") == -1


def test_reachability_logs_once_per_change_with_failure_counts() -> None:
    clock = FakeClock()
    reach = KafkaReachability(clock)
    with capture_logs() as logs:
        assert reach.recovered() is False, "already reachable: nothing to say"
        assert reach.failure("consumer", "_TRANSPORT", "Connection refused") is True
        for _ in range(99):
            assert reach.failure("producer", "_TRANSPORT", "Connection refused") is False
        reach.failure("consumer", "_ALL_BROKERS_DOWN", "1/1 brokers are down")
        clock.now += 42.0
        assert reach.recovered() is True
        assert reach.recovered() is False
        reach.failure("producer", "_TRANSPORT", "again")
    assert [e["event"] for e in logs] == ["kafka_unreachable", "kafka_reachable", "kafka_unreachable"]
    assert logs[0]["client"] == "consumer" and logs[0]["error"] == "_TRANSPORT"
    assert logs[1]["failures"] == 101
    assert logs[1]["failures_by_client"] == {"consumer": 2, "producer": 99}
    assert logs[1]["down_s"] == 42.0
    assert logs[2]["client"] == "producer"


def test_worker_logs_client_errors_per_change_or_once_a_minute() -> None:
    """Broker-down errors go to the reachability log; others (auth...) once per window per error."""
    from confluent_kafka import KafkaError

    from worker.config import load_settings
    from worker.stream.worker import Worker

    worker = Worker(load_settings(kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"}))
    with capture_logs() as logs:
        for _ in range(5):
            worker._on_client_error("consumer", KafkaError(KafkaError._AUTHENTICATION, "bad credentials"))
        for _ in range(5):
            worker._on_client_error("producer", KafkaError(KafkaError._TRANSPORT, "connection refused"))
        worker._on_client_error("producer", KafkaError(KafkaError._FATAL, "fenced", fatal=True))
    assert [(e["event"], e.get("client"), e.get("error")) for e in logs] == [
        ("kafka_error", "consumer", "_AUTHENTICATION"),
        ("kafka_unreachable", "producer", "_TRANSPORT"),
        ("kafka_error", "producer", "_FATAL"),
    ]
    assert not worker.watch.broker_ok, "readiness still turns false on a broker-down error"
    counted = {labels: child._value.get() for labels, child in worker.metrics.kafka_errors._metrics.items()}
    assert counted[("consumer", "config", "_AUTHENTICATION")] == 5, "every error is still counted"


def _emit_rdkafka(logger: logging.Logger, level: int, facility: str, text: str) -> None:
    # Exactly how confluent-kafka forwards a librdkafka line to a configured `logger`.
    logger.log(level, "%s [%s] %s", facility, "rdkafka#consumer-7", f"[thrd:main]: {text}")


def test_librdkafka_lines_become_structlog_events_with_the_client_name() -> None:
    logger = kafka_logger("unit-test")
    with capture_logs() as logs:
        _emit_rdkafka(logger, logging.WARNING, "MAXPOLL", "Application maximum poll interval exceeded")
        for _ in range(50):
            _emit_rdkafka(logger, logging.WARNING, "MAXPOLL", "Application maximum poll interval exceeded")
        # FAIL at error level is the same event the error callback reports: debug only (like a disconnect).
        _emit_rdkafka(logger, logging.ERROR, "FAIL", "127.0.0.1:1/bootstrap: Connect failed: Connection refused")
        _emit_rdkafka(logger, logging.INFO, "FAIL", "127.0.0.1:1/1: Disconnected: connection closed by peer")
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert warnings == [
        {
            "event": "librdkafka",
            "log_level": "warning",
            "client": "unit-test",
            "rdkafka": "rdkafka#consumer-7",
            "facility": "MAXPOLL",
            "message": "Application maximum poll interval exceeded",
        }
    ], "a repeated line is held back within the window"
    fails = [e for e in logs if e.get("facility") == "FAIL"]
    assert [e["log_level"] for e in fails] == ["debug", "debug"]


def test_stdlib_and_librdkafka_lines_come_out_as_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    configure_logging("info", "json")
    try:
        logging.getLogger("aiohttp.access").warning("something %s", "odd")
        logging.getLogger("aiohttp.access").debug("below the level")
        logging.getLogger("httpx").info("HTTP Request: POST http://vllm/v1/chat/completions")  # one per call
        _emit_rdkafka(kafka_logger("consumer"), logging.WARNING, "SSL", "handshake failed")
        structlog.get_logger("t").info("plain", n=1)
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
    lines = capsys.readouterr().err.splitlines()
    events = [orjson.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["something odd", "librdkafka", "plain"]
    assert events[1]["client"] == "consumer" and events[1]["message"] == "handshake failed"


# ---- malformed config files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ('kafka:\n  bootstrap_servers: "a\n  group_id: x\n', "line 4, column 1", "invalid YAML"),
        ("kafka: {a: 1}\n\tfoo: 2\n", "line 2, column 1", "invalid YAML"),
        ("\n\n- a\n- b\n", "line 3, column 1", "not a list"),
        ("just words\n", "line 1, column 1", "not a str"),
    ],
)
def test_malformed_config_file_is_one_line_naming_file_line_and_column(
    tmp_path: Path, text: str, where: str, what: str
) -> None:
    path = tmp_path / "modstream.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        check_yaml_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and where in message and what in message


def test_empty_config_file_is_no_settings(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set here\n")
    check_yaml_file(path)


@pytest.mark.parametrize("text", ["kafka:\n  group_id: [unclosed\n", "- just\n- a list\n"])
def test_cli_malformed_config_exits_2_with_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODSTREAM_")}
    done = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=120,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1, lines
    assert str(path) in lines[0] and "line " in lines[0] and "column " in lines[0]


# ---- a real worker against an unreachable broker ---------------------------------------------

# Broker failures the worker must have seen before it is stopped: more than the line budget, so a
# worker logging each failure (let alone twice) would fail the line count.
MIN_FAILURES = 40
OUTAGE_S = 30.0
MAX_LINES = 20


def _failures(worker: WorkerProcess) -> float:
    samples = metric_samples(worker, "modstream_kafka_errors_total")
    return sum(value for labels, value in samples if 'class="retriable"' in labels)


def _uptime_s(worker: WorkerProcess) -> float:
    started = metrics(worker).get("process_start_time_seconds")
    return 0.0 if started is None else time.time() - started


def _events(log: str) -> list[dict[str, Any]]:
    lines = [line for line in log.splitlines() if line.strip()]
    events = []
    for line in lines:
        event = orjson.loads(line)  # raises on a raw librdkafka line or a torn one
        assert isinstance(event, dict) and "event" in event, line
        events.append(event)
    return events


@pytest.mark.integration
def test_unreachable_broker_for_30s_then_back_logs_a_few_json_lines(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here until the broker is started below
    dead_judge = f"http://127.0.0.1:{free_port()}/v1"
    env = {
        "MODSTREAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "MODSTREAM_KAFKA__GROUP_ID": "logs-test",
        "MODSTREAM_KAFKA__SESSION_TIMEOUT_MS": str(FAST_GROUP["session_timeout_ms"]),
        "MODSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": str(FAST_GROUP["heartbeat_interval_ms"]),
        "MODSTREAM_JUDGE_T1__BASE_URLS": f'["{dead_judge}"]',
        "MODSTREAM_JUDGE_T2__BASE_URLS": f'["{dead_judge}"]',
        "MODSTREAM_POLICIES_DIR": str(PROJECT_ROOT / "policies"),
        "MODSTREAM_LOG_LEVEL": "info",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    broker = EmbeddedBroker(port=port, log_path=tmp_path / "tansu.log")
    try:
        # 30 s of outage by the worker's own start time, and enough failures seen by the worker
        # that one line per failure would blow the line budget.
        wait_for(
            lambda: _failures(worker) >= MIN_FAILURES and _uptime_s(worker) >= OUTAGE_S,
            240,
            f">= {MIN_FAILURES} broker failures and {OUTAGE_S:g} s of worker uptime",
            interval_s=0.5,
        )
        down_log = worker.log()
        broker.start()
        create_topics(broker.bootstrap_servers, {"posts": 2, "actions": 2, "audit": 1, "dlq": 1})
        wait_for(lambda: metrics(worker).get("modstream_broker_reachable") == 1.0, 120, "the worker to see the broker")
        worker.signal(signal.SIGTERM)
        assert worker.wait(120) == 0
    finally:
        worker.stop()
        broker.stop()

    outage = _events(down_log)
    assert len(outage) < MAX_LINES, f"{len(outage)} lines while the broker was down ({MIN_FAILURES}+ failures)"
    assert [e["event"] for e in outage].count("kafka_unreachable") == 1, outage

    events = _events(worker.log())
    assert len(events) < MAX_LINES, [e["event"] for e in events]
    names = [e["event"] for e in events]
    down_at = names.index("kafka_unreachable")
    back = next(e for e in events[down_at:] if e["event"] == "kafka_reachable")
    assert back["failures"] >= MIN_FAILURES, back
    assert set(back["failures_by_client"]) <= {"consumer", "producer", "probe"}
    assert names[-1] == "worker_stopped"
