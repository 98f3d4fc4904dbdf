"""Polling an EHR database: new, changed and voided charges, never missed, never twice.

One poll = read (``connectors.ehr.db.DbSource.fetch``: changes since the cursor, the rescan
window, and the known encounters in that window) -> classify each encounter against the hash
of what was read last time -> **one store transaction** holding the raw document of the new and
changed encounters, their hashes, the voids and the new cursor -> the pipeline processes the
document (standardize, validate, dedupe, revisions) like any file.

Because the cursor commits with the rows, a crash before that commit re-reads (nothing skipped)
and a crash after it finds the document pending, which :meth:`Pipeline.recover` finishes
(nothing doubled: a changed encounter is a revision of the same business key).

* **new**: a key never read before, with at least one active line.
* **changed**: a different hash (an edited, added or removed line): the pipeline stores it as a
  new version of the encounter, which is sent to the RCM as a correction of its claim.
* **voided**: no active line left (deleted, ``activity = 0``, Open Dental status away from 2):
  the encounter's state becomes ``voided`` (an event row says so); it is not billed again.
* **unchanged**: the same hash.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent.dbconfig import DatabaseConfig
from agent.pipeline import Analysis, Outcome, Pipeline
from agent.store import Store, now
from connectors.ehr.db import DbError, DbSource, load_profile
from connectors.ehr.dbrows import MAGIC
from core import secrets as core_secrets
from core.errors import ConfigError, NotFound
from core.model import Encounter, Rejected, content_hash
from core.paths import Paths
from core.states import DocumentStatus, EncounterState, OutboxState

if TYPE_CHECKING:
    from agent.config import Config

log = logging.getLogger("chargebridge.dbpoll")

BACKOFF_BASE_S = 60.0
BACKOFF_CAP_S = 3600.0


@dataclass
class PollResult:
    database: str
    new: int = 0
    changed: int = 0
    voided: int = 0
    unchanged: int = 0
    rows_read: int = 0
    quarantined: int = 0
    needs_review: int = 0
    document_id: int | None = None
    error: str = ""
    error_kind: str = ""
    skipped: str = ""
    keys: dict[str, list[str]] = field(default_factory=dict)  # for tests: which keys went where

    def counts(self) -> dict[str, int]:
        return {"new": self.new, "changed": self.changed, "voided": self.voided, "unchanged": self.unchanged}

    def to_dict(self) -> dict[str, Any]:
        return {**self.counts(), "database": self.database, "rows_read": self.rows_read,
                "quarantined": self.quarantined, "error": self.error, "error_kind": self.error_kind,
                "skipped": self.skipped}


def find(cfg: Config, name: str) -> DatabaseConfig:
    for d in cfg.databases:
        if d.name == name:
            return d
    known = ", ".join(d.name for d in cfg.databases) or "none configured"
    raise NotFound(f"no database named {name!r} in chargebridge.toml ({known})",
                   "add a [[databases]] table with that name, or use one of the names listed")


def get_password(paths: Paths, db: DatabaseConfig) -> str:
    return core_secrets.get_secret(paths, db.secret_name) or ""


def set_password(paths: Paths, db: DatabaseConfig, value: str) -> None:
    if not value or len(value) > 1024 or "\n" in value:
        raise ConfigError("the database password is empty or not one line", "give the password on one line",
                          key=f"databases.{db.name}")
    core_secrets.set_secret(paths, db.secret_name, value)


def make_source(paths: Paths, db: DatabaseConfig) -> DbSource:
    return DbSource(db.name, db.url, load_profile(db.profile, key=f"databases.{db.name}.profile"),
                    get_password(paths, db), max_rows=db.max_rows)


class Poller:
    def __init__(self, store: Store, cfg: Config, db: DatabaseConfig, *, source: DbSource | None = None,
                 today: date | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.db = db
        self.source = source or make_source(store.paths, db)
        self.today = today
        self.pipeline = Pipeline.for_config(store, cfg)

    def run(self) -> PollResult:
        """One poll. Never raises for a database problem: the result carries the error and the
        connector's health (``status``) says it."""
        res = PollResult(self.db.name)
        self._recover()
        try:
            self._poll(res)
        except DbError as exc:
            res.error, res.error_kind = f"{exc.title} - {exc.fix}", exc.kind
            log.warning("database %s: poll failed (%s)", self.db.name, exc.kind)
        self._record_health(res)
        return res

    def _recover(self) -> None:
        """A poll committed by a run that died before processing it: process it now."""
        conn = self.store.conn
        for (doc_id,) in conn.execute("SELECT id FROM documents WHERE status = ? AND source = ? ORDER BY id",
                                      (DocumentStatus.PENDING, self._origin)).fetchall():
            log.info("database %s: finishing poll document %d left by an earlier run", self.db.name, doc_id)
            self.pipeline.process(int(doc_id))

    @property
    def _origin(self) -> str:
        return f"db:{self.db.name}"

    def _poll(self, res: PollResult) -> None:
        conn = self.store.conn
        name = self.db.name
        row = conn.execute("SELECT cursor FROM db_cursors WHERE name = ?", (name,)).fetchone()
        cursor = json.loads(row[0]) if row else {}
        today = self.today or datetime.now().astimezone().date()  # the practice's local day
        rescan_from = today - timedelta(days=self.db.rescan_days)
        known: dict[str, tuple[str, int]] = {}
        recheck: list[Any] = []
        for key, raw, h, voided in conn.execute(
                "SELECT key, raw_key, hash, voided FROM db_encounters WHERE name = ? AND voided = 0 AND dos >= ?",
                (name, rescan_from.isoformat())):
            known[key] = (h, voided)
            recheck.append(json.loads(raw))
        fetched = self.source.fetch(cursor, recheck, rescan_from)
        res.rows_read = fetched.rows_read
        # Hashes of everything fetched that the window query above did not load (older visits).
        rest = [k for k in fetched.encounters if k not in known]
        for i in range(0, len(rest), 500):
            chunk = rest[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for key, h, voided in conn.execute(
                    f"SELECT key, hash, voided FROM db_encounters WHERE name = ? AND key IN ({marks})", [name, *chunk]):
                known[key] = (h, voided)
        send: list[str] = []  # encounter JSON texts for the raw document
        fresh: list[Encounter] = []
        upserts: list[tuple[Any, ...]] = []
        voids: list[str] = []
        ts = now()
        for key, enc in fetched.encounters.items():
            prev = known.get(key)
            raw = json.dumps(fetched.raw_keys[key], default=str)
            if not enc.lines:
                if prev is not None and not prev[1]:
                    voids.append(key)
                    upserts.append((name, key, raw, enc.dos_start or "", prev[0], 1, ts))
                continue
            blob = enc.to_json()
            h = content_hash(blob)
            dos = _iso(enc.dos_start)
            if prev is None:
                res.new += 1
                res.keys.setdefault("new", []).append(key)
            elif prev[1] or prev[0] != h:
                res.changed += 1
                res.keys.setdefault("changed", []).append(key)
            else:
                res.unchanged += 1
                continue
            send.append(blob)
            fresh.append(enc)
            upserts.append((name, key, raw, dos, h, 0, ts))
        res.voided = len(voids)
        res.keys["voided"] = voids
        self._commit(res, fetched.cursor, send, upserts, voids)
        if res.document_id is not None:
            res.quarantined = self._process(res.document_id, fresh).quarantined
        log.info("database %s: poll read %d rows: new %d, changed %d, voided %d, unchanged %d", name,
                 res.rows_read, res.new, res.changed, res.voided, res.unchanged)

    def _process(self, doc_id: int, encounters: list[Encounter]) -> Outcome:
        """The pipeline's second step for the document just committed, from the encounters in
        hand (what :meth:`Pipeline.process` would get back by parsing the document; it does
        exactly that if this process dies first and the document is recovered)."""
        p = self.pipeline
        a = Analysis(fmt="db")
        max_lines = p.budgets.max_lines_per_encounter
        for n, enc in enumerate(encounters, start=1):
            if len(enc.lines) > max_lines:
                a.others.append(Rejected(f"encounter {n}", (
                    f"the visit has {len(enc.lines):,} charge lines in the database, over the limit of "
                    f"{max_lines:,} per encounter (ingest.max_lines_per_encounter); check it in the EHR")))
                continue
            try:
                a.rows.append(p._encounter_row(enc))
            except Exception as exc:  # one encounter must not sink the poll
                log.error("checking encounter %d of a database poll failed with %s", n, type(exc).__name__)
                a.others.append(Rejected(f"encounter {n}", (
                    f"the encounter could not be checked ({type(exc).__name__}); it is kept in the store - "
                    "report this to ChargeBridge support, then reprocess it")))
        return p.commit(doc_id, a)

    def _commit(self, res: PollResult, cursor: dict[str, Any], send: list[str],
                upserts: list[tuple[Any, ...]], voids: list[str]) -> None:
        """The poll's one transaction: raw document, hashes, voids and cursor together."""
        conn = self.store.conn
        name = self.db.name
        ts = now()
        with self.store.tx():
            if send:
                import hashlib

                head = json.dumps({"format": MAGIC, "database": name, "polled_at": ts}, separators=(",", ":"))
                data = (head[:-1] + ',"encounters":[' + ",".join(send) + "]}").encode()
                cur = conn.execute(
                    "INSERT INTO documents (sha256, origin, source, format, profile, size, content, status,"
                    " received_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (hashlib.sha256(data).hexdigest(), f"{self._origin} poll {ts}", self._origin, "db",
                     self.db.profile, len(data), data, DocumentStatus.PENDING, ts))
                res.document_id = int(cur.lastrowid)
                self.store.event("document.received", document_id=res.document_id,
                                 detail={"size": len(data), "database": name, "encounters": len(send)})
            conn.executemany(
                "INSERT INTO db_encounters (name, key, raw_key, dos, hash, voided, updated_at) VALUES (?,?,?,?,?,?,?)"
                " ON CONFLICT(name, key) DO UPDATE SET raw_key = excluded.raw_key, dos = excluded.dos,"
                " hash = excluded.hash, voided = excluded.voided, updated_at = excluded.updated_at", upserts)
            for key in voids:
                bkey = f"charge|{self._origin}|{key}"
                row = conn.execute("SELECT id, version FROM encounters WHERE business_key = ?", (bkey,)).fetchone()
                if row is None:
                    continue
                # A void changes what the encounter is: the content hash moves aside, so the same
                # lines coming back later are a revision (billable again), not a duplicate.
                conn.execute("UPDATE encounters SET state = ?, version = version + 1, "
                             "content_hash = 'voided:' || content_hash, updated_at = ? WHERE id = ?",
                             (EncounterState.VOIDED, ts, row[0]))
                # Not sent yet: it never will be. Sent: the next sync cancels the RCM's Claim.
                conn.execute("DELETE FROM outbox WHERE encounter_id = ? AND state IN (?, ?)",
                             (row[0], OutboxState.QUEUED, OutboxState.FAILED))
                self.store.event("encounter.voided", encounter_id=int(row[0]),
                                 detail={"database": name, "version": int(row[1]) + 1})
            conn.execute("INSERT INTO db_cursors (name, cursor, updated_at) VALUES (?,?,?) ON CONFLICT(name) DO "
                         "UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                         (name, json.dumps(cursor), ts))

    def _record_health(self, res: PollResult) -> None:
        record_health(self.store, self.db.name, res)


def record_health(store: Store, name: str, res: PollResult) -> None:
    prev = health(store, name)
    failures = int(prev.get("failures", 0)) + 1 if res.error else 0
    nxt = ""
    if res.error and res.error_kind in ("unreachable", "query"):
        delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (failures - 1))
        nxt = (datetime.now(UTC) + timedelta(seconds=delay)).isoformat(timespec="seconds")
    doc = {"at": now(), "ok": not res.error, "detail": res.error or (
        f"last poll: {res.new} new, {res.changed} changed, {res.voided} voided, {res.unchanged} unchanged"),
        "kind": res.error_kind, "failures": failures, "retry_after": nxt, "rows_read": res.rows_read,
        "last": res.counts() if not res.error else prev.get("last", {})}
    with store.tx():
        store.set_setting(f"db.health.{name}", json.dumps(doc))


