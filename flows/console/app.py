"""The agents' console as an ASGI app (Starlette): the page, the JSON API and the live stream.

Routes (everything but the page, ``/healthz`` and signing in needs a signed-in agent; else 401 and no data)::

    GET    /                          the page (page.html: vanilla JS, no build step)
    POST   /session                   {"agent", "password"} -> {"agent", "token"} + HttpOnly cookie
    DELETE /session                   sign out
    GET    /me                        {"agent"}
    GET    /alerts                    ?limit=50&before=SEQ&priority=&kind=&customer_id=&destination=service|marketing
                                      -> newest first, paged, with the backend's destinations and the base currency
    GET    /alerts/stream             Server-Sent Events: "alert", "claim" and "forget" (an erased customer) events
                                      (?after=SEQ replays newer alerts, of every destination)
    POST   /alerts/{alert_id}/feedback {"label": "correct"|"incorrect"} -> the alert_feedback event sent (service
                                      alerts only: a marketing trigger's outcome is what judges it)
    GET    /customers/{customer_id}   the live profile (audited), its claim and recent alerts
    POST   /customers/{customer_id}/claim    take (or extend) the claim; 409 if another agent holds it
    DELETE /customers/{customer_id}/claim    release one's own claim

Token: the session cookie, or ``Authorization: Bearer <token>`` for scripts.
What the app reads and writes comes in a ``ConsoleBackend``; flows/console/backends.py builds one for
Kafka + Redis (``crm-stream console``) or for the embedded demo (``crm-stream run --console``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from crm_stream.config.settings import Settings
from crm_stream.errors import CrmStreamError, UnavailableError
from crm_stream.flows.console.auth import Agents, SessionSigner
from crm_stream.flows.console.claims import ClaimBook
from crm_stream.flows.console.feed import DESTINATIONS, PRIORITIES, AlertRing, FeedbackUnavailable, feedback_event
from crm_stream.flows.console.profiles import customer_view
from crm_stream.operators.io import jsonutil
from crm_stream.operators.io.interface import SERVICE, Store
from crm_stream.operators.io.keys import KeySpace
from crm_stream.operators.privacy.audit import AuditLog, AuditUnavailable

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("page.html")
COOKIE = "crm_console"
HEARTBEAT_S = 15.0
MAX_PAGE = 200


class FeedbackSink(Protocol):
    """Where ``alert_feedback`` events go (Kafka's control topic, or the embedded dataflow's inbox)."""

    def send(self, event: dict[str, Any]) -> None:
        """Hand the event on, or raise ``FeedbackUnavailable`` saying what to do."""


@dataclass
class ConsoleBackend:
    settings: Settings
    ring: AlertRing
    claims: ClaimBook
    store: Store
    feedback: FeedbackSink
    audit: AuditLog
    now_ms: Callable[[], int]
    """The time stamped on feedback events: wall time in production, the stream's event time in the demo."""
    closers: list[Callable[[], None]] = field(default_factory=list)
    destinations: tuple[str, ...] = (SERVICE,)
    """What its feed brings: service alerts only (``crm-stream console``), or marketing triggers too (the demo)."""

    def close(self) -> None:
        for close in reversed(self.closers):
            try:
                close()
            except Exception:
                log.exception("console: error while shutting down")


