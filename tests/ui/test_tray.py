"""The tray against a real engine (in-process, temp home, real keyring, real folder watcher).

Qt runs offscreen here (tests/conftest.py), where there is no system tray: these tests also
cover the no-tray fallback. The real XEmbed tray is exercised by tests/e2e/test_tray_xvfb.py.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PySide6.QtCore import QObject, QThread, QTimer, Signal

from agent.engine import Engine
from core.paths import Paths
from core.states import DocumentStatus, EncounterState, EngineState, Role
from tests.conftest import start_test_engine
from tests.helpers import FAMILIES, dft
from ui.app import check_engine_url, protect_none_refcount
from ui.client import ApiClient, ApiFailure, ChangeWatcher
from ui.icons import SIZES, STATES, alpha_mask, render, state_icon
from ui.tray import TrayController

protect_none_refcount()  # PySide6 6.12.0 + Python 3.11: see ui.app.protect_none_refcount

WAIT_MS = 20_000


class FakeClock:
    """Injected into the tray so the 5-minute rate limit is tested without waiting 5 minutes."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# -- a real engine ---------------------------------------------------------------------------
@pytest.fixture()
def engine(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    eng = start_test_engine(tmp_path, roles=("front_desk", "manager"))
    eng.running = True  # type: ignore[attr-defined]
    yield eng
    if eng.running:  # type: ignore[attr-defined]
        eng.stop()


def stop_engine(eng: Engine) -> None:
    eng.running = False  # type: ignore[attr-defined]
    eng.stop()


@pytest.fixture()
def tray_for(engine: Engine, qtbot: Any) -> Iterator[Callable[..., TrayController]]:
    """Trays on the real engine; each is shut down (watcher stopped) before the engine stops."""
    made: list[tuple[TrayController, ApiClient]] = []

    def make(role: str = "manager", **kw: Any) -> TrayController:
        client = ApiClient(engine.base, engine.tokens[role])  # type: ignore[attr-defined]
        # a short long-poll keeps shutdown quick; the app uses the default
        tray = TrayController(client, lambda: ChangeWatcher(client.url, client.token, poll_timeout=2), **kw)
        made.append((tray, client))
        tray.start()
        return tray

    yield make
    for tray, client in made:
        with qtbot.waitSignal(tray.stopped, timeout=WAIT_MS, raising=True):
            tray.shutdown()
        client.close()


def api(engine: Engine, method: str, path: str, role: str = "manager") -> requests.Response:
    return requests.request(method, f"{engine.base}/api/v1{path}",  # type: ignore[attr-defined]
                            headers={"Authorization": f"Bearer {engine.tokens[role]}"}, timeout=30)  # type: ignore[attr-defined]


def test_state_follows_the_engine_idle_attention_paused_offline(engine: Engine, tray_for: Any, qtbot: Any) -> None:
    tray = tray_for("manager")
    qtbot.waitUntil(lambda: tray.current_state == EngineState.IDLE, timeout=WAIT_MS)
    assert tray.tooltip_text.splitlines()[0] == "ChargeBridge — up to date"
    assert "0 ready · 0 need review · 0 in quarantine" in tray.tooltip_text
    assert "Last sync: never" in tray.tooltip_text

    (engine.export / "visit.hl7").write_text(dft(1))  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: "1 ready" in tray.tooltip_text, timeout=WAIT_MS)
    assert tray.current_state == EngineState.IDLE
    assert not any(name in tray.tooltip_text for name in FAMILIES) and "MRN" not in tray.tooltip_text  # no PHI

    with qtbot.waitSignal(tray.state_changed, timeout=WAIT_MS, raising=True,
                          check_params_cb=lambda s: s == "attention"):
        (engine.export / "broken.hl7").write_bytes(b"\x00\x01\x02 not an export")  # type: ignore[attr-defined]
    assert tray.tooltip_text.splitlines()[0] == "ChargeBridge — needs attention"
    assert "1 in quarantine" in tray.tooltip_text

    assert api(engine, "POST", "/pause").status_code == 200
    qtbot.waitUntil(lambda: tray.current_state == EngineState.PAUSED, timeout=WAIT_MS)
    assert tray.pause_action.text() == "Resume sync" and tray.pause_action.isEnabled()
    assert "next: when resumed" in tray.tooltip_text

    stop_engine(engine)
    qtbot.waitUntil(lambda: tray.current_state == EngineState.OFFLINE, timeout=WAIT_MS * 2)
    first, reason = tray.tooltip_text.splitlines()[:2]
    assert first == "ChargeBridge — engine not reachable"
    assert "not running or cannot be reached" in reason  # the watcher's failure title
    assert not tray.pause_action.isEnabled() and not tray.sync_action.isEnabled()