def health(store: Store, name: str) -> dict[str, Any]:
    try:
        return dict(json.loads(store.setting(f"db.health.{name}", "{}") or "{}"))
    except ValueError:
        return {}


def backing_off(store: Store, name: str) -> bool:
    """The server was unreachable at the last poll and its backoff has not run out."""
    h = health(store, name)
    return bool(h.get("retry_after")) and str(h["retry_after"]) > datetime.now(UTC).isoformat(timespec="seconds")


def connectors(store: Store, cfg: Config) -> list[dict[str, Any]]:
    """One entry per configured database for the status's ``connectors`` list."""
    out = []
    for d in getattr(cfg, "databases", []):
        h = health(store, d.name)
        if not h:
            ok, detail = True, "not polled yet"
        else:
            ok, detail = bool(h.get("ok")), str(h.get("detail", ""))
            if h.get("retry_after"):
                detail += f" (next try after {h['retry_after']})"
        out.append({"name": f"database {d.name}", "kind": "ehr", "healthy": ok, "detail": detail})
    return out


def _iso(v: str) -> str:
    try:
        return date.fromisoformat(v[:10]).isoformat()
    except (TypeError, ValueError):
        return ""


# -- the engine's side: scheduled polls, "poll now", health ----------------------------------------
_POLL_LOCK = threading.Lock()  # one poll at a time per engine (scheduler and API may both ask)


