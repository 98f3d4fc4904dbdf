"""Review: encounters the charge rules (or validation) hold, with each finding next to the line it
is about, and the coder's actions — Approve (it goes out with the next sync) and Reject with a
reason (it is not billed). Lines are edited from the CLI or API for now.

Anyone signed in sees the queue; the actions need the coder role or above, and are disabled with
a tooltip saying so for the front desk. Opportunities (suggestions, never billed) are shown under
the encounter's findings in blue.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelection, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.states import Role
from ui.client import ApiFailure, unreadable_answer
from ui.models import Column, RecordsModel
from ui.pages import Page, Session, alive, gate, record_table, with_empty_state

EMPTY = "Nothing waits for review — every encounter passed the charge rules, or a coder has decided on it."
SEVERITY_MARK = {"error": "✖ error", "review": "● review", "warning": "▲ warning", "info": "ℹ suggestion"}
SEVERITY_COLOR = {"error": "#b71c1c", "review": "#9a6b00", "warning": "#9a6b00", "info": "#0d47a1"}


def finding_text(f: dict[str, Any]) -> str:
    sev = f.get("severity", "")
    text = f"{SEVERITY_MARK.get(sev, sev)} {f.get('code', '')}: {f.get('message', '')}"
    return text + (f" — {f['fix']}" if f.get("fix") else "")


class ReviewPage(Page):
    name = "review"
    title = "Review"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.model = RecordsModel([
            Column("Visit", lambda r: r["source_id"], lambda r: f"Encounter {r['id']} from {r['source']}"),
            Column("Date", lambda r: r["dos"], lambda r: "Date of service"),
            Column("Patient", lambda r: r["patient"], lambda r: f"MRN {r['mrn']}"),
            Column("To review", lambda r: str(r["holding"]), lambda r: "Findings that hold this encounter"),
        ], parent=self)
        self.current: dict[str, Any] | None = None

        self.table = record_table(self.model, "Encounters waiting for review", self._selected)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.empty, self.stack = with_empty_state(self.table, EMPTY)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.header = QLabel("Select an encounter to see its lines and findings.")
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        rl.addWidget(self.header)
        self.lines = QTableWidget(0, 5)
        self.lines.setHorizontalHeaderLabels(["Line", "Code", "Modifiers", "Units × dx", "Findings"])
        self.lines.verticalHeader().hide()
        self.lines.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.lines.setWordWrap(True)
        self.lines.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.lines.setAccessibleName("Charge lines and their findings")
        rl.addWidget(self.lines, 2)
        self.general = QLabel("")
        self.general.setWordWrap(True)
        self.general.setTextFormat(Qt.TextFormat.RichText)
        self.general.setAccessibleName("Findings about the whole encounter")
        rl.addWidget(self.general, 1)
        btns = QHBoxLayout()
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("Reason to reject (required)")
        self.reason.setMaxLength(500)
        self.reason.textChanged.connect(lambda _: self.apply_role())
        btns.addWidget(self.reason, 1)
        self.reject_btn = QPushButton("Re&ject")
        self.reject_btn.clicked.connect(self._reject)
        btns.addWidget(self.reject_btn)
        self.approve_btn = QPushButton("A&pprove")
        self.approve_btn.clicked.connect(self._approve)
        btns.addWidget(self.approve_btn)
        rl.addLayout(btns)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.stack)
        split.addWidget(right)
        split.setSizes([420, 760])
        self._outer.addWidget(split, 1)
        self.apply_role()

    def apply_role(self) -> None:
        have = self.current is not None
        gate(self.approve_btn, self.session, Role.CODER,
             "Approve: the encounter goes to the billing system with the next sync, over the rule findings",
             extra_ok=have, extra_tip="Select an encounter first")
        gate(self.reject_btn, self.session, Role.CODER, "Reject: not billed (the reason is kept)",
             extra_ok=have and bool(self.reason.text().strip()),
             extra_tip="Select an encounter and type the reason first")
        self.reason.setEnabled(self.session.at_least(Role.CODER))

    # -- data ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.client.call("GET", "/api/v1/review", params=RecordsModel.PARAMS, on_ok=alive(self, self._loaded),
                         on_error=alive(self, lambda f: self.banner.show_failure(f, "load the review queue")))

    def _loaded(self, answer: Any) -> None:
        keep = self.current["id"] if self.current else None
        try:
            self.model.set_page(answer)
        except ValueError:
            self.banner.show_failure(unreadable_answer(), "load the review queue")
            return
        items = self.model.rows
        self.stack.setCurrentWidget(self.table if items else self.empty)
        row = next((i for i, r in enumerate(items) if r["id"] == keep), 0 if items else None)
        if row is None:
            self._show(None)
        else:
            self.table.selectRow(row)
            self._show(items[row])

    def _selected(self, *_: QItemSelection) -> None:
        rows = self.table.selectionModel().selectedRows()
        self._show(self.model.row(rows[0].row()) if rows else None)

    def _show(self, item: dict[str, Any] | None) -> None:
        self.current = item
        self.lines.setRowCount(0)
        if item is None:
            self.header.setText("Select an encounter to see its lines and findings.")
            self.general.setText("")
            self.apply_role()
            return
        self.header.setText(
            f"<b>Visit {item['source_id']}</b> · {item['dos']} · POS {item['place_of_service'] or '—'} · "
            f"payer {item['payer'] or 'none'} · diagnoses {', '.join(item['diagnoses']) or 'none'}")
        self.lines.setRowCount(len(item["lines"]))
        for r, ln in enumerate(item["lines"]):
            ptrs = ",".join(str(p) for p in ln["dx_pointers"]) or "—"
            cells = [str(ln["index"] + 1), ln["code"], "-".join(ln["modifiers"]) or "—", f"{ln['units']} × dx {ptrs}",
                     "\n".join(finding_text(f) for f in ln["findings"]) or "✓ no findings"]
            worst = next((s for s in ("error", "review", "warning", "info")
                          if any(f.get("severity") == s for f in ln["findings"])), "")
            for c, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                cell.setToolTip(text)
                if c == 4 and worst:
                    cell.setForeground(QBrush(QColor(SEVERITY_COLOR[worst])))
                self.lines.setItem(r, c, cell)
        self.lines.resizeRowsToContents()
        general = [f"<span style='color:{SEVERITY_COLOR.get(f.get('severity', ''), '#000')}'>"
                   f"{_esc(finding_text(f))}</span>" for f in item["findings"]]
        self.general.setText("<br>".join(general) if general else "No findings about the encounter as a whole.")
        self.apply_role()

    # -- actions ------------------------------------------------------------------------------
    def _approve(self) -> None:
        if self.current is not None:
            self._act(f"/api/v1/review/{self.current['id']}/approve", {}, "approve the encounter")

    def _reject(self) -> None:
        if self.current is not None and self.reason.text().strip():
            self._act(f"/api/v1/review/{self.current['id']}/reject", {"reason": self.reason.text().strip()},
                      "reject the encounter")

    def _act(self, path: str, body: dict[str, str], what: str) -> None:
        def done(answer: Any) -> None:
            self.reason.clear()
            self.banner.show_text(f"Encounter {answer.get('id')} is now {answer.get('state')}.", kind="ok")
            self.current = None
            self.refresh()

        def failed(f: ApiFailure) -> None:
            self.banner.show_failure(f, what)

        self.client.call("POST", path, json=body, on_ok=alive(self, done), on_error=alive(self, failed))


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
