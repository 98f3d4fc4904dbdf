"""The engine's local HTTP API (FastAPI). Bearer token per user; roles front_desk < manager < admin.

Clients never busy-poll: ``GET /api/v1/changes?after=N`` returns as soon as anything commits
(or after ``timeout`` seconds) with the new change sequence number.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from agent import __version__, audit, notify
from agent.config import Config
from agent.users import RANK, ROLES, add_user, authenticate, list_users

if TYPE_CHECKING:
    from agent.engine import Engine

_bearer = HTTPBearer(auto_error=False)

DOCUMENT_CAP = 1024 * 1024  # raw quarantined documents are shown up to 1 MB; the rest is summarised
SECRET_KEYS = ("client_secret", "secret", "token", "password")
# Config sections the engine applies while running; the rest take effect at its next start.
LIVE_SECTIONS = ("rcm", "sync")


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


class RcmSecret(BaseModel):
    secret: str


class RcmSettings(BaseModel):
    """Unsaved RCM settings to test (Settings page, before Save). ``secret`` empty = the keyring's."""

    base_url: str
    token_url: str = ""
    client_id: str = ""
    auth: str = "client_credentials"
    ca_bundle: str = ""
    timeout_seconds: float = 15.0
    secret: str = ""


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
                   q: str | None = Query(None, max_length=200,
                                         description="matches MRN, visit id, patient name or a procedure code"),
                   sort: str = Query("id", pattern="^(id|dos)$", description="id (received order) or dos"),
                   desc: bool = False, c: Caller = Depends(caller)) -> dict[str, Any]:
        # Paging, filtering and sorting happen here, in SQL, so a client never holds more than
        # the page it shows — the encounters table may hold 100,000 rows and more.
        store = engine.store()
        where, args = _encounter_filter(state, q)
        capped = False
        if q:  # a broad search (e.g. a common code) must not count 100,000 rows before showing any
            total = store.conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM encounters e {where} LIMIT ?)",
                                       [*args, SEARCH_COUNT_CAP + 1]).fetchone()[0]
            capped = total > SEARCH_COUNT_CAP
        else:
            total = store.conn.execute(f"SELECT count(*) FROM encounters e {where}", args).fetchone()[0]
        direction = "DESC" if desc else "ASC"
        order = f"e.dos {direction}, e.id {direction}" if sort == "dos" else f"e.id {direction}"
        rows = store.conn.execute(
            "SELECT e.id, e.state, e.kind, e.source, e.source_id, e.dos, e.mrn, e.data, e.findings, e.version "
            f"FROM encounters e {where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*args, page_size, (page - 1) * page_size]).fetchall()
        items = []
        for eid, st, kind, source, source_id, dos, mrn, data, findings, version in rows:
            d = json.loads(data)
            total_charge = sum((Decimal(ln["unit_charge"] or 0) * Decimal(ln["units"] or 0) for ln in d["lines"]),
                               Decimal(0))
            ob = store.conn.execute("SELECT state, last_error FROM outbox WHERE encounter_id = ? ORDER BY id DESC "
                                    "LIMIT 1", (eid,)).fetchone()
            items.append({
                "id": eid, "state": st, "kind": kind, "source": source,
                "source_id": source_id, "dos": dos, "mrn": mrn,
                "patient": f"{d['patient']['family']}, {d['patient']['given']}".strip(", "),
                "codes": [ln["code"] for ln in d["lines"]], "total": f"{total_charge:.2f}",
                "findings": json.loads(findings), "sync_state": ob[0] if ob else "",
                "sync_error": ob[1] if ob else "", "version": version,
            })
        return {"total": total, "total_capped": capped, "page": page, "page_size": page_size, "items": items}

    @app.get("/api/v1/quarantine/{qid}/document")
    def quarantine_document(qid: int, max_bytes: int = Query(DOCUMENT_CAP, ge=1, le=DOCUMENT_CAP),
                            c: Caller = Depends(need("manager"))) -> dict[str, Any]:
        # manager+: the raw document is patient data. Only the first max_bytes are read from the
        # store (substr on the BLOB), so a 50 MB file never crosses the API whole.
        row = engine.store().conn.execute(
            "SELECT q.id, q.document_id, d.origin, q.part, q.reason, q.created_at, d.format, d.size, "
            "content IS NOT NULL, substr(d.content, 1, ?) FROM quarantine q JOIN documents d ON d.id = q.document_id "
            "WHERE q.id = ?", (max_bytes, qid)).fetchone()
        if row is None:
            raise HTTPException(404, f"no quarantine entry {qid}")
        _id, doc_id, origin, part, reason, created, fmt, size, stored, head = row
        head = bytes(head or b"")
        text = head.decode("utf-8", errors="replace")
        truncated = bool(stored) and size > len(head)
        note = ""
        if not stored:
            note = "the file was not kept (it was refused before it was stored, e.g. for its size)"
        elif truncated:
            note = f"showing the first {len(head):,} of {size:,} bytes"
        if stored and (b"\x00" in head or text.count("\ufffd") > max(8, len(text) // 20)):
            note = (note + "; " if note else "") + "this is binary content, not text: it cannot be read as an export"
        return {"id": _id, "document_id": doc_id, "file": origin, "part": part, "reason": reason,
                "created_at": created, "format": fmt, "size": size, "stored": bool(stored),
                "shown_bytes": len(head), "truncated": truncated, "note": note, "text": text}

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

    # -- configuration (admin) ---------------------------------------------------------------
    @app.get("/api/v1/config")
    def get_config(c: Caller = Depends(need("admin"))) -> dict[str, Any]:
        """The configuration as the file holds it (what the next start uses), never a secret."""
        from agent import keys
        from agent.rcm import SECRET
        from core.errors import ChargeBridgeError

        on_disk, problem = _file_config(engine)
        try:
            secret_set = bool(keys.get_secret(engine.paths, SECRET))
        except ChargeBridgeError:
            secret_set = False
        file_dict = config_to_dict(on_disk)
        return {"config": file_dict, "path": str(engine.paths.config), "problem": problem,
                "rcm_secret_set": secret_set,
                "restart_required": _restart_sections(config_to_dict(engine.config), file_dict)}

    @app.put("/api/v1/config")
    def put_config(body: dict[str, Any] = Body(...), c: Caller = Depends(need("admin"))) -> dict[str, Any]:
        """Validate with the same rules as the engine's start-up, write the file atomically, audit
        it, and apply what can be applied live (RCM connection, sync schedule)."""
        from agent.config import parse
        from core.errors import ConfigError

        _refuse_secrets(body)
        try:
            new = parse(body, origin="chargebridge.toml")
        except ConfigError as exc:
            raise HTTPException(422, f"{exc.title} — Fix: {exc.fix}") from None
        new_dict = config_to_dict(new)
        old_cfg, _ = _file_config(engine)
        old_dict = config_to_dict(old_cfg)
        changed = [k for k in new_dict if new_dict[k] != old_dict.get(k)]
        if changed:  # an unchanged save leaves the file (and its comments) and the trail alone
            write_config(engine.paths.config, new_dict)
            audit.record(engine.store(), actor=f"api:{c.name}", action="config.change", target="config",
                         before=old_dict, after=new_dict, detail={"sections": changed})
        applied = _apply_live(engine, new, changed)
        restart = _restart_sections(config_to_dict(engine.config), new_dict)
        if restart:
            message = (f"Saved. Restart the engine to apply the changes to: {', '.join(restart)} "
                       "(the running engine keeps its current settings for those until then).")
        elif changed:
            message = "Saved and applied."
        else:
            message = "Nothing changed."
        return {"saved": True, "changed": changed, "applied": applied, "restart_required": restart,
                "message": message, "config": new_dict}

    @app.post("/api/v1/rcm/secret")
    def set_rcm_secret(body: RcmSecret, c: Caller = Depends(need("admin"))) -> dict[str, Any]:
        """The RCM secret goes to the OS keyring only — never the config file or the audit trail."""
        from agent import keys
        from agent.rcm import SECRET
        from core.errors import ChargeBridgeError

        secret = body.secret.strip()
        if not secret:
            raise HTTPException(422, "the secret is empty — paste the client secret the RCM issued")
        try:
            keys.set_secret(engine.paths, SECRET, secret)
        except ChargeBridgeError as exc:
            raise HTTPException(503, f"{exc.title} — Fix: {exc.fix}") from None
        audit.record(engine.store(), actor=f"api:{c.name}", action="rcm.secret", target="rcm",
                     detail={"set": True})
        engine._make_target()  # the next sync uses the new secret
        return {"saved": True, "rcm_error": engine.target_error}

    @app.post("/api/v1/rcm/test")
    def test_rcm(body: RcmSettings | None = Body(None), c: Caller = Depends(need("manager"))) -> dict[str, Any]:
        """Token + capability request against the configured RCM (or unsaved settings: admin only),
        answered as {ok, detail} where detail says exactly which step failed."""
        if body is not None and RANK[c.role] < RANK["admin"]:
            raise HTTPException(403, f"testing unsaved RCM settings needs the admin role; you are signed in as "
                                     f"{c.role}")
        return check_rcm(engine, body)

    @app.exception_handler(Exception)
    def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # never echo exception text: it could carry patient data
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the engine log"}, 500)

    return app


# -- encounters search -------------------------------------------------------------------------
def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` literally (``%`` and ``_`` in a search are not wildcards)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


SEARCH_COUNT_CAP = 1000


def _encounter_filter(state: str | None, q: str | None) -> tuple[str, list[Any]]:
    """WHERE clause for the encounters list. Every word of ``q`` must match one of: MRN or visit
    (source) id (substring), patient family or given name (substring), a procedure code (prefix).

    MRN and source id are columns; names and codes live in the JSON ``data`` column. A plain
    ``data LIKE`` pre-filter (cheap: SQLCipher has already decrypted the page) discards most rows
    before ``json_extract`` / ``json_each`` check that the word is really in a name or a code,
    not in, say, an address or a key name.
    """
    clauses: list[str] = []
    args: list[Any] = []
    if state:
        clauses.append("e.state = ?")
        args.append(state)
    for word in (q or "").split()[:8]:
        sub = f"%{_like(word)}%"
        if len(word) >= 3:  # the trigram index narrows 100,000 rows to the few candidates first
            clauses.append("e.id IN (SELECT rowid FROM encounter_search WHERE encounter_search MATCH ?)")
            args.append('"' + word.replace('"', '""') + '"')
        clauses.append(
            "(e.mrn LIKE ? ESCAPE '\\' OR e.source_id LIKE ? ESCAPE '\\' OR (e.data LIKE ? ESCAPE '\\' AND ("
            "json_extract(e.data, '$.patient.family') LIKE ? ESCAPE '\\' "
            "OR json_extract(e.data, '$.patient.given') LIKE ? ESCAPE '\\' "
            "OR EXISTS (SELECT 1 FROM json_each(e.data, '$.lines') l "
            "WHERE json_extract(l.value, '$.code') LIKE ? ESCAPE '\\'))))")
        args += [sub, sub, sub, sub, sub, f"{_like(word)}%"]
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


# -- configuration file ------------------------------------------------------------------------
def config_to_dict(cfg: Config) -> dict[str, Any]:
    """``Config`` back to the TOML shape :func:`agent.config.parse` reads (every key explicit).

    There is no secret to leave out: the config never holds one (parse refuses them)."""
    def folder(fc: Any) -> dict[str, Any]:
        return {"path": str(fc.path), "format": fc.format, "profile": fc.profile, "after": fc.after,
                "processed_dir": str(fc.processed_dir or ""), "quarantine_dir": str(fc.quarantine_dir or ""),
                "observer": fc.observer, "poll_seconds": fc.poll_seconds, "settle_seconds": fc.settle_seconds}

    return {
        "store": {"key_source": cfg.key_source},
        "ingest": {"max_file_mb": cfg.max_file_mb, "batch_files": cfg.batch_files, "chargemaster": cfg.chargemaster},
        "rcm": asdict(cfg.rcm),
        "sync": asdict(cfg.sync),
        "api": asdict(cfg.api),
        "folders": [folder(f) for f in cfg.folders],
    }


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        # a JSON string is a TOML basic string, except that TOML also forbids a raw DEL
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write a {type(v).__name__} to chargebridge.toml")


def dumps_toml(data: dict[str, Any], *, header: str = "") -> str:
    """The small TOML subset the config uses: tables of scalars and one array of tables.

    Hand-written because the standard library only reads TOML; the result is re-read with
    ``tomllib`` and re-validated by :func:`write_config` before it replaces the file."""
    out = [header.rstrip()] if header else []
    for key, val in data.items():
        if isinstance(val, dict):
            out.append(f"\n[{key}]")
            out += [f"{k} = {_toml_value(v)}" for k, v in val.items() if v is not None]
    for key, val in data.items():
        if isinstance(val, list) and all(isinstance(x, dict) for x in val):
            for item in val:
                out.append(f"\n[[{key}]]")
                out += [f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None]
    return "\n".join(out) + "\n"


CONFIG_HEADER = ("# ChargeBridge configuration, written by ChargeBridge (Settings / first-run wizard).\n"
                 "# Secrets are not here: they live in the OS keyring. See README.md for every key.")


def write_config(path: Path, data: dict[str, Any]) -> None:
    """Write ``chargebridge.toml`` atomically: a temp file in the same folder, fsync, rename.

    A reader (or a crash) sees the old file or the new one, never half of one. The text is
    parsed back and validated first, so a file this writes always loads."""
    from agent.config import parse

    text = dumps_toml(data, header=CONFIG_HEADER)
    parse(tomllib.loads(text), origin=path.name)  # raises ConfigError naming the key
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".chargebridge.", suffix=".toml.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if os.name == "posix":
            os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _file_config(engine: Engine) -> tuple[Config, str]:
    """The config file as it is now; the running config (and why) when it no longer loads."""
    from agent.config import load
    from core.errors import ConfigError

    try:
        return load(engine.paths.config), ""
    except ConfigError as exc:
        return engine.config, f"{exc.title} — Fix: {exc.fix}"


def _restart_sections(running: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    return [k for k in saved if k not in LIVE_SECTIONS and saved[k] != running.get(k)]


def _refuse_secrets(body: Any, where: str = "") -> None:
    """Secrets never travel in the config body, whatever the section (parse checks [rcm] only)."""
    if isinstance(body, dict):
        for k, v in body.items():
            if str(k).lower() in SECRET_KEYS:
                raise HTTPException(422, f"chargebridge.toml: '{where}{k}' must not be in the config (secrets live "
                                         "in the OS keyring) — Fix: send it to POST /api/v1/rcm/secret instead")
            _refuse_secrets(v, f"{where}{k}.")
    elif isinstance(body, list):
        for i, v in enumerate(body):
            _refuse_secrets(v, f"{where.rstrip('.')}[{i}].")


def _apply_live(engine: Engine, new: Config, changed: list[str]) -> list[str]:
    """Apply the RCM and sync sections to the running engine; folders, API, store and ingest
    settings are wired into threads at start-up and wait for a restart."""
    applied = []
    if "sync" in changed:
        old_interval = engine.config.sync.interval_minutes
        engine.config.sync = new.sync  # business hours/days are read at every scheduled run
        if engine.scheduler is not None and new.sync.interval_minutes != old_interval:
            engine.scheduler.reschedule_job("sync", trigger="interval", minutes=new.sync.interval_minutes)
        applied.append("sync")
    if "rcm" in changed:
        engine.config.rcm = new.rcm
        engine._make_target()
        applied.append("rcm")
    return applied


def check_rcm(engine: Engine, settings: RcmSettings | None) -> dict[str, Any]:
    """Run the target's connection check; every failure comes back as text naming the step."""
    from agent import keys
    from agent.rcm import SECRET, make_target
    from core.errors import ChargeBridgeError

    try:
        if settings is None:
            if not engine.config.rcm.type:
                return {"ok": False, "detail": "no RCM is configured — add the billing system's address in "
                                               "Settings (or the [rcm] section of chargebridge.toml)"}
            target = make_target(engine.paths, engine.config)
            where = engine.config.rcm.base_url
        else:
            from connectors.rcm.fhir import FhirTarget

            secret = settings.secret or keys.get_secret(engine.paths, SECRET) or ""
            if not secret:
                return {"ok": False, "detail": "no RCM secret: type the client secret, or save it first"}
            target = FhirTarget(settings.base_url, token_url=settings.token_url, client_id=settings.client_id,
                                secret=secret, auth=settings.auth, ca_bundle=settings.ca_bundle,
                                timeout=min(max(settings.timeout_seconds, 1.0), 30.0))
            where = settings.base_url
    except ChargeBridgeError as exc:
        return {"ok": False, "detail": f"{exc.title} — {exc.fix}" if exc.fix else exc.title}
    except ValueError as exc:
        return {"ok": False, "detail": str(exc)}
    if target is None:
        return {"ok": False, "detail": "no RCM is configured"}
    try:
        ok, detail = target.check()
    except Exception as exc:  # a check must report, never crash the endpoint
        ok, detail = False, f"the test failed unexpectedly ({type(exc).__name__}); see the engine log"
    return {"ok": ok, "detail": detail, "base_url": where}