def test_pause_action_needs_a_manager(engine: Engine, tray_for: Any, qtbot: Any) -> None:
    front, manager = tray_for("front_desk"), tray_for("manager")
    qtbot.waitUntil(lambda: front.current_state == EngineState.IDLE and manager.current_state == EngineState.IDLE, timeout=WAIT_MS)
    assert front.role == "front_desk" and manager.role == "manager"  # from /status "user"
    assert not front.pause_action.isEnabled()
    assert "manager" in front.pause_action.toolTip() and "front desk" in front.pause_action.toolTip()
    assert manager.pause_action.isEnabled() and manager.pause_action.text() == "Pause sync"

    manager.pause_action.trigger()  # POST /pause through the worker pool, not the UI thread
    qtbot.waitUntil(lambda: manager.current_state == EngineState.PAUSED and front.current_state == EngineState.PAUSED,
                    timeout=WAIT_MS)
    assert front.pause_action.text() == "Resume sync" and not front.pause_action.isEnabled()
    manager.pause_action.trigger()
    qtbot.waitUntil(lambda: manager.current_state == EngineState.IDLE, timeout=WAIT_MS)


def test_quarantine_notifications_are_rate_limited_and_coalesced(engine: Engine, tray_for: Any, qtbot: Any) -> None:
    clock = FakeClock()
    tray = tray_for("manager", clock=clock)
    qtbot.waitUntil(lambda: tray.current_state == EngineState.IDLE, timeout=WAIT_MS)
    assert tray.notifications == []  # the first status is a baseline, not news

    with qtbot.waitSignal(tray.notified, timeout=WAIT_MS, raising=True) as first:
        (engine.export / "one.hl7").write_bytes(b"\x00\x01")  # type: ignore[attr-defined]
    kind, title, body = first.args
    assert kind == "quarantine" and "1 new item in quarantine (1 waiting)" in body

    clock.advance(120)  # two minutes later: a second bad file
    (engine.export / "two.hl7").write_bytes(b"\x00\x02 also unreadable")  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: "2 in quarantine" in tray.tooltip_text, timeout=WAIT_MS)
    assert [k for k, _, _ in tray.notifications] == ["quarantine"]  # held back by the 5-minute limit

    clock.advance(181)  # the window has ended: what was held back comes as one message
    with qtbot.waitSignal(tray.notified, timeout=WAIT_MS, raising=True) as later:
        tray.flush_notifications()
    assert later.args[0] == "quarantine" and "1 new item in quarantine (2 waiting)" in later.args[2]
    tray.flush_notifications()
    assert len(tray.notifications) == 2  # nothing more pending
    for _kind, t, b in tray.notifications:
        assert not any(name in t + b for name in FAMILIES)


# -- a fake engine for what a real one cannot be made to do on cue --------------------------
class FakeClient(QObject):
    """Answers /status from a list, asynchronously like ApiClient (never in the caller's frame)."""

    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        super().__init__()
        self.url, self.token = "http://127.0.0.1:9", "cb_fake"
        self.statuses = statuses
        self.calls: list[tuple[str, str]] = []

    def call(self, method: str, path: str, *, on_ok: Callable[[Any], None] | None = None,
             on_error: Callable[[ApiFailure], None] | None = None, timeout: float = 30, **kw: Any) -> None:
        self.calls.append((method, path))
        st = self.statuses[0] if path == "/api/v1/status" else {}
        QTimer.singleShot(0, lambda: on_ok(st) if on_ok else None)

    def close(self) -> None:
        pass


class FakeWatcher(QThread):
    changed = Signal(int)
    offline = Signal(object)
    online = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("test-fake-watcher")
        self._stop = threading.Event()

    def run(self) -> None:
        self._stop.wait(30)

    def stop(self) -> None:
        self._stop.set()
        self.wait(5000)


