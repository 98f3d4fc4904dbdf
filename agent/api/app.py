"""``create_app``: the routers under ``/api/v1``, one error shape, request ids and allowed hosts.

Every error answers :class:`core.schemas.ErrorBody` — FastAPI's own 404/405/422 included — so a
client shows ``title`` and ``fix`` as they are. A server error is logged to the engine log
(logger ``chargebridge.api``) with a request id that the 500 body and the ``X-Request-ID``
header carry too; its text never leaves the engine (it could hold patient data).
"""

from __future__ import annotations

import json
import logging
import traceback
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent import __version__
from agent.api import audit, claims, config, databases, encounters, health, quarantine, reconcile, review, sync, users
from agent.service import EngineService
from core.errors import ChargeBridgeError

log = logging.getLogger("chargebridge.api")

PREFIX = "/api/v1"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def create_app(svc: EngineService) -> FastAPI:
    app = FastAPI(title="ChargeBridge engine API", version=__version__,
                  description="Local API of the ChargeBridge engine. Every call but /api/v1/health needs "
                              "`Authorization: Bearer <token>` (tokens: `chargebridge users add`). Every error "
                              "answers `{title, fix, key, request_id}`.")
    app.state.service = svc
    for module in (health, encounters, quarantine, sync, reconcile, users, audit, config):
        app.include_router(module.router, prefix=PREFIX)
    app.include_router(review.router, prefix=PREFIX)  # coder review queue, rules, opportunities (H7)
    app.include_router(databases.router, prefix=PREFIX)  # EHR databases (H6)
    from agent.api import pair

    app.include_router(pair.router, prefix=PREFIX)  # LAN pairing (H7)
    app.include_router(claims.router, prefix=PREFIX)  # claims and their outcomes (H4)
    from agent.api import eligibility

    app.include_router(eligibility.router, prefix=PREFIX)  # 270/271 eligibility of scheduled visits (H9)
    from agent.api import kpi

    app.include_router(kpi.router, prefix=PREFIX)  # KPIs and goals (H5)
    from agent.api import golive

    app.include_router(golive.router, prefix=PREFIX)  # test mode and go-live (H8)
    from agent.api import checklist

    app.include_router(checklist.router, prefix=PREFIX)  # first-week checklist (H15)
    app.add_exception_handler(ChargeBridgeError, _chargebridge_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(Guard, allowed_hosts=LOOPBACK_HOSTS | {svc.bind_host, *svc.engine.config.api.tls_names})
    return app


def _body(request: Request | None, title: str, fix: str = "", key: str | None = None) -> dict[str, Any]:
    rid = getattr(request.state, "request_id", None) if request is not None else None
    return {"title": title, "fix": fix, "key": key or None, "request_id": rid}


def _chargebridge_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ChargeBridgeError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return JSONResponse(_body(request, exc.title, exc.fix, exc.key), exc.http_status, headers=headers)


_HTTP_FIX = {
    401: "send Authorization: Bearer <token>",
    404: "check the address: every path is under /api/v1 (see /docs)",
    405: "check the method for this path (see /docs)",
}


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title = exc.detail if isinstance(exc.detail, str) else "the request was refused"
    if exc.status_code == 404 and title == "Not Found":
        title = "there is no such API path"
    elif exc.status_code == 405:
        title = f"{request.method} is not allowed on this path"
    return JSONResponse(_body(request, title, _HTTP_FIX.get(exc.status_code, "")), exc.status_code,
                        headers=getattr(exc, "headers", None))


def _loc_key(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("query", "page")`` → ``page``; ``("body", "rcm", "base_url")`` → ``body.rcm.base_url``."""
    parts = list(loc)
    if parts and parts[0] in ("query", "path", "header", "cookie"):
        parts = parts[1:]
    key = ""
    for p in parts:
        key += f"[{p}]" if isinstance(p, int) else (f".{p}" if key else str(p))
    return key or "body"


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errs = exc.errors()
    first = errs[0] if errs else {}
    if first.get("type") == "json_invalid":
        key, problem = "body", "is not valid JSON"
    else:
        key = _loc_key(first.get("loc", ()))
        # pydantic's message says what is allowed and never repeats the value sent
        problem = str(first.get("msg", "is not valid")).replace("Input should be", "should be")
        if problem == "Field required":
            problem = "is required"
    more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    return JSONResponse(_body(request, f"'{key}' {problem}{more}", f"correct '{key}' and send the request again",
                              key), 422)


class Guard:
    """Pure ASGI middleware: a request id for every request (``X-Request-ID``), the Host header
    checked against the engine's own names (DNS rebinding), and any unexpected exception turned
    into a logged 500 whose body carries only the request id."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: frozenset[str] | set[str]) -> None:
        self.app = app
        self.allowed = {h.lower().strip("[]") for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        host = _host(scope)
        if host not in self.allowed:
            await _send_json(send_with_id, 400, {
                "title": "this engine does not answer to that host name",
                "fix": "call it as 127.0.0.1 or localhost (or its configured [api] host)",
                "key": "Host", "request_id": rid})
            return
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # the type and where, never the text: an exception message could quote patient data
            where = "; ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                              for f in traceback.extract_tb(exc.__traceback__)[-6:])
            log.error("request %s %s failed [request id %s]: %s at %s", scope.get("method"), scope.get("path"),
                      rid, type(exc).__name__, where)
            if not started:
                await _send_json(send_with_id, 500, {
                    "title": "the engine failed to answer this request",
                    "fix": f"try again; if it keeps failing, send the engine log to support and quote request id "
                           f"{rid}", "key": None, "request_id": rid})


def _host(scope: Scope) -> str:
    raw = ""
    for name, value in scope.get("headers", []):
        if name == b"host":
            raw = value.decode("latin-1").strip().lower()
            break
    if raw.startswith("["):  # [::1]:8765
        return raw[1:raw.find("]")] if "]" in raw else raw
    return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
