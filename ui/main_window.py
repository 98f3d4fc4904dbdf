"""The ChargeBridge window: Status, Encounters, Quarantine, Mismatches, Activity, Settings.

Only the visible page fetches, and only through the async :class:`ui.client.ApiClient`; the
window never waits on the network. The app connects the tray's change feed to
:meth:`MainWindow.engine_changed`, which refreshes the visible page (debounced, so a burst of
commits during an ingest costs one request, not hundreds).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow, QTabWidget, QVBoxLayout, QWidget

from core.paths import Paths
from core.states import Role
from ui.client import ApiClient
from ui.help import HelpViewer, help_button
from ui.pages import IDLE_TIMEOUT_S, Page, Session, role_label
from ui.pages.activity import ActivityPage
from ui.pages.claims import ClaimsPage
from ui.pages.dashboard import DashboardPage
from ui.pages.encounters import EncountersPage
from ui.pages.goals import GoalsPage
from ui.pages.mismatches import MismatchesPage
from ui.pages.quarantine import QuarantinePage
from ui.pages.review import ReviewPage
from ui.pages.settings import SettingsPage
from ui.pages.status import StatusPage
from ui.pages.testmode import TestModePage
from ui.testmode_banner import TestModeBanner

PAGES = ("status", "encounters", "quarantine", "mismatches", "activity", "settings", "review", "claims", "dashboard",
         "goals", "testmode")
_TAB_TEXT = {"status": "&Status", "encounters": "&Encounters", "quarantine": "&Quarantine",
             "mismatches": "&Mismatches", "activity": "&Activity", "settings": "Se&ttings", "review": "Re&view",
             "claims": "C&laims", "dashboard": "&Dashboard", "goals": "&Goals",
             "testmode": "Test m&ode"}
_TAB_TIP = {
    "status": "Is everything flowing? What needs attention? (Ctrl+1)",
    "encounters": "Every visit read from the EHR, searchable (Ctrl+2)",
    "quarantine": "Files that could not be read, and why (Ctrl+3)",
    "mismatches": "Where the EHR and the billing system disagree (Ctrl+4)",
    "activity": "Who changed what, when (Ctrl+5)",
    "settings": "Folders, billing system, schedule, users (Ctrl+6)",
    "review": "Charges the rules hold for a coder: approve or reject (Ctrl+7)",
    "claims": "Each claim at the payer: accepted, rejected, paid, denied, and why (Ctrl+8)",
    "dashboard": "KPIs against goals: denials, A/R, charge lag, trends (Ctrl+9)",
    "goals": "Targets and the baseline period the dashboard compares with",
    "testmode": "Test mode: what sync would have sent, and the go-live checklist",
}
_INPUT = {QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.Wheel}


class MainWindow(QMainWindow):
    def __init__(self, client: ApiClient, *, role: str, user: str, paths: Paths | None = None,
                 clock: Callable[[], float] = time.monotonic, idle_timeout: float = IDLE_TIMEOUT_S,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.client = client
        self.paths = paths
        self.setWindowTitle("ChargeBridge")
        self.resize(1180, 760)
        self.session = Session(client, role=role, user=user, clock=clock, idle_timeout=idle_timeout, parent=self)
        self.session.reauth = self._reauth
        self.session.navigate.connect(self._navigate)
        self.session.message.connect(lambda m: self.statusBar().showMessage(m, 6000))
        self.session.identity_changed.connect(self._identity)
        self.reauth_dialog: QWidget | None = None  # the SignInDialog asking to sign in again, while open

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.pages: dict[str, Page] = {}
        for cls in (StatusPage, EncountersPage, QuarantinePage, MismatchesPage, ActivityPage, SettingsPage, ReviewPage,
                    ClaimsPage, DashboardPage, GoalsPage, TestModePage):
            page = cls(self.session)
            self.pages[page.name] = page
            i = self.tabs.addTab(page, _TAB_TEXT[page.name])
            self.tabs.setTabToolTip(i, _TAB_TIP[page.name])
        # Paged pages (encounters, activity) keep their rows and scroll position when you come
        # back to them, unless the engine changed something meanwhile; short pages just re-fetch.
        self._stale: set[str] = set(self.pages)
        self.tabs.currentChanged.connect(lambda _: self._page_shown())
        # test mode (H11): a banner above the tabs; the tab shows while in test mode (ui/pages/testmode.py)
        self.testmode_banner = TestModeBanner()
        self.testmode_banner.open_page.connect(lambda: self.show_page("testmode"))
        self.pages["testmode"].gate.changed.connect(self._test_mode)  # type: ignore[attr-defined]
        self.tabs.setTabVisible(self.tabs.indexOf(self.pages["testmode"]), False)
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.testmode_banner)
        column.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.help_viewer: HelpViewer | None = None  # "?" beside the page tabs and F1: help for the page shown
        self.help_btn = help_button(self.show_help)
        self.tabs.setCornerWidget(self.help_btn, Qt.Corner.TopRightCorner)
        QShortcut(QKeySequence(QKeySequence.StandardKey.HelpContents), self).activated.connect(self.show_help)

        self.who = QLabel()
        self.who.setToolTip("Who is signed in, and their role")
        self.statusBar().addPermanentWidget(self.who)
        self._identity()

        refresh_keys = {k.toString() for k in QKeySequence.keyBindings(QKeySequence.StandardKey.Refresh)}
        for key in sorted(refresh_keys | {"Ctrl+R"}):  # F5 and Ctrl+R, each once (a duplicate is ambiguous)
            QShortcut(QKeySequence(key), self).activated.connect(self.refresh)
        QShortcut(QKeySequence("Ctrl+F"), self).activated.connect(self.focus_filter)
        for i, name in enumerate(PAGES[:9], start=1):  # Ctrl+1 … Ctrl+9
            QShortcut(QKeySequence(f"Ctrl+{i}"), self).activated.connect(lambda n=name: self.show_page(n))
        QShortcut(QKeySequence(QKeySequence.StandardKey.Close), self).activated.connect(self.close)

        self._changed = QTimer(self)  # engine commits come in bursts: refresh once per burst
        self._changed.setSingleShot(True)
        self._changed.setInterval(700)
        self._changed.timeout.connect(self.refresh)

        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)
        self.refresh()  # the first page; an async request, nothing waits here

    # -- public interface ----------------------------------------------------------------------
    @property
    def role(self) -> str:
        return self.session.role

    @property
    def user(self) -> str:
        return self.session.user

    def show_page(self, name: str) -> None:
        """Bring a page to the front: status|encounters|quarantine|mismatches|activity|settings."""
        if name not in self.pages:
            raise ValueError(f"unknown page {name!r}; one of: {', '.join(PAGES)}")
        page = self.pages[name]
        if self.tabs.currentWidget() is page:
            page.refresh()
        else:
            self.tabs.setCurrentWidget(page)  # currentChanged refreshes it
        self.show()
        self.raise_()
        self.activateWindow()

    def show_help(self, page: str = "") -> HelpViewer:
        """The help viewer, open at the section about ``page`` (default: the page shown)."""
        if self.help_viewer is None:
            self.help_viewer = HelpViewer(self)
        self.help_viewer.open_for_page(page or self.current_page().name)
        return self.help_viewer

    def current_page(self) -> Page:
        return self.tabs.currentWidget()  # type: ignore[return-value]

    def refresh(self) -> None:
        """Re-fetch the visible page (Ctrl+R / F5, and after the engine reports a change)."""
        page = self.current_page()
        self._stale.discard(page.name)
        page.refresh()
        self.pages["testmode"].gate.check()  # type: ignore[attr-defined]

    def _test_mode(self, on: bool, show_tab: bool) -> None:
        self.testmode_banner.set_on(on)
        page = self.pages["testmode"]  # never hidden while on screen (e.g. right after going live)
        self.tabs.setTabVisible(self.tabs.indexOf(page), show_tab or self.tabs.currentWidget() is page)

    def engine_changed(self, *_: object) -> None:
        """Connect to ChangeWatcher.changed: the engine committed something."""
        self._stale = set(self.pages)
        if self.isVisible():
            self._changed.start()

    def _page_shown(self) -> None:
        page = self.current_page()
        if page.name in self._stale or page.refresh_on_show:
            self.refresh()

    def focus_filter(self) -> None:
        page = self.current_page()
        if not page.focus_filter():
            self.show_page("encounters")
            self.pages["encounters"].focus_filter()

    # -- internals ---------------------------------------------------------------------------
    def _navigate(self, name: str, arg: str) -> None:
        page = self.pages[name]
        self.tabs.blockSignals(True)
        self.tabs.setCurrentWidget(page)
        self.tabs.blockSignals(False)
        self._stale.discard(name)
        page.open_with(arg)

    def _identity(self) -> None:
        self.who.setText(f"Signed in as <b>{self.session.user}</b> ({role_label(self.session.role)})")
        self.setWindowTitle(f"ChargeBridge — {self.session.user}")

    def _reauth(self, reason: str, then: Callable[[], None]) -> None:
        from ui.signin import SignInDialog

        if self.reauth_dialog is not None:
            self.reauth_dialog.deleteLater()  # one at a time; the previous one is done with
        dlg = SignInDialog(self.client.url, self, paths=self.paths, reason=reason, user_hint=self.session.user)
        self.reauth_dialog = dlg

        def ok() -> None:
            self.session.set_identity(token=dlg.token, user=dlg.user, role=dlg.role)
            self.statusBar().showMessage(f"Signed in again as {dlg.user}", 5000)
            if self.session.at_least(Role.MANAGER):
                then()
            else:
                self.statusBar().showMessage(f"{dlg.user} ({role_label(dlg.role)}) may not do this", 8000)

        dlg.accepted.connect(ok)
        dlg.open()  # window-modal without a nested event loop: the window keeps painting

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        # Any key, click or scroll in this window is activity. The touch runs after the event
        # has been handled, so the click that starts a manager action is judged on the idle
        # time *before* it (see Session.guard).
        if event.type() in _INPUT and isinstance(obj, QWidget) and obj.window() is self:
            QTimer.singleShot(0, self.session.touch)
        return False

    def closeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        super().closeEvent(event)  # type: ignore[arg-type]

    def showEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)  # again after a close (the tray re-shows the window)
        super().showEvent(event)  # type: ignore[arg-type]
