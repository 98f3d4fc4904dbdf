""""Connect to a practice server" from the first-run wizard and the sign-in dialog (offscreen),
against a real engine in LAN mode (TLS on a non-loopback address, H7's fixture): the entry opens
the pairing dialog without blocking the wizard or the dialog, a real pairing ends them with the
paired engine, and the app then uses that engine — stopping the empty local engine it had
started only for the wizard.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog

from agent import config as configmod
from agent import pairing
from agent.engine import Engine
from core import pairing as cp
from core import secrets as keys
from core.paths import Paths
from core.secrets import API_TOKEN
from core.states import EngineState
from tests.integration.test_lan import _engine, _info
from tests.ui.test_windows import ARTIFACTS
from ui.app import protect_none_refcount
from ui.connect import ConnectDialog
from ui.signin import SignInDialog
from ui.wizard import FirstRunWizard

protect_none_refcount()  # PySide6 6.12.0 + Python 3.11 (see ui.app)

WAIT = 20_000


@pytest.fixture()
def lan(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    eng = _engine(tmp_path / "server")
    yield eng
    eng.stop()


@pytest.fixture()
def fresh(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    """This PC's own first-run engine: no user yet, a one-time setup token."""
    paths = Paths.resolve(tmp_path / "pc")
    paths.ensure()
    paths.config.write_text("[api]\nport = 0\n")
    eng = Engine(paths, configmod.load(paths.config))
    eng.start()
    yield eng
    if eng.paths.engine_info.exists():
        eng.stop()


def _code(eng: Engine, role: str, name: str) -> str:
    new = pairing.create_code(eng.store(), role, name, actor="test")
    return cp.pairing_code(new.code, eng.tls.ca_fingerprint)


def _pair(qtbot: Any, dlg: ConnectDialog, url: str, code: str) -> None:
    qtbot.keyClicks(dlg.url_edit, url)
    qtbot.keyClicks(dlg.code_edit, code)
    qtbot.mouseClick(dlg.ok_btn, Qt.MouseButton.LeftButton)


def test_wizard_connect_button_opens_the_pairing_dialog_and_pairs(lan: Engine, fresh: Engine, qtbot: Any) -> None:
    pc = fresh.paths
    wiz = FirstRunWizard(pc, f"http://127.0.0.1:{fresh.port}")
    qtbot.addWidget(wiz)
    wiz.show()
    qtbot.waitUntil(lambda: wiz.loaded is not None, timeout=WAIT)  # the setup flow is there as before
    assert wiz.currentPage() is wiz.folders_page and wiz.folders_page.connect_btn.isVisible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert wiz.grab().save(str(ARTIFACTS / "wizard-connect-entry.png"))
    qtbot.mouseClick(wiz.folders_page.connect_btn, Qt.MouseButton.LeftButton)
    dlg = wiz.connect_dialog
    assert isinstance(dlg, ConnectDialog)  # opened, and this line ran: nothing blocked
    qtbot.waitUntil(dlg.isVisible, timeout=WAIT)
    assert wiz.isVisible() and dlg.parent() is wiz and dlg.windowModality() != Qt.WindowModality.NonModal

    # cancelling leaves the wizard as it was
    dlg.reject()
    qtbot.waitUntil(lambda: wiz.connect_dialog is None, timeout=WAIT)
    assert wiz.isVisible() and wiz.result() == 0 and wiz.connected is None

    wiz.folders_page.connect_btn.click()
    dlg = wiz.connect_dialog
    url = _info(lan)["lan_url"]
    with qtbot.waitSignal(wiz.finished, timeout=WAIT):
        _pair(qtbot, dlg, url, _code(lan, "front_desk", "desk-1"))
    assert wiz.result() == QDialog.DialogCode.Accepted and wiz.connected is dlg
    assert (dlg.url, dlg.user, dlg.role) == (url, "desk-1", "front_desk")
    assert keys.get_secret(pc, API_TOKEN) == dlg.token and Path(dlg.ca_bundle).read_bytes() == lan.tls.ca_pem
    assert not wiz.saved  # the wizard wrote no settings on this PC