def status(state: EngineState, *, reason: str = "", quarantined: int = 0, role: str = Role.MANAGER,
           mismatches: int | None = None) -> dict[str, Any]:
    counts = {EncounterState.READY: 0, EncounterState.NEEDS_REVIEW: 0, EncounterState.EXPECTED: 0,
              DocumentStatus.QUARANTINED: quarantined}
    if mismatches is not None:
        counts["mismatches"] = mismatches
    return {"state": state, "reason": reason, "paused": state == EngineState.PAUSED, "counts": counts, "outbox": {},
            "last_sync": {}, "next_sync": "", "user": {"name": "u", "role": role}}


@pytest.fixture()
def fake(qtbot: Any) -> Iterator[Callable[..., tuple[TrayController, FakeClient, FakeWatcher]]]:
    made: list[TrayController] = []

    def make(statuses: list[dict[str, Any]], **kw: Any) -> tuple[TrayController, FakeClient, FakeWatcher]:
        client, watcher = FakeClient(statuses), FakeWatcher()
        tray = TrayController(client, watcher, **kw)  # type: ignore[arg-type]
        made.append(tray)
        return tray, client, watcher

    yield make
    for tray in made:
        with qtbot.waitSignal(tray.stopped, timeout=WAIT_MS, raising=True):
            tray.shutdown()


def test_sync_failure_and_mismatches_notify_once_per_window(fake: Any, qtbot: Any) -> None:
    clock = FakeClock()
    statuses = [status(EngineState.IDLE, mismatches=0)]
    tray, client, watcher = fake(statuses, clock=clock)
    tray.start()
    qtbot.waitUntil(lambda: tray.current_state == EngineState.IDLE, timeout=WAIT_MS)

    statuses[0] = status(EngineState.ERROR, reason="RCM credentials rejected — check the client secret", mismatches=2)
    with qtbot.waitSignal(tray.state_changed, timeout=WAIT_MS, raising=True):
        watcher.changed.emit(2)
    qtbot.waitUntil(lambda: len(tray.notifications) == 2, timeout=WAIT_MS)
    kinds = {k: (t, b) for k, t, b in tray.notifications}
    assert set(kinds) == {"error", "mismatches"}
    assert "RCM credentials rejected" in kinds["error"][1]
    assert "2 new mismatches" in kinds["mismatches"][1]
    assert "2 mismatches" in tray.tooltip_text and "RCM credentials rejected" in tray.tooltip_text

    statuses[0] = status(EngineState.IDLE, mismatches=2)  # recovered …
    watcher.changed.emit(3)
    qtbot.waitUntil(lambda: tray.current_state == EngineState.IDLE, timeout=WAIT_MS)
    statuses[0] = status(EngineState.ERROR, reason="the RCM did not answer", mismatches=3)  # … and failed again
    watcher.changed.emit(4)
    qtbot.waitUntil(lambda: tray.current_state == EngineState.ERROR and "3 mismatches" in tray.tooltip_text, timeout=WAIT_MS)
    assert len(tray.notifications) == 2  # both kinds are inside their 5-minute window

    clock.advance(300)
    tray.flush_notifications()
    later = {k: b for k, _t, b in tray.notifications[2:]}
    assert set(later) == {"error", "mismatches"}
    assert "the RCM did not answer" in later["error"] and "1 new mismatch " in later["mismatches"]


def test_offline_from_the_watcher_drops_stale_answers(fake: Any, qtbot: Any) -> None:
    tray, client, watcher = fake([status(EngineState.IDLE)])
    tray.start()
    qtbot.waitUntil(lambda: tray.current_state == EngineState.IDLE, timeout=WAIT_MS)
    tray.refresh()  # an answer is on its way …
    watcher.offline.emit(ApiFailure(0, "the ChargeBridge engine is not running or cannot be reached"))
    assert tray.current_state == EngineState.OFFLINE
    qtbot.wait(50)  # … and arrives after the engine went away: it must not flip the icon back
    assert tray.current_state == EngineState.OFFLINE
    assert tray.tooltip_text.splitlines()[1] == "the ChargeBridge engine is not running or cannot be reached"
    watcher.online.emit()
    qtbot.waitUntil(lambda: tray.current_state == EngineState.IDLE, timeout=WAIT_MS)


