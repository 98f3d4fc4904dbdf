"""Retention: old patient data leaves the store once it has done its job, and the file shrinks.

``[retention] days`` (default 400; never less than the reconciliation window, which still reads
them) decides what is old, by date of service and last change. An encounter older than that
is pruned only when its work is finished:

* a charge: its current version was delivered to the RCM, a reconciliation ran after the
  delivery, and no mismatch about it is open;
* an expected visit (SIU): a reconciliation ran after it last changed and no finding is open.

Anything else stays (and ``prune --dry-run`` says how many and why): a charge nobody fixed is
work, not history. With an encounter go the rows that describe only it (outbox attempts, closed
findings, rows other modules keep per encounter — found through the schema's foreign keys), its
search-index entry, and its raw documents once nothing else refers to them; old patient
demographics and resolved quarantine entries go too. Open quarantine entries always stay.

What is kept: the ``events`` rows (ids, kinds and times, no patient data) that status and KPIs
count, and per month of service, kind and state, the number of pruned encounters, lines and
their charge total (``retention_counts``).

The audit trail holds no patient data and is kept longer (``audit_days``, default six years).
Entries older than that are removed from the start of the chain, and the last removed entry's
``seq`` and hash become the chain's anchor (``settings['audit.anchor']``), so
:func:`agent.audit.verify` still proves everything after it.

Then the space is given back: an incremental vacuum (the store is switched to
``auto_vacuum = INCREMENTAL`` by one full ``VACUUM`` the first time, for stores made before
that setting) and a WAL checkpoint, so the file really gets smaller.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from agent import audit
from agent.store import Store
from core.states import EncounterKind, FindingStatus, OutboxState

log = logging.getLogger("chargebridge.retention")

ANCHOR_KEY = audit.ANCHOR_KEY
LAST_SETTING = "retention.last"
CHUNK = 1000
_OPEN_FINDINGS = (FindingStatus.OPEN, FindingStatus.REOPENED)


@dataclass
class PruneReport:
    dry_run: bool
    cutoff: str  # dates of service before this day are old
    audit_cutoff: str
    encounters: int = 0
    documents: int = 0
    patients: int = 0
    quarantine: int = 0
    related: dict[str, int] = field(default_factory=dict)  # rows of other tables, per table
    audit_entries: int = 0
    held: dict[str, int] = field(default_factory=dict)  # old encounters kept, by reason
    size_before: int = 0
    size_after: int = 0
    vacuum: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _size(store: Store) -> int:
    p = store.paths.store
    wal = p.with_name(p.name + "-wal")
    return (p.stat().st_size if p.exists() else 0) + (wal.stat().st_size if wal.exists() else 0)


def _ts(d: datetime) -> str:
    return d.isoformat(timespec="milliseconds")


def _children(store: Store, parent: str) -> list[tuple[str, str]]:
    """(table, column) pairs whose foreign key points at ``parent`` — found in the schema, so a
    table another module adds later is handled without a change here."""
    out = []
    for (name,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for fk in store.conn.execute(f"PRAGMA foreign_key_list(\"{name}\")"):
            if fk[2] == parent:
                out.append((str(name), str(fk[3])))
    return out


def _eligible_sql() -> str:
    return (
        "FROM encounters e WHERE e.dos < :cutoff AND e.updated_at < :cutoff_ts "
        "AND NOT EXISTS (SELECT 1 FROM findings f WHERE f.encounter_id = e.id AND f.status IN (:f_open, :f_reopened)) "
        "AND ((e.kind = :expected AND e.updated_at < :last_reconcile) "
        " OR EXISTS (SELECT 1 FROM outbox o WHERE o.encounter_id = e.id AND o.version = e.version "
        "            AND o.state = :delivered AND o.updated_at < :last_reconcile))")


def prune(store: Store, days: int, *, audit_days: int | None = None, dry_run: bool = False,
          actor: str = "engine", today: datetime | None = None) -> PruneReport:
    """Prune what is older than ``days`` (audit entries: ``audit_days``) and give the space back."""
    now_dt = today or datetime.now(UTC)
    cutoff_dt = now_dt - timedelta(days=days)
    audit_cut_dt = now_dt - timedelta(days=audit_days if audit_days is not None else days)
    rep = PruneReport(dry_run=dry_run, cutoff=cutoff_dt.date().isoformat(),
                      audit_cutoff=audit_cut_dt.date().isoformat(), size_before=_size(store))
    conn = store.conn
    last_rec = conn.execute("SELECT max(at) FROM events WHERE kind = 'reconcile.run'").fetchone()[0] or ""
    args = {"cutoff": rep.cutoff, "cutoff_ts": _ts(cutoff_dt), "f_open": _OPEN_FINDINGS[0],
            "f_reopened": _OPEN_FINDINGS[1], "expected": EncounterKind.EXPECTED, "delivered": OutboxState.DELIVERED,
            "last_reconcile": last_rec}
    rep.held = _held(store, args)
    ids = [int(r[0]) for r in conn.execute("SELECT e.id " + _eligible_sql() + " ORDER BY e.id", args)]
    enc_children = _children(store, "encounters")
    if dry_run:
        rep.encounters = len(ids)
        for table, col in enc_children:
            rep.related[table] = sum(_count_in(store, table, col, ids[i:i + CHUNK]) for i in range(0, len(ids), CHUNK))
        rep.documents, rep.patients, rep.quarantine = _documents(store, args, dry_run=True)
        rep.audit_entries = _audit(store, _ts(audit_cut_dt), dry_run=True, actor=actor)
        rep.size_after = rep.size_before
        return rep
    for i in range(0, len(ids), CHUNK):  # short transactions: the engine keeps ingesting meanwhile
        chunk = ids[i:i + CHUNK]
        with store.tx():
            _roll_up(store, chunk)
            for table, col in enc_children:
                n = _delete_in(store, table, col, chunk)
                if n:
                    rep.related[table] = rep.related.get(table, 0) + n
            rep.encounters += _delete_in(store, "encounters", "id", chunk)
    rep.documents, rep.patients, rep.quarantine = _documents(store, args, dry_run=False)
    with store.tx():
        rep.audit_entries = _audit(store, _ts(audit_cut_dt), dry_run=False, actor=actor)
        detail = {"encounters": rep.encounters, "documents": rep.documents, "patients": rep.patients,
                  "quarantine": rep.quarantine, "audit_entries": rep.audit_entries, "cutoff": rep.cutoff}
        audit.record(store, actor=actor, action="retention.prune", target="store", detail=detail)
    rep.vacuum = compact(store)
    rep.size_after = _size(store)
    with store.tx():
        store.set_setting(LAST_SETTING, json.dumps({"at": _ts(datetime.now(UTC)), **detail,
                                                    "size_before": rep.size_before, "size_after": rep.size_after}))
    log.info("retention: pruned %d encounter(s), %d document(s); store %d -> %d bytes", rep.encounters,
             rep.documents, rep.size_before, rep.size_after)
    return rep


def _held(store: Store, args: dict[str, Any]) -> dict[str, int]:
    """Old encounters that stay, by the first reason that holds them."""
    conn = store.conn
    old = "FROM encounters e WHERE e.dos < :cutoff"
    total = int(conn.execute("SELECT count(*) " + old, args).fetchone()[0])
    eligible = int(conn.execute("SELECT count(*) " + _eligible_sql(), args).fetchone()[0])
    open_f = int(conn.execute(
        "SELECT count(*) " + old + " AND EXISTS (SELECT 1 FROM findings f WHERE f.encounter_id = e.id "
        "AND f.status IN (:f_open, :f_reopened))", args).fetchone()[0])
    undelivered = int(conn.execute(
        "SELECT count(*) " + old + " AND e.kind != :expected AND NOT EXISTS (SELECT 1 FROM outbox o WHERE "
        "o.encounter_id = e.id AND o.version = e.version AND o.state = :delivered)", args).fetchone()[0])
    rest = max(0, total - eligible - open_f - undelivered)
    return {"open_mismatch": open_f, "not_delivered": undelivered, "not_reconciled_or_recent": rest}


def _count_in(store: Store, table: str, col: str, ids: list[int]) -> int:
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    return int(store.conn.execute(f"SELECT count(*) FROM \"{table}\" WHERE \"{col}\" IN ({marks})", ids).fetchone()[0])


def _delete_in(store: Store, table: str, col: str, ids: list[int]) -> int:
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    return int(store.conn.execute(f"DELETE FROM \"{table}\" WHERE \"{col}\" IN ({marks})", ids).rowcount)


def _money(units: Any, price: Any) -> Decimal:
    try:
        v = Decimal(str(units or "0")) * Decimal(str(price or "0"))
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return v if v.is_finite() else Decimal(0)


def _roll_up(store: Store, ids: list[int]) -> None:
    """Add the chunk's encounters to ``retention_counts`` before their rows go."""
    marks = ",".join("?" * len(ids))
    agg: dict[tuple[str, str, str], list[Any]] = {}
    for kind, state, dos, data in store.conn.execute(
            f"SELECT kind, state, dos, data FROM encounters WHERE id IN ({marks})", ids):
        try:
            lines = json.loads(data).get("lines", [])
        except (ValueError, AttributeError):
            lines = []
        slot = agg.setdefault((str(dos)[:7], str(kind), str(state)), [0, 0, Decimal(0)])
        slot[0] += 1
        slot[1] += len(lines)
        slot[2] += sum((_money(ln.get("units"), ln.get("unit_charge")) for ln in lines if isinstance(ln, dict)),
                       Decimal(0))
    for (month, kind, state), (n, nlines, total) in agg.items():
        row = store.conn.execute("SELECT charges FROM retention_counts WHERE month = ? AND kind = ? AND state = ?",
                                 (month, kind, state)).fetchone()
        charges = str(total + (Decimal(row[0]) if row else Decimal(0)))
        store.conn.execute(
            "INSERT INTO retention_counts (month, kind, state, encounters, lines, charges) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (month, kind, state) DO UPDATE SET encounters = encounters + excluded.encounters, "
            "lines = lines + excluded.lines, charges = excluded.charges", (month, kind, state, n, nlines, charges))


