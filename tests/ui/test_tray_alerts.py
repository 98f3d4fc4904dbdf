"""Alerts reach the tray and the Status page, against a REAL engine (in-process, temp home, real
keyring, real change feed).

An alert is made active for real: a charge waits in the engine's outbox longer than
``[alerts] queue_hours`` (no RCM is set up, so nothing sends it) and the engine's own alert check
(``agent.alerts.run``, what its scheduler runs) fires ``queue_stale``; it clears when the charge
is delivered and the check runs again. The tray must announce it once (not again on the next
status), carry a tooltip line and an ``Alerts (n)…`` menu item that opens the Activity page
(managers) or the Status page (front desk), present the icon amber while the engine itself
says ``idle``, and drop all of it when the alert clears. The tray's rate limit (a fake clock)
holds back an alert that comes back inside the window, and lets it out when the window ends.

Offscreen Qt has no system tray, so ``tray.notifications`` (which mirrors every toast) and the
icon the tray would set are checked. Screenshots: tests/artifacts/tray-alert-menu.png,
tests/artifacts/status-alert-strip.png.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent import alerts
from agent.engine import Engine
from core.states import AlertKind, EngineState
from tests.conftest import start_test_engine
from tests.helpers import dft
from tests.ui.test_windows import ARTIFACTS
from ui.app import protect_none_refcount
from ui.client import ApiClient, ChangeWatcher
from ui.icons import state_icon
from ui.main_window import MainWindow
from ui.pages.status import StatusPage
from ui.tray import TrayController

protect_none_refcount()  # PySide6 6.12.0 + Python 3.11 (see ui.app)

WAIT = 30_000
PATIENT = ("Philomena", "Quagmire-Okafor", "MRN-ALERT-4417")


class Clock:
    """The tray's clock, so its 5-minute notification window is crossed without waiting."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    eng = start_test_engine(tmp_path, roles=("front_desk", "manager"))
    yield eng
    eng.stop()