def test_no_tray_opens_the_window_and_attaches_when_a_tray_appears(fake: Any, qtbot: Any, tmp_path: Path) -> None:
    available = [False]
    state_file = tmp_path / "ui-state.json"
    tray, client, watcher = fake([status(EngineState.IDLE)], tray_available=lambda: available[0], tray_retry_ms=50,
                                 state_file=state_file)
    with qtbot.waitSignal(tray.open_requested, timeout=WAIT_MS, raising=True) as opened:
        tray.start()
    assert opened.args == ["status"] and tray.tray is None
    qtbot.waitUntil(lambda: tray.current_state == EngineState.IDLE, timeout=WAIT_MS)
    data = json.loads(state_file.read_text())
    assert data["state"] == EngineState.IDLE and data["tray_visible"] is False and data["tray_available"] is False
    qtbot.wait(200)
    assert tray.tray is None  # still no tray: keeps checking, quietly

    available[0] = True
    qtbot.waitUntil(lambda: tray.tray is not None, timeout=WAIT_MS)
    icon = tray.tray
    assert icon is not None and tray.tray_visible and icon.toolTip() == tray.tooltip_text
    assert icon.contextMenu() is tray.menu
    assert [a.text() for a in tray.menu.actions() if a.text()] == [
        "Open ChargeBridge", "Sync now", "Pause sync", "Settings…", "Quit ChargeBridge"]
    data = json.loads(state_file.read_text())
    assert data["tray_visible"] is True and data["tooltip"] == tray.tooltip_text


# -- icons and the app's arguments ------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 22, 32, 64])
def test_icons_differ_in_shape_not_only_colour(size: int, qapp: Any) -> None:
    masks = {s: alpha_mask(render(s, size)) for s in STATES}
    for s, m in masks.items():
        assert sum(m) > size * size * 0.12, f"{s} is barely visible at {size}px"
    for a, b in itertools.combinations(STATES, 2):
        differing = sum(x != y for x, y in zip(masks[a], masks[b], strict=True))
        assert differing >= max(6, size * size * 0.04), f"{a} and {b} have nearly the same silhouette at {size}px"


def test_icons_have_every_size(qapp: Any) -> None:
    for s in STATES:
        sizes = {q.width() for q in state_icon(s).availableSizes()}
        assert set(SIZES) <= sizes and min(sizes) == 16 and max(sizes) == 64


def test_engine_url_must_be_https_unless_loopback() -> None:
    assert check_engine_url("https://engine.practice.lan:8765/") == "https://engine.practice.lan:8765"
    assert check_engine_url("http://127.0.0.1:8765/api/v1") == "http://127.0.0.1:8765"
    assert check_engine_url("http://localhost:8765") == "http://localhost:8765"
    assert check_engine_url("http://[::1]:8765") == "http://[::1]:8765"
    for bad in ("http://192.168.1.20:8765", "http://engine.practice.lan", "ftp://x", "engine:8765",
                "http://localhost.attacker.example", "http://127.0.0.1@attacker.example:8765",
                "http://user:pw@127.0.0.1:8765"):
        with pytest.raises(ValueError):
            check_engine_url(bad)


# -- the app's start-up, in-process (the e2e test runs it as a real process on X) ----------------
class _AppStub:
    """Stands in for QApplication.exit so quitting the app does not end pytest-qt's loop."""

    def __init__(self) -> None:
        self.exit_code: int | None = None

    def exit(self, code: int) -> None:
        self.exit_code = code


