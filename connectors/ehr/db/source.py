"""The EHR database source: a read-only, incremental reader over SQLAlchemy 2 Core.

One :class:`DbSource` per ``[[databases]]`` entry. It never writes: every session is set
read-only on connect (MariaDB/MySQL ``SET SESSION TRANSACTION READ ONLY``, PostgreSQL
``default_transaction_read_only``, SQLite ``query_only``), and ``check()`` warns when the
account *could* write, because a reader should be given a SELECT-only login.

:meth:`DbSource.fetch` reads, in one repeatable-read transaction, the encounters changed since a
cursor (see :mod:`connectors.ehr.db.profile` for the strategies) plus the ones the caller asks to
re-check, and returns them as canonical encounters with the next cursor. It stores nothing:
the caller commits the cursor together with what it read, so a crash in between re-reads.

Errors are :class:`DbError` with a ``kind`` (unreachable, auth, schema, budget, query) and a
title and fix for people; driver messages are not passed on (they can quote row values).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from connectors.ehr.db.build import build, text
from connectors.ehr.db.profile import Profile
from core.errors import ChargeBridgeError
from core.model import Encounter

log = logging.getLogger("chargebridge.db")

KEY_CHUNK = 500  # keys per IN (...) query
FIRST_SINCE = datetime(1900, 1, 1, tzinfo=UTC).replace(tzinfo=None)  # server-local, naive


class DbError(ChargeBridgeError):
    """A poll or test that failed as a whole; nothing was read into the store."""

    http_status = 502

    def __init__(self, title: str, fix: str = "", *, kind: str, key: str = "") -> None:
        super().__init__(title, fix, key=key)
        self.kind = kind


@dataclass
class CheckResult:
    ok: bool
    server: str = ""
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "server": self.server, "problems": self.problems, "warnings": self.warnings}


@dataclass
class Fetched:
    encounters: dict[str, Encounter]  # key -> encounter built from its active lines (may have none)
    raw_keys: dict[str, Any]  # key -> the value the database uses (bound back into queries)
    cursor: dict[str, Any]
    rows_read: int = 0


def driver_of(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except Exception:
        return ""


class DbSource:
    def __init__(self, name: str, url: str, profile: Profile, password: str = "", *, max_rows: int = 2_000_000,
                 timeout: float = 30.0) -> None:
        self.name = name
        self.profile = profile
        self.max_rows = max_rows
        self.timeout = timeout
        self._url = make_url(url)
        if password:
            self._url = self._url.set(password=password)
        self._engine: Engine | None = None
        self._schema_ok = False

    # -- connection --------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._url.get_backend_name()

    def _make_engine(self) -> Engine:
        from sqlalchemy.pool import NullPool

        backend = self.backend
        args: dict[str, Any] = {}
        if backend == "mysql":
            args = {"connect_timeout": 10, "read_timeout": int(self.timeout), "write_timeout": int(self.timeout)}
        elif backend == "postgresql":
            args = {"connect_timeout": 10, "options": "-c default_transaction_read_only=on"}
        iso = "SERIALIZABLE" if backend == "sqlite" else "REPEATABLE READ"
        # NullPool: a poll every few minutes needs no pooled connection that a server restart
        # would leave dead.
        eng = sa.create_engine(self._url, poolclass=NullPool, connect_args=args, isolation_level=iso)

        @sa.event.listens_for(eng, "connect")
        def _read_only(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            try:
                if backend == "mysql":
                    cur.execute("SET SESSION TRANSACTION READ ONLY")
                elif backend == "sqlite":
                    cur.execute("PRAGMA query_only = ON")
                    # CONCAT as MySQL and PostgreSQL have it (SQLite has it only from 3.44), so
                    # the built-in profiles also read a SQLite copy of these schemas
                    dbapi_conn.create_function("concat", -1, _concat, deterministic=True)
            finally:
                cur.close()

        return eng

    def connect(self) -> Connection:
        if self._engine is None:
            self._engine = self._make_engine()
        try:
            return self._engine.connect()
        except Exception as exc:
            raise self._error(exc, "connecting") from None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def _error(self, exc: BaseException, doing: str) -> DbError:
        """A driver or SQLAlchemy exception as a DbError for people (no driver text: it can
        quote values)."""
        if isinstance(exc, DbError):
            return exc
        orig = getattr(exc, "orig", exc)
        code = orig.args[0] if getattr(orig, "args", None) and isinstance(orig.args[0], int) else None
        sqlstate = getattr(orig, "sqlstate", None) or ""
        msg = str(orig).lower()
        user = self._url.username or "?"
        where = f"{self._url.host or 'local file'}:{self._url.port or ''}".rstrip(":")
        if code in (1044, 1045) or sqlstate.startswith("28") or "password authentication failed" in msg \
                or "no password supplied" in msg:
            return DbError(f"database {self.name!r}: the server at {where} refused the login for user {user!r}",
                           f"check the user and run: chargebridge db set-password {self.name}", kind="auth",
                           key=f"databases.{self.name}")
        file_problem = self.backend != "sqlite" or "unable to open" in msg or "locked" in msg
        if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, OSError, TimeoutError)) and file_problem:
            return DbError(f"database {self.name!r}: the server at {where} cannot be reached while {doing} "
                           f"({type(orig).__name__}{f' {code}' if code else ''})",
                           "check that the database server is running and reachable from this machine; "
                           "ChargeBridge tries again on its schedule", kind="unreachable")
        return DbError(f"database {self.name!r}: a query failed while {doing} ({type(orig).__name__}"
                       f"{f' {code}' if code else ''}{f' {sqlstate}' if sqlstate else ''})",
                       "run chargebridge db test to check the profile against the database", kind="query")

    # -- checks ------------------------------------------------------------------------------
    def missing_columns(self, conn: Connection) -> list[str]:
        """``table.column`` (or ``table``) for everything the profile needs that is not there."""
        insp = sa.inspect(conn)
        missing: list[str] = []
        for table, cols in self.profile.tables.items():
            found = _find_table(insp, table)
            if found is None:
                missing.append(table)
                continue
            have = {c["name"].lower() for c in insp.get_columns(found)}
            missing += [f"{table}.{c}" for c in cols if c.lower() not in have]
        return missing

    def verify_schema(self, conn: Connection) -> None:
        if self._schema_ok:
            return
        try:
            missing = self.missing_columns(conn)
        except Exception as exc:
            raise self._error(exc, "reading the schema") from None
        if missing:
            raise DbError(f"database {self.name!r} does not match the {self.profile.name} profile: missing "
                          + ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""),
                          "point the profile at the right database, or use a profile written for this schema "
                          "(docs/db-profiles.md)", kind="schema", key=f"databases.{self.name}.profile")
        self._schema_ok = True

    def can_write(self, conn: Connection) -> list[str]:
        """What this account may change (empty = read-only, as it should be)."""
        backend = self.backend
        out: list[str] = []
        if backend == "mysql":
            for (grant,) in conn.execute(sa.text("SHOW GRANTS FOR CURRENT_USER()")):
                g = str(grant).upper()
                on = g.split(" ON ", 1)[1].split(" TO ", 1)[0] if " ON " in g else ""
                privs = g.split(" ON ", 1)[0].removeprefix("GRANT ")
                if any(p in privs for p in ("ALL PRIVILEGES", "INSERT", "UPDATE", "DELETE", "DROP", "ALTER",
                                            "CREATE")):
                    out.append(f"{privs.strip()} on {on.strip()}")
        elif backend == "postgresql":
            if conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar():
                out.append("superuser")
            for table in self.profile.tables:
                found = _find_table(sa.inspect(conn), table)
                if found is None:
                    continue
                if conn.execute(sa.text("SELECT has_table_privilege(current_user, :t, 'INSERT') OR "
                                        "has_table_privilege(current_user, :t, 'UPDATE') OR "
                                        "has_table_privilege(current_user, :t, 'DELETE')"), {"t": found}).scalar():
                    out.append(f"INSERT/UPDATE/DELETE on {found}")
        elif backend == "sqlite":
            db = self._url.database or ""
            if db and "mode=ro" not in str(self._url) and os.access(db, os.W_OK):
                out.append("the database file is writable by this account")
        return out

    def check(self) -> CheckResult:
        """``chargebridge db test``: connect, check the profile's tables and columns, and warn when
        the account can write. Never raises."""
        res = CheckResult(ok=False)
        try:
            with self.connect() as conn:
                res.server = f"{conn.dialect.name} {'.'.join(str(x) for x in (conn.dialect.server_version_info or ()))}"
                try:
                    missing = self.missing_columns(conn)
                except Exception as exc:
                    raise self._error(exc, "reading the schema") from None
                if missing:
                    res.problems.append(f"missing in the database (needed by the {self.profile.name} profile): "
                                        + ", ".join(missing))
                try:
                    writes = self.can_write(conn)
                except Exception:
                    writes = []
                    res.warnings.append("could not read this account's privileges; make sure it can only SELECT")
                if writes:
                    res.warnings.append("this account can change the EHR database (" + "; ".join(writes[:5])
                                        + "); ChargeBridge only reads - give it a SELECT-only login")
        except DbError as exc:
            res.problems.append(f"{exc.title} - {exc.fix}")
        except Exception as exc:
            res.problems.append(self._error(exc, "testing").title)
        res.ok = not res.problems
        return res

    # -- reading -----------------------------------------------------------------------------
    def fetch(self, cursor: Mapping[str, Any], recheck: Iterable[Any], rescan_from: date) -> Fetched:
        """Encounters changed since ``cursor`` or in the rescan window, plus those in ``recheck``
        (raw keys the caller knows, e.g. to see a deletion). Raises :class:`DbError`."""
        with self.connect() as conn:
            self.verify_schema(conn)
            if conn.in_transaction():  # the schema check's implicit transaction; the poll wants a fresh snapshot
                conn.rollback()
            try:
                with conn.begin():
                    return self._fetch(conn, cursor, recheck, rescan_from)
            except DbError:
                raise
            except Exception as exc:
                log.debug("database %s: %s", self.name, type(exc).__name__, exc_info=log.isEnabledFor(5))
                raise self._error(exc, "reading changes") from None

    def _fetch(self, conn: Connection, cursor: Mapping[str, Any], recheck: Iterable[Any],
               rescan_from: date) -> Fetched:
        p = self.profile
        q = p.queries
        rows_read = 0
        params: dict[str, Any] = {"rescan_from": datetime.combine(rescan_from, datetime.min.time())}
        new_cursor: dict[str, Any]
        if p.strategy == "id_window":
            top = conn.execute(sa.text(q["max_id"])).scalar()
            top_id = _int(top)
            last = _int(cursor.get("last_id"))
            params["low_id"] = last - p.id_overlap if last > 0 else -1
            new_cursor = {"last_id": max(top_id, last)}
        else:
            now = conn.execute(sa.text(q["server_now"])).scalar()
            if not isinstance(now, datetime):
                raise DbError(f"database {self.name!r}: the server's clock query did not return a time",
                              "check the profile's server_now query", kind="query")
            since = _parse_ts(cursor.get("since"))
            params["since"] = (since - timedelta(seconds=p.overlap_seconds)) if since else FIRST_SINCE
            new_cursor = {"since": now.replace(tzinfo=None).isoformat() if now.tzinfo is None
                          else now.astimezone(UTC).replace(tzinfo=None).isoformat()}
        raw_keys: dict[str, Any] = {}
        for row in conn.execute(sa.text(q["changed"]), params):
            rows_read += 1
            self._budget(rows_read)
            v = row[0]
            if v is not None:
                raw_keys.setdefault(text(v, 128), v)
        for v in recheck:
            raw_keys.setdefault(text(v, 128), v)
        encounters: dict[str, Encounter] = {}
        keys = list(raw_keys)
        for i in range(0, len(keys), KEY_CHUNK):
            chunk = keys[i:i + KEY_CHUNK]
            bind = self._bind([raw_keys[k] for k in chunk])
            headers: dict[str, dict[str, Any]] = {}
            lines: dict[str, list[dict[str, Any]]] = {}
            covs: dict[str, list[dict[str, Any]]] = {}
            for r in self._rows(conn, q["encounters"], bind):
                rows_read += 1
                self._budget(rows_read)
                headers.setdefault(text(r.get("k"), 128), r)
            for target, name in ((lines, "lines"), (covs, "coverage")):
                for r in self._rows(conn, q[name], bind):
                    rows_read += 1
                    self._budget(rows_read)
                    target.setdefault(text(r.get("k"), 128), []).append(r)
            for k in chunk:
                if k in headers or k in lines:
                    encounters[k] = build(self.name, p, k, headers.get(k), lines.get(k, []), covs.get(k, []))
                else:  # gone from the database (deleted, or no active line left)
                    encounters[k] = Encounter(source="db", source_id=k, source_system=f"db:{self.name}")
        return Fetched(encounters=encounters, raw_keys=raw_keys, cursor=new_cursor, rows_read=rows_read)

    def _bind(self, raw: list[Any]) -> dict[str, Any]:
        heads: list[Any] = []
        for v in raw:
            h = str(v).split("-", 1)[0]
            heads.append(int(h) if h.isdigit() else h)
        return {"keys": raw, "key_heads": sorted(set(heads), key=str)}

    def _rows(self, conn: Connection, sql: str, bind: dict[str, Any]) -> Iterator[dict[str, Any]]:
        stmt = sa.text(sql)
        names = [n for n in ("keys", "key_heads") if f":{n}" in sql]
        stmt = stmt.bindparams(*(sa.bindparam(n, expanding=True) for n in names))
        result = conn.execute(stmt, {n: bind[n] for n in names})
        cols = [c.lower() for c in result.keys()]  # noqa: SIM118 - a Result, not a dict
        for row in result:
            yield dict(zip(cols, row, strict=True))

    def _budget(self, n: int) -> None:
        if n > self.max_rows:
            raise DbError(f"database {self.name!r}: one poll would read more than {self.max_rows:,} rows",
                          f"raise databases.max_rows for {self.name!r}, or shorten rescan_days",
                          kind="budget", key=f"databases.{self.name}.max_rows")


def _concat(*parts: Any) -> str:
    return "".join("" if p is None else str(p) for p in parts)


def _find_table(insp: Any, table: str) -> str | None:
    names = insp.get_table_names()
    if table in names:
        return table
    low = {n.lower(): n for n in names}
    return low.get(table.lower())


def _int(v: Any) -> int:
    if isinstance(v, bool):
        return 0
    if isinstance(v, int):
        return v
    try:
        return int(str(v)) if v is not None and str(v).lstrip("-").isdigit() and len(str(v)) < 20 else 0
    except ValueError:
        return 0


def _parse_ts(v: Any) -> datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        return datetime.fromisoformat(v).replace(tzinfo=None)
    except ValueError:
        return None


def safe_url(url: str) -> str:
    """The URL without any password, for messages and status."""
    try:
        u: URL = make_url(url)
    except Exception:
        return "(not a database URL)"
    return u.render_as_string(hide_password=True)
