"""Logging: one structlog pipeline for everything the process prints.

- JSON lines when stderr is not a TTY (containers), a readable console otherwise.
- One writer: structlog's PrintLogger writes each event as a single `write()` under a lock, and
  stdlib `logging` records (aiohttp, asyncio, warnings...) are re-emitted through structlog, so
  lines from different threads never interleave.
- librdkafka's own log lines reach Python through confluent-kafka's `logger` setting
  (`kafka_logger`), not its default stderr printer, and come out as structlog events with the
  client's name. A line repeating within `KAFKA_REPEAT_WINDOW_S` is counted, not printed.
- `KafkaReachability`: whether the cluster can be reached, logged once per change of state with
  the number of failures seen meanwhile, instead of once per failed connection attempt.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# A librdkafka line with the same client, facility and text is printed at most once per window;
# the next one printed carries `repeated`: how many were held back.
KAFKA_REPEAT_WINDOW_S = 60.0
# librdkafka facilities about broker connections failing or closing: the error-level ones are the
# same event its error callback reports, and reachability is logged per change of state
# (KafkaReachability), so these go to debug (one per broker per attempt otherwise).
KAFKA_DUPLICATE_FACILITIES = frozenset({"FAIL"})


def configure_logging(level: str = "info", fmt: Literal["auto", "json", "console"] = "auto") -> None:
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Everything logged through the standard library goes through structlog too (one writer).
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ToStructlog):
            root.removeHandler(handler)
    root.addHandler(_ToStructlog())
    # Libraries log chatty INFO lines (httpx: one per HTTP request): only their warnings and errors,
    # unless the whole process logs at debug.
    root.setLevel(logging.DEBUG if level == "debug" else max(logging.WARNING, _LEVELS[level]))
    logging.captureWarnings(True)


class _ToStructlog(logging.Handler):
    """A stdlib `logging` handler that re-emits each record as a structlog event."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = structlog.get_logger(record.name)
            fields: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            logger.log(record.levelno, record.getMessage(), **fields)
        except Exception:
            self.handleError(record)


# ---- librdkafka's log lines ----------------------------------------------------------------------


class RepeatThrottle:
    """Let an event through at most once per `window_s` per key; count the ones held back."""

    def __init__(self, window_s: float = KAFKA_REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[object, tuple[float, int]] = {}  # key -> (last let through at, held back since)

    def admit(self, key: object) -> int:
        """-1: hold this one back; else how many were held back since the last one let through."""
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.window_s:
                self._seen[key] = (last[0], last[1] + 1)
                return -1
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # bounded: forget the oldest half
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                    del self._seen[old]
            return last[1] if last is not None else 0


class _KafkaLogHandler(logging.Handler):
    """confluent-kafka calls `logger.log(level, "%s [%s] %s", facility, client_name, text)` from
    whichever thread serves the client's queue (poll/consume/flush)."""

    def __init__(self, role: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logging.DEBUG)
        self.role = role
        self._throttle = RepeatThrottle(KAFKA_REPEAT_WINDOW_S, clock)
        self._log = structlog.get_logger("modstream.kafka")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            args = record.args if isinstance(record.args, tuple) else ()
            if len(args) == 3:
                facility, name, text = (str(a) for a in args)
            else:
                facility, name, text = "", "", record.getMessage()
            # librdkafka prefixes the thread: "[thrd:host:port/id]: message".
            if text.startswith("[thrd:") and "]: " in text:
                text = text.split("]: ", 1)[1]
            level = record.levelno
            if facility in KAFKA_DUPLICATE_FACILITIES:
                level = logging.DEBUG
            repeated = self._throttle.admit((name, facility, text)) if level > logging.DEBUG else 0
            if repeated < 0:
                return
            fields: dict[str, Any] = {"client": self.role, "rdkafka": name, "facility": facility, "message": text}
            if repeated:
                fields["repeated"] = repeated
            self._log.log(level, "librdkafka", **fields)
        except Exception:
            self.handleError(record)


def kafka_logger(role: str) -> logging.Logger:
    """The `logger` to put in a confluent-kafka client's config: its librdkafka lines become
    structlog events `librdkafka` with `client` (consumer/producer/admin) and librdkafka's name."""
    logger = logging.getLogger(f"modstream.kafka.{role}")
    if not any(isinstance(h, _KafkaLogHandler) for h in logger.handlers):
        logger.addHandler(_KafkaLogHandler(role))
    logger.propagate = False
    logger.setLevel(logging.DEBUG)  # librdkafka filters by its own `log_level`/`debug` settings
    return logger


# ---- reachability of the cluster ---------------------------------------------------------------


class KafkaReachability:
    """Log once when the cluster becomes unreachable (the first failure, naming client and error)
    and once when it is reachable again (how long it was down, failures per client), instead of a
    line per failed connection attempt (librdkafka retries every few hundred milliseconds).
    Thread-safe: error callbacks arrive on the consumer and producer threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._log = structlog.get_logger("modstream.kafka")
        self.reachable = True
        self._down_since = 0.0
        self.failures: dict[str, int] = {}

    def failure(self, client: str, error: str, reason: str) -> bool:
        """A client could not reach the cluster. True if this changed the state (it was logged)."""
        with self._lock:
            self.failures[client] = self.failures.get(client, 0) + 1
            if not self.reachable:
                return False
            self.reachable = False
            self._down_since = self._clock()
        self._log.warning("kafka_unreachable", client=client, error=error, reason=reason)
        return True

    def recovered(self) -> bool:
        """A request to the cluster succeeded. True if this changed the state (it was logged)."""
        with self._lock:
            if self.reachable:
                self.failures.clear()
                return False
            self.reachable = True
            failures, self.failures = self.failures, {}
            down_s = self._clock() - self._down_since
        self._log.info(
            "kafka_reachable", down_s=round(down_s, 1), failures=sum(failures.values()), failures_by_client=failures
        )
        return True