def test_app_signs_in_again_when_the_saved_token_is_refused(engine: Engine, qtbot: Any, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """--engine-url (loopback http is allowed), a stale token in the keyring → 401 → sign-in;
    then the tray follows the engine and "Open ChargeBridge" shows a window. The other
    engineer's window and dialog are swapped for the plain-Qt fallbacks, so this tests only
    this app's flow."""
    from PySide6.QtWidgets import QInputDialog

    from core import secrets as keys
    from core.secrets import API_TOKEN as TOKEN_SECRET
    from ui.app import Bootstrap

    monkeypatch.setitem(sys.modules, "ui.main_window", None)  # import → ImportError → fallback
    monkeypatch.setitem(sys.modules, "ui.signin", None)
    asked: list[str] = []
    token = engine.tokens["manager"]  # type: ignore[attr-defined]

    def get_text(*_a: Any, **_k: Any) -> tuple[str, bool]:
        asked.append("x")
        return token, True

    monkeypatch.setattr(QInputDialog, "getText", staticmethod(get_text))
    paths = Paths.resolve(tmp_path / "ui-home")
    paths.ensure()
    keys.set_secret(paths, TOKEN_SECRET, "cb_no_longer_valid")

    stub = _AppStub()
    boot = Bootstrap(stub, paths, remote_url=check_engine_url(engine.base))  # type: ignore[arg-type,attr-defined]
    boot.start()
    qtbot.waitUntil(lambda: boot.tray is not None and boot.tray.current_state == EngineState.IDLE, timeout=WAIT_MS)
    assert asked == ["x"] and boot.role == "manager" and boot.started_engine is False
    tray = boot.tray
    with qtbot.waitSignal(tray.open_requested, timeout=WAIT_MS, raising=True):
        tray.open_action.trigger()
    assert boot.window is not None and boot.window.isVisible()

    with qtbot.waitSignal(tray.stopped, timeout=WAIT_MS * 2, raising=True):  # ≤ one long-poll
        tray.quit_action.trigger()
    qtbot.waitUntil(lambda: stub.exit_code == 0, timeout=WAIT_MS)
    assert boot.window is not None and not boot.window.isVisible()
    assert engine.running and requests.get(f"{engine.base}/api/v1/health", timeout=5).ok  # type: ignore[attr-defined]


class _Running:
    """What ``spawn_engine`` returns, for an engine started in-process: still running."""

    def poll(self) -> int | None:
        return None


def test_first_run_starts_the_engine_before_the_wizard(tmp_path: Path, qtbot: Any, keyring_ok: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No engine.json and no chargebridge.toml: the app starts the local engine first (a real
    one, in-process here on a free port), and only then shows the wizard — with that engine's
    URL and no token of its own, while the engine's one-time setup token is there to read.
    Cancelling the wizard quits the app and leaves the engine running."""
    from PySide6.QtWidgets import QDialog

    import ui.app as appmod
    import ui.wizard as wizmod
    from agent import config as configmod
    from ui.app import Bootstrap
    from ui.client import engine_url
    from ui.wizard import read_setup_token

    paths = Paths.resolve(tmp_path / "first-run")
    paths.ensure()
    started: list[Engine] = []
    seen: list[tuple[Paths, str, str, str]] = []

    def spawn(home: Path) -> _Running:
        assert home == paths.home and not seen  # the engine comes before any wizard
        paths.config.write_text("[api]\nport = 0\n")  # the default port could collide with other tests
        eng = Engine(paths, configmod.load(paths.config))
        eng.start()
        started.append(eng)
        return _Running()

    class Wizard:
        def __init__(self, p: Paths, url: str, token: str = "", **_kw: Any) -> None:
            seen.append((p, url, token, read_setup_token(p)))
            self.token = ""

        def exec(self) -> QDialog.DialogCode:
            return QDialog.DialogCode.Rejected

    monkeypatch.setattr(appmod, "spawn_engine", spawn)
    monkeypatch.setattr(wizmod, "FirstRunWizard", Wizard)
    stub = _AppStub()
    boot = Bootstrap(stub, paths)  # type: ignore[arg-type]
    try:
        boot.start()
        qtbot.waitUntil(lambda: stub.exit_code is not None, timeout=WAIT_MS * 2)
        assert boot.started_engine and len(started) == 1 and len(seen) == 1
        (p, url, token, setup), = seen
        assert p == paths and url == engine_url(paths.home) and f":{started[0].port}" in url
        assert token == "" and setup.startswith("cbsetup_")
        assert stub.exit_code == 0 and boot.tray is None
        assert requests.get(f"{url}/api/v1/health", timeout=5).json()["setup_needed"] is True
    finally:
        for eng in started:
            eng.stop()
