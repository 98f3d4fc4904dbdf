"""The Review page against a real engine (in-process, real keyring and SQLCipher store): findings
next to their lines, actions gated by role (disabled with a tooltip for the front desk), and a
coder's approve and reject going through the engine. Screenshot: tests/artifacts/review.png."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QApplication

from agent.pipeline import Pipeline
from tests.conftest import ROOT, start_test_engine
from tests.integration.test_review import hl7
from ui.client import ApiClient
from ui.main_window import MainWindow

WAIT = 20_000
ARTIFACTS = Path(os.environ.get("CHARGEBRIDGE_ARTIFACTS", ROOT / "tests" / "artifacts"))


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok: None) -> Iterator[Any]:
    eng = start_test_engine(tmp_path, roles=("front_desk", "coder"))
    pipe = Pipeline.for_config(eng.store(), eng.config)
    pipe.ingest_bytes(hl7("V1", "M1", [("99213", ""), ("20610", "")], ["M17.11"]), origin="a.hl7")
    pipe.ingest_bytes(hl7("V2", "M2", [("97530", ""), ("97140", "")], ["M54.50", "N40.0"]), origin="b.hl7")
    yield eng
    eng.stop()


def open_review(engine: Any, qtbot: Any, role: str) -> tuple[MainWindow, ApiClient]:
    client = ApiClient(engine.base, engine.tokens[role])
    win = MainWindow(client, role=role, user=f"{role}-user", paths=engine.paths)
    qtbot.addWidget(win)
    win.show()
    win.show_page("review")
    page = win.pages["review"]
    qtbot.waitUntil(lambda: page.model.total == 2 and page.current is not None, timeout=WAIT)
    return win, client


def test_review_page_as_coder_and_front_desk(engine: Any, qtbot: Any) -> None:
    win, client = open_review(engine, qtbot, "front_desk")
    page = win.pages["review"]
    assert not page.approve_btn.isEnabled() and "coder" in page.approve_btn.toolTip()
    assert not page.reject_btn.isEnabled() and not page.reason.isEnabled()
    win.close()
    client.close()

    win, client = open_review(engine, qtbot, "coder")
    page = win.pages["review"]
    page.table.selectRow(0)
    assert page.current is not None and page.current["source_id"] == "V1"
    assert page.lines.rowCount() == 2
    assert "modifier.25_missing" in page.lines.item(0, 4).text()  # next to the E/M line
    assert page.lines.item(1, 4).text().startswith("✓")
    assert page.approve_btn.isEnabled() and not page.reject_btn.isEnabled()  # reject needs a reason
    page.table.selectRow(1)
    assert "dx.sex_mismatch" in page.general.text()  # N40.0 on a female patient: about the encounter
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    win.resize(1180, 640)
    QApplication.processEvents()
    assert win.grab().save(str(ARTIFACTS / "review.png"))

    page.reason.setText("not documented")
    assert page.reject_btn.isEnabled()
    page.reject_btn.click()
    qtbot.waitUntil(lambda: page.model.total == 1, timeout=WAIT)
    page.table.selectRow(0)
    page.approve_btn.click()
    qtbot.waitUntil(lambda: page.model.total == 0 and page.stack.currentWidget() is page.empty, timeout=WAIT)
    states = dict(engine.store().conn.execute("SELECT source_id, state FROM encounters"))
    assert states == {"V1": "ready", "V2": "rejected"}
    win.close()
    client.close()
    QApplication.processEvents()
