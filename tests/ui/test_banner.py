"""The TEST MODE banners against a REAL engine (in-process, temp home, real keyring): off, then
switched on through the API as an admin would — the window's banner and Test mode tab, the
tray's first tooltip line, its disabled menu item and the icon's mark follow the engine's
``test_mode`` through the real change feed (the tray's feed drives the window, as in the app).

Offscreen Qt has no system tray, so the tray's icon is checked as the icon it would set.
Screenshots: tests/artifacts/window-testmode-banner.png, tray-testmode-menu.png,
tray-testmode-icon.png.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor, QImage, QPainter

from agent.engine import Engine
from core.states import EngineState
from tests.conftest import start_test_engine
from tests.ui.test_testmode_page import test_mode_on
from tests.ui.test_windows import ARTIFACTS
from ui.app import protect_none_refcount
from ui.client import ApiClient, ChangeWatcher
from ui.icons import state_icon
from ui.main_window import MainWindow
from ui.testmode_banner import HEADLINE, MENU_TEXT, TRAY_LINE, marked_pixmap
from ui.tray import TrayController

protect_none_refcount()  # PySide6 6.12.0 + Python 3.11 (see ui.app)

WAIT = 30_000


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    eng = start_test_engine(tmp_path, folder_format="hl7v2")
    yield eng
    eng.stop()


def test_banners_show_in_window_and_tray_only_in_test_mode(engine: Engine, fhir_peer: Any, qtbot: Any,
                                                           tmp_path: Path) -> None:
    state_file = tmp_path / "ui-state.json"
    tclient = ApiClient(engine.base, engine.tokens["manager"])  # type: ignore[attr-defined]
    tray = TrayController(tclient, lambda: ChangeWatcher(tclient.url, tclient.token, poll_timeout=2),
                          state_file=state_file)
    wclient = ApiClient(engine.base, engine.tokens["manager"])  # type: ignore[attr-defined]
    win = MainWindow(wclient, role="manager", user="manager-user", paths=engine.paths)
    qtbot.addWidget(win)
    win.resize(1180, 560)
    win.show()
    tray.changed.connect(win.engine_changed)  # one change feed for tray and window, as ui.app wires them
    gate = win.pages["testmode"].gate  # type: ignore[attr-defined]
    testmode_tab = win.tabs.indexOf(win.pages["testmode"])
    try:
        tray.start()
        # off: no banner, no tab, a plain tooltip, no menu item, the plain icon
        qtbot.waitUntil(lambda: tray.current_state != EngineState.OFFLINE and gate.test_mode is False, timeout=WAIT)
        assert not win.testmode_banner.isVisible() and not win.tabs.isTabVisible(testmode_tab)
        assert tray.tooltip_text.splitlines()[0] == "ChargeBridge — up to date"
        assert TRAY_LINE not in tray.tooltip_text and tray.testmode_action not in tray.menu.actions()
        assert tray._icon().pixmap(32, 32).toImage() == state_icon(tray.current_state).pixmap(32, 32).toImage()
        assert json.loads(state_file.read_text())["test_mode"] is False

        # on, through the API: the change feed brings it to the tray and the window
        test_mode_on(engine, fhir_peer)
        qtbot.waitUntil(lambda: tray.tooltip_text.splitlines()[0] == TRAY_LINE, timeout=WAIT)
        assert tray.tooltip_text.splitlines()[1] == "ChargeBridge — up to date"  # the state still reads
        first = tray.menu.actions()[0]
        assert first is tray.testmode_action and first.text() == MENU_TEXT
        assert first.isVisible() and not first.isEnabled()  # information, not a command
        assert json.loads(state_file.read_text())["test_mode"] is True
        qtbot.waitUntil(lambda: win.testmode_banner.isVisible(), timeout=WAIT)
        assert HEADLINE in win.testmode_banner.text and win.tabs.isTabVisible(testmode_tab)

        # the icon carries the mark: the bottom-right corner differs, the top-left quarter does not
        plain, mark = state_icon(tray.current_state).pixmap(64, 64).toImage(), tray._icon().pixmap(64, 64).toImage()
        assert mark != plain
        assert all(mark.pixel(x, y) == plain.pixel(x, y) for x in range(30) for y in range(30))
        assert QColor(mark.pixel(58, 58)) != QColor(plain.pixel(58, 58))

        # the banner's link opens the Test mode page
        assert win.current_page().name == "status"
        win.testmode_banner.label.linkActivated.emit("#golive")
        assert win.current_page().name == "testmode"

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        win.show_page("status")
        qtbot.waitUntil(lambda: bool(win.pages["status"].last.get("counts")), timeout=WAIT)  # type: ignore[attr-defined]
        qtbot.waitUntil(lambda: wclient.pool.activeThreadCount() == 0, timeout=WAIT)
        assert win.grab().save(str(ARTIFACTS / "window-testmode-banner.png"))
        tray.menu.adjustSize()
        assert tray.menu.grab().save(str(ARTIFACTS / "tray-testmode-menu.png"))
        sheet = QImage(4 * 72, 72, QImage.Format.Format_ARGB32)
        sheet.fill(Qt.GlobalColor.white)
        p = QPainter(sheet)
        for i, st in enumerate((EngineState.IDLE, EngineState.ATTENTION)):
            p.drawPixmap(QPoint(8 + 144 * i, 4), state_icon(st).pixmap(64, 64))
            p.drawPixmap(QPoint(80 + 144 * i, 4), marked_pixmap(state_icon(st), 64))
        p.end()
        assert sheet.save(str(ARTIFACTS / "tray-testmode-icon.png"))
    finally:
        with qtbot.waitSignal(tray.stopped, timeout=WAIT, raising=True):
            tray.shutdown()
        win.close()
        tclient.close()
        wclient.close()
