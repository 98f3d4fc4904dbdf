"""The engine's local HTTP API (FastAPI). Bearer token per user; roles front_desk < manager < admin.

Clients never busy-poll: ``GET /api/v1/changes?after=N`` returns as soon as anything commits
(or after ``timeout`` seconds) with the new change sequence number.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from agent import __version__, audit, notify
from agent.users import RANK, ROLES, add_user, authenticate, list_users

if TYPE_CHECKING:
    from agent.engine import Engine

_bearer = HTTPBearer(auto_error=False)


class Caller(BaseModel):
    name: str
    role: str


class Resolution(BaseModel):
    action: str
    reason: str = ""


class Comment(BaseModel):
    text: str
    assignee: str | None = None


class NewUser(BaseModel):
    name: str
    role: str


def create_app(engine: Engine) -> FastAPI:
    app = FastAPI(title="ChargeBridge engine API", version=__version__,
                  description="Local API of the ChargeBridge engine. Every call but /api/v1/health needs "
                              "`Authorization: Bearer <token>` (tokens: `chargebridge users add`).")

    def caller(creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Caller:
        who = authenticate(engine.store(), creds.credentials) if creds else None
        if who is None:
            raise HTTPException(401, "missing or invalid token", headers={"WWW-Authenticate": "Bearer"})
        return Caller(name=who[0], role=who[1])

    def need(role: str) -> Any:
        def check(c: Caller = Depends(caller)) -> Caller:
            if RANK[c.role] < RANK[role]:
                raise HTTPException(403, f"this needs the {role} role; you are signed in as {c.role}")
            return c
        return check

    @app.get("/api/v1/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "version": __version__}

    @app.get("/api/v1/status")
    def status(c: Caller = Depends(caller)) -> dict[str, Any]:
        return {**engine.status(), "user": c.model_dump()}

    @app.get("/api/v1/encounters")
    def encounters(state: str | None = None, page: int = Query(1, ge=1), page_size: int = Query(50, ge=1, le=500),
                   c: Caller = Depends(caller)) -> dict[str, Any]:
        store = engine.store()
        where, args = ("WHERE e.state = ?", [state]) if state else ("", [])
        total = store.conn.execute(f"SELECT count(*) FROM encounters e {where}", args).fetchone()[0]
        items = []
        for r in store.encounters(state=state, limit=page_size, offset=(page - 1) * page_size):
            d = r["data"]
            total_charge = sum((Decimal(ln["unit_charge"] or 0) * Decimal(ln["units"] or 0) for ln in d["lines"]),
                               Decimal(0))
            ob = store.conn.execute("SELECT state, last_error FROM outbox WHERE encounter_id = ? ORDER BY id DESC "
                                    "LIMIT 1", (r["id"],)).fetchone()
            items.append({
                "id": r["id"], "state": r["state"], "kind": r["kind"], "source": r["source"],
                "source_id": r["source_id"], "dos": r["dos"], "mrn": r["mrn"],
                "patient": f"{d['patient']['family']}, {d['patient']['given']}".strip(", "),
                "codes": [ln["code"] for ln in d["lines"]], "total": f"{total_charge:.2f}",
                "findings": r["findings"], "sync_state": ob[0] if ob else "",
                "sync_error": ob[1] if ob else "", "version": r["version"],
            })
        return {"total": total, "page": page, "page_size": page_size, "items": items}

    @app.get("/api/v1/quarantine")
    def quarantine(c: Caller = Depends(caller)) -> list[dict[str, Any]]:
        return engine.store().quarantine_list()

    @app.post("/api/v1/quarantine/{qid}/reprocess")
    def reprocess(qid: int, c: Caller = Depends(need("manager"))) -> dict[str, Any]:
        from agent.pipeline import Pipeline

        store = engine.store()
        try:
            out = Pipeline(store, max_file_bytes=engine.config.max_file_bytes,
                           chargemaster=engine.config.chargemaster).reprocess(qid, actor=f"api:{c.name}")
        except KeyError:
            raise HTTPException(404, f"no quarantine entry {qid}") from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"document_id": out.document_id, "status": out.status, "accepted": out.accepted,
                "quarantined": out.quarantined, "reasons": out.reasons}

    @app.post("/api/v1/sync")
    def sync(wait: bool = False, c: Caller = Depends(caller)) -> dict[str, Any]:
        if wait:
            return engine.run_sync(force=True).to_dict()
        engine.sync_now()
        return {"started": True}

    @app.post("/api/v1/pause")
    def pause(c: Caller = Depends(need("manager"))) -> dict[str, Any]:
        engine.set_paused(True, actor=f"api:{c.name}")
        return {"paused": True}

    @app.post("/api/v1/resume")
    def resume(c: Caller = Depends(need("manager"))) -> dict[str, Any]:
        engine.set_paused(False, actor=f"api:{c.name}")
        engine.sync_now()  # catch up on what waited while paused
        return {"paused": False}

    @app.get("/api/v1/changes")
    def changes(after: int = Query(0, ge=0), timeout: float = Query(25.0, ge=0, le=60),
                c: Caller = Depends(caller)) -> dict[str, Any]:
        return {"seq": notify.wait(after, timeout)}

    @app.post("/api/v1/reconcile")
    def reconcile_now(start: str | None = None, end: str | None = None,
                      c: Caller = Depends(caller)) -> dict[str, Any]:
        from datetime import date

        from agent.mismatches import default_window

        s, e = default_window()
        try:
            s = date.fromisoformat(start) if start else s
            e = date.fromisoformat(end) if end else e
        except ValueError:
            raise HTTPException(422, "start and end are dates like 2026-10-01") from None
        return engine.run_reconcile(s, e)

    @app.get("/api/v1/mismatches")
    def mismatches(status: str | None = "open", kind: str | None = None,
                   c: Caller = Depends(caller)) -> list[dict[str, Any]]:
        from agent.mismatches import list_findings

        return list_findings(engine.store(), status=status or None, kind=kind)

    @app.post("/api/v1/mismatches/{fid}/resolve")
    def resolve_mismatch(fid: int, body: Resolution, c: Caller = Depends(need("manager"))) -> dict[str, Any]:
        from agent.mismatches import ResolveError, resolve

        if engine.target is None and body.action == "resend":
            engine._make_target()
        try:
            return resolve(engine.store(), engine.target, fid, body.action, actor=f"api:{c.name}",
                           reason=body.reason)
        except ResolveError as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/api/v1/mismatches/{fid}/comment")
    def comment_mismatch(fid: int, body: Comment, c: Caller = Depends(need("manager"))) -> dict[str, Any]:
        from agent.mismatches import ResolveError, comment

        try:
            comment(engine.store(), fid, actor=f"api:{c.name}", text=body.text, assignee=body.assignee)
        except ResolveError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"ok": True}

    @app.get("/api/v1/users")
    def users(c: Caller = Depends(need("admin"))) -> list[dict[str, str]]:
        return list_users(engine.store())

    @app.post("/api/v1/users")
    def new_user(body: NewUser, c: Caller = Depends(need("admin"))) -> dict[str, str]:
        if body.role not in ROLES:
            raise HTTPException(422, f"role must be one of {', '.join(ROLES)}")
        try:
            token = add_user(engine.store(), body.name, body.role, actor=f"api:{c.name}")
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"name": body.name, "role": body.role, "token": token}

    @app.get("/api/v1/audit")
    def audit_trail(limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0), action: str | None = None,
                    c: Caller = Depends(need("manager"))) -> dict[str, Any]:
        # entries hold actors, actions, ids and hashes only, never patient data
        store = engine.store()
        return {"total": audit.count(store, action), "limit": limit, "offset": offset,
                "items": audit.entries(store, limit=limit, offset=offset, action=action)}

    @app.exception_handler(Exception)
    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # never echo exception text: it could carry patient data
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the engine log"}, 500)

    return app
