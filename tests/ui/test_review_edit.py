"""Editing a charge line on the Review page, against a real engine (in-process, real keyring and
SQLCipher store): the engine's refusals shown under the field they are about (title + fix), a
saved edit re-running the rules (the line's finding goes, the others stay), approval after it,
an edit that clears every holding finding (the encounter leaves the queue), typed values kept
while the engine reports changes, and the front desk unable to edit.
Screenshot: tests/artifacts/review-edit.png."""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtWidgets import QApplication

from tests.ui.test_review_page import ARTIFACTS, WAIT, engine, open_review  # noqa: F401 - the fixture

__all__ = ["engine"]


def line_findings(page: Any, row: int) -> str:
    return str(page.lines.item(row, 4).text())


def select(page: Any, source_id: str, line: int) -> None:
    row = next(i for i, r in enumerate(page.model.rows) if r["source_id"] == source_id)
    page.table.selectRow(row)
    assert page.current["source_id"] == source_id
    page.lines.selectRow(line)
    assert page.line_index() == line


def stored(engine: Any, source_id: str) -> tuple[dict[str, Any], int, str]:
    data, version, state = engine.store().conn.execute(
        "SELECT data, version, state FROM encounters WHERE source_id = ?", (source_id,)).fetchone()
    return json.loads(data), int(version), str(state)


def test_coder_edits_a_line_sees_errors_on_fields_and_refreshed_findings(engine: Any, qtbot: Any) -> None:
    win, client = open_review(engine, qtbot, "coder")
    page = win.pages["review"]
    select(page, "V2", 1)  # 97530 + 97140: an NCCI pair without 59, on line 2
    assert "modifier.59_review" in line_findings(page, 1)
    assert page.fields["code"].text() == "97140" and page.fields["dx_pointers"].text() == "1"
    assert not page.save_btn.isEnabled()  # nothing changed yet

    page.fields["units"].setText("0")
    assert page.save_btn.isEnabled()
    page.save_btn.click()
    err = page.field_errors["units"]
    qtbot.waitUntil(lambda: err.isVisible(), timeout=WAIT)
    assert "greater than 0" in err.text() and "What to do: e.g. 1" in err.text()
    assert not any(e.isVisible() for k, e in page.field_errors.items() if k != "units")

    page.fields["units"].setText("1")
    assert not err.isVisible()  # typing in the field clears its error
    page.fields["dx_pointers"].setText("1, 7")  # the encounter has two diagnoses
    page.save_btn.click()
    err = page.field_errors["dx_pointers"]
    qtbot.waitUntil(lambda: err.isVisible(), timeout=WAIT)
    assert "from 1 to 2" in err.text() and "What to do:" in err.text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    win.resize(1180, 760)
    QApplication.processEvents()
    assert win.grab().save(str(ARTIFACTS / "review-edit.png"))
    page.fields["dx_pointers"].setText("1, x")  # not a number: refused by the request's shape, same place
    page.save_btn.click()
    qtbot.waitUntil(lambda: "integer" in err.text() and err.isVisible(), timeout=WAIT)
    assert stored(engine, "V2")[1] == 1  # nothing refused was stored

    page.fields["dx_pointers"].setText("1 2")
    page.fields["modifiers"].setText("59")
    page.save_btn.click()
    qtbot.waitUntil(lambda: page.current is not None and page.current["version"] == 2
                    and "modifier.59_review" not in line_findings(page, 1), timeout=WAIT)
    assert "saved" in page.banner.text and "still hold" in page.banner.text
    assert page.line_index() == 1 and page.fields["modifiers"].text() == "59"  # the form shows the new version
    assert "dx.sex_mismatch" in page.general.text()  # N40.0 on a female patient still holds it
    data, version, state = stored(engine, "V2")
    assert data["lines"][1]["modifiers"] == ["59"] and data["lines"][1]["dx_pointers"] == [1, 2]
    assert (version, state) == (2, "needs_review")
    audit = engine.store().conn.execute("SELECT detail FROM audit WHERE action = 'review.edit'").fetchall()
    assert [json.loads(d)["fields"] for (d,) in audit] == [["modifiers", "dx_pointers"]]

    page.approve_btn.click()
    qtbot.waitUntil(lambda: page.model.total == 1, timeout=WAIT)
    assert stored(engine, "V2")[2] == "ready"

    select(page, "V1", 0)  # 99213 with a same-day 20610 and no 25: the only finding that holds it
    page.fields["modifiers"].setText("25")
    page.save_btn.click()
    qtbot.waitUntil(lambda: page.model.total == 0 and page.stack.currentWidget() is page.empty, timeout=WAIT)
    assert "ready" in page.banner.text
    assert stored(engine, "V1")[1:] == (2, "ready")
    win.close()
    client.close()
    QApplication.processEvents()


def test_typed_values_survive_an_engine_refresh_and_front_desk_cannot_edit(engine: Any, qtbot: Any) -> None:
    win, client = open_review(engine, qtbot, "coder")
    page = win.pages["review"]
    select(page, "V1", 0)
    page.fields["modifiers"].setText("25, 59")
    with qtbot.waitSignal(page.model.modelReset, timeout=WAIT):
        page.refresh()  # what the window does when the engine reports any change
    QApplication.processEvents()
    assert page.current is not None and page.current["source_id"] == "V1"
    assert page.fields["modifiers"].text() == "25, 59" and page.line_index() == 0
    assert page.change() == {"modifiers": ["25", "59"]}
    page.lines.selectRow(1)  # another line: the form shows that line
    assert page.fields["code"].text() == "20610" and page.fields["modifiers"].text() == ""
    win.close()
    client.close()

    win, client = open_review(engine, qtbot, "front_desk")
    page = win.pages["review"]
    select(page, "V1", 0)
    assert not page.fields["code"].isEnabled() and not page.save_btn.isEnabled()
    assert "coder" in page.save_btn.toolTip()
    win.close()
    client.close()
    QApplication.processEvents()
