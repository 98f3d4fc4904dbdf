"""The tray icon: what the engine is doing, at a glance, without opening anything.

The state comes only from the engine's typed ``/api/v1/status`` (``idle | syncing | paused |
attention | error``) plus the client's own ``offline`` when the change feed cannot reach the
engine. The tray never guesses a state from counts or messages, so the tray and every other
client always agree.

Nothing here blocks the UI thread: status and actions go through :class:`ui.client.ApiClient`
(worker pool, results delivered on the UI thread) and change notification through
:class:`ui.client.ChangeWatcher` (its own thread, long-polling ``/changes``) — no busy polling.

No PHI ever leaves the engine through here: tooltips and notifications carry counts, state
words and the engine's ``reason`` strings, which the engine builds from counts and error kinds
only.

Alerts (agent/alerts.py; ``alerts`` in the status): an alert kind that was not active in the
previous status is announced once (kind ``alert``, through the same rate limit), the tooltip
gets a line (``1 alert: …``), the menu an ``Alerts (n)…`` item (the Activity page for managers,
who can read the trail; the Status page's alert strip for others), and the icon is presented
amber while one is active (ui/alerts.py: only the presentation, the engine's state is untouched).

Test/diagnostic hook: with ``state_file`` set (the app passes ``CHARGEBRIDGE_UI_STATE_FILE``),
every change is written there atomically as JSON — ``state``, ``tooltip``, ``tray_available``,
``tray_visible``, ``tray_geometry``, ``role``, pause action state, notification count — so an
end-to-end test can follow the tray without scraping the screen. It holds nothing the tooltip
does not already show.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QThread, QTimer, Signal
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from core.states import DocumentStatus, EngineState, Role
from ui.alerts import active_alerts, alert_line, notification, presented_state
from ui.client import ApiClient, ApiFailure, ChangeWatcher
from ui.common import role_at_least, role_label
from ui.icons import SIZES, state_icon
from ui.testmode_banner import MENU_TEXT, TRAY_LINE, marked

log = logging.getLogger("chargebridge.ui.tray")

STATE_WORDS: dict[EngineState, str] = {
    EngineState.IDLE: "up to date",
    EngineState.SYNCING: "syncing charges",
    EngineState.PAUSED: "sync paused",
    EngineState.ATTENTION: "needs attention",
    EngineState.ERROR: "sync problem",
    EngineState.OFFLINE: "engine not reachable",
}

NOTIFY_WINDOW_SECONDS = 300.0  # at most one notification per kind in this window
TRAY_RETRY_MS = 5000  # how often to look for a system tray that was not there at start

# what a click on a notification opens
_NOTIFY_PAGE = {"quarantine": "quarantine", "mismatches": "mismatches", "error": "status", "action": "status"}

WatcherSource = ChangeWatcher | Callable[[], ChangeWatcher]


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _short_time(iso: str) -> str:
    """An engine timestamp (UTC ISO) in local time, short: ``14:05`` today, else ``Nov 20 14:05``."""
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    except (TypeError, ValueError):
        return ""
    if t.date() == datetime.now().astimezone().date():
        return t.strftime("%H:%M")
    return t.strftime("%b %d %H:%M")


def mismatch_count(status: dict[str, Any]) -> int | None:
    """Open mismatches if this engine's status reports them (a later engine may), else None."""
    counts = status.get("counts") or {}
    for value in (counts.get("mismatches"), status.get("mismatches")):
        if isinstance(value, int):
            return value
        if isinstance(value, dict) and isinstance(value.get("open"), int):
            return int(value["open"])
    return None


class _Notifier:
    """At most one notification per kind per window; what arrives meanwhile is coalesced into
    one message when the window ends, so a burst of 40 bad files is one toast, not 40."""

    def __init__(self, clock: Callable[[], float], window: float) -> None:
        self.clock, self.window = clock, window
        self.sent_at: dict[str, float] = {}
        self.pending: dict[str, dict[str, Any]] = {}

    def offer(self, kind: str, new: int, total: int, reason: str) -> dict[str, Any] | None:
        """The message to send now, or None (then it is pending until :meth:`due`)."""
        item = self.pending.pop(kind, {"new": 0})
        item = {"new": item["new"] + new, "total": total, "reason": reason}
        last = self.sent_at.get(kind)
        if last is not None and self.clock() - last < self.window:
            self.pending[kind] = item
            return None
        self.sent_at[kind] = self.clock()
        return item

    def due(self) -> list[tuple[str, dict[str, Any]]]:
        """Pending messages whose window has ended (they are sent, so their clock restarts)."""
        out = []
        now = self.clock()
        for kind in list(self.pending):
            if now - self.sent_at.get(kind, -self.window) >= self.window:
                out.append((kind, self.pending.pop(kind)))
                self.sent_at[kind] = now
        return out

    def next_due_ms(self) -> int | None:
        if not self.pending:
            return None
        now = self.clock()
        left = min(self.sent_at.get(k, now) + self.window - now for k in self.pending)
        return max(100, int(left * 1000))