def _ts(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds")


def stale_charge(eng: Engine, key: str) -> None:
    """A charge (with a named patient) queued 30 hours ago: older than the default queue_hours."""
    store, now = eng.store(), datetime.now(UTC)
    old = _ts(now - timedelta(hours=30))
    data = {"patient": {"given": PATIENT[0], "family": PATIENT[1], "mrn": PATIENT[2]}, "dos_start": "2025-03-01"}
    with store.tx():
        store.conn.execute("INSERT INTO documents (sha256, origin, source, format, size, content, status, "
                           "received_at) VALUES (?, 'f', 'cli', 'hl7v2', 1, x'00', 'processed', ?)",
                           (f"sha-{key}", _ts(now)))
        doc = store.conn.execute("SELECT max(id) FROM documents").fetchone()[0]
        store.conn.execute("INSERT INTO encounters (business_key, kind, source, source_id, document_id, state, mrn, "
                           "dos, data, findings, content_hash, created_at, updated_at) VALUES (?, 'charge', 't', ?, "
                           "?, 'ready', ?, '2025-03-01', ?, '[]', 'h', ?, ?)",
                           (key, f"V-{key}", doc, PATIENT[2], json.dumps(data), old, old))
        enc = store.conn.execute("SELECT max(id) FROM encounters").fetchone()[0]
        store.conn.execute("INSERT INTO outbox (encounter_id, version, state, next_attempt_at, created_at, updated_at) "
                           "VALUES (?, 1, 'queued', ?, ?, ?)", (enc, old, old, old))


def deliver_all(eng: Engine) -> None:
    store = eng.store()
    with store.tx():
        store.conn.execute("UPDATE outbox SET state = 'delivered'")


def no_phi(*texts: str) -> bool:
    blob = "\n".join(texts)
    return not any(p in blob for p in PATIENT)


def test_alert_reaches_the_tray_once_and_goes_away(engine: Engine, qtbot: Any, tmp_path: Path) -> None:
    clock = Clock()
    state_file = tmp_path / "ui-state.json"
    tclient = ApiClient(engine.base, engine.tokens["manager"])  # type: ignore[attr-defined]
    tray = TrayController(tclient, lambda: ChangeWatcher(tclient.url, tclient.token, poll_timeout=2),
                          clock=clock, state_file=state_file)
    fclient = ApiClient(engine.base, engine.tokens["front_desk"])  # type: ignore[attr-defined]
    front = TrayController(fclient, lambda: ChangeWatcher(fclient.url, fclient.token, poll_timeout=2))
    wclient = ApiClient(engine.base, engine.tokens["manager"])  # type: ignore[attr-defined]
    win = MainWindow(wclient, role="manager", user="manager-user", paths=engine.paths)
    qtbot.addWidget(win)
    win.resize(1100, 900)
    tray.open_requested.connect(win.show_page)  # as ui.app wires it (show_window → show_page)
    tray.changed.connect(win.engine_changed)
    opened: list[str] = []
    front.open_requested.connect(opened.append)
    try:
        tray.start()
        front.start()
        # nothing holds: no line, no menu item, the engine's own icon
        qtbot.waitUntil(lambda: tray.current_state == EngineState.IDLE and front.role == "front_desk", timeout=WAIT)
        assert tray.alerts == [] and not tray.has_alerts_item
        assert "alert" not in tray.tooltip_text
        assert tray.presented_state == EngineState.IDLE
        start_kinds = [k for k, _, _ in tray.notifications]

        # the engine's alert check fires queue_stale (a charge waits 30 h; no RCM to send it)
        stale_charge(engine, "a1")
        alerts.run(engine)
        qtbot.waitUntil(lambda: bool(tray.alerts) and bool(front.alerts), timeout=WAIT)
        assert [a["kind"] for a in tray.alerts] == [AlertKind.QUEUE_STALE]
        title = tray.alerts[0]["title"]
        assert "waited more than" in title
        # one notification, saying what and what to do
        news = [n for n in tray.notifications if n[0] == "alert"]
        assert len(news) == 1
        _, head, body = news[0]
        assert head == "ChargeBridge: alert"
        assert "waited more than" in body and "What to do:" in body and "resume" in body
        # the tooltip line, right under the state (presented amber: the engine itself says idle)
        lines = tray.tooltip_text.splitlines()
        assert lines[0] == "ChargeBridge — needs attention"
        assert lines[1] == f"1 alert: {title}"
        assert tray.current_state == EngineState.IDLE and tray.presented_state == EngineState.ATTENTION
        assert tray._icon().pixmap(32, 32).toImage() == state_icon(EngineState.ATTENTION).pixmap(32, 32).toImage()
        assert tray.pause_action.text() == "Pause sync"  # the engine's state still drives the actions
        # the menu item, right under "Open ChargeBridge"
        acts = [a for a in tray.menu.actions() if not a.isSeparator()]
        assert acts[0] is tray.open_action and acts[1] is tray.alerts_action
        assert tray.alerts_action.text() == "Alerts (1)…" and tray.alerts_action.isEnabled()
        st = json.loads(state_file.read_text())
        assert st["alerts"] == ["queue_stale"] and st["alerts_action"] == "Alerts (1)…"
        assert st["icon_state"] == "attention" and st["state"] == "idle"
        assert no_phi(tray.tooltip_text, head, body, state_file.read_text())

        # the next statuses (a new export, and the alert check again: still holding) say nothing new
        (engine.export / "visit.hl7").write_text(dft(1))  # type: ignore[attr-defined]
        qtbot.waitUntil(lambda: "2 ready" in tray.tooltip_text, timeout=WAIT)
        alerts.run(engine)
        (engine.export / "visit2.hl7").write_text(dft(2))  # type: ignore[attr-defined]
        qtbot.waitUntil(lambda: "3 ready" in tray.tooltip_text, timeout=WAIT)
        assert [n[0] for n in tray.notifications].count("alert") == 1
        assert tray.tooltip_text.splitlines()[1] == f"1 alert: {title}"

        # "Alerts (1)…" opens the Activity page for a manager, where the fired alert is listed
        tray.alerts_action.trigger()
        assert win.isVisible() and win.current_page().name == "activity"
        activity = win.pages["activity"]
        rows = lambda: activity.model.rows  # type: ignore[attr-defined]  # noqa: E731
        qtbot.waitUntil(lambda: any(r.get("action") == "alert.queue_stale" for r in rows()), timeout=WAIT)
        # a front-desk user cannot read the trail: their item opens the Status page (its alert strip)
        qtbot.waitUntil(lambda: front.has_alerts_item, timeout=WAIT)
        opened.clear()  # offscreen there is no tray: start() asked for the window (the fallback)
        front.alerts_action.trigger()
        assert opened == ["status"]

        # the Status page's strip: the alert and what to do
        win.show_page("status")
        page = win.pages["status"]
        assert isinstance(page, StatusPage)
        qtbot.waitUntil(lambda: page.alert_box.isVisible() and len(page.alert_labels) == 1, timeout=WAIT)
        strip = page.alert_labels[0].text()
        assert "What to do:" in strip and "resume" in strip and "waited more than" in strip
        assert page.state_label.text() == "Needs attention"
        assert no_phi(strip, page.reason_label.text())
        qtbot.waitUntil(lambda: wclient.pool.activeThreadCount() == 0, timeout=WAIT)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert win.grab().save(str(ARTIFACTS / "status-alert-strip.png"))
        tray.menu.adjustSize()
        assert tray.menu.grab().save(str(ARTIFACTS / "tray-alert-menu.png"))

        # it clears: line, item and amber go; the window's strip goes with the next refresh
        deliver_all(engine)
        alerts.run(engine)
        qtbot.waitUntil(lambda: tray.alerts == [] and front.alerts == [], timeout=WAIT)
        assert "alert" not in tray.tooltip_text
        assert tray.tooltip_text.splitlines()[0] == "ChargeBridge — up to date"
        assert not tray.has_alerts_item and tray.presented_state == EngineState.IDLE
        assert json.loads(state_file.read_text())["alerts"] == []
        page.refresh()
        qtbot.waitUntil(lambda: not page.alert_box.isVisible(), timeout=WAIT)
        assert page.state_label.text() == "All good"

        # it comes back inside the tray's 5-minute window: held back by the rate limit, not lost
        stale_charge(engine, "a2")
        alerts.run(engine)
        qtbot.waitUntil(lambda: bool(tray.alerts), timeout=WAIT)
        assert tray.tooltip_text.splitlines()[1].startswith("1 alert: ")  # shown at once in the tooltip
        assert [n[0] for n in tray.notifications].count("alert") == 1
        clock.t += 301
        tray.flush_notifications()
        assert [n[0] for n in tray.notifications].count("alert") == 2
        assert "waited more than" in tray.notifications[-1][2]
        assert start_kinds == [] and no_phi(*(t + b for _, t, b in tray.notifications))
    finally:
        for t in (tray, front):
            with qtbot.waitSignal(t.stopped, timeout=WAIT, raising=True):
                t.shutdown()
        win.close()
        for c in (tclient, fclient, wclient):
            c.close()


def test_alert_held_back_and_cleared_meanwhile_is_not_announced(engine: Engine, qtbot: Any) -> None:
    """Rate limit: an alert held back that clears before the window ends is never toasted."""
    clock = Clock()
    client = ApiClient(engine.base, engine.tokens["manager"])  # type: ignore[attr-defined]
    tray = TrayController(client, lambda: ChangeWatcher(client.url, client.token, poll_timeout=2), clock=clock)
    try:
        tray.start()
        qtbot.waitUntil(lambda: tray.current_state == EngineState.IDLE, timeout=WAIT)
        stale_charge(engine, "b1")
        alerts.run(engine)
        qtbot.waitUntil(lambda: bool(tray.alerts), timeout=WAIT)
        deliver_all(engine)
        alerts.run(engine)
        qtbot.waitUntil(lambda: not tray.alerts, timeout=WAIT)
        stale_charge(engine, "b2")  # back, inside the window: held
        alerts.run(engine)
        qtbot.waitUntil(lambda: bool(tray.alerts), timeout=WAIT)
        deliver_all(engine)  # and gone again before the window ends
        alerts.run(engine)
        qtbot.waitUntil(lambda: not tray.alerts, timeout=WAIT)
        clock.t += 301
        tray.flush_notifications()
        assert [n[0] for n in tray.notifications].count("alert") == 1
    finally:
        with qtbot.waitSignal(tray.stopped, timeout=WAIT, raising=True):
            tray.shutdown()
        client.close()
