"""The Claims page (and claim findings on the Mismatches page) against a REAL engine in-process:
states with symbol + colour, the state filter asked of the engine, reasons with their CARC
descriptions, the answers' history (coder and up), the mismatch-queue note. Screenshots go to
tests/artifacts/page-claims*.png. No sleeps: qtbot.waitUntil with timeouts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication

from agent import claims
from agent.engine import Engine
from core.answers import Answer, Reason
from core.states import AnswerKind, ClaimState
from tests.conftest import start_test_engine, wait_until
from tests.helpers import dft
from tests.ui.test_windows import shot
from ui.app import protect_none_refcount
from ui.client import ApiClient
from ui.main_window import MainWindow
from ui.pages.claims import STATE_LOOK

protect_none_refcount()
WAIT = 20_000


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    eng = start_test_engine(tmp_path, roles=("front_desk", "manager"), folder_format="hl7v2")
    for i in range(5):
        (eng.export / f"v{i}.hl7").write_text(dft(i))  # type: ignore[attr-defined]
    store = eng.store()
    assert wait_until(lambda: store.conn.execute("SELECT count(*) FROM encounters").fetchone()[0] == 5)
    with store.tx():
        for i, (eid, version) in enumerate(store.conn.execute("SELECT id, version FROM encounters ORDER BY id")):
            claims.record_delivery(store, encounter_id=eid, version=version, claim_id=f"TESTFAC:V{i:07d}",
                                   target="fhir", remote_ids={"Claim": f"c{i}"})
    claims.apply_answers(store, [
        Answer(AnswerKind.CLAIM_RESPONSE, "q1", ClaimState.ACCEPTED, claim_ref="TESTFAC:V0000001",
               answered_on="2026-11-18"),
        Answer(AnswerKind.CLAIM_RESPONSE, "d1", ClaimState.DENIED, claim_ref="TESTFAC:V0000001", paid="0.00",
               reasons=[Reason("carc", "50", group="CO", amount="120.00"), Reason("rarc", "N115")],
               answered_on="2026-11-21"),
        Answer(AnswerKind.CLAIM_RESPONSE, "p2", ClaimState.PARTIALLY_PAID, claim_ref="TESTFAC:V0000002",
               paid="90.00", adjusted="10.00", patient_resp="20.00",
               reasons=[Reason("carc", "45", group="CO", amount="10.00"), Reason("carc", "3", group="PR",
                                                                                 amount="20.00")],
               answered_on="2026-11-22"),
        Answer(AnswerKind.CLAIM_RESPONSE, "p3", ClaimState.PAID, claim_ref="TESTFAC:V0000003", paid="150.00",
               adjusted="0.00", patient_resp="0.00", answered_on="2026-11-22"),
        Answer(AnswerKind.CLAIM_RESPONSE, "r4", ClaimState.REJECTED, claim_ref="TESTFAC:V0000004",
               reasons=[Reason("fhir", "A7-562", text="Subscriber not found")], answered_on="2026-11-19"),
    ])
    yield eng
    eng.stop()


@pytest.fixture()
def window(engine: Engine, qtbot: Any) -> Iterator[Any]:
    made: list[tuple[MainWindow, ApiClient]] = []

    def make(role: str) -> MainWindow:
        client = ApiClient(engine.base, engine.tokens[role])  # type: ignore[attr-defined]
        win = MainWindow(client, role=role, user=f"{role}-user", paths=engine.paths)
        qtbot.addWidget(win)
        win.resize(1280, 800)
        win.show()
        made.append((win, client))
        return win

    yield make
    for win, client in made:
        win.close()
        client.close()
    QApplication.processEvents()


def _select(qtbot: Any, page: Any, claim_id: str) -> None:
    row = next(i for i, r in enumerate(page.model.rows) if r["claim_id"] == claim_id)
    page.list.selectRow(row)
    qtbot.waitUntil(lambda: page.current is not None and page.current["claim_id"] == claim_id, timeout=WAIT)


def test_claims_page_states_reasons_history_and_filter(engine: Engine, window: Any, qtbot: Any) -> None:
    win = window("manager")
    win.show_page("claims")
    page = win.pages["claims"]
    qtbot.waitUntil(lambda: page.model.rowCount() == 5, timeout=WAIT)
    states = {r["claim_id"]: page.model.data(page.model.index(i, 0)) for i, r in enumerate(page.model.rows)}
    assert states["TESTFAC:V0000001"].startswith("⊘ Denied") and "in queue" in states["TESTFAC:V0000001"]
    assert states["TESTFAC:V0000000"] == "↑ Submitted"
    assert states["TESTFAC:V0000002"] == "½ Partially paid"

    _select(qtbot, page, "TESTFAC:V0000001")
    qtbot.waitUntil(lambda: page.detail is not None and page.answers.rowCount() == 2, timeout=WAIT)
    assert page.queue_note.isVisibleTo(win) and "mismatch queue" in page.queue_note.text()
    codes = [page.reasons.item(i, 0).text() for i in range(page.reasons.rowCount())]
    assert codes == ["CO-50", "RARC N115"]
    assert "medical necessity" in page.reasons.item(0, 1).text()  # the CARC description from the code list
    assert page.reasons.item(0, 2).text() == "$120.00"
    history = [(page.answers.item(i, 1).text(), page.answers.item(i, 2).text()) for i in range(2)]
    assert history == [("FHIR ClaimResponse", "✓ Accepted"), ("FHIR ClaimResponse", "⊘ Denied")]
    assert STATE_LOOK[ClaimState.DENIED][2] in page.head.text()  # the state's colour in the heading
    assert shot(win, "page-claims").stat().st_size > 10_000

    i = page.state.findData("partially_paid")
    page.state.setCurrentIndex(i)  # the engine filters
    qtbot.waitUntil(lambda: page.model.rowCount() == 1 and page.model.rows[0]["state"] == "partially_paid",
                    timeout=WAIT)
    qtbot.waitUntil(lambda: page.detail is not None and page.reasons.rowCount() == 2, timeout=WAIT)
    assert not page.queue_note.isVisibleTo(win)
    assert page.count_label.text() == "1 claim"

    # the denied claim on the Mismatches page: its reasons, not an EHR/RCM comparison
    win.show_page("mismatches")
    mm = win.pages["mismatches"]
    qtbot.waitUntil(lambda: mm.model.rowCount() == 2, timeout=WAIT)
    row = next(i for i, r in enumerate(mm.model.rows) if r["kind"] == "claim_denied")
    mm.list.selectRow(row)
    qtbot.waitUntil(lambda: mm.current is not None and mm.current["kind"] == "claim_denied", timeout=WAIT)
    labels = [mm.compare.item(i, 0).text() for i in range(mm.compare.rowCount())]
    assert labels == ["Claim", "Reason CO-50", "Reason RARC N115"]
    assert mm.compare.item(0, 2).text() == "denied (from ClaimResponse)"
    qtbot.waitUntil(lambda: "medical necessity" in mm.compare.item(1, 1).text(), timeout=WAIT)  # described
    assert mm.kind_label.text().startswith("Claim denied")
    assert mm.buttons["resend"].isEnabled() and mm.buttons["ignore"].isEnabled()
    assert not mm.buttons["accept-rcm"].isEnabled()
    shot(win, "page-mismatches-claim-denied")


def test_front_desk_sees_states_but_not_the_history(engine: Engine, window: Any, qtbot: Any) -> None:
    win = window("front_desk")
    win.show_page("claims")
    page = win.pages["claims"]
    qtbot.waitUntil(lambda: page.model.rowCount() == 5, timeout=WAIT)
    _select(qtbot, page, "TESTFAC:V0000004")
    assert page.reasons.item(0, 0).text() == "FHIR A7-562" and page.reasons.item(0, 1).text() == "Subscriber not found"
    assert "coder" in page.history_note.text().lower() and page.answers.rowCount() == 0
    assert not page.banner.isVisible()
