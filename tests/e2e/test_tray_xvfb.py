"""The tray app end to end: a real engine process, the real app process on a real X display
(Xvfb) with a real XEmbed system tray (trayer), real files in a watched folder.

The app reports what it shows through its diagnostic hook (``CHARGEBRIDGE_UI_STATE_FILE``, see
ui/tray.py), so nothing here scrapes pixels; the screenshots in tests/artifacts/ (or
``$CHARGEBRIDGE_ARTIFACTS``) are for people to look at.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, run_cli
from tests.e2e.xvfb import (
    embedded_in_tray,
    require_tools,
    screenshot,
    selection_owner,
    stop_pid,
    stop_process,
    trayer,
    wait_for,
    window_tree,
    x_env,
    xvfb,
)
from tests.helpers import FAMILIES, dft

ARTIFACTS = Path(os.environ.get("CHARGEBRIDGE_ARTIFACTS") or ROOT / "tests" / "artifacts")
APP_NAME = "ChargeBridge"


class Home:
    """A practice home with a watched folder and a manager whose token is in the keyring."""

    def __init__(self, root: Path) -> None:
        self.home, self.export = root / "home", root / "export"
        self.export.mkdir(parents=True)
        self.home.mkdir()
        (self.home / "chargebridge.toml").write_text(
            f'[api]\nport = 0\n[[folders]]\npath = "{self.export}"\nsettle_seconds = 0.2\n')
        r = run_cli("users", "add", "tray-manager", "--role", "manager", "--save", home=self.home)
        assert r.returncode == 0, r.stderr
        self.token = r.stdout.strip().splitlines()[1].strip()
        assert self.token.startswith("cb_")

    def engine_info(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.home / "engine.json").read_text())
        except (OSError, ValueError):
            return None

    def healthy(self) -> bool:
        info = self.engine_info()
        if not info:
            return False
        try:
            return requests.get(f"{info['url']}/api/v1/health", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def api(self, method: str, path: str) -> requests.Response:
        info = self.engine_info()
        assert info, "no engine.json"
        return requests.request(method, f"{info['url']}/api/v1{path}",
                                headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


class App:
    """The tray app as a user starts it: ``chargebridge --home H`` on the X display."""

    def __init__(self, home: Home, display: str, workdir: Path) -> None:
        self.state_file = workdir / "ui-state.json"
        self.log = workdir / "app.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "installer.entry", "--home", str(home.home)], cwd=ROOT, stdout=out, stderr=out,
                stdin=subprocess.DEVNULL, env=x_env(display, CHARGEBRIDGE_UI_STATE_FILE=str(self.state_file)))

    def state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def diagnose(self) -> str:
        return f"app state: {self.state()}\napp exit: {self.proc.poll()}\napp log:\n{self.log.read_text()[-3000:]}"

    def wait(self, what: str, check: Any, timeout: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            assert self.proc.poll() is None, f"the tray app exited ({self.proc.returncode})\n{self.diagnose()}"
            st = self.state()
            return st if st and check(st) else None

        return wait_for(probe, timeout, what, diagnose=self.diagnose)


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    require_tools()
    return tmp_path


@pytest.fixture()
def display(workdir: Path) -> Iterator[str]:
    with xvfb(workdir / "xvfb.log") as d:
        yield d


def shoot(display: str, name: str, app_state: dict[str, Any]) -> list[Path]:
    """Screen + a zoom of the tray corner (where trayer sits, top right)."""
    geo = app_state.get("tray_geometry") or [1180, 0, 100, 32]
    x, y, w, h = geo
    crop = (max(0, x - 40), 0, min(1280 - max(0, x - 40), w + 80), 32)
    return screenshot(display, ARTIFACTS / f"tray-{name}.png", crop=crop)


def test_icon_embeds_in_trayer_and_follows_the_engine(workdir: Path, display: str, keyring_ok: None) -> None:
    home = Home(workdir)
    engine: subprocess.Popen[bytes] | None = None
    app: App | None = None
    with (workdir / "engine.log").open("wb") as elog:
        engine = subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home.home), "engine"], cwd=ROOT,
                                  stdout=elog, stderr=elog, stdin=subprocess.DEVNULL)
    try:
        wait_for(home.healthy, 60, "the engine to answer",
                 diagnose=lambda: (workdir / "engine.log").read_text()[-2000:])
        with trayer(display, workdir / "trayer.log"):
            app = App(home, display, workdir)
            st = app.wait("the tray icon to be shown and the engine idle",
                          lambda s: s["state"] == "idle" and s["tray_visible"] and s["tray_geometry"]
                          and s["tray_geometry"][0] > 0)
            assert st["tray_available"] and st["role"] == "manager" and st["pause_enabled"]
            assert st["engine_started_by_ui"] is False and st["window_visible"] is False
            # trayer really embedded it (XEmbed reparents the icon window into its panel)
            line = wait_for(lambda: embedded_in_tray(display, APP_NAME), 20, "the icon window inside trayer's panel",
                            diagnose=lambda: window_tree(display))
            assert "x" in line
            shoot(display, "idle", st)

            (home.export / "visit-0001.hl7").write_text(dft(1))
            st = app.wait("the new encounter to be counted", lambda s: "1 ready" in s["tooltip"])
            assert st["state"] == "idle" and not any(n in st["tooltip"] for n in FAMILIES)  # no PHI
            shoot(display, "idle-1-ready", st)

            (home.export / "truncated.hl7").write_bytes(b"\x00\x01\x02 not an export")
            st = app.wait("attention after a malformed file",
                          lambda s: s["state"] == "attention" and "1 in quarantine" in s["tooltip"])
            assert st["tooltip"].startswith("ChargeBridge — needs attention")
            assert "quarantine" in st["notification_kinds"]
            shoot(display, "attention", st)

            assert home.api("POST", "/pause").status_code == 200
            st = app.wait("paused", lambda s: s["state"] == "paused" and s["pause_label"] == "Resume sync")
            shoot(display, "paused", st)

            assert stop_process(engine, timeout=60) == 0
            st = app.wait("offline once the engine stopped", lambda s: s["state"] == "offline", timeout=90)
            assert "not running or cannot be reached" in st["tooltip"] and not st["pause_enabled"]
            shoot(display, "offline", st)

            # quit: the watcher stops and the process ends cleanly on SIGTERM
            assert stop_process(app.proc, timeout=60) == 0, app.diagnose()
            assert not embedded_in_tray(display, APP_NAME)
    finally:
        if app is not None:
            stop_process(app.proc, timeout=60)
        stop_process(engine, timeout=60)


def test_no_tray_at_start_then_trayer_appears(workdir: Path, display: str, keyring_ok: None) -> None:
    """No tray: the window opens instead and the app keeps looking; trayer starts later and the
    icon attaches. No engine running either: the app starts one, and leaves it running on quit."""
    home = Home(workdir)
    app: App | None = None
    try:
        assert selection_owner(display) == 0
        app = App(home, display, workdir)
        st = app.wait("the app to start its own engine and show the window instead of a tray",
                      lambda s: s["state"] == "idle" and s["window_visible"], timeout=90)
        assert st["tray_available"] is False and st["tray_visible"] is False
        assert st["engine_started_by_ui"] is True and home.healthy()
        shoot(display, "no-tray-window", st)

        with trayer(display, workdir / "trayer.log"):
            st = app.wait("the icon to attach once a tray exists",
                          lambda s: s["tray_visible"] and s["tray_geometry"] and s["tray_geometry"][0] > 0,
                          timeout=30)
            wait_for(lambda: embedded_in_tray(display, APP_NAME), 20, "the icon window inside trayer's panel",
                     diagnose=lambda: window_tree(display))
            shoot(display, "tray-appeared", st)
            assert stop_process(app.proc, timeout=60) == 0, app.diagnose()
        assert home.healthy(), "quitting the tray must not stop the engine"
    finally:
        if app is not None:
            stop_process(app.proc, timeout=60)
        info = home.engine_info()
        if info:
            stop_pid(int(info["pid"]), timeout=60)
