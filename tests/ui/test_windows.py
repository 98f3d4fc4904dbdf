"""The windows against a REAL engine in-process (temp home, real keyring, real SQLCipher store,
real folder watcher): main window pages, the encounters model's paging, sign-in, the wizard.

Nothing here sleeps: waits are qtbot.waitUntil / waitSignal with timeouts. Screenshots of every
page go to tests/artifacts/ (or $CHARGEBRIDGE_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import requests
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget

from agent import config as configmod
from agent.engine import Engine
from agent.reconcile import diff as reconcile_diff
from agent.reconcile import local_from_row
from agent.store import now
from connectors.rcm.base import RemoteCharge, RemoteLine
from core import secrets as keys
from core.paths import Paths
from core.secrets import API_TOKEN, RCM_SECRET
from tests.conftest import ROOT, start_test_engine
from tests.helpers import FAMILIES, dft
from ui.app import protect_none_refcount
from ui.client import ApiClient, ApiFailure
from ui.main_window import MainWindow
from ui.pages.mismatches import HIGHLIGHT
from ui.signin import SignInDialog
from ui.wizard import FirstRunWizard, failure_text, read_setup_token

protect_none_refcount()  # PySide6 6.12.0 + Python 3.11 (see ui.app)

WAIT = 20_000
N_FILES = 24
ARTIFACTS = Path(os.environ.get("CHARGEBRIDGE_ARTIFACTS") or ROOT / "tests" / "artifacts")


class FakeClock:
    """Injected into the window so the 15-minute idle rule is tested without waiting."""

    def __init__(self) -> None:
        self.t = 10_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, minutes: float) -> None:
        self.t += minutes * 60


# -- a real engine ---------------------------------------------------------------------------
@pytest.fixture()
def engine(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    eng = start_test_engine(tmp_path, folder_format="hl7v2")
    yield eng
    eng.stop()


def count(eng: Engine, sql: str) -> int:
    return int(eng.store().conn.execute(sql).fetchone()[0])


@pytest.fixture()
def ingested(engine: Engine, qtbot: Any) -> Engine:
    """N_FILES good visits, one that needs review (bad NPI check digit), one unreadable file."""
    for i in range(N_FILES):
        (engine.export / f"visit-{i:03d}.hl7").write_text(dft(i))  # type: ignore[attr-defined]
    bad_npi = dft(500, visit="V-REVIEW").replace("1234567893", "1234567890")
    (engine.export / "needs-review.hl7").write_text(bad_npi)  # type: ignore[attr-defined]
    (engine.export / "scanner-output.hl7").write_bytes(b"\x00\x01\x02 not an export \xff\xfe")  # type: ignore
    qtbot.waitUntil(lambda: count(engine, "SELECT count(*) FROM encounters") == N_FILES + 1
                    and count(engine, "SELECT count(*) FROM quarantine") == 1, timeout=WAIT)
    return engine


def add_finding(eng: Engine) -> int:
    """A field mismatch on the first encounter, with the diff the real reconciler computes."""
    store = eng.store()
    eid, data = store.conn.execute("SELECT id, data FROM encounters WHERE state = 'ready' ORDER BY id").fetchone()
    local = local_from_row(int(eid), "charge", json.loads(data), "TESTFAC:V0000000")
    lines = [RemoteLine(**asdict(ln)) for ln in local.lines]
    lines[0].units = "2"
    remote = RemoteCharge(remote_id="Claim/777", identifier=local.identifier, patient_mrn=local.mrn,
                          patient_family=local.family, patient_given=local.given, patient_dob=local.dob,
                          dos=local.dos, rendering_npi="1987654328", diagnoses=local.diagnoses, lines=lines)
    diff = reconcile_diff(local, remote)
    ts = now()
    with store.tx():
        cur = store.conn.execute(
            "INSERT INTO findings (fingerprint, kind, encounter_id, remote_id, dos, local, remote, diff, status, "
            "first_seen, last_seen) VALUES (?, 'field_mismatch', ?, 'Claim/777', ?, ?, ?, ?, 'open', ?, ?)",
            (f"field_mismatch|enc:{eid}", eid, local.dos, json.dumps(asdict(local)), json.dumps(asdict(remote)),
             json.dumps(diff), ts, ts))
    return int(cur.lastrowid)


@pytest.fixture()
def window(engine: Engine, qtbot: Any) -> Iterator[Callable[..., MainWindow]]:
    made: list[tuple[MainWindow, ApiClient]] = []

    def make(role: str = "manager", **kw: Any) -> MainWindow:
        client = ApiClient(engine.base, engine.tokens[role])  # type: ignore[attr-defined]
        win = MainWindow(client, role=role, user=f"{role}-user", paths=engine.paths, **kw)
        qtbot.addWidget(win)
        win.show()
        made.append((win, client))
        return win

    yield make
    for win, client in made:
        win.close()
        client.close()  # no answer may land after the engine is gone
    QApplication.processEvents()


def wait_idle(qtbot: Any, win: MainWindow) -> None:
    """Until no request of this window is in flight (its client's pool is idle)."""
    qtbot.waitUntil(lambda: win.client.pool.activeThreadCount() == 0, timeout=WAIT)
    QApplication.processEvents()


def shot(widget: QWidget, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert widget.grab().save(str(path)), path
    return path


def engine_error(eng: Engine, method: str, path: str, body: Any, token: str = "") -> ApiFailure:
    """The engine's own error answer for a request, straight over HTTP: what a page must show."""
    r = requests.request(method, f"{eng.base}/api/v1{path}", json=body, timeout=30,  # type: ignore[attr-defined]
                         headers={"Authorization": f"Bearer {token or eng.tokens['admin']}"})  # type: ignore[attr-defined]
    assert r.status_code == 422, (r.status_code, r.text)
    b = r.json()
    assert set(b) >= {"title", "fix", "key"}
    return ApiFailure(r.status_code, b["title"], b["fix"], b["key"])


# -- encounters: paging and filtering in the engine ------------------------------------------
def bulk_encounters(eng: Engine, n: int) -> None:
    """Clone a real encounter n times in SQL (each with its own MRN, visit id, name and date):
    100,000 rows in a few seconds, which ingesting files could not do in a test."""
    store = eng.store()
    with store.tx():
        store.conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO encounters (business_key, kind, source, source_id, document_id, state, mrn, dos, data, "
            "findings, content_hash, version, created_at, updated_at) "
            "SELECT 'bulk|' || i, kind, source, 'B' || printf('%07d', i), document_id, state, "
            "'BULK' || printf('%06d', i), '2026-' || printf('%02d', 1 + i % 9) || '-' || printf('%02d', 1 + i % 27), "
            "json_set(data, '$.patient.family', 'Bulkfam' || i), findings, content_hash, 1, created_at, updated_at "
            "FROM encounters, n WHERE encounters.id = (SELECT min(id) FROM encounters WHERE state = 'ready')", (n,))


def test_encounters_page_lazily_and_filter_in_the_engine_at_100k_rows(ingested: Engine, window, qtbot) -> None:
    bulk_encounters(ingested, 100_000)
    total = N_FILES + 1 + 100_000
    win = window("front_desk")
    win.show_page("encounters")
    page = win.pages["encounters"]
    model = page.model
    qtbot.waitUntil(lambda: model.total == total, timeout=WAIT)
    wait_idle(qtbot, win)
    # one request, one page: 200 of 100,025 rows, never all of them
    assert model.rowCount() == model.page_size == 200 and model.requests_sent == 1
    assert page.count_label.text() == f"Showing 200 of {total:,} encounters — scroll down for more"
    assert model.row(0)["source_id"].startswith("B")  # newest first (engine-sorted)
    qtbot.wait(300)  # give the view every chance to ask for more on its own: it must not
    assert model.requests_sent == 1

    page.table.scrollToBottom()  # the view asks for the next page only when scrolled to the end
    qtbot.waitUntil(lambda: model.rowCount() == 400, timeout=WAIT)
    assert model.requests_sent == 2 and len({r["id"] for r in model.rows}) == 400

    # a filter goes to the engine; the UI thread only starts the request
    t0 = time.perf_counter()
    model.set_filter(q="bulkfam12345")  # answered... but superseded before it lands
    model.set_filter(q=FAMILIES[0])  # "Quintana": 3 of the real visits
    assert time.perf_counter() - t0 < 0.1  # no HTTP on the UI thread
    qtbot.waitUntil(lambda: model.total is not None and not model.loading, timeout=WAIT)
    wait_idle(qtbot, win)
    assert model.stale_dropped == 1  # the "bulkfam12345" answer was thrown away
    assert model.total == len([i for i in range(N_FILES) if i % len(FAMILIES) == 0])
    assert {r["patient"].split(",")[0] for r in model.rows} == {FAMILIES[0]}

    # the state filter and the search box (debounced) go the same way
    page.open_with("needs_review")
    qtbot.waitUntil(lambda: model.total == 1 and model.rowCount() == 1, timeout=WAIT)
    assert model.row(0)["source_id"] == "V-REVIEW" and model.row(0)["findings"]
    page.table.selectRow(0)
    assert "rendering.npi" in page.detail.toPlainText()
    page.state.setCurrentIndex(0)
    qtbot.keyClicks(page.search, "BULK000077")
    qtbot.waitUntil(lambda: model.q == "BULK000077" and model.total == 1 and not model.loading, timeout=WAIT)
    assert model.row(0)["mrn"] == "BULK000077"
    model.set_filter(q="no-such-patient")
    qtbot.waitUntil(lambda: page.stack.currentWidget() is page.empty, timeout=WAIT)
    assert page.empty.text().startswith("No encounters match “no-such-patient”")
    assert "press Esc" in page.empty.text()


def test_empty_states_say_what_to_do_next(engine: Engine, window, qtbot) -> None:
    win = window("manager")
    for name in ("encounters", "quarantine", "mismatches"):
        win.show_page(name)
        page = win.pages[name]
        qtbot.waitUntil(lambda p=page: p.stack.currentWidget() is p.empty, timeout=WAIT)
    assert win.pages["encounters"].empty.text().startswith("No encounters yet — drop EHR exports into a watched "
                                                           "folder")
    win.show_page("encounters")
    shot(win, "empty-encounters")
    assert win.pages["quarantine"].empty.text().startswith("Nothing in quarantine")
    assert win.pages["mismatches"].empty.text().startswith("No open mismatches")


# -- quarantine ------------------------------------------------------------------------------
def test_quarantine_shows_reason_and_raw_document(ingested: Engine, window, qtbot) -> None:
    win = window("manager")
    win.show_page("quarantine")
    page = win.pages["quarantine"]
    qtbot.waitUntil(lambda: page.model.rowCount() == 1 and page.document is not None, timeout=WAIT)
    entry = page.model.row(0)
    assert page.reason.text() == f"Why: {entry['reason']}" and entry["reason"]
    raw = page.raw.toPlainText()
    assert "not an export" in raw and "<00><01><02>" in raw  # control bytes shown, not swallowed
    assert "binary content" in page.note.text()
    assert page.reprocess_btn.isEnabled()
    qtbot.mouseClick(page.reprocess_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=WAIT)
    assert "still in quarantine" in page.banner.text  # still unreadable: says so, with the reason

    desk = window("front_desk")
    desk.show_page("quarantine")
    dpage = desk.pages["quarantine"]
    qtbot.waitUntil(lambda: dpage.model.rowCount() == 1 and dpage.current is not None, timeout=WAIT)
    wait_idle(qtbot, desk)
    assert dpage.document is None and dpage.raw.toPlainText() == ""  # no request for patient data
    assert "Viewing the raw file needs the manager role" in dpage.raw.placeholderText()
    assert not dpage.reprocess_btn.isEnabled()
    assert dpage.reprocess_btn.toolTip().startswith("Needs the manager role — you are signed in as front desk")


# -- mismatches ------------------------------------------------------------------------------
def highlighted_labels(page: Any) -> dict[str, bool]:
    t = page.compare
    return {t.item(r, 0).text(): t.item(r, 1).background().color() == HIGHLIGHT for r in range(t.rowCount())}


def test_mismatch_side_by_side_highlights_the_diff_and_gates_actions(ingested: Engine, window, qtbot) -> None:
    fid = add_finding(ingested)
    win = window("manager")
    win.show_page("mismatches")
    page = win.pages["mismatches"]
    qtbot.waitUntil(lambda: page.model.rowCount() == 1 and page.current is not None, timeout=WAIT)
    labels = highlighted_labels(page)
    code = page.current["local"]["lines"][0]["code"]
    assert {k for k, on in labels.items() if on} == {"≠ Rendering NPI", f"≠ Line {code}"}
    assert labels["Family name"] is False and labels["Date of service"] is False
    row = [page.compare.item(r, 0).text() for r in range(page.compare.rowCount())].index("≠ Rendering NPI")
    assert page.compare.item(row, 2).text() == "1987654328"
    assert page.compare.item(row, 1).text() == page.current["local"]["rendering_npi"]
    assert "units: EHR 1 | RCM 2" in page.compare.item(
        list(labels).index(f"≠ Line {code}"), 1).toolTip()
    assert all(b.isEnabled() for b in page.buttons.values())

    desk = window("front_desk")
    desk.show_page("mismatches")
    dpage = desk.pages["mismatches"]
    qtbot.waitUntil(lambda: dpage.current is not None, timeout=WAIT)
    for b in dpage.buttons.values():
        assert not b.isEnabled()
        assert b.toolTip().startswith("Needs the manager role — you are signed in as front desk")

    # Ignore needs a reason; it closes the finding and the engine records who and why
    qtbot.mouseClick(page.buttons["ignore"], Qt.MouseButton.LeftButton)
    dlg = page.ignore_dialog
    assert dlg is not None and dlg.isVisible() and not dlg.ok.isEnabled()
    qtbot.keyClicks(dlg.reason, "billed by hand at the front desk")
    assert dlg.ok.isEnabled()
    qtbot.mouseClick(dlg.ok, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.model.rowCount() == 0, timeout=WAIT)
    status, resolution, by = ingested.store().conn.execute(
        "SELECT status, resolution, resolved_by FROM findings WHERE id = ?", (fid,)).fetchone()
    assert (status, by) == ("ignored", "api:manager-user") and "billed by hand" in resolution


def test_manager_actions_ask_to_sign_in_again_after_15_idle_minutes(ingested: Engine, window, qtbot) -> None:
    add_finding(ingested)
    clock = FakeClock()
    win = window("manager", clock=clock)
    win.show_page("mismatches")
    page = win.pages["mismatches"]
    qtbot.waitUntil(lambda: page.current is not None, timeout=WAIT)

    clock.advance(14)  # not idle long enough: straight to the action
    qtbot.mouseClick(page.buttons["ignore"], Qt.MouseButton.LeftButton)
    assert win.reauth_dialog is None and page.ignore_dialog is not None and page.ignore_dialog.isVisible()
    page.ignore_dialog.reject()
    page.ignore_dialog = None
    QApplication.processEvents()  # the click's own activity lands after it was handled

    clock.advance(10)
    qtbot.mouseClick(page.list.viewport(), Qt.MouseButton.LeftButton)  # any click is activity
    QApplication.processEvents()
    clock.advance(10)  # 10 minutes since that click: still fine
    qtbot.mouseClick(page.buttons["ignore"], Qt.MouseButton.LeftButton)
    assert win.reauth_dialog is None and page.ignore_dialog is not None
    page.ignore_dialog.reject()
    page.ignore_dialog = None
    QApplication.processEvents()

    clock.advance(16)  # away: the action waits for a fresh sign-in
    qtbot.mouseClick(page.buttons["ignore"], Qt.MouseButton.LeftButton)
    dlg = win.reauth_dialog
    assert dlg is not None and dlg.isVisible() and page.ignore_dialog is None
    qtbot.keyClicks(dlg.token_edit, "cb_not-the-token")
    qtbot.mouseClick(dlg.ok_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "did not accept this token" in dlg.status.text(), timeout=WAIT)
    assert page.ignore_dialog is None  # a wrong token does nothing
    dlg.token_edit.setText(ingested.tokens["manager"])  # type: ignore[attr-defined]
    with qtbot.waitSignal(dlg.accepted, timeout=WAIT):
        qtbot.mouseClick(dlg.ok_btn, Qt.MouseButton.LeftButton)
    assert page.ignore_dialog is not None and page.ignore_dialog.isVisible()  # the action went on
    assert win.session.idle_for() == 0


# -- status, activity, settings ----------------------------------------------------------------
def test_status_counts_attention_links_and_pause_roles(ingested: Engine, window, qtbot) -> None:
    desk = window("front_desk")
    page = desk.pages["status"]
    qtbot.waitUntil(lambda: page.last.get("counts", {}).get("ready") == N_FILES, timeout=WAIT)
    assert page.state_label.text() == "Needs attention"
    assert page.count_labels["needs_review"].text() == "1" and page.count_labels["quarantined"].text() == "1"
    assert not page.pause_btn.isEnabled() and "Needs the manager role" in page.pause_btn.toolTip()
    assert page.sync_btn.isEnabled()
    assert "Desk" not in desk.who.text() and "front_desk-user" in desk.who.text() and "front desk" in desk.who.text()
    qtbot.waitUntil(lambda: len(page.attention_buttons) == 2, timeout=WAIT)
    titles = [b.text() for b in page.attention_buttons]
    assert titles == ["1 file in quarantine", "1 encounter needs review"]
    qtbot.mouseClick(page.attention_buttons[1], Qt.MouseButton.LeftButton)  # one click to the fix
    enc = desk.pages["encounters"]
    assert desk.current_page() is enc and enc.state.currentData() == "needs_review"
    qtbot.waitUntil(lambda: enc.model.total == 1, timeout=WAIT)

    mgr = window("manager")
    mpage = mgr.pages["status"]
    qtbot.waitUntil(lambda: mpage.last.get("state") == "attention", timeout=WAIT)
    assert mpage.pause_btn.isEnabled() and not mpage.resume_btn.isEnabled()
    qtbot.mouseClick(mpage.pause_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: mpage.last.get("state") == "paused", timeout=WAIT)
    assert mpage.state_label.text() == "Sync is paused" and mpage.resume_btn.isEnabled()
    assert not mpage.pause_btn.isEnabled() and mpage.pause_btn.toolTip() == "Sync is already paused"


def test_keyboard_shortcuts_switch_pages_and_focus_the_filter(ingested: Engine, window, qtbot) -> None:
    win = window("manager")
    win.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is win, timeout=WAIT)
    qtbot.keyClick(win, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    assert win.current_page() is win.pages["quarantine"]
    qtbot.keyClick(win, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)  # no filter here: go to encounters
    assert win.current_page() is win.pages["encounters"]
    assert QApplication.focusWidget() is win.pages["encounters"].search
    before = win.pages["encounters"].model.requests_sent
    qtbot.keyClick(win, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: win.pages["encounters"].model.requests_sent == before + 1, timeout=WAIT)


def test_activity_needs_manager_and_settings_need_admin(ingested: Engine, window, qtbot, tmp_path) -> None:
    desk = window("front_desk")
    desk.show_page("activity")
    act = desk.pages["activity"]
    assert act.stack.currentWidget() is act.no_role
    assert act.no_role.text().startswith("The activity trail needs the manager role — you are signed in as front "
                                         "desk")
    assert act.model.requests_sent == 0
    desk.show_page("settings")
    assert desk.pages["settings"].no_role.text().startswith("Changing settings needs the admin role")

    mgr = window("manager")
    mgr.show_page("activity")
    mact = mgr.pages["activity"]
    qtbot.waitUntil(lambda: (mact.model.total or 0) >= 3, timeout=WAIT)
    assert {mact.model.data(mact.model.index(r, 2)) for r in range(mact.model.rowCount())} == {"Added a user"}

    adm = window("admin")
    adm.show_page("settings")
    st = adm.pages["settings"]
    qtbot.waitUntil(lambda: st.loaded is not None and st.users.rowCount() == 3, timeout=WAIT)
    assert st.folders.rowCount() == 1 and st.folders.cellWidget(0, 1).currentData() == "hl7v2"
    assert st.secret.placeholderText() == "not set yet"
    # a bad value: the engine's error names the key; the page shows its title and fix as sent
    # (no string splitting) and marks the field the key names, on its tab
    st.hours.setText("9 to 5")
    expected = engine_error(ingested, "POST", "/config/validate", {"config": st.collect(), "partial": False})
    assert expected.key == "sync.business_hours"
    qtbot.mouseClick(st.save_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: st.banner.isVisible() and "Not saved" in st.banner.text, timeout=WAIT)
    assert expected.title.rstrip(".") in st.banner.text and f"What to do: {expected.fix.rstrip('.')}" in \
        st.banner.text
    assert "#c62828" in st.hours.styleSheet() and st.tabs.currentIndex() == 2
    assert QApplication.focusWidget() is st.hours
    before = ingested.paths.config.read_text()
    # a good one: saved, applied live, secret to the keyring
    st.hours.setText("07:00-19:00")
    st.interval.setValue(10)
    st.secret.setText("rcm-secret-from-settings")
    st.banner.hide()
    qtbot.mouseClick(st.save_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: st.banner.isVisible() and "Saved" in st.banner.text, timeout=WAIT)
    assert "RCM secret is saved in the keyring" in st.banner.text
    assert ingested.config.sync.interval_minutes == 10 and ingested.config.sync.business_hours == "07:00-19:00"
    assert ingested.paths.config.read_text() != before and "rcm-secret-from-settings" not in \
        ingested.paths.config.read_text()
    assert keys.get_secret(ingested.paths, RCM_SECRET) == "rcm-secret-from-settings"
    # users: add one, the token is shown once
    st.new_name.setText("frontdesk-2")
    qtbot.mouseClick(st.add_user_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: st.token_out.text().startswith("cb_") and st.users.rowCount() == 4, timeout=WAIT)
    r = requests.get(f"{ingested.base}/api/v1/status",  # type: ignore[attr-defined]
                     headers={"Authorization": f"Bearer {st.token_out.text()}"}, timeout=10)
    assert r.json()["user"] == {"name": "frontdesk-2", "role": "front_desk"}


# -- sign-in ---------------------------------------------------------------------------------
def test_signin_reports_what_failed_and_remembers_a_good_token(engine: Engine, qtbot) -> None:
    dlg = SignInDialog(engine.base, paths=engine.paths)  # type: ignore[attr-defined]
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.mouseClick(dlg.ok_btn, Qt.MouseButton.LeftButton)
    assert dlg.status.text() == "Paste your token first." and dlg.checks == 0
    qtbot.keyClicks(dlg.token_edit, "cb_this-is-not-a-token")
    qtbot.mouseClick(dlg.ok_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "(401)" in dlg.status.text(), timeout=WAIT)
    assert f"The engine at {engine.base} did not accept this token (401)" in dlg.status.text()  # type: ignore
    assert dlg.isVisible() and dlg.result() == 0

    dlg.token_edit.setText(engine.tokens["manager"])  # type: ignore[attr-defined]
    dlg.remember.setChecked(True)
    with qtbot.waitSignal(dlg.accepted, timeout=WAIT):
        qtbot.mouseClick(dlg.ok_btn, Qt.MouseButton.LeftButton)
    assert (dlg.user, dlg.role, dlg.token) == ("manager-user", "manager", engine.tokens["manager"])  # type: ignore
    assert keys.get_secret(engine.paths, API_TOKEN) == engine.tokens["manager"]  # type: ignore[attr-defined]

    nowhere = SignInDialog("http://127.0.0.1:9")
    qtbot.addWidget(nowhere)
    nowhere.show()
    nowhere.token_edit.setText("cb_x")
    qtbot.mouseClick(nowhere.ok_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "No answer from" in nowhere.status.text(), timeout=WAIT)
    assert "not running or cannot be reached" in nowhere.status.text()
    assert not nowhere.remember.isEnabled()  # no home here: nothing to remember it in


# -- first-run wizard --------------------------------------------------------------------------
@pytest.fixture()
def fresh_engine(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    """A real engine on a home with no user yet (what the app starts on first run): it has
    written its one-time setup token. Port 0 so tests never collide."""
    paths = Paths.resolve(tmp_path / "newhome")
    paths.ensure()
    paths.config.write_text("[api]\nport = 0\n")  # kept: the wizard does not ask about it
    eng = Engine(paths, configmod.load(paths.config))
    eng.start()
    eng.base = f"http://127.0.0.1:{eng.port}"  # type: ignore[attr-defined]
    yield eng
    eng.stop()


def wait_page(qtbot: Any, wiz: FirstRunWizard, page: Any) -> None:
    qtbot.waitUntil(lambda: wiz.currentPage() is page, timeout=WAIT)


def test_wizard_sets_up_a_new_install_through_the_engine_with_the_setup_token(fresh_engine: Engine, tmp_path: Path,
                                                                              qtbot) -> None:
    eng, paths = fresh_engine, fresh_engine.paths
    setup = read_setup_token(paths)
    assert setup and requests.get(f"{eng.base}/api/v1/health", timeout=10).json()["setup_needed"] is True  # type: ignore
    export = tmp_path / "ehr-out"
    export.mkdir()
    wiz = FirstRunWizard(paths, eng.base)  # type: ignore[attr-defined]
    qtbot.addWidget(wiz)
    wiz.show()
    assert wiz.setup_mode and wiz.client.token == setup
    qtbot.waitUntil(lambda: wiz.loaded is not None, timeout=WAIT)  # GET /config with the setup token
    fp, rp, ap = wiz.folders_page, wiz.rcm_page, wiz.account_page
    assert not fp.isComplete()

    # folders: checked by the engine (partial), a bad one is named by its key and its row selected
    fp.add_folder(str(export), "hl7v2")
    fp.add_folder(str(export), "csv", "generic")  # the same folder twice
    bad = engine_error(eng, "POST", "/config/validate", {"config": {"folders": fp.folders()}, "partial": True},
                       setup)
    assert bad.key == "folders[1].path"
    wiz.next()
    qtbot.waitUntil(lambda: not fp.busy and fp.error.text() == failure_text(bad), timeout=WAIT)
    assert wiz.currentPage() is fp and fp.table.currentRow() == 1 and "#c62828" in fp.table.styleSheet()
    fp.table.selectRow(1)
    fp._remove()
    wiz.next()
    wait_page(qtbot, wiz, rp)
    assert paths.config.read_text() == "[api]\nport = 0\n"  # validating writes nothing

    # Test connection: the engine runs it (off the UI thread) and says what failed
    rp.base_url.setText("http://127.0.0.1:9/fhir/R4")
    rp.token_url.setText("http://127.0.0.1:9/oauth2/token")
    rp.client_id.setText("chargebridge")
    rp.secret.setText("rcm-client-secret")
    qtbot.mouseClick(rp.test_btn, Qt.MouseButton.LeftButton)
    assert rp.test_result.text() == "Testing…"
    qtbot.waitUntil(lambda: rp.test_result.text().startswith("✖"), timeout=WAIT)
    assert "Failed" in rp.test_result.text()

    # a bad value: the field the engine's key names is outlined and focused; title and fix shown
    rp.base_url.setText("http://rcm.example/fhir/R4")
    wiz.next()
    qtbot.waitUntil(lambda: not rp.busy and "#c62828" in rp.base_url.styleSheet(), timeout=WAIT)
    bad = engine_error(eng, "POST", "/config/validate", {"config": wiz.changes(), "partial": True}, setup)
    assert bad.key == "rcm.base_url" and rp.error.text() == failure_text(bad)
    assert wiz.currentPage() is rp and QApplication.focusWidget() is rp.base_url
    rp.base_url.setText("https://rcm.example/fhir/R4")
    rp.token_url.setText("https://rcm.example/oauth2/token")
    rp.hours.setText("9 to 5")
    wiz.next()
    qtbot.waitUntil(lambda: not rp.busy and "#c62828" in rp.hours.styleSheet(), timeout=WAIT)
    assert "#c62828" not in rp.base_url.styleSheet() and QApplication.focusWidget() is rp.hours
    assert paths.config.read_text() == "[api]\nport = 0\n"

    # good values: written by the engine (PATCH), the secret to the keyring through the API
    rp.hours.setText("08:00-17:30")
    wiz.next()
    wait_page(qtbot, wiz, ap)
    cfg = configmod.load(paths.config)
    assert [(str(f.path), f.format) for f in cfg.folders] == [(str(export), "hl7v2")]
    assert (cfg.rcm.type, cfg.rcm.base_url, cfg.rcm.client_id) == ("fhir", "https://rcm.example/fhir/R4",
                                                                   "chargebridge")
    assert cfg.sync.business_hours == "08:00-17:30" and cfg.sync.business_days == "mon-fri"
    assert cfg.api.port == 0  # what the wizard does not ask about is kept
    assert "rcm-client-secret" not in paths.config.read_text()
    assert keys.get_secret(paths, RCM_SECRET) == "rcm-client-secret"
    assert eng.config.sync.business_hours == "08:00-17:30"  # applied live by the running engine

    # the first account: created by the engine with the setup token, which then stops working
    assert not ap.isComplete() and not ap.skip.isVisible()
    qtbot.mouseClick(ap.create_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ap.created and "saved in this computer's keyring" in ap.result.text(), timeout=WAIT)
    token = ap.token_out.text()
    assert token.startswith("cb_") and ap.isComplete() and wiz.token == token and "shown only once" in ap.result.text()
    assert keys.get_secret(paths, API_TOKEN) == token
    r = requests.get(f"{eng.base}/api/v1/status", headers={"Authorization": f"Bearer {token}"}, timeout=10)  # type: ignore
    assert r.json()["user"] == {"name": "manager", "role": "admin"}
    refused = requests.get(f"{eng.base}/api/v1/config", headers={"Authorization": f"Bearer {setup}"},  # type: ignore
                           timeout=10)
    assert refused.status_code == 401 and not paths.setup_token.exists()
    assert requests.get(f"{eng.base}/api/v1/health", timeout=10).json()["setup_needed"] is False  # type: ignore


def test_wizard_without_a_setup_token_says_so_and_a_rerun_uses_the_signed_in_token(engine: Engine, qtbot) -> None:
    """Setup is over on this engine (it has users): no token file, so the wizard says what to
    do; run again with an admin's token it shows the saved settings and may skip the account."""
    assert read_setup_token(engine.paths) == ""
    wiz = FirstRunWizard(engine.paths, engine.base)  # type: ignore[attr-defined]
    qtbot.addWidget(wiz)
    assert wiz.loaded is None and "no setup token" in wiz.folders_page.error.text()

    again = FirstRunWizard(engine.paths, engine.base, engine.tokens["admin"])  # type: ignore[attr-defined]
    qtbot.addWidget(again)
    again.show()
    qtbot.waitUntil(lambda: again.loaded is not None, timeout=WAIT)
    assert not again.setup_mode
    assert [f["path"] for f in again.folders_page.folders()] == [str(engine.export)]  # type: ignore[attr-defined]
    assert again.folders_page.folders()[0]["settle_seconds"] == 0.2  # keys it does not show ride along
    again.next()
    wait_page(qtbot, again, again.rcm_page)
    days = [cb.isChecked() for cb in again.rcm_page.day_boxes]
    assert days == [True] * 7  # the engine's saved schedule, not the first-run suggestion
    again.rcm_page.enabled.setChecked(False)
    again.next()
    wait_page(qtbot, again, again.account_page)
    assert again.account_page.skip.isVisible() and not again.account_page.isComplete()
    again.account_page.skip.setChecked(True)
    assert again.account_page.isComplete()


# -- screenshots -------------------------------------------------------------------------------
def test_screenshots_of_every_page(ingested: Engine, window, qtbot, tmp_path: Path) -> None:
    """Saved for people to look at; the assertions only check the pages had loaded."""
    add_finding(ingested)
    win = window("admin")
    win.resize(1280, 800)
    loaded = {
        "status": lambda p: bool(p.last.get("counts")) and bool(p.attention_buttons),
        "encounters": lambda p: p.model.rowCount() > 0,
        "quarantine": lambda p: p.document is not None,
        "mismatches": lambda p: p.compare.rowCount() > 0,
        "activity": lambda p: p.model.rowCount() > 0,
        "settings": lambda p: p.loaded is not None and p.users.rowCount() > 0,
    }
    for name, ready in loaded.items():
        win.show_page(name)
        page = win.pages[name]
        qtbot.waitUntil(lambda p=page, f=ready: f(p), timeout=WAIT)
        wait_idle(qtbot, win)
        if name == "encounters":
            page.table.selectRow(0)
        assert shot(win, f"page-{name}").stat().st_size > 10_000
    win.pages["settings"].tabs.setCurrentIndex(1)
    shot(win, "page-settings-billing")
    win.pages["settings"].tabs.setCurrentIndex(3)
    shot(win, "page-settings-users")

    desk = window("front_desk")
    desk.resize(1280, 800)
    desk.show_page("mismatches")
    qtbot.waitUntil(lambda: desk.pages["mismatches"].current is not None, timeout=WAIT)
    shot(desk, "front-desk-mismatches")
    desk.show_page("activity")
    shot(desk, "front-desk-activity")

    dlg = SignInDialog(ingested.base, paths=ingested.paths)  # type: ignore[attr-defined]
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.token_edit.setText("cb_wrong")
    dlg.check()
    qtbot.waitUntil(lambda: "(401)" in dlg.status.text(), timeout=WAIT)
    shot(dlg, "signin-bad-token")

    wiz = FirstRunWizard(ingested.paths, ingested.base, ingested.tokens["admin"])  # type: ignore[attr-defined]
    qtbot.addWidget(wiz)
    wiz.show()
    qtbot.waitUntil(lambda: wiz.loaded is not None, timeout=WAIT)
    wiz.folders_page.add_folder(str(tmp_path), "csv", "generic")
    shot(wiz, "wizard-1-folders")
    wiz.next()
    rp = wiz.rcm_page
    wait_page(qtbot, wiz, rp)
    rp.base_url.setText("http://rcm.example/fhir/R4")
    rp.token_url.setText("https://rcm.example/oauth2/token")
    rp.client_id.setText("chargebridge")
    rp.secret.setText("x")
    wiz.next()
    qtbot.waitUntil(lambda: not rp.busy and "#c62828" in rp.base_url.styleSheet(), timeout=WAIT)
    shot(wiz, "wizard-2-rcm-error")
