#!/usr/bin/env python3
"""Regenerate deploy/helm/modstream/values.schema.json from values.yaml.

Types come from the defaults in values.yaml; fixed-key sections refuse unknown keys
(typos fail at `helm install/template/lint`, with Helm 3 and 4 alike); free-form maps
(labels, resources, probes, config, ...) are left open; OVERRIDES adds enums, ranges
and patterns. tests/integration/test_deploy_files.py checks that the committed schema is what this
script produces, so run it after changing values.yaml:

    python deploy/tools/gen_values_schema.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "modstream"
FREE = {  # free-form maps: any keys
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
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "strategy",
}
OVERRIDES: dict[tuple[str, ...], dict[str, Any]] = {
    ("judges", "t1", "reasoningEffort"): {"type": "string", "enum": ["low", "medium", "high"]},
    ("judges", "t2", "reasoningEffort"): {"type": "string", "enum": ["low", "medium", "high"]},
    ("judges", "t1", "maxInFlight"): {"type": ["integer", "null"], "minimum": 1},
    ("judges", "t2", "maxInFlight"): {"type": ["integer", "null"], "minimum": 1},
    ("judges", "t1", "baseUrls"): {"type": "array", "items": {"type": "string", "pattern": "^https?://"}},
    ("judges", "t2", "baseUrls"): {"type": "array", "items": {"type": "string", "pattern": "^https?://"}},
    ("vllm", "systemStartDate"): {
        "type": "string",
        "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        "description": "Pins the harmony system-message date (YYYY-MM-DD) so the prefix cache survives midnight.",
    },
    ("vllm", "image", "tag"): {"type": "string", "minLength": 1, "not": {"const": "latest"}},
    ("worker", "image", "tag"): {"type": "string", "not": {"const": "latest"}},
    ("kafka", "sasl", "securityProtocol"): {"type": "string", "enum": ["SASL_SSL", "SASL_PLAINTEXT"]},
    ("kafka", "sasl", "mechanism"): {
        "type": "string",
        "enum": ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "OAUTHBEARER", "GSSAPI"],
    },
    ("keda", "offsetResetPolicy"): {"type": "string", "enum": ["", "latest", "earliest"]},
    ("keda", "fallback", "replicas"): {"type": "integer", "minimum": 0},
    ("keda", "fallback", "failureThreshold"): {"type": "integer", "minimum": 1},
    ("vllm", "runtimeClassName"): {"type": "string"},
    ("worker", "drainTimeoutS"): {"type": "number", "exclusiveMinimum": 0},
    ("judges", "t1", "timeoutS"): {"type": "number", "exclusiveMinimum": 0},
    ("judges", "t2", "timeoutS"): {"type": "number", "exclusiveMinimum": 0},
    ("worker", "maxInFlight"): {"type": ["integer", "null"], "minimum": 1},
    ("vllm", "shmSize"): {"type": ["string", "integer"]},
    ("vllm", "hfCache", "sizeT1"): {"type": "string"},
    ("vllm", "hfCache", "sizeT2"): {"type": "string"},
    ("kafkaTopics", "topics"): {
        "type": "object",
        "description": "Topic name -> partitions and topic configs (strings).",
        "additionalProperties": {
            "type": "object",
            "additionalProperties": False,
            "required": ["partitions"],
            "properties": {
                "partitions": {"type": "integer", "minimum": 1},
                "config": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    },
    ("kafkaTopics", "replicas"): {"type": "integer", "minimum": 1},
    ("review", "console", "port"): {"type": "integer", "minimum": 1, "maximum": 65535},
    ("review", "console", "service", "port"): {"type": "integer", "minimum": 1, "maximum": 65535},
    ("review", "console", "auth", "cotReviewers"): {"type": "array", "items": {"type": "string", "minLength": 1}},
    ("review", "console", "ingress", "hosts"): {"type": "array", "items": {"type": "string", "minLength": 1}},
    ("appeals", "replicaCount"): {"type": "integer", "minimum": 0},
    ("policies",): {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "Policy files: file name -> content.",
    },
}
for t in ("t1", "t2"):
    OVERRIDES[("vllm", t, "gpuMemoryUtilization")] = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
    for k in ("maxNumSeqs", "maxModelLen", "tensorParallelSize", "maxNumBatchedTokens"):
        OVERRIDES[("vllm", t, k)] = {"type": "integer", "minimum": 1}
    OVERRIDES[("vllm", t, "replicaCount")] = {"type": "integer", "minimum": 0}
    OVERRIDES[("vllm", t, "extraArgs")] = {"type": "array", "items": {"type": "string"}}


def typ(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"type": "boolean"}
    if isinstance(v, int):
        return {"type": "integer"}
    if isinstance(v, float):
        return {"type": "number"}
    if isinstance(v, str):
        return {"type": "string"}
    if isinstance(v, list):
        return {"type": "array"}
    if v is None:
        return {}
    raise TypeError(v)


def walk(v: Any, path: tuple[str, ...]) -> dict[str, Any]:
    if path in OVERRIDES:
        return OVERRIDES[path]
    if isinstance(v, dict):
        if path and path[-1] in FREE:
            return {"type": "object"}
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: walk(x, (*path, k)) for k, x in v.items()},
        }
    return typ(v)


def build() -> str:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "modstream chart values",
        **walk(values, ()),
    }
    # Helm passes `global` to every chart used as a subchart (umbrella charts, Argo CD
    # app-of-apps): accept it, whatever it holds.
    schema["properties"]["global"] = {"type": "object", "description": "Helm's global values (subchart use)."}
    return json.dumps(schema, indent=2) + "\n"


def main() -> int:
    (CHART / "values.schema.json").write_text(build(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
