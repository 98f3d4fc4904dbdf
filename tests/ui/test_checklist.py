"""The first-week checklist on the Status page (H15) against a REAL engine (real SQLCipher store,
real keyring) and the real FHIR peer: each item ticks itself as the engine sees it happen (a file
in the watched folder, the RCM connection test from the checklist, a delivered claim, a
reconciliation), dismiss is refused while an item is open and, once all are done, hides the
checklist for this home (kept across a new window, audited). Front desk never sees it.
Artifact: tests/artifacts/status-checklist.png (items half done).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from agent import config as configmod
from agent.backup import save_wrap
from agent.engine import Engine
from agent.users import add_user
from core import secrets as keys
from core.paths import Paths
from core.secrets import RCM_SECRET
from tests.conftest import ROOT, wait_until
from tests.helpers import dft
from ui.app import protect_none_refcount
from ui.client import ApiClient
from ui.main_window import MainWindow
from ui.pages.status import StatusPage

protect_none_refcount()

WAIT = 30_000
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok: None, clean_peer: Any) -> Iterator[Engine]:
    """An engine whose home has a watched folder, the real FHIR peer as its RCM (secret in the
    keyring), backups to a folder with a key passphrase, and one user per role."""
    export = tmp_path / "export"
    export.mkdir()
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    p = clean_peer
    paths.config.write_text(
        f'[api]\nport = 0\n[[folders]]\npath = "{export}"\nformat = "hl7v2"\nsettle_seconds = 0.2\n'
        f'[rcm]\ntype = "fhir"\nbase_url = "{p.base_url}"\ntoken_url = "{p.token_url}"\n'
        f'client_id = "{p.client_id}"\ntimeout_seconds = 10\n'
        f'[backup]\ndir = "{tmp_path / "backups"}"\n')
    keys.set_secret(paths, RCM_SECRET, p.client_secret)
    eng = Engine(paths, configmod.load(paths.config))
    eng.start()
    eng.tokens = {r: add_user(eng.store(), f"{r}-user", r) for r in ("front_desk", "manager")}  # type: ignore[attr-defined]
    eng.export = export  # type: ignore[attr-defined]
    eng.url = f"http://127.0.0.1:{eng.port}/api/v1"  # type: ignore[attr-defined]
    assert eng._key is not None
    save_wrap(eng.store(), eng._key, "a long backup passphrase", actor="test")
    yield eng
    eng.stop()


def api(eng: Any, method: str, path: str, role: str = "manager", **kw: Any) -> requests.Response:
    return requests.request(method, f"{eng.url}{path}", timeout=60,
                            headers={"Authorization": f"Bearer {eng.tokens[role]}"}, **kw)


def open_status(eng: Any, qtbot: Any, role: str) -> tuple[MainWindow, StatusPage, ApiClient]:
    client = ApiClient(f"http://127.0.0.1:{eng.port}", eng.tokens[role])
    win = MainWindow(client, role=role, user=f"{role}-user", paths=eng.paths)
    qtbot.addWidget(win)
    win.resize(1100, 1000)
    win.show()
    win.show_page("status")
    page = win.pages["status"]
    assert isinstance(page, StatusPage)
    return win, page, client


def ticks(page: StatusPage) -> dict[str, bool]:
    return {i["key"]: bool(i["ok"]) for i in page.checklist.state.get("items", [])}


def reload(page: StatusPage, qtbot: Any) -> None:
    with qtbot.waitSignal(page.checklist.loaded, timeout=WAIT):
        page.refresh()


def settle(page: StatusPage, qtbot: Any, cond: Any) -> None:
    """Ask again and wait for an answer that shows ``cond`` (an answer to a request sent before the
    engine committed may land first)."""
    page.refresh()
    qtbot.waitUntil(lambda: bool(page.checklist.state) and cond(ticks(page)), timeout=WAIT)


def test_checklist_ticks_itself_and_is_dismissed_once_all_done(engine: Any, qtbot: Any) -> None:
    win, page, client = open_status(engine, qtbot, "manager")
    box = page.checklist
    reload(page, qtbot)
    # a fresh home: a manager exists and backups are set up; nothing else has happened yet
    assert ticks(page) == {"source": False, "rcm_test": False, "manager": True, "backup": True, "review": False,
                           "first_claim": False, "reconcile": False}
    assert box.isVisible() and "2 of 7 done" in box.progress.text()
    assert not box.dismiss_btn.isEnabled() and box.test_btn.isVisible()
    assert "Next:" in box.rows["source"][1].text()  # an open item says what to do
    r = api(engine, "POST", "/checklist/dismiss")
    assert r.status_code == 409 and r.json()["key"] == "checklist", r.text

    # the EHR exports a visit: the folder has seen a file; it passed the rules (no review needed)
    (engine.export / "v1.hl7").write_text(dft(1))
    assert wait_until(lambda: engine.store().conn.execute(
        "SELECT count(*) FROM encounters WHERE kind = 'charge'").fetchone()[0] == 1, timeout=30)
    settle(page, qtbot, lambda t: t["source"] and t["review"])
    # the RCM connection test, from the checklist: the real peer answers, the engine keeps the pass
    with qtbot.waitSignal(box.loaded, timeout=WAIT):
        qtbot.mouseClick(box.test_btn, Qt.MouseButton.LeftButton)
    assert ticks(page)["rcm_test"] and not box.test_btn.isVisible()
    assert "5 of 7 done" in box.progress.text()
    QApplication.processEvents()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert win.grab().save(str(ARTIFACTS / "status-checklist.png"))

    # the first claim goes out, and the EHR and the RCM are compared
    r = api(engine, "POST", "/sync", params={"wait": "true"})
    assert r.status_code == 200 and r.json()["delivered"] == 1, r.text
    settle(page, qtbot, lambda t: t["first_claim"])
    assert wait_until(lambda: engine.store().conn.execute(  # the engine reconciles after a sync that sent
        "SELECT count(*) FROM events WHERE kind = 'reconcile.run'").fetchone()[0] > 0, timeout=30) or \
        api(engine, "POST", "/reconcile").status_code == 200
    settle(page, qtbot, lambda t: all(t.values()))
    assert box.dismiss_btn.isEnabled() and "7 of 7 done" in box.progress.text()

    # dismissed: hidden, remembered for this home (a new window does not show it), audited
    # (wait for the state, not the next answer: a refresh sent before the click may answer first)
    qtbot.mouseClick(box.dismiss_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not box.isVisible(), timeout=WAIT)
    reload(page, qtbot)  # asked again after the dismissal: it stays hidden
    assert not box.isVisible()
    state = api(engine, "GET", "/checklist").json()
    assert state["dismissed"] and state["dismissed_at"]
    audit = api(engine, "GET", "/audit", params={"page_size": 50}).json()
    assert any(e.get("action") == "checklist.dismiss" for e in audit["items"])
    win.close()
    client.close()
    win2, page2, client2 = open_status(engine, qtbot, "manager")
    reload(page2, qtbot)
    assert not page2.checklist.isVisible()
    win2.close()
    client2.close()


def test_front_desk_sees_no_checklist(engine: Any, qtbot: Any) -> None:
    assert api(engine, "GET", "/checklist", role="front_desk").status_code == 403
    win, page, client = open_status(engine, qtbot, "front_desk")
    qtbot.waitUntil(lambda: page.state_label.text() != "Loading…", timeout=WAIT)
    page.refresh()
    qtbot.waitUntil(lambda: win.client.pool.activeThreadCount() == 0, timeout=WAIT)
    QApplication.processEvents()
    assert not page.checklist.isVisible() and page.checklist.state == {}
    win.close()
    client.close()
