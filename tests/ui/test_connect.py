""""Connect to a practice server" (offscreen): the tray's pairing dialog against a real engine in
LAN mode (TLS on a non-loopback address), then the tray starting on the paired engine with the
pinned CA alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from agent import pairing
from agent.engine import Engine
from core import pairing as cp
from core import secrets as keys
from core.paths import Paths
from core.secrets import API_TOKEN
from core.states import EngineState
from tests.integration.test_lan import _engine, _info
from ui.app import protect_none_refcount
from ui.connect import ConnectDialog

protect_none_refcount()  # PySide6 6.12.0 + Python 3.11 (see ui.app)

WAIT = 20_000


@pytest.fixture()
def lan(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    eng = _engine(tmp_path / "server")
    yield eng
    eng.stop()


def _code(eng: Engine, role: str, name: str) -> str:
    new = pairing.create_code(eng.store(), role, name, actor="test")
    return cp.pairing_code(new.code, eng.tls.ca_fingerprint)


def test_connect_dialog_pairs_pins_the_ca_and_says_what_failed(lan: Engine, qtbot: Any, tmp_path: Path) -> None:
    pc = Paths.resolve(tmp_path / "pc")
    url = _info(lan)["lan_url"]
    dlg = ConnectDialog(pc)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.keyClicks(dlg.url_edit, url)
    qtbot.keyClicks(dlg.code_edit, "AAAA-AAAA-" + cp.pairing_code("AAAAAAAA", lan.tls.ca_fingerprint)[10:])
    qtbot.mouseClick(dlg.ok_btn, Qt.MouseButton.LeftButton)  # the right server, a code it never made
    qtbot.waitUntil(lambda: "not valid" in dlg.status.text(), timeout=WAIT)
    assert dlg.isVisible() and dlg.result() == 0 and not pc.remote_engine.exists()

    dlg.code_edit.setText(cp.pairing_code("AAAAAAAA", "11" * 32))  # another server's pin
    qtbot.mouseClick(dlg.ok_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "does not match the pairing code" in dlg.status.text(), timeout=WAIT)

    dlg.code_edit.setText(_code(lan, "front_desk", "front-1").lower())  # case does not matter
    with qtbot.waitSignal(dlg.accepted, timeout=WAIT):
        qtbot.mouseClick(dlg.ok_btn, Qt.MouseButton.LeftButton)
    assert (dlg.user, dlg.role, dlg.url) == ("front-1", "front_desk", url)
    assert Path(dlg.ca_bundle).read_bytes() == lan.tls.ca_pem == pc.pinned_ca.read_bytes()
    assert keys.get_secret(pc, API_TOKEN) == dlg.token


def test_tray_starts_on_the_paired_engine(lan: Engine, qtbot: Any, tmp_path: Path) -> None:
    from tests.ui.test_tray import _AppStub
    from ui.app import Bootstrap

    pc = Paths.resolve(tmp_path / "pc")
    cp.save(pc, cp.connect(_info(lan)["lan_url"], _code(lan, "manager", "front-2"), home=pc.home))
    stub = _AppStub()
    boot = Bootstrap(stub, pc)  # type: ignore[arg-type]
    boot.start()
    qtbot.waitUntil(lambda: boot.tray is not None and boot.tray.current_state == EngineState.IDLE, timeout=WAIT)
    assert (boot.user, boot.role, boot.started_engine) == ("front-2", "manager", False)
    assert boot.remote_url == _info(lan)["lan_url"] and boot.ca_bundle == str(pc.pinned_ca)
    with qtbot.waitSignal(boot.tray.stopped, timeout=WAIT * 2, raising=True):
        boot.tray.quit_action.trigger()
    qtbot.waitUntil(lambda: stub.exit_code == 0, timeout=WAIT)
