"""The simulator's HTTP server: vLLM's OpenAI-compatible endpoints plus /sim/* test controls."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from collections import deque
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from .config import FaultSettings, SimConfig
from .directives import DirectiveError
from .engine import KvBlocks, LatencyModel, PrefixCache, Stats, draw_fault, prompt_token_ids
from .logprobs import chat_logprobs
from .metrics import build_registry
from .protocol import ChatRequest, completion_body, describe_validation_error, error_body
from .script import Outcome, script


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class Simulator:
    """State of one simulated vLLM server; the handlers are its methods."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.faults = config.fault_settings()
        self.rng = random.Random(config.seed)
        self.stats = Stats()
        self.cache = PrefixCache(config.kv_cache_tokens // config.block_size, config.block_size)
        self.kv = KvBlocks(config.kv_cache_tokens // config.block_size, config.block_size)
        self.latency = LatencyModel(
            prefill_ms_per_token=config.prefill_ms_per_token,
            decode_ms_per_token=config.decode_ms_per_token,
            batch_slowdown=config.decode_batch_slowdown,
            max_num_seqs=config.max_num_seqs,
            speed=config.speed,
        )
        self.request_log: deque[Any] = deque(maxlen=config.request_log_size)
        # The HTTP headers of the same requests (names lower-cased, credentials redacted).
        self.header_log: deque[dict[str, str]] = deque(maxlen=config.request_log_size)
        # asyncio.Semaphore wakes waiters in FIFO order: vLLM's scheduler is first-come-first-served.
        self.slots = asyncio.Semaphore(config.max_num_seqs)
        self.registry = build_registry(self.stats, config.served_model_name, self.kv.usage)
        # Load the o200k vocabulary (a second or two) before the port opens, not in the first request.
        prompt_token_ids([("user", "warm-up")], "low")

    def _error(self, status: int, message: str, param: str | None = None) -> web.Response:
        self.stats.by_status[str(status)] += 1
        return _json(error_body(status, message, param), status=status)

    def _unavailable(self) -> web.Response:
        return self._error(503, 'The simulated server is in an outage (POST /sim/faults {"outage": false}).')

    def _engine_dead(self) -> web.Response:
        # vLLM's handler for EngineDeadError answers a bare 500 (no JSON body).
        self.stats.by_status["500"] += 1
        return web.Response(status=500)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        self.stats.requests += 1
        if self.faults.outage:
            return self._unavailable()
        if self.faults.engine_dead:
            return self._engine_dead()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return self._error(400, f"request body is not valid JSON: {exc}")
        self.request_log.append(body)
        self.header_log.append(_logged_headers(request))
        if not isinstance(body, dict):
            return self._error(400, "request body must be a JSON object")
        try:
            req = ChatRequest.model_validate(body)
        except ValidationError as exc:
            return self._error(400, describe_validation_error(exc))
        if req.model != self.config.served_model_name:
            return self._error(404, f"The model `{req.model}` does not exist.", "model")
        if req.stream:
            return self._error(400, "stream=true is not supported by the simulator; send stream=false", "stream")
        if (req.n or 1) != 1:
            return self._error(400, "n > 1 is not supported by the simulator", "n")
        effort = req.reasoning_effort or "medium"
        messages = [(m.role, m.text()) for m in req.messages]
        prompt = prompt_token_ids(messages, effort)
        limit = req.output_limit()
        room = self.config.max_model_len - len(prompt)
        if room <= 0 or (limit is not None and limit > room):
            wanted = len(prompt) + (limit or 0)
            return self._error(
                400,
                f"This model's maximum context length is {self.config.max_model_len} tokens. However, you "
                f"requested {wanted} tokens ({len(prompt)} in the messages, {limit or 0} in the completion). "
                "Please reduce the length of the messages or completion.",
            )
        fault = draw_fault(self.rng, self.faults)
        try:
            outcome = script(
                req.policy_text(), req.post_text(), effort, self.config.seed,
                rate_fault=fault, max_tokens=limit if limit is not None else room,
                response_format=req.response_format.type if req.response_format else None,
            )  # fmt: skip
        except DirectiveError as exc:
            return self._error(400, f"invalid [[sim: ...]] directive: {exc}")
        self.stats.by_effort[effort] += 1
        if outcome.fault:
            self.stats.by_fault[outcome.fault] += 1
        if outcome.fault == "5xx":
            return self._error(500, "simulated engine failure (fault=5xx)")
        hit = 0
        try:
            if outcome.fault == "timeout":
                await self._hold(request)
            hit = await self._run(prompt, outcome, outcome.delay_ms)
        except asyncio.CancelledError:
            if not request.get("sim_dropped"):
                self.stats.by_status["cancelled"] += 1  # the client went away (handler_cancellation)
            raise
        self.stats.by_status["200"] += 1
        self.stats.observe_success(
            outcome.finish_reason, len(prompt), outcome.completion_tokens, time.monotonic() - arrived
        )
        logprobs = (
            chat_logprobs(outcome, req.top_logprobs or 0, self.config.seed, self.config.logprobs_scope)
            if req.logprobs
            else None
        )
        return _json(completion_body(self.config.served_model_name, outcome, len(prompt), hit, logprobs))

    async def _hold(self, request: web.Request) -> None:
        """A stuck request: wait, then either drop the connection or go on to a late answer."""
        await asyncio.sleep(self.faults.timeout_hold_s)
        if self.faults.timeout_then == "drop":
            # Close the socket without a response: the client sees a disconnect, not an HTTP error.
            self.stats.by_status["dropped"] += 1
            request["sim_dropped"] = True
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError

    async def _run(self, prompt: list[int], outcome: Outcome, extra_delay_ms: int) -> int:
        """Wait for one of max_num_seqs slots, prefill the uncached prompt, then decode step by step
        (each step's per-token time read from the batch size then); returns the cached tokens."""
        output_tokens = outcome.completion_tokens
        queued = self.slots.locked()
        if queued:
            self.stats.enter_queue()
        try:
            await self.slots.acquire()
        except BaseException:
            self.stats.waiting -= int(queued)
            raise
        lookup = self.cache.lookup_and_insert(prompt)
        own = len(prompt) - len(lookup.blocks) * self.cache.block_size  # the partial last prompt block
        generated = 0
        self.stats.start_running(queued)
        self.kv.hold(lookup.blocks, own)
        try:
            self.stats.prefix_cache_queries += len(prompt)
            self.stats.prefix_cache_hits += lookup.hit_tokens
            await asyncio.sleep(self.latency.prefill_s(len(prompt) - lookup.hit_tokens) + extra_delay_ms / 1000.0)
            while generated < output_tokens:
                running = self.stats.running
                step = self.latency.step_tokens(output_tokens - generated, running)
                await asyncio.sleep(step * self.latency.token_s(running))
                self.kv.grow(own + generated, own + generated + step)
                generated += step
        finally:
            self.kv.release(lookup.blocks, own + generated)
            self.stats.stop_running()
            self.slots.release()
        return lookup.hit_tokens

    async def models(self, request: web.Request) -> web.StreamResponse:
        # Like vLLM, /v1/models never asks the engine: a dead engine still lists its model.
        if self.faults.outage:
            return self._unavailable()
        model = {
            "id": self.config.served_model_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "modstream-sim",
            "root": self.config.served_model_name,
            "parent": None,
            "max_model_len": self.config.max_model_len,
        }
        return _json({"object": "list", "data": [model]})

    async def health(self, request: web.Request) -> web.StreamResponse:
        # Current vLLM: 200 with an empty body while the engine is alive, 503 (empty) once it is dead.
        # Probes are not counted in /sim/stats.
        if self.faults.outage:
            return _json(error_body(503, "The simulated server is in an outage."), status=503)
        return web.Response(status=503 if self.faults.engine_dead else 200)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        return _json(self.faults.model_dump())

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            update = orjson.loads(await request.read())
            if not isinstance(update, dict):
                raise ValueError("body must be a JSON object")
            self.faults = FaultSettings.model_validate({**self.faults.model_dump(), **update})
        except (ValueError, ValidationError) as exc:  # orjson.JSONDecodeError is a ValueError
            return _json(error_body(400, str(exc)), status=400)
        return _json(self.faults.model_dump())

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        snapshot = self.stats.snapshot()
        snapshot["faults"] = self.faults.model_dump()
        snapshot["prefix_cache_blocks"] = len(self.cache)
        return _json(snapshot)

    async def reset(self, request: web.Request) -> web.StreamResponse:
        """Back to the start state: counters, request log, prefix cache, fault settings and RNG."""
        self.stats.reset()
        self.request_log.clear()
        self.header_log.clear()
        self.cache.clear()
        self.faults = self.config.fault_settings()
        self.rng = random.Random(self.config.seed)
        return _json({"ok": True})

    async def get_requests(self, request: web.Request) -> web.StreamResponse:
        try:
            limit = int(request.query.get("limit", len(self.request_log)))
        except ValueError:
            return _json(error_body(400, "limit must be an integer"), status=400)
        items = list(self.request_log)
        return _json(items[-limit:] if limit > 0 else [])

    async def get_request_headers(self, request: web.Request) -> web.StreamResponse:
        """The HTTP headers of the requests `/sim/requests` shows, in the same order."""
        try:
            limit = int(request.query.get("limit", len(self.header_log)))
        except ValueError:
            return _json(error_body(400, "limit must be an integer"), status=400)
        items = list(self.header_log)
        return _json(items[-limit:] if limit > 0 else [])


def _logged_headers(request: web.Request) -> dict[str, str]:
    return {
        name.lower(): ("***" if name.lower() in ("authorization", "proxy-authorization") else value)
        for name, value in request.headers.items()
    }


SIMULATOR_KEY = web.AppKey("simulator", Simulator)


def build_app(config: SimConfig) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    sim = Simulator(config)
    app[SIMULATOR_KEY] = sim
    app.router.add_post("/v1/chat/completions", sim.chat_completions)
    app.router.add_get("/v1/models", sim.models)
    app.router.add_get("/health", sim.health)
    app.router.add_get("/metrics", sim.metrics)
    app.router.add_get("/sim/faults", sim.get_faults)
    app.router.add_post("/sim/faults", sim.set_faults)
    app.router.add_get("/sim/stats", sim.get_stats)
    app.router.add_post("/sim/reset", sim.reset)
    app.router.add_get("/sim/requests", sim.get_requests)
    app.router.add_get("/sim/request_headers", sim.get_request_headers)
    return app


def make_runner(app: web.Application) -> web.AppRunner:
    # handler_cancellation: a client that gives up frees its slot, as vLLM aborts such requests.
    return web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)


async def serve(config: SimConfig) -> None:
    """Serve until SIGINT/SIGTERM."""
    runner = make_runner(build_app(config))
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else config.port  # the real one when --port 0
    print(
        f"modstream sim-vllm: serving {config.served_model_name} on http://{config.host}:{port} "
        f"(max_num_seqs={config.max_num_seqs}, speed={config.speed})",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows loops
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