def schedule(engine: Any, sched: Any) -> None:
    """One interval job per ``[[databases]]`` entry on the engine's scheduler (its single worker,
    so polls and syncs never overlap). Called by :meth:`agent.engine.Engine._start_scheduler`."""
    first = datetime.now(UTC) + timedelta(seconds=3)
    for d in getattr(engine.config, "databases", []):
        sched.add_job(scheduled_poll, "interval", minutes=d.poll_minutes, id=f"db-poll:{d.name}",
                      args=[engine, d.name], next_run_time=first, replace_existing=True)


def scheduled_poll(engine: Any, name: str) -> None:
    """A scheduled poll: inside business hours ([sync] business_hours/days), and not while the
    server's backoff after a failure runs (unreachable: 1, 2, 4 ... 60 minutes)."""
    from agent.schedule import in_business_hours

    if engine.stopping.is_set():
        return
    sc = engine.config.sync
    if not in_business_hours(datetime.now().astimezone(), sc.business_hours, sc.business_days):
        return
    if backing_off(engine.store(), name):
        log.debug("database %s: still backing off after a failed poll", name)
        return
    poll_now(engine, name)


def poll_now(engine: Any, name: str) -> PollResult:
    db = find(engine.config, name)
    with _POLL_LOCK:
        store = engine.store()
        try:
            poller = Poller(store, engine.config, db)
        except ConfigError as exc:  # a profile that no longer loads
            res = PollResult(db.name, error=f"{exc.title} - {exc.fix}", error_kind="config")
            record_health(store, db.name, res)
            return res
        try:
            return poller.run()
        finally:
            poller.source.close()


def list_databases(store: Store, cfg: Config) -> list[dict[str, Any]]:
    from connectors.ehr.db import safe_url

    out = []
    for d in getattr(cfg, "databases", []):
        h = health(store, d.name)
        out.append({"name": d.name, "url": safe_url(d.url), "profile": d.profile, "poll_minutes": d.poll_minutes,
                    "rescan_days": d.rescan_days, "healthy": bool(h.get("ok", True)),
                    "detail": str(h.get("detail", "not polled yet")), "last_poll_at": str(h.get("at", "")),
                    "rows_read": int(h.get("rows_read", 0) or 0)})
    return out
