"""The window's Test mode page against a REAL engine in test mode (in-process, temp home, real
keyring and SQLCipher store, the real FHIR peer as the configured RCM, which a dry run never
writes to): the recorded sends, one send's files, a file in the viewer, export to a file, the
go-live checklist, the admin's Go live (refused with the missing items; the engine's own
refusal shown with title and fix; then for real after confirmation).

No sleeps: qtbot.waitUntil with timeouts. Screenshot: tests/artifacts/page-testmode.png.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PySide6.QtWidgets import QApplication

from agent import config as configmod
from agent.engine import Engine
from core import secrets as keys
from core.secrets import RCM_SECRET
from tests.conftest import start_test_engine, wait_until
from tests.helpers import dft
from tests.ui.test_windows import ARTIFACTS
from ui.app import protect_none_refcount
from ui.client import ApiClient
from ui.main_window import MainWindow
from ui.pages import testmode as tm

protect_none_refcount()  # PySide6 6.12.0 + Python 3.11 (see ui.app)

WAIT = 30_000


def api(eng: Engine, method: str, path: str, role: str = "manager", **kw: Any) -> requests.Response:
    return requests.request(method, f"{eng.url}{path}", headers={"Authorization": f"Bearer {eng.tokens[role]}"},  # type: ignore[attr-defined]
                            timeout=120, **kw)


def test_mode_on(eng: Engine, peer: Any) -> dict[str, Any]:
    """Configure the RCM (the real FHIR peer) and ``[mode] test = true`` through the API, as
    an admin would in Settings; returns the saved config document."""
    keys.set_secret(eng.paths, RCM_SECRET, peer.client_secret)
    doc = api(eng, "GET", "/config", "admin").json()["config"]
    doc["rcm"].update(type="fhir", base_url=peer.base_url, token_url=peer.token_url, client_id=peer.client_id)
    doc["mode"]["test"] = True
    r = api(eng, "PUT", "/config", "admin", json=doc)
    assert r.status_code == 200, r.text
    assert requests.get(f"{eng.url}/health", timeout=10).json()["test_mode"] is True  # type: ignore[attr-defined]
    return dict(doc)


test_mode_on.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def dry_run_sync(eng: Engine, n: int) -> dict[str, Any]:
    """n visits through the watched folder, then one sync: a dry run records one send."""
    (eng.export / "visits.hl7").write_text("".join(dft(i) for i in range(n)))  # type: ignore[attr-defined]
    assert wait_until(lambda: eng.store().counts().get("ready", 0) == n), eng.store().counts()
    r = api(eng, "POST", "/sync", params={"wait": "true"})
    assert r.status_code == 200 and r.json()["delivered"] == n, r.text
    page = api(eng, "GET", "/testmode/sends").json()
    assert page["total"] == 1
    return dict(page["items"][0])


@pytest.fixture()
def tm_engine(tmp_path: Path, keyring_ok: None, fhir_peer: Any) -> Iterator[Engine]:
    eng = start_test_engine(tmp_path, folder_format="hl7v2")
    eng.peer = fhir_peer  # type: ignore[attr-defined]
    eng.doc = test_mode_on(eng, fhir_peer)  # type: ignore[attr-defined]
    box = [eng]
    eng.box = box  # type: ignore[attr-defined]  # a test that restarts the engine puts the new one here
    yield eng
    box[-1].stop()


@pytest.fixture()
def window(qtbot: Any) -> Iterator[Callable[..., MainWindow]]:
    made: list[tuple[MainWindow, ApiClient]] = []

    def make(eng: Engine, role: str = "manager") -> MainWindow:
        client = ApiClient(f"http://127.0.0.1:{eng.port}", eng.tokens[role])  # type: ignore[attr-defined]
        win = MainWindow(client, role=role, user=f"{role}-user", paths=eng.paths)
        qtbot.addWidget(win)
        win.resize(1280, 820)
        win.show()
        made.append((win, client))
        return win

    yield make
    for win, client in made:
        win.close()
        client.close()
    QApplication.processEvents()


def tab_visible(win: MainWindow) -> bool:
    return bool(win.tabs.isTabVisible(win.tabs.indexOf(win.pages["testmode"])))


def audits(eng: Engine, action: str) -> int:
    return int(eng.store().conn.execute("SELECT count(*) FROM audit WHERE action = ?", (action,)).fetchone()[0])


def test_page_lists_sends_shows_a_file_and_exports_one(tm_engine: Engine, window: Any, qtbot: Any, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    eng = tm_engine
    send = dry_run_sync(eng, 2)
    win = window(eng, "manager")
    qtbot.waitUntil(lambda: tab_visible(win), timeout=WAIT)  # test mode on: the tab shows
    win.show_page("testmode")
    page: tm.TestModePage = win.pages["testmode"]  # type: ignore[assignment]
    qtbot.waitUntil(lambda: page.model.rowCount() == 1 and page.detail is not None and page.checks is not None,
                    timeout=WAIT)
    cells = [page.model.data(page.model.index(0, c)) for c in range(page.model.columnCount())]
    assert cells[1] == "fhir" and cells[2] == tm.ROUTE["dry-run"] and cells[3] == "2 of 2" and cells[4] == "3"
    detail = api(eng, "GET", f"/testmode/sends/{send['id']}").json()
    names = [page.files.item(r, 1).text() for r in range(page.files.rowCount())]
    assert names == [f["name"] for f in detail["file_list"]] and names[-1] == "bundle-3-claims.json"

    # the engine's own export, to compare with what the page shows and writes
    exp = api(eng, "GET", f"/testmode/sends/{send['id']}/export").json()
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(exp["content_base64"]))) as zf:
        entries = [zf.read(n) for n in zf.namelist()]
    before = audits(eng, "testmode.export")

    page.files.selectRow(2)  # the claims bundle, in the read-only viewer
    qtbot.waitUntil(lambda: page.shown_file == (send["id"], 3), timeout=WAIT)
    assert page.viewer.isReadOnly()
    assert json.loads(page.viewer.toPlainText()) == json.loads(entries[2])
    assert "\n  " in page.viewer.toPlainText()  # indented for reading
    page.files.selectRow(0)  # another file of the same send: no second fetch of the payload
    qtbot.waitUntil(lambda: page.shown_file == (send["id"], 1), timeout=WAIT)
    assert json.loads(page.viewer.toPlainText()) == json.loads(entries[0])
    assert audits(eng, "testmode.export") == before + 1  # the engine audited the one fetch

    out = tmp_path / "exported" / "send.zip"
    out.parent.mkdir()
    monkeypatch.setattr(tm.QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    assert page.export_btn.isEnabled()
    page.export_btn.click()
    qtbot.waitUntil(lambda: page.last_export == out, timeout=WAIT)
    assert out.read_bytes() == base64.b64decode(exp["content_base64"])
    assert out.stat().st_mode & 0o777 == 0o600
    assert "Exported send" in page.banner.text

    win.pages["testmode"].table.selectRow(0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.files.selectRow(2)
    qtbot.waitUntil(lambda: page.shown_file == (send["id"], 3), timeout=WAIT)
    qtbot.waitUntil(lambda: win.client.pool.activeThreadCount() == 0, timeout=WAIT)
    assert win.grab().save(str(ARTIFACTS / "page-testmode.png"))


def test_front_desk_sees_the_banner_but_not_the_payloads(tm_engine: Engine, window: Any, qtbot: Any) -> None:
    eng = tm_engine
    win = window(eng, "front_desk")
    qtbot.waitUntil(lambda: tab_visible(win) and win.testmode_banner.isVisible(), timeout=WAIT)
    win.show_page("testmode")
    page: tm.TestModePage = win.pages["testmode"]  # type: ignore[assignment]
    assert "Needs the manager role" in page.empty.text()
    assert not page.export_btn.isEnabled() and not page.golive_btn.isEnabled()
    assert page.model.rowCount() == 0 and page.checks is None


def test_go_live_refuses_with_the_missing_items_then_goes_live_for_an_admin(tm_engine: Engine, window: Any,
                                                                          qtbot: Any, tmp_path: Path) -> None:
    eng = tm_engine
    (eng.export / "one.hl7").write_text(dft(7))  # type: ignore[attr-defined]  # the folder has delivered a file
    qtbot.waitUntil(lambda: eng.store().counts().get("ready", 0) == 1, timeout=WAIT)
    mgr = window(eng, "manager")
    mgr.show_page("testmode")
    mpage: tm.TestModePage = mgr.pages["testmode"]  # type: ignore[assignment]
    qtbot.waitUntil(lambda: mpage.checks is not None, timeout=WAIT)
    assert not mpage.golive_btn.isEnabled() and "Needs the admin role" in mpage.golive_btn.toolTip()

    win = window(eng, "admin")
    win.show_page("testmode")
    page: tm.TestModePage = win.pages["testmode"]  # type: ignore[assignment]
    qtbot.waitUntil(lambda: page.checks is not None, timeout=WAIT)
    checks = api(eng, "GET", "/golive").json()
    assert checks["missing"] == ["backup"] and page.checks["missing"] == ["backup"]  # type: ignore[index]
    rows = {page.items.item(r, 1).text(): page.items.item(r, 0).text() for r in range(page.items.rowCount())}
    backup = next(i for i in checks["items"] if i["key"] == "backup")
    assert rows[backup["title"]] == tm.MISSING and "1 required item missing" in page.mode_label.text()
    asked: list[str] = []

    def never(_w: Any, title: str, _t: str) -> bool:
        asked.append(title)
        return False

    page.confirm = never

    assert page.golive_btn.isEnabled()
    page.golive_btn.click()  # refused here, with the missing item and its fix; nothing is asked or sent
    assert "Not ready to go live" in page.banner.text and backup["title"] in page.banner.text
    assert backup["fix"] in page.banner.text and asked == []
    assert requests.get(f"{eng.url}/health", timeout=10).json()["test_mode"] is True  # type: ignore[attr-defined]

    # checks gone stale (the page thinks all is done): the engine refuses, title and fix shown
    qtbot.waitUntil(lambda: page.checks_btn.isEnabled(), timeout=WAIT)
    page.checks = {**checks, "ready": True, "missing": []}
    page.confirm = lambda *_a: True  # type: ignore[assignment]
    page.golive_btn.click()
    qtbot.waitUntil(lambda: "Could not go live" in page.banner.text, timeout=WAIT)
    assert "not ready to go live" in page.banner.text and "What to do:" in page.banner.text
    assert requests.get(f"{eng.url}/health", timeout=10).json()["test_mode"] is True  # type: ignore[attr-defined]

    # everything in place (backups with a key passphrase; [backup] applies at start)
    from agent.backup import save_wrap

    save_wrap(eng.store(), eng._key, "a long backup passphrase", actor="test")
    doc = eng.doc  # type: ignore[attr-defined]
    doc["backup"]["dir"] = str(tmp_path / "backups")
    assert api(eng, "PUT", "/config", "admin", json=doc).status_code == 200
    tokens = eng.tokens  # type: ignore[attr-defined]
    eng.stop()
    eng2 = Engine(eng.paths, configmod.load(eng.paths.config))
    eng2.start()
    eng2.tokens, eng2.url = tokens, f"http://127.0.0.1:{eng2.port}/api/v1"  # type: ignore[attr-defined]
    eng.box.append(eng2)  # type: ignore[attr-defined]

    win2 = window(eng2, "admin")
    qtbot.waitUntil(lambda: win2.testmode_banner.isVisible(), timeout=WAIT)
    win2.show_page("testmode")
    page2: tm.TestModePage = win2.pages["testmode"]  # type: ignore[assignment]
    qtbot.waitUntil(lambda: page2.checks is not None and page2.checks.get("ready") is True, timeout=WAIT)
    page2.confirm = lambda *_a: False  # type: ignore[assignment]  # "Cancel": nothing happens
    page2.golive_btn.click()
    assert requests.get(f"{eng2.url}/health", timeout=10).json()["test_mode"] is True  # type: ignore[attr-defined]
    asked2: list[str] = []

    def yes(_w: Any, title: str, _t: str) -> bool:
        asked2.append(title)
        return True

    page2.confirm = yes
    page2.golive_btn.click()
    qtbot.waitUntil(lambda: "ChargeBridge is live" in page2.banner.text, timeout=WAIT)
    assert asked2 == ["Go live?"]
    assert requests.get(f"{eng2.url}/health", timeout=10).json()["test_mode"] is False  # type: ignore[attr-defined]
    assert int(eng2.store().conn.execute("SELECT count(*) FROM audit WHERE action = 'golive'").fetchone()[0]) == 1
    # the banner goes; the tab stays (there are no test sends here, but the page is on screen)
    qtbot.waitUntil(lambda: not win2.testmode_banner.isVisible(), timeout=WAIT)
    qtbot.waitUntil(lambda: page2.checks is not None and page2.checks.get("test_mode") is False, timeout=WAIT)
    assert not page2.golive_btn.isEnabled() and "live already" in page2.golive_btn.toolTip()
