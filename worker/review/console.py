"""`modstream review serve`: the reviewer's console (aiohttp, server-rendered Jinja2 templates).

A reader thread follows the `review`, `review-decisions` and `audit` topics from the beginning into
the store (store.py); the pages read the store. A click produces a ReviewDecision to
`review-decisions` and answers only once the broker acknowledged it. Auth and CSRF: auth.py.
Metrics (own registry, on /metrics): modstream_review_queue_pending,
modstream_review_queue_oldest_age_seconds, modstream_review_console_decisions_total{outcome}.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aiohttp import web
from confluent_kafka import Message
from jinja2 import Environment, PackageLoader
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from pydantic import ValidationError

from worker.contracts import AuditRecord, ReviewDecision, ReviewerCall, ReviewRecord
from worker.kafka.producer import DeliveryFailed, Publisher
from worker.review.apply import store_review
from worker.review.auth import COOKIE, Auth, csrf_ok, csrf_token, same_origin
from worker.review.follow import Follower
from worker.review.store import ReviewStore
from worker.review.view import BadForm, calls_from_form, card

log = structlog.get_logger("modstream.review.console")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'",
}


@dataclass
class ConsoleConfig:
    consumer: dict[str, Any]  # client settings for the reader (never joins its group)
    producer: dict[str, Any]
    auth: Auth
    review_topic: str = "review"
    decisions_topic: str = "review-decisions"
    audit_topic: str = "audit"
    origin: str | None = None  # the public scheme://host, when a proxy changes it
    limit: int = 100
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))


def age_text(seconds: float) -> str:
    """3 d 4 h, 2 h 5 min, 40 s: how long something has waited."""
    s = int(seconds)
    for unit, size, smaller, small_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60)):
        if s >= size:
            rest = (s % size) // small_size
            return f"{s // size} {unit}" + (f" {rest} {smaller}" if rest else "")
    return f"{s // 60} min" if s >= 60 else f"{s} s"


def keep_audit(store: ReviewStore, msg: Message) -> None:
    """Only audit records of verdicts under review are kept (a cheap look before parsing)."""
    try:
        raw = orjson.loads(msg.value() or b"")
        if not isinstance(raw, dict):
            return
        if raw.get("decision") != "review" and not store.has_verdict(raw.get("verdict_id")):
            return
        store.add_audit(AuditRecord.model_validate(raw))
    except (orjson.JSONDecodeError, ValidationError):
        return


def keep_decision(store: ReviewStore, msg: Message) -> None:
    try:
        store.add_decision(ReviewDecision.model_validate_json(msg.value() or b""))
    except ValidationError:
        return  # `review apply` dead-letters it; the console only needs the valid ones


class Console:
    def __init__(self, config: ConsoleConfig, store: ReviewStore) -> None:
        self.config = config
        self.store = store
        self.templates = Environment(loader=PackageLoader("worker.review", "templates"), autoescape=True)
        self.templates.filters["age"] = age_text
        self.registry = CollectorRegistry()
        Gauge("modstream_review_queue_pending", "Review records without a decision.", registry=self.registry
              ).set_function(lambda: self.store.stats(datetime.now(UTC)).pending)  # fmt: skip
        Gauge(
            "modstream_review_queue_oldest_age_seconds",
            "Age of the oldest review record without a decision (0 when none).",
            registry=self.registry,
        ).set_function(lambda: self.store.stats(datetime.now(UTC)).oldest_age_s)
        self.decisions = Counter(
            "modstream_review_console_decisions", "Decisions produced by the console.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.publisher = Publisher(config.producer)
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._follow, name="review-reader", daemon=True)
        self.reader_error: BaseException | None = None
        self._deciding: set[str] = set()

    def _follow(self) -> None:
        follower = Follower(
            self.config.consumer,
            {
                self.config.review_topic: lambda m: store_review(self.store, m),
                self.config.decisions_topic: lambda m: keep_decision(self.store, m),
                self.config.audit_topic: lambda m: keep_audit(self.store, m),
            },
        )
        try:
            while not self._stop.is_set():
                follower.poll(0.5)
        except BaseException as exc:
            self.reader_error = exc
            log.error("review_reader_failed", error=str(exc))
            raise
        finally:
            follower.close()

    async def _start(self, _app: web.Application) -> None:
        self.publisher.start(asyncio.get_running_loop())
        self._reader.start()

    async def _stop_all(self, _app: web.Application) -> None:
        self._stop.set()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._reader.join, 10)
        await loop.run_in_executor(None, self.publisher.close, 10)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[security_headers])
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop_all)
        app.router.add_get("/", self.queue)
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)
        app.router.add_post("/reviews/{review_id}", self.decide)
        app.router.add_get("/reviews/{review_id}/reasoning", self.reasoning)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        return app

    # -- helpers -----------------------------------------------------------------------------------

    def reviewer(self, request: web.Request) -> str | None:
        return self.config.auth.reviewer(request.headers, request.cookies)

    def same_origin(self, request: web.Request) -> bool:
        if self.config.origin is not None:
            scheme, _, host = self.config.origin.partition("://")
            return same_origin(request.headers, scheme, host)
        return same_origin(request.headers, request.scheme, request.host)

    def render(self, name: str, status: int = 200, **context: Any) -> web.Response:
        html = self.templates.get_template(name).render(**context)
        return web.Response(text=html, status=status, content_type="text/html")

    # -- pages -------------------------------------------------------------------------------------

    async def queue(self, request: web.Request) -> web.StreamResponse:
        reviewer = self.reviewer(request)
        if reviewer is None:
            raise web.HTTPSeeOther("/login")
        now = datetime.now(UTC)
        cot = self.config.auth.may_see_reasoning(reviewer)
        cards = [
            card(r, now, (self.store.audit(r.verdict_id) or []) if cot else None)
            for r in self.store.pending(now, self.config.limit)
        ]
        done = request.query.get("done")
        return self.render(
            "queue.html",
            reviewer=reviewer,
            cards=cards,
            cot=cot,
            stats=self.store.stats(now),
            csrf=csrf_token(self.config.secret, reviewer),
            flash=f"Decision on post {done} recorded." if done else None,
        )

    async def login_page(self, _request: web.Request) -> web.StreamResponse:
        return self.render("login.html", failed=False)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not self.same_origin(request):
            raise web.HTTPForbidden(text="cross-origin request refused")
        form = await request.post()
        token = str(form.get("token", ""))
        if not token or self.config.auth.reviewer_for_token(token) is None:
            return self.render("login.html", status=401, failed=True)
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.secure, path="/")
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        await self._checked_form(request)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    async def _checked_form(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """(reviewer, form) of an authenticated, same-origin POST with a valid CSRF token."""
        reviewer = self.reviewer(request)
        if reviewer is None:
            raise web.HTTPUnauthorized(text="sign in first")
        if not self.same_origin(request):
            raise web.HTTPForbidden(text="cross-origin request refused")
        form = {k: str(v) for k, v in (await request.post()).items()}
        if not csrf_ok(self.config.secret, reviewer, form.get("csrf", "")):
            raise web.HTTPForbidden(text="missing or wrong CSRF token")
        return reviewer, form

    async def decide(self, request: web.Request) -> web.StreamResponse:
        reviewer, form = await self._checked_form(request)
        record = self.store.review(request.match_info["review_id"])
        if record is None:
            raise web.HTTPNotFound(text="no such review")
        if self.store.decisions_for(record.review_id) or record.review_id in self._deciding:
            raise web.HTTPConflict(text="this review already has a decision")
        try:
            calls = calls_from_form(record, form)
        except BadForm as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        self._deciding.add(record.review_id)  # a second click while this one is in flight: 409
        try:
            await self._produce_decision(record, reviewer, calls)
        finally:
            self._deciding.discard(record.review_id)
        raise web.HTTPSeeOther(f"/?done={record.post.id}")

    async def _produce_decision(self, record: ReviewRecord, reviewer: str, calls: list[ReviewerCall]) -> None:
        decision = ReviewDecision(
            decision_id=str(uuid.uuid4()),
            review_id=record.review_id,
            post_id=record.post.id,
            verdict_id=record.verdict_id,
            revision=record.revision,
            reviewer=reviewer,
            calls=calls,
            decided_at=datetime.now(UTC),
        )
        try:
            await self.publisher.send(
                self.config.decisions_topic, record.post.id.encode(), decision.model_dump_json().encode()
            )
        except DeliveryFailed as exc:
            log.warning("review_decision_not_delivered", review_id=record.review_id, error=str(exc))
            raise web.HTTPServiceUnavailable(text="the decision could not be recorded; try again") from None
        self.store.add_decision(decision)  # acknowledged: off the queue now, not when read back
        outcomes = {c.outcome for c in calls}
        self.decisions.labels(outcome=outcomes.pop() if len(outcomes) == 1 else "mixed").inc()
        log.info("review_decided", review_id=record.review_id, reviewer=reviewer, calls=len(calls))

    async def reasoning(self, request: web.Request) -> web.StreamResponse:
        reviewer = self.reviewer(request)
        if reviewer is None:
            raise web.HTTPUnauthorized(text="sign in first")
        if not self.config.auth.may_see_reasoning(reviewer):
            raise web.HTTPForbidden(text="not authorised for the chain of thought")
        record = self.store.review(request.match_info["review_id"])
        if record is None:
            raise web.HTTPNotFound(text="no such review")
        return web.json_response({"verdict_id": record.verdict_id, "calls": self.store.audit(record.verdict_id)})

    async def metrics(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, _request: web.Request) -> web.StreamResponse:
        if self.reader_error is not None:
            return web.Response(status=503, text=f"reader failed: {self.reader_error}")
        return web.Response(text="ok")


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response
