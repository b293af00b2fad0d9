"""Dashboards and alerts as code: the Grafana dashboard and the Prometheus alert rules name only
metrics really exported, each by the process that exports it (the worker, the reviewer's console,
vLLM), every query parses, the alerts behave as their unit
tests say (`promtool test rules`), and the per-partition series of a revoked partition go away."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import worker_env
from tests.integration import test_deploy_files as deploy_files
from tests.kafka_support import WorkerProcess, metric_samples, metrics, mixed_posts, produce, wait_for
from worker.local.broker import EmbeddedBroker, create_topics, free_port
from worker.ops.metrics import Metrics, consumer_lag_from_stats, usage_tokens
from worker.sim.process import SimulatorProcess

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/modstream.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
ALERT_TESTS = ROOT / "deploy/prometheus/alerts.test.yml"
CHART_FILES = ROOT / "deploy/helm/modstream/files"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Grafana's own variables, replaced by a plain range for promtool.
GRAFANA_VARS = {"$__rate_interval": "5m", "${datasource}": "prometheus"}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "deriv", "delta", "increase", "scalar", "vector",
    "histogram_quantile", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "absent", "clamp_min", "clamp_max",
}  # fmt: skip
METRIC_PREFIXES = ("modstream_", "vllm:", "process_")
# Which process exports a metric a panel or rule names: the reviewer's console (`modstream review
# serve`, its own /metrics) exports the review queue's gauges and its decisions; vLLM (the simulator
# serves the same names) the vllm: ones; the worker (`modstream run`) everything else.
REVIEW_CONSOLE_PREFIXES = ("modstream_review_queue_", "modstream_review_console_")


def exporter_of(name: str) -> str:
    if name.startswith("vllm:"):
        return "vllm"
    if name.startswith(REVIEW_CONSOLE_PREFIXES):
        return "review console"
    return "worker"


# Panels the operations guide promises (docs/operations.md).
REQUIRED_PANELS = {
    "Throughput",
    "Consumer lag",
    "In flight vs cap",
    "Paused partitions",
    "Verdicts by decision and tier",
    "Verdicts by policy",
    "Hide rate per policy",
    "Escalation reasons",
    "Funnel pass rate",
    "Funnel recall estimate (bypass sample)",
    "DLQ rate by reason",
    "Judge latency quantiles",
    "Judge errors per tier",
    "vLLM running / waiting",
    "vLLM KV cache usage",
    "vLLM prefix cache hit rate",
    "Tokens per 1k posts",
    "Judge-seconds per 1k posts (GPU-time proxy)",
    "Worker memory",
    "Review queue age",
    "Review records by reason",
}
REQUIRED_ALERTS = {
    "ModstreamConsumerLagGrowing",
    "ModstreamJudgeTierDown",
    "ModstreamDLQSpike",
    "ModstreamVerdictRateDrop",
    "ModstreamKafkaUnreachable",
    "ModstreamFunnelRecallLow",
    "ModstreamReviewQueueStale",
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_queries() -> dict[str, str]:
    """panel title / refId -> PromQL."""
    return {
        f"{p['title']} / {t['refId']}": t["expr"]
        for p in dashboard()["panels"]
        if p["type"] != "row"
        for t in p["targets"]
    }


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects; fails on any other bare identifier (a metric
    name without one of the known prefixes, or a function this checker does not know)."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\boffset\s+[0-9smhdwy]+", " ", text)
    names = set()
    for token in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if token in PROMQL_WORDS:
            continue
        assert token.startswith(METRIC_PREFIXES), f"unknown identifier {token!r} in {expr!r}"
        names.add(token)
    return names


def exported_names(exposition: str) -> set[str]:
    """Every sample name an exposition can carry, including families that have no sample yet (a
    labelled counter before its first increment still has its HELP/TYPE lines)."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
        "untyped": ("",),
        "info": ("_info",),
    }
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if IN_CI:
            pytest.fail("promtool is required under CI=true (Debian package `prometheus`; scripts/test.sh installs it)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


# ---- static checks -------------------------------------------------------------------------


def test_dashboard_json_is_generated_from_the_generator() -> None:
    done = subprocess.run(
        [sys.executable, "deploy/tools/gen_grafana_dashboard.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_chart_carries_the_same_dashboard_and_alerts() -> None:
    assert (CHART_FILES / "grafana/modstream.json").read_bytes() == DASHBOARD.read_bytes()
    assert (CHART_FILES / "prometheus/alerts.yml").read_bytes() == ALERTS.read_bytes()


def test_dashboard_structure() -> None:
    """Structural checks beyond Grafana's schema (the next test checks the schema itself): unique
    ids, panels inside the grid without overlaps, the datasource variable on every query."""
    data = dashboard()
    assert data["uid"] == "modstream" and isinstance(data["schemaVersion"], int) and data["schemaVersion"] >= 36
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = data["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= pos.keys()
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "gauge", "table"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["description"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].strip() and "legendFormat" in target
    assert {p["title"] for p in panels} >= REQUIRED_PANELS


def npm_tools() -> Path:
    """node_modules with @grafana/schema and typescript (deploy/tools/fetch_npm_tools.py, cached)."""
    sys.path.insert(0, str(ROOT / "deploy" / "tools"))
    try:
        import fetch_npm_tools
    finally:
        sys.path.pop(0)
    found = fetch_npm_tools.ensure()
    if isinstance(found, str):
        if IN_CI:
            pytest.fail(f"npm tools are required under CI=true: {found}")
        pytest.skip(found)
    return found


def test_dashboard_type_checks_against_grafanas_schema(tmp_path: Path) -> None:
    """The dashboard JSON as a `Dashboard` of @grafana/schema (the TypeScript types Grafana generates
    from its CUE dashboard schema), checked by `tsc --noEmit --strict`: wrong types, missing required
    fields and unknown properties fail. A broken copy must fail (negative control)."""
    modules = npm_tools()
    (tmp_path / "node_modules").symlink_to(modules, target_is_directory=True)

    def check(name: str, data: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        source = tmp_path / f"{name}.ts"
        source.write_text(
            'import type { Dashboard } from "@grafana/schema";\n'
            f"export const dashboard: Dashboard = {json.dumps(data, indent=1)};\n"
        )
        tsc = [str(modules / ".bin" / "tsc"), "--noEmit", "--strict", "--skipLibCheck"]
        options = ["--moduleResolution", "bundler", "--module", "esnext", "--target", "es2022"]
        return subprocess.run([*tsc, *options, str(source)], capture_output=True, text=True, cwd=tmp_path)

    done = check("modstream", dashboard())
    assert done.returncode == 0, done.stdout + done.stderr
    broken = dashboard()
    broken["panels"][1]["gridPos"]["h"] = "8"
    broken["panels"][2]["bogusField"] = 1
    broken["templating"]["list"][0]["current"] = {}
    done = check("broken", broken)
    assert done.returncode != 0
    for expected in ("not assignable to type 'number'", "'\"bogusField\"' does not exist", "VariableOption"):
        assert expected in done.stdout, done.stdout


def test_every_dashboard_query_and_alert_parses() -> None:
    """promtool parses each dashboard query (as a recording rule) and the alert rules file."""
    tool = promtool()
    rules = [
        {"record": f"modstream_dashboard:query_{i}", "expr": _grafana_to_promql(expr)}
        for i, expr in enumerate(dashboard_queries().values())
    ]
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"modstream-dashboard-rules-{os.getpid()}.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    try:
        for target in (path, ALERTS):
            done = subprocess.run([tool, "check", "rules", str(target)], capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr
    finally:
        path.unlink(missing_ok=True)


def test_alert_rules_pass_their_unit_tests() -> None:
    tool = promtool()
    assert {r["alert"] for r in alert_rules()} == REQUIRED_ALERTS
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert tested == REQUIRED_ALERTS, "every alert has a unit test"
    done = subprocess.run(
        [tool, "test", "rules", ALERT_TESTS.name], cwd=ALERT_TESTS.parent, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_runbook_line_in_the_operations_guide() -> None:
    guide = (ROOT / "docs/operations.md").read_text()
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert']}" in guide, rule["alert"]
    for title in REQUIRED_PANELS:
        assert title in guide, title


def test_exporter_of() -> None:
    assert exporter_of("modstream_review_queue_oldest_age_seconds") == "review console"
    assert exporter_of("modstream_review_console_decisions_total") == "review console"
    assert exporter_of("modstream_review_records_total") == "worker", "the workers queue review records"
    assert exporter_of("vllm:num_requests_running") == "vllm"
    assert exporter_of("process_resident_memory_bytes") == "worker"


def test_metric_name_extraction() -> None:
    assert metric_names(
        'sum by (le, tier) (rate(modstream_judge_latency_seconds_bucket{outcome!="ok"}[5m])) '
        "and on(instance) modstream_ready / scalar(sum(rate(vllm:prefix_cache_hits_total[5m] offset 10m)))"
    ) == {"modstream_judge_latency_seconds_bucket", "modstream_ready", "vllm:prefix_cache_hits_total"}
    with pytest.raises(AssertionError, match="unknown identifier"):
        metric_names("sum(rate(kafka_consumergroup_lag[5m]))")


# ---- unit: the new metrics' pure parts ---------------------------------------------------------


def test_usage_tokens() -> None:
    usage = {"prompt_tokens": 1200, "completion_tokens": 80, "prompt_tokens_details": {"cached_tokens": 1024}}
    assert usage_tokens(usage) == {"prompt": 1200, "completion": 80, "cached_prompt": 1024}
    assert usage_tokens({"prompt_tokens": 5, "completion_tokens": None, "prompt_tokens_details": None}) == {"prompt": 5}
    assert usage_tokens(None) == {} and usage_tokens({"prompt_tokens": True}) == {}


def test_consumer_lag_from_librdkafka_statistics() -> None:
    stats = {
        "topics": {
            "posts": {
                "partitions": {
                    "0": {"consumer_lag": 12},
                    "1": {"consumer_lag": -1},
                    "-1": {"consumer_lag": 0},
                    "2": {"consumer_lag": 0},
                }
            }
        }
    }
    assert consumer_lag_from_stats(json.dumps(stats)) == {("posts", 0): 12, ("posts", 2): 0}
    assert consumer_lag_from_stats("not json") == {}


def test_forget_partition_drops_every_per_partition_series() -> None:
    m = Metrics()
    for gauge in (m.commit_lag, m.partition_in_flight, m.consumer_lag):
        gauge.labels("posts", "0").set(3)
        gauge.labels("posts", "1").set(4)
    m.forget_partition("posts", 0)
    m.forget_partition("posts", 7)  # never seen: no error
    text = _exposition(m)
    assert 'partition="0"' not in text and text.count('partition="1"') == 3


def test_process_memory_is_on_the_worker_registry() -> None:
    families = {f.name: f for f in text_string_to_metric_families(_exposition(Metrics()))}
    rss = families["process_resident_memory_bytes"].samples[0].value
    assert rss > 10 * 2**20, "a Python process with the worker imported uses more than 10 MiB"


def _exposition(m: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(m.registry).decode()


def _grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


# ---- integration: a real worker's /metrics --------------------------------------------------


@pytest.fixture
def running(
    broker: EmbeddedBroker,
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
) -> Iterator[tuple[dict[str, str], WorkerProcess]]:
    create_topics(broker.bootstrap_servers, {"posts": 4, "actions": 4, "audit": 4, "dlq": 1})
    produce(broker.bootstrap_servers, "posts", mixed_posts(60, 23, "ops", judged_share=0.5))
    env = worker_env(
        broker,
        sims,
        group="g-ops",
        MODSTREAM_KAFKA__EXTRA='{"statistics.interval.ms": 1000}',
        MODSTREAM_REBALANCE_TIMEOUT_S="5",
    )
    worker = spawn_worker(env)
    wait_for(lambda: metrics(worker).get("modstream_verdicts_total", 0) >= 60, 180, "60 verdicts", interval_s=0.5)
    yield env, worker


@pytest.fixture
def review_console(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[str]:
    """`modstream review serve` as a child process; yields its base URL once /metrics answers."""
    create_topics(broker.bootstrap_servers, {"review": 1, "review-decisions": 1})
    port = free_port()
    env = {
        **os.environ,
        "MODSTREAM_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "MODSTREAM_KAFKA__GROUP_ID": "g-ops-console",
        "MODSTREAM_LOG_FORMAT": "json",
    }
    command = [
        sys.executable,
        "-m",
        "worker",
        "review",
        "serve",
        "--port",
        str(port),
        "--token",
        "ops=ops-metrics-token-0123456789",
    ]
    with open(tmp_path / "console.log", "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, (tmp_path / "console.log").read_text()[-3000:]
        try:
            return httpx.get(f"{url}/metrics", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, 60, "the review console's /metrics", interval_s=0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _partitions(worker: WorkerProcess, name: str) -> set[str]:
    return {m.group(1) for labels, _ in metric_samples(worker, name) if (m := re.search(r'partition="(\d+)"', labels))}


@pytest.mark.integration
def test_panels_and_alerts_name_only_exported_metrics_and_revoked_partitions_leave(
    running: tuple[dict[str, str], WorkerProcess],
    sims: tuple[SimulatorProcess, SimulatorProcess],
    spawn_worker: Callable[[dict[str, str]], WorkerProcess],
    review_console: str,
) -> None:
    env, worker = running
    wait_for(lambda: len(_partitions(worker, "modstream_consumer_lag_records")) == 4, 60, "lag of 4 partitions")
    exposition = httpx.get(f"{worker.metrics_url}/metrics", timeout=5).text
    exported = {
        "worker": exported_names(exposition),
        "vllm": set().union(*(exported_names(httpx.get(f"{sim.url}/metrics", timeout=5).text) for sim in sims)),
        "review console": exported_names(httpx.get(f"{review_console}/metrics", timeout=5).text),
    }

    named: dict[str, set[str]] = {}
    for where, expr in dashboard_queries().items():
        named[f"panel {where}"] = metric_names(expr)
    for rule in alert_rules():
        named[f"alert {rule['alert']}"] = metric_names(rule["expr"])
    for where, names in named.items():
        assert names, f"{where} names no metric"
        missing = sorted(
            f"{name} (from the {exporter_of(name)})" for name in names if name not in exported[exporter_of(name)]
        )
        assert not missing, f"{where} names metrics their process does not export: {missing}"

    # The new series carry data after real traffic (judged posts through the simulator).
    samples = {s.name: s for f in text_string_to_metric_families(exposition) for s in f.samples}
    assert samples["process_resident_memory_bytes"].value > 0
    policy_verdicts = metric_samples(worker, "modstream_policy_verdicts_total")
    assert policy_verdicts and all('policy_id="' in labels for labels, _ in policy_verdicts)
    tokens = dict(metric_samples(worker, "modstream_judge_tokens_total"))
    assert tokens.get('{kind="prompt",tier="t1"}', 0) > 0 and tokens.get('{kind="completion",tier="t1"}', 0) > 0

    # A second member joins: the first gives partitions up, and their series leave with them.
    before = _partitions(worker, "modstream_consumer_lag_records")
    newcomer = spawn_worker(env)
    wait_for(lambda: '"partitions_revoked"' in worker.log(), 120, "a revoke on the first worker", interval_s=0.5)
    wait_for(lambda: bool(_partitions(newcomer, "modstream_consumer_lag_records")), 60, "the newcomer's lag series")
    revoked = _revoked(worker.log())
    assert revoked and revoked <= before
    for name in ("modstream_consumer_lag_records", "modstream_commit_lag_records", "modstream_partition_in_flight"):
        left = _partitions(worker, name)
        assert not left & revoked, f"{name} still reports revoked partitions {sorted(left & revoked)}"
    newcomer.signal(signal.SIGTERM)
    worker.signal(signal.SIGTERM)
    assert newcomer.wait(60) == 0 and worker.wait(60) == 0


def _revoked(log: str) -> set[str]:
    out: set[str] = set()
    for line in log.splitlines():
        if '"partitions_revoked"' in line:
            event = json.loads(line)
            out |= {str(partition) for _topic, partition in event["partitions"]}
    return out


# ---- Helm: the dashboard ConfigMap and the PrometheusRule ------------------------------------


@pytest.fixture(scope="session")
def helm_tools() -> dict[str, str]:
    """The real helm binary (deploy/tools/fetch_tools.py), as tests/integration/test_deploy_files.py uses it."""
    result = deploy_files._fetch_tools()
    if isinstance(result, str):
        deploy_files._unavailable(result)
    assert isinstance(result, dict)
    return result


def test_chart_ships_dashboard_and_rules_only_when_enabled(helm_tools: dict[str, str]) -> None:
    render, by_kind = deploy_files.render, deploy_files.by_kind
    defaults = render(helm_tools)
    assert not [d for d in defaults if d["kind"] == "PrometheusRule"]
    assert "rel-modstream-dashboard" not in by_kind(defaults, "ConfigMap")

    docs = render(
        helm_tools,
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "prometheusRule.labels.release=kps",
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "grafanaDashboard.folder=Moderation",
    )
    (rule,) = by_kind(docs, "PrometheusRule").values()
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    dashboard_cm = by_kind(docs, "ConfigMap")["rel-modstream-dashboard"]
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard_cm["metadata"]["annotations"] == {"grafana_folder": "Moderation"}
    assert json.loads(dashboard_cm["data"]["modstream.json"]) == dashboard()
