"""`python -m examples.autohide --help` (from the repository root)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from .service import log, run
from .store import open_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.autohide",
        description="Apply modstream verdicts (actions topic) to a SQLite posts table.",
    )
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port[,host:port]")
    parser.add_argument("--db", required=True, help="SQLite file holding the posts table (created if missing)")
    parser.add_argument("--topic", default="actions", help="the verdicts topic (default: actions)")
    parser.add_argument("--group", default="autohide", help="consumer group id (default: autohide)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    counts = run(args.bootstrap, open_store(args.db), stop, topic=args.topic, group=args.group)
    log.info("stopped: %d read, %d rows changed, %d skipped", counts.read, counts.changed, counts.skipped)
    return 0


raise SystemExit(main())
