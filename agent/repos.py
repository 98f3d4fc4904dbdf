"""Repositories: the SQL that reads and writes encounters, quarantine, findings and users.

Each works over one store connection (``Store.conn``), so it serves whichever thread owns that
connection. Routes and services call these; nothing above them writes SQL. Lists are paged in
SQL: a client never holds more than the page it shows, however large the tables grow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

SEARCH_COUNT_CAP = 1000  # a broad search (e.g. a common code) stops counting here


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` literally (``%`` and ``_`` in a search are not wildcards)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _offset(page: int, page_size: int) -> int:
    return (page - 1) * page_size


# an encounter's rule findings (store migration 16: agent/rules/apply.py), beside its validation findings
RULE_FINDINGS = ("(SELECT '[' || group_concat(t.body, ',') || ']' FROM encounter_rules r, json_each(r.findings) j "
                 "JOIN rule_texts t ON t.id = j.value WHERE r.encounter_id = {e}.id)")


def merge_findings(base: str | None, rules: str | None) -> list[dict[str, Any]]:
    """An encounter's findings as people see them: validation findings, then the rules'."""
    out: list[dict[str, Any]] = json.loads(base or "[]")
    if rules and rules != "[]":
        out += json.loads(rules)
    return out


class EncounterRepo:
    COLUMNS = ("id", "business_key", "kind", "source", "source_id", "document_id", "state", "mrn",
               "dos", "data", "findings", "version", "created_at", "updated_at")

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def rows(self, state: str | None = None, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        """Whole rows in received order, data and findings decoded (CLI listing, demo, tests)."""
        sql = f"SELECT {', '.join(self.COLUMNS)}, {RULE_FINDINGS.format(e='encounters')} FROM encounters"
        args: list[Any] = []
        if state:
            sql += " WHERE state = ?"
            args.append(state)
        sql += " ORDER BY id LIMIT ? OFFSET ?"
        args += [limit, offset]
        out = []
        for r in self.conn.execute(sql, args):
            d = dict(zip(self.COLUMNS, r[:-1], strict=True))
            d["data"] = json.loads(d["data"])
            d["findings"] = merge_findings(d["findings"], r[-1])
            out.append(d)
        return out

    @staticmethod
    def _filter(state: str | None, q: str | None) -> tuple[str, list[Any]]:
        """WHERE clause for the encounters list. Every word of ``q`` must match one of: MRN or visit
        (source) id (substring), patient family or given name (substring), a procedure code (prefix).

        MRN and source id are columns; names and codes live in the JSON ``data`` column. The trigram
        index narrows the candidates first; a plain ``data LIKE`` pre-filter then discards most rows
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
            if len(word) >= 3:
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

    def page(self, *, state: str | None, q: str | None, sort: str, desc: bool, page: int,
             page_size: int) -> dict[str, Any]:
        """One page of the encounters window: filtered, sorted and paged in SQL."""
        where, args = self._filter(state, q)
        capped = False
        if q:
            total = int(self.conn.execute(f"SELECT count(*) FROM (SELECT 1 FROM encounters e {where} LIMIT ?)",
                                          [*args, SEARCH_COUNT_CAP + 1]).fetchone()[0])
            capped = total > SEARCH_COUNT_CAP
        else:
            total = int(self.conn.execute(f"SELECT count(*) FROM encounters e {where}", args).fetchone()[0])
        direction = "DESC" if desc else "ASC"
        order = f"e.dos {direction}, e.id {direction}" if sort == "dos" else f"e.id {direction}"
        rows = self.conn.execute(
            f"SELECT e.id, e.state, e.kind, e.source, e.source_id, e.dos, e.mrn, e.data, e.findings, e.version, "
            f"{RULE_FINDINGS.format(e='e')}, "
            "(SELECT o.state FROM outbox o WHERE o.encounter_id = e.id ORDER BY o.id DESC LIMIT 1), "
            "(SELECT o.last_error FROM outbox o WHERE o.encounter_id = e.id ORDER BY o.id DESC LIMIT 1) "
            f"FROM encounters e {where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*args, page_size, _offset(page, page_size)]).fetchall()
        items = []
        for eid, st, kind, source, source_id, dos, mrn, data, findings, version, ruled, ob_state, ob_error in rows:
            d = json.loads(data)
            items.append({
                "id": eid, "state": st, "kind": kind, "source": source, "source_id": source_id, "dos": dos,
                "mrn": mrn, "patient": f"{d['patient']['family']}, {d['patient']['given']}".strip(", "),
                "codes": [ln["code"] for ln in d["lines"]], "total": _total(d["lines"]),
                "findings": merge_findings(findings, ruled), "sync_state": ob_state or "", "sync_error": ob_error or "",
                "version": version,
            })
        return {"total": total, "total_capped": capped, "page": page, "page_size": page_size, "items": items}


def _total(lines: list[dict[str, Any]]) -> str:
    """Sum of units × unit charge. A stored value that is not a finite number counts as 0 here
    (validation holds such an encounter for review), so one bad row cannot break the list."""
    total = Decimal(0)
    for ln in lines:
        try:
            amount = Decimal(ln.get("unit_charge") or 0) * Decimal(ln.get("units") or 0)
        except (InvalidOperation, TypeError, ValueError):
            continue
        if amount.is_finite():
            total += amount
    try:
        return f"{total:.2f}"
    except (InvalidOperation, ValueError):
        return "0.00"


class QuarantineRepo:
    COLUMNS = ("id", "document_id", "file", "part", "reason", "created_at", "resolved_at", "resolution")
    _SELECT = ("SELECT q.id, q.document_id, d.origin, q.part, q.reason, q.created_at, q.resolved_at, q.resolution "
               "FROM quarantine q JOIN documents d ON d.id = q.document_id")

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def rows(self, include_resolved: bool = False, *, limit: int = -1, offset: int = 0) -> list[dict[str, Any]]:
        sql = self._SELECT + ("" if include_resolved else " WHERE q.resolved_at IS NULL") + " ORDER BY q.id"
        sql += " LIMIT ? OFFSET ?"
        return [dict(zip(self.COLUMNS, r, strict=True)) for r in self.conn.execute(sql, (limit, offset))]

    def count(self, include_resolved: bool = False) -> int:
        sql = "SELECT count(*) FROM quarantine" + ("" if include_resolved else " WHERE resolved_at IS NULL")
        return int(self.conn.execute(sql).fetchone()[0])

    def page(self, *, include_resolved: bool, page: int, page_size: int) -> dict[str, Any]:
        return {"total": self.count(include_resolved), "page": page, "page_size": page_size,
                "items": self.rows(include_resolved, limit=page_size, offset=_offset(page, page_size))}

    def document(self, qid: int, max_bytes: int) -> dict[str, Any] | None:
        """A quarantine entry with the first ``max_bytes`` of its raw document (substr on the BLOB,
        so a 50 MB file is never read whole)."""
        row = self.conn.execute(
            "SELECT q.id, q.document_id, d.origin, q.part, q.reason, q.created_at, d.format, d.size, "
            "content IS NOT NULL, substr(d.content, 1, ?) FROM quarantine q JOIN documents d ON d.id = q.document_id "
            "WHERE q.id = ?", (max_bytes, qid)).fetchone()
        if row is None:
            return None
        keys = ("id", "document_id", "file", "part", "reason", "created_at", "format", "size", "stored", "head")
        d = dict(zip(keys, row, strict=True))
        d["stored"] = bool(d["stored"])
        d["head"] = bytes(d["head"] or b"")
        return d


class FindingRepo:
    COLUMNS = ("id", "kind", "encounter_id", "remote_id", "dos", "local", "remote", "diff", "status", "first_seen",
               "last_seen", "reopened", "assignee", "comments", "resolution", "resolved_by", "resolved_at")

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @staticmethod
    def _where(status: str | None, kind: str | None) -> tuple[str, list[Any]]:
        where, args = [], []
        if status:
            where.append("status = ?")
            args.append(status)
        if kind:
            where.append("kind = ?")
            args.append(kind)
        return (" WHERE " + " AND ".join(where)) if where else "", args

    def page(self, *, status: str | None, kind: str | None, page: int, page_size: int,
             actions: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """The mismatch queue, oldest first; ``actions`` maps a finding kind to what may be done."""
        where, args = self._where(status, kind)
        total = int(self.conn.execute(f"SELECT count(*) FROM findings{where}", args).fetchone()[0])
        items = self._rows(where, [*args, page_size, _offset(page, page_size)], actions, paged=True)
        return {"total": total, "page": page, "page_size": page_size, "items": items}

    def all(self, *, status: str | None, kind: str | None, actions: Mapping[str, Sequence[str]],
            limit: int = -1, offset: int = 0) -> list[dict[str, Any]]:
        """The findings that match, oldest first (the CLI on a local store; ``limit`` -1: all)."""
        where, args = self._where(status, kind)
        return self._rows(where, [*args, limit, offset], actions, paged=True)

    def _rows(self, where: str, args: list[Any], actions: Mapping[str, Sequence[str]], *,
              paged: bool) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(self.COLUMNS)} FROM findings{where} ORDER BY first_seen, id"
        today = datetime.now(UTC)
        items = []
        for row in self.conn.execute(sql + (" LIMIT ? OFFSET ?" if paged else ""), args):
            d = dict(zip(self.COLUMNS, row, strict=True))
            for k in ("local", "remote", "diff", "comments"):
                d[k] = json.loads(d[k])
            d["age_days"] = (today - datetime.fromisoformat(d["first_seen"])).days
            d["actions"] = list(actions.get(d["kind"], ()))
            items.append(d)
        return items


class UserRepo:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def exists(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is not None

    def any_active(self) -> bool:
        return self.conn.execute("SELECT 1 FROM users WHERE disabled_at IS NULL LIMIT 1").fetchone() is not None

    def any(self) -> bool:
        """Has any user ever been created (revoked ones count: setup is over once it is done)."""
        return self.conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    def insert(self, name: str, role: str, token_sha256: str, at: str) -> None:
        self.conn.execute("INSERT INTO users (name, role, token_sha256, created_at) VALUES (?,?,?,?)",
                          (name, role, token_sha256, at))

    def by_token(self, token_sha256: str) -> tuple[str, str] | None:
        row = self.conn.execute("SELECT name, role FROM users WHERE token_sha256 = ? AND disabled_at IS NULL",
                                (token_sha256,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def active_role(self, name: str) -> str | None:
        row = self.conn.execute("SELECT role FROM users WHERE name = ? AND disabled_at IS NULL", (name,)).fetchone()
        return str(row[0]) if row else None

    def disable(self, name: str, at: str) -> bool:
        cur = self.conn.execute("UPDATE users SET disabled_at = ? WHERE name = ? AND disabled_at IS NULL",
                                (at, name))
        return bool(cur.rowcount)

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM users WHERE disabled_at IS NULL").fetchone()[0])

    def rows(self, *, limit: int = -1, offset: int = 0) -> list[dict[str, str]]:
        return [{"name": n, "role": r, "created_at": c} for n, r, c in self.conn.execute(
            "SELECT name, role, created_at FROM users WHERE disabled_at IS NULL ORDER BY id LIMIT ? OFFSET ?",
            (limit, offset))]

    def page(self, *, page: int, page_size: int) -> dict[str, Any]:
        return {"total": self.count(), "page": page, "page_size": page_size,
                "items": self.rows(limit=page_size, offset=_offset(page, page_size))}
