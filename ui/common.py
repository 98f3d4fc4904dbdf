"""Small helpers every part of the UI shares, with no Qt widgets of their own: async-safe
callbacks, background work off the UI thread, time formatting, role words, paged answers and
the weekday check boxes' text form.

It imports only ``core`` and ``ui.client``, so the item models, the pages, the tray and the
wizard can all use it without importing each other (no import circle).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import shiboken6
from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot
from PySide6.QtWidgets import QComboBox, QTableWidget

from core.states import Role

ROLE_LABEL: dict[str, str] = {Role.FRONT_DESK: "front desk", Role.CODER: "coder", Role.MANAGER: "manager",
                              Role.ADMIN: "admin"}


def role_label(role: str) -> str:
    return ROLE_LABEL.get(role, role)


def role_at_least(role: str, needed: Role) -> bool:
    """``role`` as the engine sent it (any text) ranks at least ``needed``; unknown text never does."""
    try:
        return Role(role).at_least(needed)
    except ValueError:
        return False


def needs_role_text(needed: Role, role: str) -> str:
    """The tooltip on anything a role may not use: what it needs, who you are, what to do."""
    who = {Role.ADMIN: "an administrator", Role.CODER: "a coder"}.get(needed, "a practice manager")
    return (f"Needs the {role_label(needed)} role — you are signed in as {role_label(role)}. "
            f"Ask {who}, or sign in with {who.replace('a practice ', 'a ')}'s token.")


def alive(obj: QObject, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` unless ``obj``'s C++ side is gone by the time an async result arrives."""
    def call(*args: Any) -> Any:
        if shiboken6.isValid(obj):
            return fn(*args)
        return None
    return call


# -- paged lists ---------------------------------------------------------------------------------
PAGE_SIZE_MAX = 500  # the engine's largest page


def page_items(answer: Any) -> tuple[list[dict[str, Any]], int]:
    """``(items, total)`` from a paged answer ``{"total", "page", "page_size", "items"}``.
    Anything else is a protocol error the caller shows (ValueError), never a silent empty list."""
    if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
        raise ValueError("the engine's answer is not a paged list")
    items = [i for i in answer["items"] if isinstance(i, dict)]
    try:
        total = int(answer.get("total", len(items)))
    except (TypeError, ValueError):
        total = len(items)
    return items, total


# -- background work (not HTTP: e.g. saving a token in the OS keyring, a D-Bus round trip) ------
class _Done(QObject):
    finished = Signal(int, object, object)  # task id, result, exception


class _Task(QRunnable):
    def __init__(self, task_id: int, fn: Callable[[], Any], done: _Done) -> None:
        super().__init__()
        self.task_id, self.fn, self.done = task_id, fn, done

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # delivered to the UI thread, shown to the user
            self.done.finished.emit(self.task_id, None, exc)
        else:
            self.done.finished.emit(self.task_id, result, None)


class Worker(QObject):
    """Runs a blocking function on a pool thread; ``on_done(result, exc)`` runs on the UI thread."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self._done = _Done()
        self._done.finished.connect(self._deliver)
        self._callbacks: dict[int, Callable[[Any, BaseException | None], None]] = {}
        self._next = 0

    @property
    def busy(self) -> int:
        return len(self._callbacks)

    def run(self, fn: Callable[[], Any], on_done: Callable[[Any, BaseException | None], None]) -> None:
        self._next += 1
        self._callbacks[self._next] = on_done
        self.pool.start(_Task(self._next, fn, self._done))

    @Slot(int, object, object)
    def _deliver(self, task_id: int, result: Any, exc: Any) -> None:
        cb = self._callbacks.pop(task_id, None)
        if cb is not None:
            cb(result, exc)


# -- time --------------------------------------------------------------------------------------
def parse_ts(iso: str) -> datetime | None:
    if not iso:
        return None
    try:
        dt = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def when(iso: str, *, now: datetime | None = None) -> str:
    """'2026-11-27 09:48 (5 min ago)' in local time; '' for nothing."""
    dt = parse_ts(iso)
    if dt is None:
        return ""
    now = now or datetime.now(UTC)
    secs = (now - dt).total_seconds()
    return f"{dt.astimezone().strftime('%Y-%m-%d %H:%M')} ({relative(secs)})"


def relative(secs: float) -> str:
    future = secs < 0
    s = abs(secs)
    if s < 60:
        text = "less than a minute"
    elif s < 3600:
        text = f"{int(s // 60)} min"
    elif s < 86400 * 2:
        text = f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    else:
        text = f"{int(s // 86400)} days"
    return f"in {text}" if future else f"{text} ago"


def short_date(iso: str) -> str:
    dt = parse_ts(iso)
    return dt.astimezone().strftime("%Y-%m-%d %H:%M") if dt else ""


# -- the schedule's weekdays, as check boxes -------------------------------------------------------
# Presentation only: turning seven check boxes into the config's text and back. Whether a spec
# is valid is the engine's call (POST /api/v1/config/validate, PUT /api/v1/config).
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_LABEL = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
EXPORT_FORMATS = [("auto", "Detect automatically"), ("hl7v2", "HL7 v2"), ("csv", "CSV (needs a profile)"),
                  ("fhir", "FHIR R4"), ("ccda", "C-CDA")]


def folder_rows(table: QTableWidget) -> list[dict[str, Any]]:
    """The watched-folders table (path | format combo | CSV profile) as the config's ``folders``
    list; keys the table does not show ride along in the path item's user data, unchanged."""
    out = []
    for r in range(table.rowCount()):
        item, prof, combo = table.item(r, 0), table.item(r, 2), table.cellWidget(r, 1)
        extra = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        f = dict(extra) if isinstance(extra, dict) else {}
        f["path"] = item.text().strip() if item is not None else ""
        f["format"] = combo.currentData() if isinstance(combo, QComboBox) else "auto"
        f["profile"] = prof.text().strip() if prof is not None else ""
        out.append(f)
    return out


def days_spec(selected: list[int] | set[int]) -> str:
    """[0..4] -> "mon-fri"; [0, 2, 4] -> "mon,wed,fri"; [] -> ""."""
    sel = sorted(set(selected))
    if not sel:
        return ""
    if len(sel) > 1 and sel == list(range(sel[0], sel[-1] + 1)):
        return f"{DAYS[sel[0]]}-{DAYS[sel[-1]]}"
    return ",".join(DAYS[i] for i in sel)


def days_from_spec(spec: str) -> set[int] | None:
    """"mon-fri,sun" -> {0, 1, 2, 3, 4, 6}; a range may wrap ("fri-mon"). ``None`` when the text
    is not something the boxes can show (the engine says what is wrong with it on save)."""
    out: set[int] = set()
    for part in spec.lower().replace(" ", "").split(","):
        if not part:
            continue
        a, sep, b = part.partition("-")
        if a not in DAYS or (sep and b not in DAYS):
            return None
        i = DAYS.index(a)
        j = DAYS.index(b) if sep else i
        while True:
            out.add(i)
            if i == j:
                break
            i = (i + 1) % 7
    return out or None