def _documents(store: Store, args: dict[str, Any], *, dry_run: bool) -> tuple[int, int, int]:
    """Old raw documents nothing needs any more, old patient demographics, resolved quarantine."""
    conn = store.conn
    ts = args["cutoff_ts"]
    patients_sql = "FROM patients WHERE updated_at < ?"
    # documents still needed: by an encounter, an open quarantine entry, a recent patient row, or
    # any other table that points at documents (tables added by other modules are respected)
    # (a dry run counts as if the eligible encounters were already gone)
    still = " AND x.id NOT IN (SELECT e.id " + _eligible_sql() + ")" if dry_run else ""
    keep = ["EXISTS (SELECT 1 FROM encounters x WHERE x.document_id = d.id" + still + ")",
            ("EXISTS (SELECT 1 FROM quarantine q WHERE q.document_id = d.id AND (q.resolved_at IS NULL "
             "OR q.created_at >= :ts))"),
            "EXISTS (SELECT 1 FROM patients p WHERE p.document_id = d.id AND p.updated_at >= :ts)"]
    for table, col in _children(store, "documents"):
        if table not in ("encounters", "quarantine", "patients"):
            keep.append(f"EXISTS (SELECT 1 FROM \"{table}\" y WHERE y.\"{col}\" = d.id)")
    docs_sql = ("FROM documents d WHERE d.received_at < :ts AND d.status != 'pending' AND NOT ("
                + " OR ".join(keep) + ")")
    if dry_run:
        q = {**args, "ts": ts}
        return (int(conn.execute("SELECT count(*) " + docs_sql, q).fetchone()[0]),
                int(conn.execute("SELECT count(*) " + patients_sql, (ts,)).fetchone()[0]),
                int(conn.execute("SELECT count(*) FROM quarantine WHERE document_id IN (SELECT d.id " + docs_sql + ")",
                                 q).fetchone()[0]))
    with store.tx():
        doc_ids = [int(r[0]) for r in conn.execute("SELECT d.id " + docs_sql, {"ts": ts})]
        n_pat = int(conn.execute("DELETE " + patients_sql, (ts,)).rowcount)
        n_q = 0
        n_doc = 0
        for i in range(0, len(doc_ids), CHUNK):
            chunk = doc_ids[i:i + CHUNK]
            n_q += _delete_in(store, "quarantine", "document_id", chunk)
            n_doc += _delete_in(store, "documents", "id", chunk)
    return n_doc, n_pat, n_q