class TrayController(QObject):
    """The tray icon, its menu and notifications, following the engine's status.

    ``changed(seq)`` re-emits the change feed so the window needs no second long-poll.
    ``open_requested(page)`` asks the app to show the main window on a page (status, quarantine,
    mismatches, settings…); ``quit_requested`` asks it to quit; ``stopped`` says the change
    watcher has ended after :meth:`shutdown`. ``notified(kind, title, body)`` mirrors every
    notification (also when there is no tray to show it), for the window and for tests.
    """

    state_changed = Signal(str)
    changed = Signal(int)  # the engine committed something (re-emitted from the change feed)
    open_requested = Signal(str)
    quit_requested = Signal()
    notified = Signal(str, str, str)
    stopped = Signal()

    def __init__(self, client: ApiClient, watcher: WatcherSource, *, clock: Callable[[], float] = time.monotonic,
                 state_file: str | os.PathLike[str] | None = None,
                 tray_available: Callable[[], bool] = QSystemTrayIcon.isSystemTrayAvailable,
                 tray_retry_ms: int = TRAY_RETRY_MS, notify_window: float = NOTIFY_WINDOW_SECONDS,
                 extra_state: Callable[[], dict[str, Any]] | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("chargebridge-tray")
        self.client = client
        self._watcher_source = watcher
        self._watcher: ChangeWatcher | None = None
        self._retiring: list[ChangeWatcher] = []
        self._tray_available = tray_available
        self._state_file = Path(state_file) if state_file else None
        self._extra_state = extra_state
        self._notifier = _Notifier(clock, notify_window)
        self._tray: QSystemTrayIcon | None = None
        self._state = EngineState.OFFLINE
        self._tooltip = "ChargeBridge — connecting to the engine"
        self._status: dict[str, Any] | None = None
        self._last_counts: dict[str, int] | None = None  # baseline for "new" quarantine/mismatches
        self._epoch = 0  # bumped when the engine goes offline; late answers from before are dropped
        self._inflight = False
        self._again = False
        self._closing = False
        self._last_kind = "status"
        self.test_mode = False  # the engine's [mode] test (its /status says): banner line, menu item, icon mark
        self.role = ""
        self.user = ""
        self.notifications: list[tuple[str, str, str]] = []
        self.alerts: list[dict[str, Any]] = []  # the active alerts of the last status
        self._alert_kinds: set[str] = set()  # their kinds: a kind not in here is news
        self._alert_news: set[str] = set()  # news not yet announced (held back by the rate limit)
        self._icon_state: EngineState | None = None

        self._retry = QTimer(self)
        self._retry.setObjectName("chargebridge-tray-retry")
        self._retry.setInterval(tray_retry_ms)
        self._retry.timeout.connect(self._look_for_tray)
        self._flush = QTimer(self)
        self._flush.setObjectName("chargebridge-tray-notify-flush")
        self._flush.setSingleShot(True)
        self._flush.timeout.connect(self.flush_notifications)
        self._build_menu()

    # -- public -----------------------------------------------------------------------------
    @property
    def current_state(self) -> EngineState:
        return self._state

    @property
    def presented_state(self) -> EngineState:
        """What the icon shows: the engine's state, amber while an alert is active (ui/alerts.py)."""
        return presented_state(self._state, self.alerts)

    @property
    def has_alerts_item(self) -> bool:
        return self.alerts_action in self.menu.actions()

    @property
    def tooltip_text(self) -> str:
        return self._tooltip

    @property
    def tray(self) -> QSystemTrayIcon | None:
        return self._tray

    @property
    def tray_visible(self) -> bool:
        return self._tray is not None and self._tray.isVisible() and bool(self._tray_available())

    def start(self) -> None:
        """Attach the tray icon (or fall back to the window), start following the engine."""
        if not self._attach_tray():
            # No tray (some GNOME setups, a kiosk session): show the window instead, quietly keep
            # looking for a tray, and attach as soon as one appears. Never exit, never nag.
            log.info("no system tray available; showing the window and checking again every %d s",
                     self._retry.interval() // 1000)
            self.open_requested.emit("status")
            self._retry.start()
        self._start_watcher()
        self.refresh()
        self.write_state()

    def refresh(self) -> None:
        """Ask the engine for its status (coalesced: at most one request in flight)."""
        if self._closing:
            return
        if self._inflight:
            self._again = True
            return
        self._inflight = True
        epoch = self._epoch
        self.client.call("GET", "/api/v1/status", timeout=15,
                         on_ok=lambda st: self._on_status(st, epoch),
                         on_error=lambda f: self._on_status_error(f, epoch))

    def reconnect(self) -> None:
        """Replace the change watcher (e.g. the engine came back on another port and the
        client's URL was updated). Needs a watcher factory."""
        if callable(self._watcher_source) and not isinstance(self._watcher_source, QThread):
            self._retire(self._watcher)
            self._watcher = None
            self._start_watcher()
            self.refresh()

    def shutdown(self) -> None:
        """Hide the icon and stop the watcher without blocking the UI; ``stopped`` follows."""
        if self._closing:
            return
        self._closing = True
        self._retry.stop()
        self._flush.stop()
        if self._tray is not None:
            self._tray.hide()
        w, self._watcher = self._watcher, None
        if w is None or not w.isRunning():
            QTimer.singleShot(0, self.stopped.emit)
            return
        w.finished.connect(self.stopped)  # queued to this (UI) thread
        self._retire(w)

    def flush_notifications(self) -> None:
        """Send what was coalesced while a kind's window was closed (timer-driven; tests call it)."""
        for kind, item in self._notifier.due():
            self._send(kind, item)
        ms = self._notifier.next_due_ms()
        if ms is not None and not self._closing:
            self._flush.start(ms)

    def write_state(self) -> None:
        """The test/diagnostic hook (see the module docstring); no-op without a state file."""
        if self._state_file is None:
            return
        geo = self._tray.geometry() if self._tray is not None else None
        data: dict[str, Any] = {
            "state": self._state, "tooltip": self._tooltip, "pid": os.getpid(),
            "tray_available": bool(self._tray_available()), "tray_visible": self.tray_visible,
            "tray_geometry": [geo.x(), geo.y(), geo.width(), geo.height()] if geo is not None else None,
            "role": self.role, "pause_enabled": self.pause_action.isEnabled(),
            "pause_label": self.pause_action.text(), "notifications": len(self.notifications),
            "notification_kinds": [k for k, _, _ in self.notifications],
            "test_mode": self.test_mode, "icon_state": self.presented_state,
            "alerts": [str(a["kind"]) for a in self.alerts],
            "alerts_action": self.alerts_action.text() if self.has_alerts_item else "",
        }
        if self._extra_state is not None:
            data.update(self._extra_state())
        tmp = self._state_file.with_name(self._state_file.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._state_file)
        except OSError as exc:
            log.warning("could not write the UI state file: %s", type(exc).__name__)

    # -- menu -------------------------------------------------------------------------------
    def _build_menu(self) -> None:
        self.menu = QMenu()
        self.menu.setObjectName("chargebridge-tray-menu")
        self.menu.setToolTipsVisible(True)  # the disabled Pause action says why
        self.open_action = QAction("Open ChargeBridge", self.menu)
        self.open_action.triggered.connect(lambda: self.open_requested.emit("status"))
        self.alerts_action = QAction("Alerts…", self.menu)
        self.alerts_action.triggered.connect(lambda: self.open_requested.emit(self._alerts_page()))
        self.sync_action = QAction("Sync now", self.menu)
        self.sync_action.triggered.connect(self._sync_now)
        self.pause_action = QAction("Pause sync", self.menu)
        self.pause_action.triggered.connect(self._toggle_pause)
        self.settings_action = QAction("Settings…", self.menu)
        self.settings_action.triggered.connect(lambda: self.open_requested.emit("settings"))
        self.quit_action = QAction("Quit ChargeBridge", self.menu)
        self.quit_action.setToolTip("Closes this window and icon; the engine keeps running")
        self.quit_action.triggered.connect(self.quit_requested.emit)
        self.testmode_action = QAction(MENU_TEXT, self.menu)  # information only: shown in test mode
        self.testmode_action.setEnabled(False)
        self.testmode_action.setToolTip("Charges are recorded, not sent; go live from the window's Test mode page")
        self.testmode_sep = QAction(self.menu)
        self.testmode_sep.setSeparator(True)
        for a in (self.open_action, self.sync_action, self.pause_action, self.settings_action):
            self.menu.addAction(a)
        self.menu.addSeparator()
        self.menu.addAction(self.quit_action)
        self.menu.setDefaultAction(self.open_action)
        self._update_actions()

    def _update_actions(self) -> None:
        if self.test_mode and self.testmode_action not in self.menu.actions():  # on top, only in test mode
            self.menu.insertActions(self.open_action, [self.testmode_action, self.testmode_sep])
        elif not self.test_mode and self.testmode_action in self.menu.actions():
            self.menu.removeAction(self.testmode_action)
            self.menu.removeAction(self.testmode_sep)
        online = self._state != EngineState.OFFLINE
        paused = self._state == EngineState.PAUSED
        n = len(self.alerts) if online else 0  # offline: the tray cannot know what holds now
        if n and self.alerts_action not in self.menu.actions():  # under "Open", only while one is active
            self.menu.insertAction(self.sync_action, self.alerts_action)
        elif not n and self.alerts_action in self.menu.actions():
            self.menu.removeAction(self.alerts_action)
        self.alerts_action.setText(f"Alerts ({n})…")
        self.alerts_action.setToolTip(alert_line(self.alerts) if n else "")
        self.pause_action.setText("Resume sync" if paused else "Pause sync")
        self.sync_action.setEnabled(online)
        if not online:
            self.pause_action.setEnabled(False)
            self.pause_action.setToolTip("The engine is not reachable")
        elif not role_at_least(self.role, Role.MANAGER):
            self.pause_action.setEnabled(False)
            who = role_label(self.role) if self.role else "an unknown role"
            self.pause_action.setToolTip(f"{'Resuming' if paused else 'Pausing'} sync needs a practice "
                                         f"manager; you are signed in as {who}")
        else:
            self.pause_action.setEnabled(True)
            self.pause_action.setToolTip("Resume sending charges to the billing system" if paused
                                         else "Stop sending charges until resumed (files are still read)")

    def _alerts_page(self) -> str:
        """Where an alert is read: the Activity page (the trail of alerts) needs a manager; others
        get the Status page, whose alert strip says what is wrong and what to do."""
        return "activity" if role_at_least(self.role, Role.MANAGER) else "status"

    def _sync_now(self) -> None:
        self.client.call("POST", "/api/v1/sync", timeout=15, on_ok=lambda _r: self.refresh(),
                         on_error=self._action_failed)

    def _toggle_pause(self) -> None:
        path = "/api/v1/resume" if self._state == EngineState.PAUSED else "/api/v1/pause"
        self.client.call("POST", path, timeout=15, on_ok=lambda _r: self.refresh(), on_error=self._action_failed)

    def _action_failed(self, failure: ApiFailure) -> None:
        # a direct answer to something the user just did: not rate-limited, but still PHI-free
        self._show("action", "ChargeBridge", str(failure), QSystemTrayIcon.MessageIcon.Warning)

    # -- tray -------------------------------------------------------------------------------
    def _attach_tray(self) -> bool:
        if self._tray is not None:
            return True
        if not self._tray_available():
            return False
        tray = QSystemTrayIcon(self._icon(), self)
        tray.setToolTip(self._tooltip)
        tray.setContextMenu(self.menu)
        tray.activated.connect(self._on_activated)
        tray.messageClicked.connect(self._message_clicked)
        tray.show()
        self._tray = tray
        self._retry.stop()
        log.info("tray icon attached")
        # the icon's geometry is known only once the tray has embedded it
        QTimer.singleShot(1500, self.write_state)
        return True

    def _message_clicked(self) -> None:
        page = self._alerts_page() if self._last_kind == "alert" else _NOTIFY_PAGE.get(self._last_kind, "status")
        self.open_requested.emit(page)

    def _look_for_tray(self) -> None:
        if self._attach_tray():
            self.write_state()

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.open_requested.emit("status")

    # -- watcher ----------------------------------------------------------------------------
    def _start_watcher(self) -> None:
        src = self._watcher_source
        w = src if isinstance(src, QThread) else src()
        w.changed.connect(self._on_changed)
        w.offline.connect(self._on_offline)
        w.online.connect(self.refresh)
        self._watcher = w
        if not w.isRunning():
            w.start()

    def _retire(self, w: ChangeWatcher | None) -> None:
        """Stop a watcher off the UI thread (its long-poll may take a while to return)."""
        if w is None:
            return
        for sig in (w.changed, w.offline, w.online):
            try:
                sig.disconnect()
            except (RuntimeError, TypeError):
                pass
        self._retiring.append(w)
        w.finished.connect(self._forget_retired)  # a method of a UI-thread object: queued
        threading.Thread(target=w.stop, name="chargebridge-ui-watcher-stop", daemon=True).start()

    def _forget_retired(self) -> None:
        # dropped on the UI thread, never from inside the finishing thread itself
        self._retiring = [w for w in self._retiring if not w.isFinished()]

    def _on_changed(self, seq: int) -> None:
        self.refresh()
        self.changed.emit(seq)

    def _on_offline(self, failure: ApiFailure) -> None:
        self._epoch += 1
        self._set_offline(failure)

    # -- status -----------------------------------------------------------------------------
    def _request_done(self) -> None:
        self._inflight = False
        if self._again:
            self._again = False
            self.refresh()

    def _on_status(self, st: Any, epoch: int) -> None:
        if self._closing:
            return
        self._request_done()
        if epoch != self._epoch or not isinstance(st, dict):
            return
        try:
            state = EngineState(str(st.get("state", "")))
        except ValueError:
            state = EngineState.ATTENTION  # a state this tray does not know yet: worth a look, never hidden
        if state == EngineState.OFFLINE:  # the client's own state; an answering engine is not offline
            state = EngineState.ATTENTION
        prev = self._state
        user = st.get("user") or {}
        self.role, self.user = str(user.get("role", "")), str(user.get("name", ""))
        self._status = st
        mode_changed = (st.get("test_mode") is True) != self.test_mode
        self.test_mode = st.get("test_mode") is True
        self.alerts = active_alerts(st)
        if mode_changed and self._tray is not None:
            self._tray.setIcon(self._icon())
        self._notify_changes(st, prev, state)
        self._notify_alerts()
        self._apply(state, self._compose_tooltip(st, state))

    def _on_status_error(self, failure: ApiFailure, epoch: int) -> None:
        if self._closing:
            return
        self._request_done()
        if epoch != self._epoch:
            return
        # no status means the tray cannot know the engine's state: say so, with the reason
        self._set_offline(failure)

    def _set_offline(self, failure: ApiFailure) -> None:
        lines = [f"ChargeBridge — {STATE_WORDS[EngineState.OFFLINE]}", failure.title]
        self._apply(EngineState.OFFLINE, "\n".join(lines))

    def _compose_tooltip(self, st: dict[str, Any], state: EngineState) -> str:
        c = st.get("counts") or {}
        lines = [f"ChargeBridge — {STATE_WORDS[presented_state(state, self.alerts)]}"]
        if self.alerts:
            lines.append(alert_line(self.alerts))
        if self.test_mode:
            lines.insert(0, TRAY_LINE)
        reason = str(st.get("reason") or "")
        if state == EngineState.ERROR and reason:
            lines.append(reason if len(reason) <= 120 else reason[:119] + "…")
        parts = [f"{int(c.get('ready', 0))} ready", f"{int(c.get('needs_review', 0))} need review",
                 f"{int(c.get('quarantined', 0))} in quarantine"]
        mm = mismatch_count(st)
        if mm is not None:
            parts.append(_plural(mm, "mismatch", "mismatches"))
        lines.append(" · ".join(parts))
        last = st.get("last_sync") or {}
        when = _short_time(str(last.get("at", ""))) if last.get("at") else ""
        sync = f"Last sync {when}" if when else "Last sync: never"
        if when and isinstance(last.get("delivered"), int) and last["delivered"]:
            sync += f" ({last['delivered']} sent)"
        nxt = _short_time(str(st.get("next_sync") or ""))
        if nxt:
            sync += f" · next {nxt}"
        elif st.get("paused"):
            sync += " · next: when resumed"
        lines.append(sync)
        text = "\n".join(lines)
        if sys.platform == "win32":  # the Windows tray cuts tooltips at 127 characters
            text = text[:127]
        return text

    def _apply(self, state: EngineState, tooltip: str) -> None:
        changed = state != self._state
        self._state, self._tooltip = state, tooltip
        if self._tray is not None:
            if self.presented_state != self._icon_state:
                self._tray.setIcon(self._icon())
            self._tray.setToolTip(tooltip)
        self._update_actions()
        self.write_state()
        if changed:
            log.info("tray state: %s", state)
            self.state_changed.emit(state)

    def _icon(self, state: EngineState | None = None) -> QIcon:
        """The state's icon (default: the presented state), with the test-mode mark in test mode."""
        state = state or self.presented_state
        self._icon_state = state
        icon = state_icon(state)
        return marked(icon, SIZES) if self.test_mode else icon

    # -- notifications ----------------------------------------------------------------------
    def _notify_changes(self, st: dict[str, Any], prev: EngineState, state: EngineState) -> None:
        c = st.get("counts") or {}
        now = {"quarantined": int(c.get(DocumentStatus.QUARANTINED, 0))}
        mm = mismatch_count(st)
        if mm is not None:
            now["mismatches"] = mm
        if self._last_counts is not None:  # the first status is the baseline: no nag at start-up
            dq = now["quarantined"] - self._last_counts.get("quarantined", now["quarantined"])
            if dq > 0:
                self._offer("quarantine", dq, now["quarantined"])
            if "mismatches" in now:
                dm = now["mismatches"] - self._last_counts.get("mismatches", now["mismatches"])
                if dm > 0:
                    self._offer("mismatches", dm, now["mismatches"])
        self._last_counts = now
        if state == EngineState.ERROR and prev != EngineState.ERROR:
            self._offer("error", 1, 1, str(st.get("reason") or ""))

    def _notify_alerts(self) -> None:
        """Announce each alert kind once as it becomes active (also those active when the tray
        starts: unlike counts, an alert is news to whoever just signed in). A kind that clears and
        comes back is news again."""
        kinds = {str(a["kind"]) for a in self.alerts}
        new = kinds - self._alert_kinds
        self._alert_kinds = kinds
        self._alert_news &= kinds  # what cleared while held back is no longer worth a toast
        if new:
            self._alert_news |= new
            self._offer("alert", len(new), len(kinds))

    def _offer(self, kind: str, new: int, total: int, reason: str = "") -> None:
        item = self._notifier.offer(kind, new, total, reason)
        if item is not None:
            self._send(kind, item)
        else:
            log.info("notification (%s) held back by the rate limit", kind)
            ms = self._notifier.next_due_ms()
            if ms is not None and not self._flush.isActive():
                self._flush.start(ms)

    def _send(self, kind: str, item: dict[str, Any]) -> None:
        n, total = int(item["new"]), int(item["total"])
        warn = QSystemTrayIcon.MessageIcon.Warning
        if kind == "alert":
            news = [a for a in self.alerts if str(a["kind"]) in self._alert_news]
            self._alert_news = set()
            if not news:  # they cleared while the rate limit held them back
                return
            title, body = notification(news)
            self._show(kind, title, body, warn)
            return
        if kind == "quarantine":
            title = "ChargeBridge: files in quarantine"
            body = (f"{_plural(n, 'new item', 'new items')} in quarantine ({total} waiting). "
                    "Open ChargeBridge to see the reason and what to do.")
        elif kind == "mismatches":
            title = "ChargeBridge: billing mismatches"
            body = (f"{_plural(n, 'new mismatch', 'new mismatches')} between the EHR and the billing system "
                    f"({total} open). Open ChargeBridge to review.")
        else:
            title, warn = "ChargeBridge: sync problem", QSystemTrayIcon.MessageIcon.Critical
            reason = str(item.get("reason") or "")
            body = (reason[:240] if reason else "Sync stopped with an error.") + " Open ChargeBridge for details."
        self._show(kind, title, body, warn)

    def _show(self, kind: str, title: str, body: str, icon: QSystemTrayIcon.MessageIcon) -> None:
        self._last_kind = kind
        self.notifications.append((kind, title, body))
        log.info("notification: %s", kind)
        if self._tray is not None and self.tray_visible:
            self._tray.showMessage(title, body, icon, 10_000)
        self.notified.emit(kind, title, body)
        self.write_state()