class _Broadcast:
    """Fans alerts and claim changes, heard on feed threads, out to each open stream's asyncio queue."""

    def __init__(self) -> None:
        self.streams: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[bytes]]] = set()

    def publish(self, event: str, data: dict[str, Any]) -> None:
        message = b"event: " + event.encode() + b"\ndata: " + jsonutil.dumps(data) + b"\n\n"
        for loop, queue in list(self.streams):
            try:
                loop.call_soon_threadsafe(queue.put_nowait, message)
            except RuntimeError:  # that loop has closed
                self.streams.discard((loop, queue))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(backend: ConsoleBackend) -> Starlette:
    cfg = backend.settings.console
    agents = Agents(cfg.password_hashes)
    sessions = SessionSigner.from_setting(cfg.session_secret, cfg.session_hours * 3600)
    keys = KeySpace.of(backend.settings.store)  # pseudonymised key names when store.pii_key is set
    broadcast = _Broadcast()
    backend.ring.listen(lambda entry: broadcast.publish("alert", entry))
    backend.ring.on_forget(lambda customer_id: broadcast.publish("forget", {"customer_id": customer_id}))
    backend.claims.listen(lambda claim: broadcast.publish("claim", claim))
    if not cfg.password_hashes:
        log.warning(
            "console: no agents in [console.password_hashes], so nobody can sign in: add one with "
            "`crm-stream console-password NAME`"
        )

    def agent_of(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(COOKIE)
        return sessions.verify(token)

    def audit(agent: str, action: str, customer_id: str | None, detail: dict[str, Any] | None = None) -> None:
        backend.audit.record(f"agent:{agent}", action, customer_id, via="console", detail=detail)

    def signed_in(handler: Callable[..., Any]) -> Callable[[Request], Any]:
        async def wrapper(request: Request) -> Response:
            agent = agent_of(request)
            if agent is None:
                return _error(401, 'sign in first: POST /session with {"agent": ..., "password": ...}')
            try:
                return await handler(request, agent)
            except AuditUnavailable as exc:
                return _error(503, f"not done, because it could not be audited: {exc}")
            except UnavailableError as exc:  # Redis, the broker: try again once it is back
                return _error(503, str(exc))
            except CrmStreamError as exc:  # any other failure the engine raises on purpose: say it, keep serving
                return _error(500, str(exc))

        return wrapper

    async def body_of(request: Request) -> dict[str, Any] | None:
        if "application/json" not in request.headers.get("content-type", ""):
            return None  # also keeps plain cross-site form posts out (they cannot send JSON without CORS)
        try:
            body = jsonutil.loads(await request.body())
        except jsonutil.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None

    async def page(request: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def sign_in(request: Request) -> Response:
        body = await body_of(request)
        if body is None or not isinstance(body.get("agent"), str) or not isinstance(body.get("password"), str):
            return _error(400, 'send JSON {"agent": NAME, "password": PASSWORD} with Content-Type: application/json')
        agent, password = body["agent"].strip(), body["password"]
        ok = await run_in_threadpool(agents.authenticate, agent, password)
        remote = request.client.host if request.client else None
        try:
            await run_in_threadpool(audit, agent[:64], "sign_in" if ok else "sign_in_failed", None, {"remote": remote})
        except AuditUnavailable as exc:
            return _error(503, f"signing in is not possible while the audit stream is down: {exc}")
        if not ok:
            return _error(401, "unknown agent or wrong password")
        token = sessions.issue(agent)
        response = JSONResponse({"agent": agent, "token": token})
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(sessions.ttl_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def sign_out(request: Request) -> Response:
        response = JSONResponse({"agent": None})
        response.delete_cookie(COOKIE, path="/")
        return response

    @signed_in
    async def me(request: Request, agent: str) -> Response:
        return JSONResponse({"agent": agent})

    def _int(request: Request, name: str, default: int | None) -> int | None:
        value = request.query_params.get(name)
        if value is None or value == "":
            return default
        if not value.isdigit():
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(value)

    @signed_in
    async def alerts(request: Request, agent: str) -> Response:
        q = request.query_params
        try:
            limit = min(MAX_PAGE, max(1, _int(request, "limit", 50) or 50))
            before = _int(request, "before", None)
        except ValueError as exc:
            return _error(400, str(exc))
        destination = q.get("destination") or SERVICE
        if destination not in DESTINATIONS:
            return _error(400, f"destination must be one of {', '.join(DESTINATIONS)}, got {destination!r}")
        entries, next_before = backend.ring.page(
            before=before,
            limit=limit,
            priority=q.get("priority") or None,
            kind=q.get("kind") or None,
            customer_id=q.get("customer_id") or None,
            destination=destination,
        )
        customers = sorted({e["customer_id"] for e in entries})
        claims = await run_in_threadpool(backend.claims.holders, customers)
        return JSONResponse(
            {
                "alerts": entries,
                "next_before": next_before,
                "claims": claims,
                "kinds": backend.ring.kinds(destination),
                "priorities": list(PRIORITIES),
                "destination": destination,
                "destinations": list(backend.destinations),
                "currency": backend.settings.engine.base_currency,  # profiles' amounts are in it (events are converted)
            }
        )

    @signed_in
    async def stream(request: Request, agent: str) -> Response:
        try:
            after = _int(request, "after", None)
        except ValueError as exc:
            return _error(400, str(exc))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        subscription = (loop, queue)
        broadcast.streams.add(subscription)  # before the replay below, so nothing falls between the two

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 2000\nevent: hello\ndata: " + jsonutil.dumps({"agent": agent}) + b"\n\n"
                if after is not None:
                    missed, _ = backend.ring.page(limit=backend.ring.capacity * len(DESTINATIONS))
                    for entry in reversed([e for e in missed if e["seq"] > after]):
                        yield b"event: alert\ndata: " + jsonutil.dumps(entry) + b"\n\n"
                while True:
                    try:
                        yield await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        yield b": ping\n\n"  # keeps proxies from closing an idle stream
            finally:
                broadcast.streams.discard(subscription)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    @signed_in
    async def customer(request: Request, agent: str) -> Response:
        customer_id = request.path_params["customer_id"]

        def read() -> dict[str, Any] | None:
            view = customer_view(backend.store, keys, backend.settings, customer_id)
            if view is not None:  # recorded before anything is shown; no record, no data
                audit(agent, "profile_read", customer_id)
            return view

        view = await run_in_threadpool(read)
        if view is None:
            return _error(404, f"no profile for customer {customer_id!r} in the store (yet)")
        claim = (await run_in_threadpool(backend.claims.holders, [customer_id])).get(customer_id)
        recent, _ = backend.ring.page(limit=20, customer_id=customer_id)
        return JSONResponse({"profile": view, "claim": claim, "alerts": recent})

    @signed_in
    async def feedback(request: Request, agent: str) -> Response:
        alert = backend.ring.get(request.path_params["alert_id"])
        if alert is None:
            return _error(404, "that alert is not among the console's recent alerts: reload the page")
        if alert["destination"] != SERVICE:
            return _error(400, "feedback is for service alerts; a marketing trigger is judged by what the customer does next")
        body = await body_of(request)
        label = body.get("label") if body else None
        if label not in ("correct", "incorrect"):
            return _error(400, 'send JSON {"label": "correct"} or {"label": "incorrect"}')
        event = feedback_event(alert, label, agent, backend.now_ms())

        def send() -> None:
            audit(agent, "alert_feedback", alert["customer_id"], {"alert_id": alert["alert_id"], "label": label})
            backend.feedback.send(event)

        try:
            await run_in_threadpool(send)
        except FeedbackUnavailable as exc:
            return _error(503, str(exc))
        return JSONResponse({"event": event})

    @signed_in
    async def claim(request: Request, agent: str) -> Response:
        customer_id = request.path_params["customer_id"]
        if request.method == "DELETE":
            released = await run_in_threadpool(backend.claims.release, customer_id, agent)
            if released:
                await run_in_threadpool(audit, agent, "alert_claim", customer_id, {"op": "release"})
            return JSONResponse({"released": released})
        await run_in_threadpool(audit, agent, "alert_claim", customer_id, {"op": "claim"})
        taken, held = await run_in_threadpool(backend.claims.claim, customer_id, agent)
        if not taken:
            return JSONResponse({"error": f"{held['agent']} is already on this customer", "claim": held}, status_code=409)
        return JSONResponse({"claim": held})

    routes = [
        Route("/", page),
        Route("/healthz", healthz),
        Route("/session", sign_in, methods=["POST"]),
        Route("/session", sign_out, methods=["DELETE"]),
        Route("/me", me),
        Route("/alerts", alerts),
        Route("/alerts/stream", stream),
        Route("/alerts/{alert_id:str}/feedback", feedback, methods=["POST"]),
        Route("/customers/{customer_id:str}", customer),
        Route("/customers/{customer_id:str}/claim", claim, methods=["POST", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.backend = backend
    return app