def _audit(store: Store, cutoff_ts: str, *, dry_run: bool, actor: str) -> int:
    """Remove audit entries older than the cutoff from the start of the chain, re-anchoring it."""
    conn = store.conn
    row = conn.execute("SELECT seq, hash FROM audit WHERE at < ? ORDER BY seq DESC LIMIT 1", (cutoff_ts,)).fetchone()
    if row is None:
        return 0
    seq, h = int(row[0]), str(row[1])
    n = int(conn.execute("SELECT count(*) FROM audit WHERE seq <= ?", (seq,)).fetchone()[0])
    if dry_run or n == 0:
        return n
    conn.execute("DELETE FROM audit WHERE seq <= ?", (seq,))
    store.set_setting(ANCHOR_KEY, json.dumps({"seq": seq, "hash": h}, separators=(",", ":")))
    audit.record(store, actor=actor, action="audit.prune", target="audit",
                 detail={"entries": n, "anchor_seq": seq, "anchor_hash": h})
    return n


def compact(store: Store) -> str:
    """Give freed pages back to the file system; what was done."""
    conn = store.conn
    with store.tx():  # the search index keeps deleted rows' trigrams until its segments merge
        conn.execute("INSERT INTO encounter_search (encounter_search) VALUES ('optimize')")
    mode = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
    if mode == 2:
        conn.execute("PRAGMA incremental_vacuum").fetchall()  # one row per freed page: step to the end
        did = "incremental"
    else:  # a store made before incremental vacuum: one full VACUUM switches it (needs room for a copy)
        free = shutil.disk_usage(store.paths.home).free
        if free < _size(store) * 1.2:
            return "skipped: not enough free disk space for the first full VACUUM"
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        did = "full (first time: the store now vacuums incrementally)"
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return did


