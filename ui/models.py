"""Qt item models over the engine's API.

:class:`PagedModel` is for lists that can be huge (encounters: 100,000 rows and more; the audit
trail). It never asks for everything: the view calls ``canFetchMore``/``fetchMore`` as the user
scrolls toward the end, and each call asks the engine for ONE more page. Filtering and sorting
are the engine's job (SQL), so changing a filter throws the rows away and starts again at page 1.

Stale answers are dropped by generation number: every filter change bumps ``generation``; an
answer that comes back for an older generation (the user typed on while it was in flight) is
counted in ``stale_dropped`` and ignored, so a slow old query can never overwrite a new one.

:class:`RecordsModel` is for short lists shown whole (quarantine, mismatches): one page of the
engine's largest size; ``total`` says how many there are, so a page can tell the user when it
shows only the first ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor

from core.states import EncounterState, OutboxState
from ui.client import ApiClient, ApiFailure, unreadable_answer
from ui.common import PAGE_SIZE_MAX, alive, page_items, short_date

Index = QModelIndex | QPersistentModelIndex


@dataclass(frozen=True)
class Column:
    header: str
    get: Callable[[dict[str, Any]], str]
    tip: Callable[[dict[str, Any]], str] | None = None
    align_right: bool = False
    header_tip: str = ""


class _TableBase(QAbstractTableModel):
    COLUMNS: ClassVar[list[Column]] = []

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.columns: list[Column] = list(self.COLUMNS)
        self._rows: list[dict[str, Any]] = []

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(self.columns)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802 - Qt's name
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.columns):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.columns[section].header
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.columns[section].header_tip or None
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        row, col = self._rows[index.row()], self.columns[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return col.get(row)
        if role == Qt.ItemDataRole.ToolTipRole:
            return col.tip(row) if col.tip else None
        if role == Qt.ItemDataRole.TextAlignmentRole and col.align_right:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return self.extra_data(row, index.column(), role)

    def extra_data(self, row: dict[str, Any], column: int, role: int) -> Any:
        return None

    def row(self, i: int) -> dict[str, Any]:
        return self._rows[i]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)


class RecordsModel(_TableBase):
    """A short list shown whole; ``set_rows`` replaces it, ``set_page`` reads a paged answer."""

    PARAMS: ClassVar[dict[str, int]] = {"page": 1, "page_size": PAGE_SIZE_MAX}  # what to ask a paged endpoint for

    def __init__(self, columns: list[Column], parent: Any = None) -> None:
        super().__init__(parent)
        self.columns = list(columns)
        self.total = 0

    def set_rows(self, rows: list[dict[str, Any]], total: int | None = None) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.total = len(self._rows) if total is None else max(total, len(self._rows))
        self.endResetModel()

    def set_page(self, answer: Any) -> None:
        """``{"total", "page", "page_size", "items"}`` → rows (ValueError for anything else)."""
        items, total = page_items(answer)
        self.set_rows(items, total)

    @property
    def truncated(self) -> bool:
        return self.total > len(self._rows)


class PagedModel(_TableBase):
    """Rows fetched one page at a time, on demand, from a paged engine endpoint."""

    loading_changed = Signal(bool)
    failed = Signal(object)  # ApiFailure
    page_loaded = Signal()  # after every page (and after an empty first page)

    path = ""

    def __init__(self, client: ApiClient, *, page_size: int = 200, parent: Any = None) -> None:
        super().__init__(parent)
        self.client = client
        self.page_size = page_size
        self.total: int | None = None  # unknown until the first page arrives
        self.generation = 0
        self.requests_sent = 0
        self.stale_dropped = 0
        self.last_failure: ApiFailure | None = None
        self._pages = 0
        self._pending = False
        self._failed = False
        self._active = False  # nothing is fetched (not even by the view) until the page asks: reload()
        self._ids: set[Any] = set()

    # -- what to ask for (subclasses) ------------------------------------------------------------
    def params(self, page: int) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, result: Any) -> tuple[list[dict[str, Any]], int]:
        items, total = page_items(result)
        self.total_capped = bool(result.get("total_capped", result.get("capped")))
        return items, total

    # -- state ---------------------------------------------------------------------------------
    @property
    def loading(self) -> bool:
        return self._pending

    def reload(self) -> None:
        """Forget every row and ask for page 1 again (a new filter, or the engine changed)."""
        self.generation += 1
        self.beginResetModel()
        self._rows, self._ids = [], set()
        self.total, self._pages = None, 0
        self._pending, self._failed, self._active = False, False, True
        self.last_failure = None
        self.endResetModel()
        self.fetchMore(QModelIndex())

    def canFetchMore(self, parent: Index = QModelIndex()) -> bool:  # noqa: N802 - Qt's name
        if parent.isValid() or self._pending or self._failed or not self._active:
            return False
        return self.total is None or len(self._rows) < self.total

    def fetchMore(self, parent: Index = QModelIndex()) -> None:  # noqa: N802 - Qt's name
        if not self.canFetchMore(parent):
            return
        gen, page = self.generation, self._pages + 1
        self._pending = True
        self.requests_sent += 1
        self.loading_changed.emit(True)
        self.client.call("GET", self.path, params=self.params(page),
                         on_ok=alive(self, lambda result: self._on_page(gen, result)),
                         on_error=alive(self, lambda failure: self._on_fail(gen, failure)))

    def _on_page(self, gen: int, result: Any) -> None:
        if gen != self.generation:
            self.stale_dropped += 1  # an answer to a filter the user has already changed
            return
        self._pending = False
        try:
            items, total = self.parse(result)
        except (ValueError, TypeError, AttributeError):
            self._failed = True
            self.last_failure = unreadable_answer()
            self.loading_changed.emit(False)
            self.failed.emit(self.last_failure)
            return
        self._pages += 1
        fresh = []
        for it in items:  # rows that moved between pages while scrolling are shown once
            key = it.get("id", id(it))
            if key not in self._ids:
                self._ids.add(key)
                fresh.append(it)
        self.total = total
        if fresh:
            self.beginInsertRows(QModelIndex(), len(self._rows), len(self._rows) + len(fresh) - 1)
            self._rows.extend(fresh)
            self.endInsertRows()
        if not items:
            self.total = len(self._rows)  # the list shrank under us: nothing more to fetch
        self.loading_changed.emit(False)
        self.page_loaded.emit()

    def _on_fail(self, gen: int, failure: ApiFailure) -> None:
        if gen != self.generation:
            self.stale_dropped += 1
            return
        self._pending = False
        self._failed = True  # no retry storm from the view; reload() tries again
        self.last_failure = failure
        self.loading_changed.emit(False)
        self.failed.emit(failure)


# -- encounters ---------------------------------------------------------------------------------
STATE_LABEL: dict[str, str] = {EncounterState.READY: "Ready", EncounterState.NEEDS_REVIEW: "Needs review",
                               EncounterState.EXPECTED: "Expected visit"}
SYNC_LABEL: dict[str, str] = {"": "Not sent", OutboxState.QUEUED: "Queued", OutboxState.SENDING: "Sending",
                              OutboxState.DELIVERED: "Delivered", OutboxState.FAILED: "Retrying",
                              OutboxState.REJECTED: "Rejected by RCM"}


def _money(v: str) -> str:
    try:
        return f"${Decimal(v):,.2f}"
    except (InvalidOperation, TypeError):
        return str(v)


def _findings_tip(row: dict[str, Any]) -> str:
    msgs = [f"• {f.get('field', '')}: {f.get('message', '')}" for f in row.get("findings") or []]
    return "\n".join(msgs) if msgs else ""


def _state_tip(row: dict[str, Any]) -> str:
    if row.get("state") == EncounterState.NEEDS_REVIEW:
        return "Fix these in the EHR and export again:\n" + _findings_tip(row)
    if row.get("state") == EncounterState.EXPECTED:
        return "A scheduled visit (from the EHR's schedule); no charge documented yet"
    return "Validated; it will be sent to the billing system at the next sync"


def _sync_tip(row: dict[str, Any]) -> str:
    return row.get("sync_error") or SYNC_LABEL.get(row.get("sync_state", ""), "")


class EncountersModel(PagedModel):
    """Encounters, filtered, sorted and paged by the engine (GET /api/v1/encounters)."""

    path = "/api/v1/encounters"
    COLUMNS: ClassVar[list[Column]] = [
        Column("Visit", lambda r: r["source_id"], lambda r: f"Visit id in the EHR ({r['source']})",
               header_tip="The visit (encounter) id the EHR gave it"),
        Column("Patient", lambda r: r["patient"]),
        Column("MRN", lambda r: r["mrn"], header_tip="Medical record number"),
        Column("Date of service", lambda r: r["dos"]),
        Column("Codes", lambda r: ", ".join(r["codes"]), lambda r: "Procedure codes (CPT/HCPCS): "
               + ", ".join(r["codes"])),
        Column("Total", lambda r: _money(r["total"]), align_right=True, header_tip="Sum of the charge lines"),
        Column("State", lambda r: STATE_LABEL.get(r["state"], r["state"]), _state_tip),
        Column("Billing system", lambda r: SYNC_LABEL.get(r.get("sync_state", ""), r.get("sync_state", "")),
               _sync_tip, header_tip="Whether the charge has been sent to the RCM"),
    ]
    STATE_COLUMN = 6

    def __init__(self, client: ApiClient, *, page_size: int = 200, parent: Any = None) -> None:
        super().__init__(client, page_size=page_size, parent=parent)
        self.q = ""
        self.state = ""
        self.sort_key = "id"
        self.descending = True  # newest first: what a practice looks at most

    def params(self, page: int) -> dict[str, Any]:
        p: dict[str, Any] = {"page": page, "page_size": self.page_size, "sort": self.sort_key,
                             "desc": "true" if self.descending else "false"}
        if self.q:
            p["q"] = self.q
        if self.state:
            p["state"] = self.state
        return p

    def set_filter(self, *, q: str | None = None, state: str | None = None, sort: str | None = None,
                   desc: bool | None = None, force: bool = False) -> bool:
        """Change any of the filters; reloads (and so cancels what is in flight) only if one changed."""
        new = (self.q if q is None else q.strip(), self.state if state is None else state,
               self.sort_key if sort is None else sort, self.descending if desc is None else desc)
        if not force and new == (self.q, self.state, self.sort_key, self.descending) and self.generation:
            return False
        self.q, self.state, self.sort_key, self.descending = new
        self.reload()
        return True

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.state)

    def extra_data(self, row: dict[str, Any], column: int, role: int) -> Any:
        if (role == Qt.ItemDataRole.ForegroundRole and column == self.STATE_COLUMN
                and row["state"] == EncounterState.NEEDS_REVIEW):
            return QBrush(QColor("#a04000"))
        if role == Qt.ItemDataRole.ForegroundRole and row.get("sync_state") == OutboxState.REJECTED and column == 7:
            return QBrush(QColor("#b71c1c"))
        return None


# -- audit trail ----------------------------------------------------------------------------------
ACTION_LABEL = {
    "config.change": "Changed settings", "rcm.secret": "Set the RCM secret", "user.add": "Added a user",
    "sync.pause": "Paused sync", "sync.resume": "Resumed sync", "quarantine.reprocess": "Reprocessed a file",
    "mismatch.resend": "Re-sent a charge", "mismatch.accept-rcm": "Accepted the RCM's version",
    "mismatch.ignore": "Ignored a mismatch", "mismatch.comment": "Commented on a mismatch",
    "encounter.accept_rcm": "Took the RCM's values",
    # alerts the engine raised (agent/alerts.py audits each one it fires as alert.<kind>)
    "alert.queue_stale": "Alert: charges waiting too long", "alert.no_export": "Alert: no EHR export seen",
    "alert.sync_failing": "Alert: sync keeps failing", "alert.denial_rate": "Alert: denial rate above target",
    "alert.missed_charges": "Alert: missed charges found", "alert.database_down": "Alert: EHR database unreachable",
}


def _detail(row: dict[str, Any]) -> str:
    d = row.get("detail")
    if isinstance(d, dict):
        return ", ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in d.items())
    return str(d or "")


def _actor(row: dict[str, Any]) -> str:
    a = str(row.get("actor", ""))
    return a.split(":", 1)[1] if a.startswith("api:") else a


class AuditModel(PagedModel):
    """The audit trail, newest first, fetched a page at a time (GET /api/v1/audit)."""

    path = "/api/v1/audit"
    COLUMNS: ClassVar[list[Column]] = [
        Column("When", lambda r: short_date(r["at"]), lambda r: r["at"]),
        Column("Who", _actor, lambda r: r["actor"]),
        Column("What", lambda r: ACTION_LABEL.get(r["action"], r["action"]), lambda r: r["action"]),
        Column("On", lambda r: r.get("target", "")),
        Column("Details", _detail, _detail),
        Column("#", lambda r: str(r["seq"]), lambda r: f"Entry {r['seq']} of the tamper-evident chain; "
               f"hash {r.get('hash', '')[:16]}…", align_right=True),
    ]

    def __init__(self, client: ApiClient, *, page_size: int = 200, parent: Any = None) -> None:
        super().__init__(client, page_size=page_size, parent=parent)
        self.action = ""

    def params(self, page: int) -> dict[str, Any]:
        p: dict[str, Any] = {"page": page, "page_size": self.page_size}
        if self.action:
            p["action"] = self.action
        return p
