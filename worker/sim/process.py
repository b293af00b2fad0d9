"""Run a simulator in a subprocess, for tests, the demo and benchmarks.

    with SimulatorProcess(max_num_seqs=8, speed=0) as sim:
        judge_base_url = sim.base_url          # "http://127.0.0.1:PORT/v1"
        sim.set_faults(fail_5xx_rate=0.1)
        ...
        assert sim.stats()["by_status"]["500"] > 0

A separate process (not a thread) so the simulator's event loop never competes with the code
under test for the GIL or the loop, and so it dies with a plain terminate().
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from .config import SimConfig

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (another process may still take it before the server binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class SimulatorProcess:
    """`python -m worker.sim` in a subprocess; options are SimConfig field names (e.g. max_num_seqs=8)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 30.0,
        **options: Any,
    ) -> None:
        unknown = set(options) - set(SimConfig.model_fields) - {"host", "port"}
        if unknown:
            raise TypeError(f"unknown simulator option(s): {', '.join(sorted(unknown))}")
        SimConfig.model_validate({**options, "host": host})  # fail here, not in the child
        self.host = host
        self.port = port or free_port(host)
        self.options = options
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._client = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)

    @property
    def url(self) -> str:
        """Server root, for /health, /metrics and /sim/*."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a judge client's base URL should be (the OpenAI-style API lives under /v1)."""
        return self.url + "/v1"

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "worker.sim", "--host", self.host, "--port", str(self.port)]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if isinstance(value, bool):
                args += [flag] if value else []
            else:
                args += [flag, str(value)]
        return args

    def start(self) -> SimulatorProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        # A file, not a pipe: nobody reads the child's output while it runs, and a full pipe would block it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  # lives as long as the child; closed in stop()
        self._proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=_PROJECT_ROOT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        # "Serving" = /v1/models answers: it never asks the engine, so a simulator started with a dead
        # engine (/health 503) is up too; started in an outage it answers 503 by design.
        ready_statuses = {503} if self.options.get("outage") else {200}
        deadline = time.monotonic() + self.startup_timeout_s
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {self._proc.returncode} at start:\n{self.output()}")
            try:
                if self._client.get("/v1/models", timeout=1.0).status_code in ready_statuses:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"simulator not ready in {self.startup_timeout_s}s:\n{self.output()}")
            time.sleep(0.05)  # poll interval, not a synchronisation

    def output(self) -> str:
        """The child's stdout+stderr so far (for failure messages)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self.stop()
        self._client.close()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Control calls: thin wrappers over the /sim/* endpoints, raising on HTTP errors.
    def set_faults(self, **settings: Any) -> dict[str, Any]:
        """Change fault settings (FaultSettings fields, e.g. fail_5xx_rate=0.2, outage=True)."""
        return self._json("POST", "/sim/faults", settings)

    def stats(self) -> dict[str, Any]:
        return self._json("GET", "/sim/stats")

    def reset(self) -> None:
        """Counters, request log, prefix cache, fault settings and RNG back to the start state."""
        self._json("POST", "/sim/reset")

    def requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        params = {"limit": limit} if limit is not None else None
        response = self._client.get("/sim/requests", params=params)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def request_headers(self, limit: int | None = None) -> list[dict[str, str]]:
        """GET /sim/request_headers: the HTTP headers of the logged requests, oldest first."""
        params = {"limit": limit} if limit is not None else None
        response = self._client.get("/sim/request_headers", params=params)
        response.raise_for_status()
        result: list[dict[str, str]] = response.json()
        return result

    def metrics(self) -> str:
        response = self._client.get("/metrics")
        response.raise_for_status()
        return response.text

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._client.request(method, path, json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result