def counts(store: Store) -> list[dict[str, Any]]:
    """The pruned encounters' counts, per month of service, kind and state."""
    return [{"month": m, "kind": k, "state": s, "encounters": n, "lines": ln, "charges": c}
            for m, k, s, n, ln, c in store.conn.execute(
                "SELECT month, kind, state, encounters, lines, charges FROM retention_counts "
                "ORDER BY month, kind, state")]


# -- the engine's nightly jobs --------------------------------------------------------------------
def schedule_jobs(engine: Any, sched: Any) -> None:
    """Nightly prune at ``[retention] at`` and, when ``[backup] dir`` is set, a nightly backup at
    ``[backup] at`` (both on the engine's single scheduler worker, so they never overlap a sync)."""
    from agent.config import parse_clock

    cfg = engine.config
    h, m = parse_clock(cfg.retention.at) or (3, 30)
    sched.add_job(lambda: run_nightly_prune(engine), "cron", hour=h, minute=m, id="retention-nightly")
    if cfg.backup.dir:
        h, m = parse_clock(cfg.backup.at) or (1, 30)
        sched.add_job(lambda: run_nightly_backup(engine), "cron", hour=h, minute=m, id="backup-nightly")


def run_nightly_prune(engine: Any) -> None:
    ret = engine.config.retention
    try:
        with engine._sync_lock:  # a manual sync or reconcile waits for it, and the other way round
            prune(engine.store(), ret.days, audit_days=ret.audit_days, actor="engine")
    except Exception as exc:
        log.error("nightly prune failed: %s", type(exc).__name__)


def run_nightly_backup(engine: Any) -> None:
    from pathlib import Path

    from agent import backup

    cfg = engine.config
    store = engine.store()
    try:
        backup.scheduled(store, engine._key, Path(cfg.backup.dir), cfg.backup.keep, key_source=cfg.key_source)
    except Exception as exc:
        log.error("nightly backup failed: %s", type(exc).__name__)
        try:
            backup.record_failure(store, exc)
        except Exception:  # noqa: S110 - the log line above already says it failed
            pass
