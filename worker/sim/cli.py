"""`modstream sim-vllm` / `python -m worker.sim`: run the vLLM simulator from the command line."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from pydantic import ValidationError

from .config import SimConfig
from .server import serve


def _default(name: str) -> Any:
    return SimConfig.model_fields[name].default


@click.command("sim-vllm")
@click.option("--host", default=_default("host"), show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=int,
    default=_default("port"),
    show_default=True,
    help="Port to listen on (0 = any free port; the chosen one is printed on stderr).",
)
@click.option(
    "--served-model-name",
    default=_default("served_model_name"),
    show_default=True,
    help="Model id clients must send (others get 404, like vLLM), listed by /v1/models.",
)
@click.option(
    "--max-num-seqs",
    type=int,
    default=_default("max_num_seqs"),
    show_default=True,
    help="Requests that run at once, like vLLM's batch size; further requests queue FIFO (vllm:num_requests_waiting).",
)
@click.option(
    "--max-model-len",
    type=int,
    default=_default("max_model_len"),
    show_default=True,
    help="Context length in o200k tokens: prompt + max_tokens beyond it is a 400, like vLLM.",
)
@click.option(
    "--speed",
    type=float,
    default=_default("speed"),
    show_default=True,
    help="Time multiplier for the latency model: 1 = as configured, 2 = twice as slow, 0 = instant.",
)
@click.option(
    "--prefill-ms-per-token",
    type=float,
    default=_default("prefill_ms_per_token"),
    show_default=True,
    help="Prefill cost per prompt token NOT served from the prefix cache (models time to first token).",
)
@click.option(
    "--decode-ms-per-token",
    type=float,
    default=_default("decode_ms_per_token"),
    show_default=True,
    help="Decode cost per generated token of a lone request, reasoning included (so higher effort is slower).",
)
@click.option(
    "--decode-batch-slowdown",
    type=float,
    default=_default("decode_batch_slowdown"),
    show_default=True,
    help="k in: per-token decode time x (1 + k x running / max-num-seqs). 0 = batch size does not matter.",
)
@click.option(
    "--seed",
    type=int,
    default=_default("seed"),
    show_default=True,
    help="Seeds the fault draws and the scripted answers (same seed + same requests = same outputs).",
)
@click.option(
    "--kv-cache-tokens",
    type=int,
    default=_default("kv_cache_tokens"),
    show_default=True,
    help="KV cache size in tokens: bounds the prefix cache (LRU) and scales vllm:kv_cache_usage_perc.",
)
@click.option(
    "--block-size",
    type=int,
    default=_default("block_size"),
    show_default=True,
    help="KV/prefix-cache block size in tokens; only full blocks are cached, as in vLLM.",
)
@click.option(
    "--request-log-size",
    type=int,
    default=_default("request_log_size"),
    show_default=True,
    help="How many raw request bodies GET /sim/requests keeps.",
)
@click.option(
    "--logprobs-scope",
    type=click.Choice(["content", "all"]),
    default=_default("logprobs_scope"),
    show_default=True,
    help='Tokens `logprobs: true` covers: "all" as vLLM (headers and analysis too), or the final content only.',
)
@click.option(
    "--fail-5xx-rate",
    type=float,
    default=_default("fail_5xx_rate"),
    show_default=True,
    help="Fraction of requests answered 500 (an engine error).",
)
@click.option(
    "--timeout-rate",
    type=float,
    default=_default("timeout_rate"),
    show_default=True,
    help="Fraction of requests held for --timeout-hold-s (a hung engine or network).",
)
@click.option(
    "--timeout-hold-s",
    type=float,
    default=_default("timeout_hold_s"),
    show_default=True,
    help="How long a timeout-faulted request is held.",
)
@click.option(
    "--timeout-then",
    type=click.Choice(["drop", "answer"]),
    default=_default("timeout_then"),
    show_default=True,
    help="After the hold: close the connection without a response, or answer late.",
)
@click.option(
    "--truncate-rate",
    type=float,
    default=_default("truncate_rate"),
    show_default=True,
    help='Fraction answered with finish_reason "length": content cut mid-JSON, or null (cut in reasoning).',
)
@click.option(
    "--invalid-json-rate",
    type=float,
    default=_default("invalid_json_rate"),
    show_default=True,
    help="Fraction whose content is prose, broken JSON or JSON of the wrong shape (finish_reason stop).",
)
@click.option(
    "--empty-rate",
    type=float,
    default=_default("empty_rate"),
    show_default=True,
    help='Fraction whose content is "" (reasoning only, finish_reason stop).',
)
@click.option(
    "--unenforced-rate",
    type=float,
    default=_default("unenforced_rate"),
    show_default=True,
    help="Fraction whose response_format is not enforced (vLLM #23120): valid JSON that fails the schema.",
)
@click.option("--outage", is_flag=True, help="Start in an outage: completions, /v1/models and /health answer 503.")
@click.option(
    "--engine-dead",
    is_flag=True,
    help="Start with a dead engine: /health 503, completions 500, /v1/models still 200 (as vLLM).",
)
def sim_vllm(**options: Any) -> None:  # fmt: skip
    """Serve a simulated vLLM (gpt-oss-safeguard) on the OpenAI-compatible API.

    Answers are scripted from the post text: `[[sim: violation=1 confidence=low ...]]` in a
    post pins the verdict; otherwise the policy's own examples, trigger words and mention
    frames decide. See docs/simulator.md. Test
    controls: POST /sim/faults, GET /sim/stats, POST /sim/reset, GET /sim/requests.
    """
    try:
        config = SimConfig.model_validate(options)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    asyncio.run(serve(config))
