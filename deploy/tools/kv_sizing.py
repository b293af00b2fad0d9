#!/usr/bin/env python3
"""KV-cache arithmetic behind the per-GPU vLLM presets (--max-num-seqs and friends).

    python deploy/tools/kv_sizing.py          # prints the table in docs/deployment.md

Pure arithmetic from the models' published configurations, not a measurement:

* KV bytes per token and layer = 2 (K and V) x kv_heads x head_dim x bytes (bf16 = 2).
  gpt-oss alternates full attention and a 128-token sliding window, so only the
  full-attention half of the layers grows with the sequence; the sliding half holds at
  most 128 tokens per sequence.
* free KV memory = gpu_memory_utilization x GPU memory - weights - activations
  (activations = the forward-pass peak vLLM reserves plus CUDA graphs, an assumption:
  ~2 GiB at 1,024 batched tokens, ~3 GiB above); with tensor parallelism the
  weights and KV are split over the GPUs.
* tokens per sequence = typical prompt (harmony header ~100 + policy ~600 + post ~300)
  + typical output (low effort ~1,000, high effort ~4,000).
* sequences that fit = free / (bytes per sequence); the preset's --max-num-seqs is
  rounded down from it (and capped at 512, where vLLM's default CUDA-graph capture
  sizes end), leaving headroom for longer reasoning. Batched tokens: vLLM's own
  defaults (8,192 on H100/H200; 2,048 on A100, where more costs throughput), except
  1,024 for 120b on one 80 GB GPU (the recipe's start-up fix). Prefix caching shares the policy's
  blocks between sequences of one policy, which is extra headroom on top.

tests/integration/test_deploy_files.py checks every preset (compose env files and Helm values)
against `capacity()`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

GIB = 1024**3
KV_DTYPE_BYTES = 2  # bf16 KV cache
SLIDING_WINDOW = 128


@dataclass(frozen=True)
class Model:
    name: str
    layers: int
    kv_heads: int
    head_dim: int
    weights_gib: float

    @property
    def full_layers(self) -> int:
        return self.layers // 2

    @property
    def sliding_layers(self) -> int:
        return self.layers - self.full_layers

    @property
    def bytes_per_token_layer(self) -> int:
        return 2 * self.kv_heads * self.head_dim * KV_DTYPE_BYTES

    @property
    def kv_bytes_per_token(self) -> int:
        """What one more token of context costs (full-attention layers only)."""
        return self.full_layers * self.bytes_per_token_layer

    def kv_bytes_per_seq(self, tokens: int) -> int:
        window = min(tokens, SLIDING_WINDOW)
        return tokens * self.kv_bytes_per_token + window * self.sliding_layers * self.bytes_per_token_layer


MODELS = {
    "20b": Model("gpt-oss-safeguard-20b", layers=24, kv_heads=8, head_dim=64, weights_gib=13.0),
    "120b": Model("gpt-oss-safeguard-120b", layers=36, kv_heads=8, head_dim=64, weights_gib=65.0),
}
# GPU memory as CUDA reports it, GiB (rounded).
GPUS = {"h100-80gb": 79.6, "h200-141gb": 140.4, "a100-80gb": 80.0, "a100-40gb": 40.0}
# Typical tokens per sequence: prompt (header + policy + post) + output per tier.
PROMPT_TOKENS = 100 + 600 + 300
OUTPUT_TOKENS = {"t1": 1_000, "t2": 4_000}
TIER_MODEL = {"t1": "20b", "t2": "120b"}
CUDA_GRAPH_CAP = 512


def activations_gib(max_num_batched_tokens: int) -> float:
    return 2.0 if max_num_batched_tokens <= 1024 else 3.0


@dataclass(frozen=True)
class Preset:
    gpu: str
    tier: str
    gpu_memory_utilization: float
    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int
    tensor_parallel_size: int = 1


# The presets shipped in deploy/compose/presets/*.env and deploy/helm/modstream/ci/gpu-*-values.yaml.
PRESETS = [
    Preset("h100-80gb", "t1", 0.90, 8192, 512, 16384),
    Preset("h100-80gb", "t2", 0.95, 1024, 32, 32768),
    Preset("h200-141gb", "t1", 0.90, 8192, 512, 16384),
    Preset("h200-141gb", "t2", 0.90, 8192, 256, 32768),
    Preset("a100-80gb", "t1", 0.90, 2048, 512, 16384),
    Preset("a100-80gb", "t2", 0.95, 1024, 32, 32768),
    Preset("a100-40gb", "t1", 0.90, 2048, 256, 16384),
    Preset("a100-40gb", "t2", 0.95, 1024, 32, 32768, tensor_parallel_size=2),
]


def tokens_per_seq(tier: str) -> int:
    return PROMPT_TOKENS + OUTPUT_TOKENS[tier]


def free_kv_gib(p: Preset) -> float:
    model = MODELS[TIER_MODEL[p.tier]]
    tp = p.tensor_parallel_size
    total = p.gpu_memory_utilization * GPUS[p.gpu] * tp
    return total - model.weights_gib - activations_gib(p.max_num_batched_tokens) * tp


def capacity(p: Preset) -> int:
    """Sequences of typical length whose KV fits in the free memory."""
    model = MODELS[TIER_MODEL[p.tier]]
    return math.floor(free_kv_gib(p) * GIB / model.kv_bytes_per_seq(tokens_per_seq(p.tier)))


def fits_max_model_len(p: Preset) -> bool:
    """vLLM refuses to start unless one sequence of --max-model-len fits in the KV cache."""
    model = MODELS[TIER_MODEL[p.tier]]
    return model.kv_bytes_per_seq(p.max_model_len) <= free_kv_gib(p) * GIB


def table() -> str:
    rows = [
        "| GPU | tier | util | batched tokens | TP | free KV (GiB) | MiB / seq | seqs that fit | --max-num-seqs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in PRESETS:
        model = MODELS[TIER_MODEL[p.tier]]
        per_seq = model.kv_bytes_per_seq(tokens_per_seq(p.tier)) / 2**20
        rows.append(
            f"| {p.gpu} | {p.tier} ({TIER_MODEL[p.tier]}) | {p.gpu_memory_utilization:.2f} | {p.max_num_batched_tokens}"
            f" | {p.tensor_parallel_size} | {free_kv_gib(p):.1f} | {per_seq:.0f} | {capacity(p)} | {p.max_num_seqs} |"
        )
    return "\n".join(rows)


def main() -> int:
    for key, m in MODELS.items():
        print(
            f"{key}: {m.kv_bytes_per_token:,} KV bytes per token ({m.full_layers} full-attention layers x"
            f" {m.bytes_per_token_layer:,}) + {SLIDING_WINDOW * m.sliding_layers * m.bytes_per_token_layer:,}"
            f" bytes per sequence for the {m.sliding_layers} sliding-window layers"
        )
    print(f"tokens per sequence: t1 {tokens_per_seq('t1'):,}, t2 {tokens_per_seq('t2'):,}\n")
    print(table())
    bad = [p for p in PRESETS if p.max_num_seqs > min(capacity(p), CUDA_GRAPH_CAP) or not fits_max_model_len(p)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
