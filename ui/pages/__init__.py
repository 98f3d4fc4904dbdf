"""Shared pieces of the main window's pages: the signed-in session, role gating, error banners,
empty states, background work and time formatting.

Every page talks to the engine only through :class:`ui.client.ApiClient` (HTTP on a worker
thread, results back on the UI thread). Callbacks are wrapped with :func:`alive` because a
result can arrive after the page that asked for it was closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from PySide6.QtCore import QAbstractItemModel, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.states import Role
from ui.client import ApiClient, ApiFailure
from ui.common import (  # noqa: F401 - the pages' shared vocabulary, re-exported for them
    Worker,
    alive,
    needs_role_text,
    parse_ts,
    relative,
    role_at_least,
    role_label,
    short_date,
    when,
)

IDLE_TIMEOUT_S = 15 * 60  # manager actions after this long without input ask to sign in again


class Session(QObject):
    """Who is signed in, and the idle clock that guards manager actions.

    ``clock`` is injectable (tests move time forward instead of sleeping). The window's input
    filter calls ``touch`` only *after* each key or click has been handled, so the click that
    triggers a manager action does not itself count as recent activity for :meth:`guard`.
    """

    identity_changed = Signal()
    navigate = Signal(str, str)  # page name, argument (e.g. "encounters", "needs_review")
    message = Signal(str)  # a transient status-bar message

    def __init__(self, client: ApiClient, *, role: str, user: str, clock: Callable[[], float] = time.monotonic,
                 idle_timeout: float = IDLE_TIMEOUT_S, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.role = role
        self.user = user
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.last_activity = clock()
        self.reauth: Callable[[str, Callable[[], None]], None] | None = None  # set by the window

    def at_least(self, role: Role) -> bool:
        return role_at_least(self.role, role)

    def touch(self) -> None:
        self.last_activity = self.clock()

    def idle_for(self) -> float:
        return self.clock() - self.last_activity

    def set_identity(self, *, token: str, user: str, role: str) -> None:
        self.client.token = token
        changed = (user, role) != (self.user, self.role)
        self.user, self.role = user, role
        self.touch()
        if changed:
            self.identity_changed.emit()

    def guard(self, action: Callable[[], None], what: str) -> None:
        """Run a manager action now, or after signing in again when the user has been idle."""
        if self.idle_for() > self.idle_timeout and self.reauth is not None:
            minutes = int(self.idle_timeout // 60)
            self.reauth(f"You have been away for more than {minutes} minutes. Sign in again to {what}.", action)
            return
        self.touch()
        action()


def gate(button: QAbstractButton, session: Session, needed: Role, tip: str, *, extra_ok: bool = True,
         extra_tip: str = "") -> None:
    """Enable ``button`` for roles >= ``needed``; otherwise disable it with a tooltip saying why."""
    if not session.at_least(needed):
        button.setEnabled(False)
        button.setToolTip(needs_role_text(needed, session.role))
    elif not extra_ok:
        button.setEnabled(False)
        button.setToolTip(extra_tip)
    else:
        button.setEnabled(True)
        button.setToolTip(tip)


class Banner(QFrame):
    """An inline message (error or info) with what happened and the fix; never a blocking dialog."""

    COLORS: ClassVar[dict[str, tuple[str, str]]] = {
        "error": ("#fdecea", "#b71c1c"), "info": ("#e8f1fb", "#0d47a1"), "ok": ("#e8f5e9", "#1b5e20")}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 6, 6)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.label, 1)
        self.close_btn = QPushButton("Dismiss")
        self.close_btn.setToolTip("Hide this message")
        self.close_btn.clicked.connect(self.hide)
        lay.addWidget(self.close_btn, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_text(self, text: str, kind: str = "info") -> None:
        bg, fg = self.COLORS.get(kind, self.COLORS["info"])
        self.setStyleSheet(f"#banner {{ background: {bg}; border: 1px solid {fg}; border-radius: 4px; }}"
                           f"#banner QLabel {{ color: {fg}; }}")
        self.label.setText(text)
        self.show()

    def show_failure(self, failure: ApiFailure | str, doing: str = "") -> None:
        """``doing``: what we were trying ("load the quarantine"), so the message reads whole."""
        if isinstance(failure, ApiFailure):
            head = f"Could not {doing}: {failure.title}" if doing else failure.title
            text = f"<b>{_esc(_cap(head))}.</b>" + (f"<br>What to do: {_esc(failure.fix)}." if failure.fix else "")
        else:
            text = f"<b>{_esc(_cap(str(failure)))}</b>"
        self.show_text(text, "error")

    @property
    def text(self) -> str:
        return self.label.text()


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def record_table(model: QAbstractItemModel, name: str, on_selected: Callable[..., None]) -> QTableView:
    """The list on the left of a records page: whole rows, one at a time, no row numbers."""
    view = QTableView()
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.verticalHeader().hide()
    view.setAccessibleName(name)
    view.selectionModel().selectionChanged.connect(on_selected)
    return view


def reselect(view: QTableView, items: list[dict[str, Any]], key: str, keep: Any,
             show: Callable[[dict[str, Any] | None], None]) -> None:
    """After a reload, select the record that was shown (by ``key``), else the first one, and show
    it; ``show(None)`` when the list is empty."""
    row = next((i for i, r in enumerate(items) if r[key] == keep), 0 if items else None)
    if row is None:
        show(None)
    else:
        view.selectRow(row)
        show(items[row])


def with_empty_state(view: QWidget, text: str) -> tuple[QLabel, QStackedWidget]:
    """``view`` and its "nothing here — do this next" message in one stack (view first)."""
    empty = empty_label(text)
    stack = QStackedWidget()
    stack.addWidget(view)
    stack.addWidget(empty)
    return empty, stack


def empty_label(text: str) -> QLabel:
    """A centred, friendly "nothing here — do this next" message."""
    lab = QLabel(text)
    lab.setObjectName("emptyState")
    lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
    lab.setWordWrap(True)
    lab.setStyleSheet("#emptyState { color: #555; font-size: 13pt; padding: 40px; }")
    return lab


class Page(QWidget):
    """One tab of the main window. Pages fetch when shown (``refresh``) and re-gate their
    buttons when the signed-in identity changes (``apply_role``)."""

    name = ""
    title = ""
    refresh_on_show = True  # False: keep rows (and scroll position) until the engine changes something

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.client = session.client
        self.banner = Banner()
        self._outer = QVBoxLayout(self)
        self._outer.addWidget(self.banner)
        session.identity_changed.connect(self.apply_role)

    def refresh(self) -> None:  # pragma: no cover - overridden
        pass

    def apply_role(self) -> None:
        pass

    def focus_filter(self) -> bool:
        """Ctrl+F: put the cursor in this page's filter box; False when it has none."""
        return False

    def open_with(self, arg: str) -> None:
        """Called when another page links here with an argument (e.g. a state filter)."""
        self.refresh()
