"""Quarantine: files that could not be read, why, the raw document, and Reprocess.

The raw document is patient data, so the engine shows it to managers only; a front-desk user
sees the reason (which never contains patient data) and who to ask.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

from PySide6.QtCore import QItemSelection, Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.states import Role
from ui.client import ApiFailure, unreadable_answer
from ui.models import Column, RecordsModel
from ui.pages import (
    Page,
    Session,
    alive,
    gate,
    needs_role_text,
    record_table,
    short_date,
    when,
    with_empty_state,
)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
EMPTY = "Nothing in quarantine — every export file was read. Files that cannot be read show up here with the reason."


def display_text(text: str) -> str:
    """HL7 separates segments with CR: show one per line; show other control bytes as <00>, <1B>…
    (plain ASCII, so every font can draw it) so a binary or damaged file looks damaged, not blank."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(lambda m: f"<{ord(m.group()):02X}>", text)


class QuarantinePage(Page):
    name = "quarantine"
    title = "Quarantine"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.model = RecordsModel([
            Column("File", lambda r: PurePath(r["file"]).name, lambda r: r["file"]),
            Column("Part", lambda r: r.get("part") or "whole file",
                   lambda r: "Which message or row of the file" if r.get("part") else "The whole file"),
            Column("Reason", lambda r: r["reason"], lambda r: r["reason"]),
            Column("When", lambda r: short_date(r["created_at"]), lambda r: when(r["created_at"])),
        ], parent=self)
        self.current: dict[str, Any] | None = None
        self.document: dict[str, Any] | None = None
        self._doc_request = 0

        self.table = record_table(self.model, "Quarantined files", self._selected)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setColumnWidth(0, 170)
        self.table.setColumnWidth(1, 90)
        self.empty, self.stack = with_empty_state(self.table, EMPTY)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.reason = QLabel("Select a file to see why it was quarantined.")
        self.reason.setWordWrap(True)
        self.reason.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reason.setStyleSheet("font-weight: 600;")
        rl.addWidget(self.reason)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #9a6b00;")
        rl.addWidget(self.note)
        self.raw = QPlainTextEdit()
        self.raw.setReadOnly(True)
        self.raw.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.raw.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.raw.setAccessibleName("Raw document")
        self.raw.setPlaceholderText("The file's content appears here.")
        rl.addWidget(self.raw, 1)
        btns = QHBoxLayout()
        btns.addStretch(1)
        self.reprocess_btn = QPushButton("&Reprocess")
        self.reprocess_btn.clicked.connect(self._reprocess_clicked)
        btns.addWidget(self.reprocess_btn)
        rl.addLayout(btns)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.stack)
        split.addWidget(right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setSizes([560, 640])  # the document deserves the room: it is what a manager reads
        self._outer.addWidget(split, 1)
        self.apply_role()

    def apply_role(self) -> None:
        gate(self.reprocess_btn, self.session, Role.MANAGER,
             "Read this file again (after the cause was fixed, e.g. a CSV profile added)",
             extra_ok=self.current is not None, extra_tip="Select a quarantined file first")
        if not self.session.at_least(Role.MANAGER):
            self.raw.setPlaceholderText(needs_role_text(Role.MANAGER, self.session.role).replace(
                "Needs the manager role", "Viewing the raw file needs the manager role"))

    # -- data ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.client.call("GET", "/api/v1/quarantine", params=RecordsModel.PARAMS, on_ok=alive(self, self._loaded),
                         on_error=alive(self, lambda f: self.banner.show_failure(f, "load the quarantine")))

    def _loaded(self, answer: Any) -> None:
        keep = self.current["id"] if self.current else None
        try:
            self.model.set_page(answer)
        except ValueError:
            self.banner.show_failure(unreadable_answer(), "load the quarantine")
            return
        items = self.model.rows
        if self.model.truncated:
            self.banner.show_text(f"Showing the newest {len(items):,} of {self.model.total:,} quarantined files.")
        self.stack.setCurrentWidget(self.table if items else self.empty)
        row = next((i for i, r in enumerate(items) if r["id"] == keep), 0 if items else None)
        if row is None:
            self._show(None)
        else:
            self.table.selectRow(row)

    def _selected(self, *_: QItemSelection) -> None:
        rows = self.table.selectionModel().selectedRows()
        self._show(self.model.row(rows[0].row()) if rows else None)

    def _show(self, entry: dict[str, Any] | None) -> None:
        same = entry is not None and self.current is not None and entry["id"] == self.current["id"]
        self.current = entry
        self.apply_role()
        if entry is None:
            self.reason.setText("Select a file to see why it was quarantined.")
            self.note.setText("")
            self.raw.clear()
            self.document = None
            return
        self.reason.setText(f"Why: {entry['reason']}")
        if same and self.document is not None:
            return
        self.raw.clear()
        self.document = None
        if not self.session.at_least(Role.MANAGER):
            self.note.setText("")
            return
        self._doc_request += 1
        req = self._doc_request
        self.note.setText("Loading the file…")
        self.client.call("GET", f"/api/v1/quarantine/{entry['id']}/document",
                         on_ok=alive(self, lambda d: self._document(req, d)),
                         on_error=alive(self, lambda f: self._doc_failed(req, f)))

    def _document(self, req: int, doc: dict[str, Any]) -> None:
        if req != self._doc_request:
            return  # the user has moved on to another file
        self.document = doc
        self.raw.setPlainText(display_text(doc.get("text", "")))
        size = doc.get("size", 0)
        self.note.setText(f"{size:,} bytes" + (f" — {doc['note']}." if doc.get("note") else ""))

    def _doc_failed(self, req: int, failure: ApiFailure) -> None:
        if req == self._doc_request:
            self.note.setText("")
            self.banner.show_failure(failure, "show the file")

    # -- reprocess ----------------------------------------------------------------------------
    def _reprocess_clicked(self) -> None:
        if self.current is not None:
            qid = self.current["id"]
            self.session.guard(lambda: self.reprocess(qid), "reprocess the file")

    def reprocess(self, qid: int) -> None:
        self.reprocess_btn.setEnabled(False)

        def done(out: dict[str, Any]) -> None:
            if out.get("quarantined"):
                reasons = "; ".join(out.get("reasons") or [])
                self.banner.show_text(f"Read again, but it is still in quarantine: {reasons}", "error")
            else:
                self.banner.show_text(f"Read again: {out.get('accepted', 0)} encounter(s) accepted.", "ok")
            self.current = None
            self.refresh()

        def fail(f: ApiFailure) -> None:
            self.apply_role()
            self.banner.show_failure(f, "reprocess the file")

        self.client.call("POST", f"/api/v1/quarantine/{qid}/reprocess", on_ok=alive(self, done),
                         on_error=alive(self, fail), timeout=120)