def test_signin_dialog_connect_button_pairs_and_signs_in(lan: Engine, qtbot: Any, tmp_path: Path) -> None:
    pc = Paths.resolve(tmp_path / "pc2")
    plain = SignInDialog("http://127.0.0.1:9")  # the window's "sign in again": no connect entry
    qtbot.addWidget(plain)
    assert not hasattr(plain, "connect_btn")

    dlg = SignInDialog("http://127.0.0.1:9", pair_home=pc)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.mouseClick(dlg.connect_btn, Qt.MouseButton.LeftButton)
    conn = dlg.connect_dialog
    assert isinstance(conn, ConnectDialog) and dlg.isVisible()
    url = _info(lan)["lan_url"]
    with qtbot.waitSignal(dlg.accepted, timeout=WAIT):
        _pair(qtbot, conn, url, _code(lan, "manager", "desk-2"))
    assert dlg.connected and (dlg.url, dlg.user, dlg.role) == (url, "desk-2", "manager")
    assert dlg.ca_bundle == str(pc.pinned_ca)
    s = requests.Session()
    s.trust_env, s.verify = False, dlg.ca_bundle
    r = s.get(f"{url}/api/v1/status", headers={"Authorization": f"Bearer {dlg.token}"}, timeout=10)
    assert r.status_code == 200 and r.json()["user"]["name"] == "desk-2"


class _Proc:
    """What spawn_engine returns for the in-process first-run engine; terminate() stops it."""

    def __init__(self, eng: Engine) -> None:
        self.eng, self.terminated = eng, False

    def poll(self) -> int | None:
        return None

    def terminate(self) -> None:
        self.terminated = True
        self.eng.stop()


def test_app_uses_the_server_paired_from_the_wizard_and_stops_its_setup_engine(
        lan: Engine, qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ui.app as appmod
    import ui.wizard as wizmod
    from tests.ui.test_tray import _AppStub
    from ui.app import Bootstrap

    pc = Paths.resolve(tmp_path / "first-run")
    pc.ensure()
    procs: list[_Proc] = []

    def spawn(home: Path) -> _Proc:
        pc.config.write_text("[api]\nport = 0\n")
        eng = Engine(pc, configmod.load(pc.config))
        eng.start()
        procs.append(_Proc(eng))
        return procs[-1]

    url = _info(lan)["lan_url"]

    class Wizard:  # the real wizard's pairing result, without its nested event loop
        def __init__(self, p: Paths, _url: str, token: str = "", **_kw: Any) -> None:
            self.token = ""
            paired = cp.connect(url, _code(lan, "manager", "desk-3"), home=p.home)
            cp.save(p, paired)
            self.connected = type("Paired", (), {"url": paired.url, "token": paired.token,
                                                 "ca_bundle": str(p.pinned_ca)})()

        def exec(self) -> QDialog.DialogCode:
            return QDialog.DialogCode.Accepted

    monkeypatch.setattr(appmod, "spawn_engine", spawn)
    monkeypatch.setattr(wizmod, "FirstRunWizard", Wizard)
    stub = _AppStub()
    boot = Bootstrap(stub, pc)  # type: ignore[arg-type]
    try:
        boot.start()
        qtbot.waitUntil(lambda: boot.tray is not None and boot.tray.current_state == EngineState.IDLE,
                        timeout=WAIT * 2)
        assert boot.remote_url == url and boot.ca_bundle == str(pc.pinned_ca)
        assert (boot.user, boot.role, boot.started_engine) == ("desk-3", "manager", False)
        assert procs and procs[0].terminated and not pc.engine_info.exists()  # the setup engine is gone
        assert boot.client.url == url
        with qtbot.waitSignal(boot.tray.stopped, timeout=WAIT * 2, raising=True):
            boot.tray.quit_action.trigger()
        qtbot.waitUntil(lambda: stub.exit_code == 0, timeout=WAIT)
    finally:
        for p in procs:
            if p.eng.paths.engine_info.exists():
                p.eng.stop()
