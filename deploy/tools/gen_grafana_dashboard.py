"""Generate the Grafana dashboard (deploy/grafana/modstream.json and the Helm chart's copy).

    python deploy/tools/gen_grafana_dashboard.py          # write both files
    python deploy/tools/gen_grafana_dashboard.py --check  # exit 1 if a committed file differs

Panels are declared below as (title, unit, [(PromQL, legend)], description); the test suite checks
that every metric a query names is one the worker, the reviewer's console or vLLM exports, that
every query parses (promtool), and type-checks the JSON against Grafana's dashboard schema
(@grafana/schema's TypeScript types, tsc --strict). `$__rate_interval` and `${datasource}` are Grafana's own variables.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = (ROOT / "deploy/grafana/modstream.json", ROOT / "deploy/helm/modstream/files/grafana/modstream.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
# Only worker instances (vLLM exports process_* too): a series "and on(instance)" the worker's readiness.
WORKER_ONLY = "and on(instance) modstream_ready"
# Query B of a panel drawn as a plain count on the right axis (beside a ratio or an age on the left).
COUNT_ON_RIGHT_AXIS: list[dict[str, Any]] = [
    {
        "matcher": {"id": "byFrameRefID", "options": "B"},
        "properties": [{"id": "unit", "value": "short"}, {"id": "custom.axisPlacement", "value": "right"}],
    }
]


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: list[tuple[str, str]]
    description: str
    kind: str = "timeseries"
    stack: bool = False
    overrides: list[dict[str, Any]] = field(default_factory=list)


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Flow",
        [
            Panel(
                "Throughput",
                "ops",
                [
                    (f"sum(rate(modstream_records_consumed_total[{RATE}]))", "consumed/s"),
                    (f"sum(rate(modstream_verdicts_total[{RATE}]))", "verdicts/s"),
                    (f"sum(rate(modstream_dlq_records_total[{RATE}]))", "dead-lettered/s"),
                ],
                "Records read from the posts topic, verdicts published, records sent to the DLQ (all workers).",
            ),
            Panel(
                "Consumer lag",
                "short",
                [
                    ("sum by (topic) (modstream_consumer_lag_records)", "lag {{topic}}"),
                    ("sum(modstream_commit_lag_records)", "consumed, not yet committable"),
                ],
                "Records after the group's committed offset (librdkafka statistics, every 15 s, per assigned "
                "partition), and records consumed but not yet committable (in flight).",
            ),
            Panel(
                "In flight vs cap",
                "short",
                [
                    ("sum(modstream_in_flight_posts)", "in flight"),
                    ("sum(modstream_in_flight_cap)", "cap (max_in_flight, all workers)"),
                    ("sum(modstream_parked_records)", "parked (waiting for room in their partition)"),
                ],
                "Posts held by the workers against their cap; at the cap the partitions are paused.",
            ),
            Panel(
                "Paused partitions",
                "short",
                [
                    ("sum(modstream_paused_partitions)", "paused"),
                    ("sum(modstream_ready)", "ready workers"),
                    ("min(modstream_broker_reachable)", "broker reachable (min over workers)"),
                ],
                "Partitions paused by backpressure (in-flight cap or a judge tier down), ready workers, and "
                "whether every worker reaches the Kafka cluster.",
            ),
        ],
    ),
    (
        "Verdicts",
        [
            Panel(
                "Verdicts by decision and tier",
                "ops",
                [(f"sum by (decision, tier) (rate(modstream_verdicts_total[{RATE}]))", "{{decision}} / {{tier}}")],
                "One verdict per valid post; tier is funnel (no candidate policy), t1 or t2 (the deciding judge).",
                stack=True,
            ),
            Panel(
                "Verdicts by policy",
                "ops",
                [
                    (
                        f"sum by (policy_id, decision, tier) (rate(modstream_policy_verdicts_total[{RATE}]))",
                        "{{policy_id}} {{decision}} / {{tier}}",
                    )
                ],
                "How each live policy ended for each judged post: hide (decided violation), review "
                "(unresolved), allow.",
            ),
            Panel(
                "Hide rate per policy",
                "percentunit",
                [
                    (
                        f'sum by (policy_id) (rate(modstream_policy_verdicts_total{{decision="hide"}}[{RATE}])) '
                        f"/ scalar(sum(rate(modstream_verdicts_total[{RATE}])))",
                        "{{policy_id}}",
                    )
                ],
                "Share of all posts (verdicts) a policy hid. A sudden change after a policy edit is the first "
                "thing to look at.",
            ),
            Panel(
                "Escalation reasons",
                "ops",
                [(f"sum by (reason) (rate(modstream_escalations_total[{RATE}]))", "{{reason}}")],
                "Tier-1 results sent to tier 2, by reason (low confidence, invalid answer, severe, funnel "
                "disagreement, audit sample).",
                stack=True,
            ),
            Panel(
                "Funnel pass rate",
                "percentunit",
                [
                    (
                        f'1 - sum(rate(modstream_verdicts_total{{tier="funnel"}}[{RATE}])) '
                        f"/ sum(rate(modstream_verdicts_total[{RATE}]))",
                        "posts sent to a judge",
                    ),
                    (
                        f"sum by (policy_id) (rate(modstream_funnel_candidates_total[{RATE}])) "
                        f"/ scalar(sum(rate(modstream_records_consumed_total[{RATE}])))",
                        "candidate for {{policy_id}}",
                    ),
                ],
                "Share of posts the funnel passed to the judges (overall and per policy). Its recall: the next "
                "panel (bypass sample) and `modstream funnel calibrate` offline.",
            ),
            Panel(
                "Funnel recall estimate (bypass sample)",
                "percentunit",
                [
                    ("min by (policy_id) (modstream_funnel_recall_estimate)", "recall {{policy_id}} (lowest worker)"),
                    ("sum by (policy_id) (modstream_funnel_sampled_violations_total)", "sampled misses {{policy_id}}"),
                ],
                "Per policy, the funnel's recall of what the judge calls a violation, estimated from the bypass "
                "sample (cleared posts sent to tier 1 anyway; `escalation.bypass_sample_rate`, default 0: no "
                "series): C / (C + S / rate), each worker's counts since it started; the lowest worker is shown. "
                "Right axis: sampled cleared posts the judge found violating (S) since start, summed over "
                "workers; with few of them the estimate is noise. The Wilson interval is not exported "
                "(`modstream funnel recall --from-audit` prints it). Alert ModstreamFunnelRecallLow: below 0.9 "
                "with at least 10 sampled misses, for 1 h.",
                overrides=COUNT_ON_RIGHT_AXIS,
            ),
            Panel(
                "DLQ rate by reason",
                "ops",
                [(f"sum by (error_type) (rate(modstream_dlq_records_total[{RATE}]))", "{{error_type}}")],
                "Records sent to the dead-letter topic by error type (undecodable, invalid, too large, deadline "
                "exceeded, processing error).",
                stack=True,
            ),
        ],
    ),
    (
        "Review queue",
        [
            Panel(
                "Review queue age",
                "s",
                [
                    ("max(modstream_review_queue_oldest_age_seconds)", "oldest record without a decision"),
                    ("max(modstream_review_queue_pending)", "records without a decision"),
                ],
                "Exported by the reviewer's console (`modstream review serve`, its own /metrics), which reads "
                "the review and review-decisions topics: how long the oldest review record has waited for a "
                "reviewer, and how many wait (right axis). Max over console replicas (each reads the whole "
                "topics). Alert ModstreamReviewQueueStale: oldest over 4 h for 15 min.",
                overrides=COUNT_ON_RIGHT_AXIS,
            ),
            Panel(
                "Review records by reason",
                "ops",
                [
                    (f"sum by (reason) (rate(modstream_review_records_total[{RATE}]))", "queued: {{reason}}"),
                    (
                        f"sum by (outcome) (rate(modstream_review_console_decisions_total[{RATE}]))",
                        "decided in the console: {{outcome}}",
                    ),
                ],
                "Review records the workers queue (decision review), by reason: unresolved policy, a policy "
                "whose action is review, severe negative (a record with several reasons counts under each); "
                "and decisions the console produced. Queued faster than decided for long: the queue grows.",
            ),
        ],
    ),
    (
        "Judges",
        [
            Panel(
                "Judge latency quantiles",
                "s",
                [
                    (
                        f"histogram_quantile({q}, sum by (le, tier) "
                        f"(rate(modstream_judge_latency_seconds_bucket[{RATE}])))",
                        f"p{round(q * 100)} {{{{tier}}}}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                "Latency of one HTTP call to a judge, per tier (t1 = 20b low effort, t2 = 120b high effort).",
            ),
            Panel(
                "Judge errors per tier",
                "ops",
                [
                    (
                        f'sum by (tier, outcome) (rate(modstream_judge_calls_total{{outcome!="ok"}}[{RATE}]))',
                        "{{tier}} {{outcome}}",
                    ),
                    (
                        f"sum by (tier, error) (rate(modstream_judge_retries_total[{RATE}]))",
                        "{{tier}} retried: {{error}}",
                    ),
                ],
                "Judge calls that ended without a valid answer (by kind), and calls retried while a judge was "
                "unavailable.",
            ),
            Panel(
                "Judge circuit breakers",
                "short",
                [("max by (tier, endpoint) (modstream_judge_breaker_state)", "{{tier}} {{endpoint}}")],
                "Per endpoint: 0 closed, 1 half-open (probing), 2 open (skipped). A tier with every endpoint "
                "open is down: posts wait, nothing is allowed unjudged.",
            ),
            Panel(
                "vLLM running / waiting",
                "short",
                [
                    ("sum by (model_name) (vllm:num_requests_running)", "running {{model_name}}"),
                    ("sum by (model_name) (vllm:num_requests_waiting)", "waiting {{model_name}}"),
                ],
                "Requests in the vLLM batch vs queued. Waiting > 0 for long: the tier is saturated.",
            ),
            Panel(
                "vLLM KV cache usage",
                "percentunit",
                [("max by (model_name) (vllm:kv_cache_usage_perc)", "{{model_name}}")],
                "Fraction of KV-cache blocks in use (1 = full: requests queue or are preempted).",
            ),
            Panel(
                "vLLM prefix cache hit rate",
                "percentunit",
                [
                    (
                        f"sum by (model_name) (rate(vllm:prefix_cache_hits_total[{RATE}])) "
                        f"/ sum by (model_name) (rate(vllm:prefix_cache_queries_total[{RATE}]))",
                        "{{model_name}}",
                    )
                ],
                "Prompt tokens served from the prefix cache (the policy prefix is shared by every request of "
                "a policy). Low: check VLLM_SYSTEM_START_DATE and prefix caching.",
            ),
        ],
    ),
    (
        "Cost and resources",
        [
            Panel(
                "Tokens per 1k posts",
                "short",
                [
                    (
                        f"1000 * sum by (tier, kind) (rate(modstream_judge_tokens_total[{RATE}])) "
                        f"/ scalar(sum(rate(modstream_verdicts_total[{RATE}])))",
                        "{{tier}} {{kind}}",
                    )
                ],
                "Judge tokens (as the server reported them) per 1,000 posts, by tier and kind "
                "(prompt, completion, cached_prompt).",
            ),
            Panel(
                "Judge-seconds per 1k posts (GPU-time proxy)",
                "s",
                [
                    (
                        f"1000 * sum by (tier) (rate(modstream_judge_latency_seconds_sum[{RATE}])) "
                        f"/ scalar(sum(rate(modstream_verdicts_total[{RATE}])))",
                        "{{tier}}",
                    )
                ],
                "Sum of judge call latencies per 1,000 posts, by tier: an upper bound of GPU time (calls share "
                "a batch). Multiply by GPU price per second and divide by the mean batch size for a cost estimate.",
            ),
            Panel(
                "Worker memory",
                "bytes",
                [(f"process_resident_memory_bytes {WORKER_ONLY}", "{{instance}}")],
                "Resident memory of each worker process (compare with the pod's memory limit).",
            ),
            Panel(
                "Kafka errors and rebalances",
                "ops",
                [
                    (f"sum by (client, class) (rate(modstream_kafka_errors_total[{RATE}]))", "{{client}} {{class}}"),
                    (f"sum by (event) (rate(modstream_rebalances_total[{RATE}]))", "partitions {{event}}"),
                ],
                "Kafka client errors by class (retriable ones are ridden out) and partitions assigned, revoked, lost.",
            ),
        ],
    ),
]


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
        for i, (expr, legend) in enumerate(panel.targets)
    ]
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if panel.stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": panel.overrides},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        for i, panel in enumerate(row_panels):
            panels.append(panel_json(panel, next_id, 12 * (i % 2), y + 8 * (i // 2)))
            next_id += 1
        y += 8 * ((len(row_panels) + 1) // 2)
    return {
        "uid": "modstream",
        "title": "modstream",
        "description": "Streaming moderation worker: flow, verdicts, judges (vLLM), cost. See docs/operations.md.",
        "tags": ["modstream", "kafka", "vllm"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                }
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        stale = [str(p.relative_to(ROOT)) for p in OUTPUTS if not p.is_file() or p.read_text() != text]
        if stale:
            print(f"out of date (run python {Path(__file__).relative_to(ROOT)}): {', '.join(stale)}")
            return 1
        return 0
    for path in OUTPUTS:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
