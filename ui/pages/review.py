"""Review: encounters the charge rules (or validation) hold, with each finding next to the line it
is about, and the coder's actions — edit a line, Approve (it goes out with the next sync) and
Reject with a reason (it is not billed).

Editing: select a line, change its code, modifiers, units or diagnosis pointers in the form under
the lines and *Save line*. The engine (``PATCH /review/{id}/lines/{n}``) checks the values, stores
the encounter as a new version and runs the rules on it again; the page shows the refreshed
findings. A value the engine refuses is shown under its field (the error's ``key``) with what is
wrong and what to do; nothing is checked here, so the window and the CLI/API refuse the same
things. An edit that clears every holding finding makes the encounter ready (it leaves the queue).
The form keeps what the coder typed while the engine reports other changes.

Anyone signed in sees the queue; the actions need the coder role or above, and are disabled with
a tooltip saying so for the front desk. Opportunities (suggestions, never billed) are shown under
the encounter's findings in blue.
"""

from __future__ import annotations

import re
from typing import Any

from PySide6.QtCore import QItemSelection, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
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
from ui.pages import Page, Session, alive, gate, record_table, reselect, with_empty_state

EMPTY = "Nothing waits for review — every encounter passed the charge rules, or a coder has decided on it."
SEVERITY_MARK = {"error": "✖ error", "review": "● review", "warning": "▲ warning", "info": "ℹ suggestion"}
SEVERITY_COLOR = {"error": "#b71c1c", "review": "#9a6b00", "warning": "#9a6b00", "info": "#0d47a1"}
# the line fields the engine edits: (key in the API's body and errors, label, placeholder); the
# mnemonics avoid the window's tabs (ui/main_window.py _TAB_TEXT) and Approve/Reject
EDIT_FIELDS = (("code", "&Code", "CPT or HCPCS, e.g. 99213"),
               ("modifiers", "Mod&ifiers", "up to 4, e.g. 25 or 59, XS"),
               ("units", "&Units", "e.g. 1"),
               ("dx_pointers", "D&x pointers", "diagnosis positions, e.g. 1, 2"))
_SPLIT = re.compile(r"[\s,;\-]+")


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
        self.lines.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.lines.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.lines.itemSelectionChanged.connect(self._line_selected)
        rl.addWidget(self.lines, 2)
        rl.addWidget(self._edit_form())
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
        line = self.line_index()
        gate(self.save_btn, self.session, Role.CODER,
             "Save the line: the engine checks it, keeps the encounter as a new version and runs the rules again",
             extra_ok=line is not None and bool(self.change()) and not self.saving,
             extra_tip="Select a line and change one of its fields first")
        for edit in self.fields.values():
            edit.setEnabled(line is not None and self.session.at_least(Role.CODER))

    # -- line editing -------------------------------------------------------------------------
    def _edit_form(self) -> QGroupBox:
        self.form_box = QGroupBox("Edit line")
        self.form_box.setAccessibleName("Edit the selected charge line")
        form = QFormLayout(self.form_box)
        self.fields: dict[str, QLineEdit] = {}
        self.field_errors: dict[str, QLabel] = {}
        self.form_for: tuple[int, int, int] | None = None  # (encounter, version, line) the form shows
        self.saving = False
        for key, label, hint in EDIT_FIELDS:
            edit = QLineEdit()
            edit.setPlaceholderText(hint)
            edit.setMaxLength(64)
            edit.setAccessibleName(label.replace("&", ""))
            edit.textChanged.connect(lambda _, k=key: self._edited(k))
            edit.returnPressed.connect(self._save_line)
            err = QLabel("")
            err.setWordWrap(True)
            err.setStyleSheet(f"color: {SEVERITY_COLOR['error']};")
            err.setAccessibleName(f"Problem with {label.replace('&', '').lower()}")
            err.hide()
            cell = QWidget()
            box = QVBoxLayout(cell)
            box.setContentsMargins(0, 0, 0, 0)
            box.setSpacing(2)
            box.addWidget(edit)
            box.addWidget(err)
            lab = QLabel(label)
            lab.setBuddy(edit)
            form.addRow(lab, cell)
            self.fields[key], self.field_errors[key] = edit, err
        self.save_btn = QPushButton("Save li&ne")
        self.save_btn.clicked.connect(self._save_line)
        form.addRow("", self.save_btn)
        return self.form_box

    def line_index(self) -> int | None:
        if self.current is None:
            return None
        rows = self.lines.selectionModel().selectedRows() if self.lines.selectionModel() else []
        return rows[0].row() if rows and rows[0].row() < len(self.current["lines"]) else None

    def _line_selected(self) -> None:
        self._fill_form(force=True)

    def _fill_form(self, *, force: bool = False) -> None:
        """Show the selected line's values, unless the form already shows that line (of that
        version) and the coder may be typing in it."""
        line = self.line_index()
        key = (self.current["id"], self.current["version"], line) if self.current and line is not None else None
        if key == self.form_for and not force:
            self.apply_role()
            return
        self.form_for = key
        ln = self.current["lines"][line] if self.current and line is not None else None
        values = {"code": ln["code"], "modifiers": ", ".join(ln["modifiers"]), "units": ln["units"],
                  "dx_pointers": ", ".join(str(p) for p in ln["dx_pointers"])} if ln else {}
        for k, edit in self.fields.items():
            edit.blockSignals(True)
            edit.setText(values.get(k, ""))
            edit.blockSignals(False)
        self._clear_errors()
        self.form_box.setTitle(f"Edit line {line + 1} ({ln['code']})" if ln and line is not None
                               else "Edit line (select a line)")
        self.apply_role()

    def _edited(self, key: str) -> None:
        self.field_errors[key].hide()
        self.apply_role()

    def _clear_errors(self) -> None:
        for err in self.field_errors.values():
            err.setText("")
            err.hide()

    def change(self) -> dict[str, Any]:
        """The request body: only the fields that differ from the stored line (as the engine
        reads them: modifiers and pointers split on commas, spaces or hyphens)."""
        line = self.line_index()
        if self.current is None or line is None:
            return {}
        ln = self.current["lines"][line]
        out: dict[str, Any] = {}
        code = self.fields["code"].text().strip()
        if code.upper() != ln["code"]:
            out["code"] = code
        mods = [m for m in _SPLIT.split(self.fields["modifiers"].text().strip().upper()) if m]
        if mods != list(ln["modifiers"]):
            out["modifiers"] = mods
        units = self.fields["units"].text().strip()
        if units != ln["units"]:
            out["units"] = units
        ptrs = [p for p in _SPLIT.split(self.fields["dx_pointers"].text().strip()) if p]
        if ptrs != [str(p) for p in ln["dx_pointers"]]:
            # sent as typed: the engine says what is wrong with a pointer that is not a number
            out["dx_pointers"] = [int(p) if p.isdigit() else p for p in ptrs]
        return out

    def _save_line(self) -> None:
        line, body = self.line_index(), self.change()
        if self.current is None or line is None or not body or self.saving:
            return
        eid = self.current["id"]
        self.saving = True
        self._clear_errors()
        self.apply_role()

        def done(answer: Any) -> None:
            self.saving = False
            if not isinstance(answer, dict) or not isinstance(answer.get("lines"), list):
                self.banner.show_failure(unreadable_answer(), "save the line")
                return
            if answer.get("state") == "needs_review":
                self.banner.show_text(f"Line {line + 1} saved; the rules ran again: {answer.get('holding', 0)} "
                                      "finding(s) still hold the encounter.", kind="ok")
                if self.current is not None and self.current["id"] == eid:  # unless the coder moved on
                    self._show(answer, line=line)
            elif self.current is not None and self.current["id"] == eid:
                self.banner.show_text(f"Line {line + 1} saved; no finding holds encounter {eid} now: it is "
                                      f"{answer.get('state')} and goes out with the next sync.", kind="ok")
                self.current = None
            else:
                self.banner.show_text(f"Line {line + 1} of encounter {eid} saved; it is {answer.get('state')}.",
                                      kind="ok")
            self.refresh()

        def failed(f: ApiFailure) -> None:
            self.saving = False
            field = _field_of(f.key)
            if field in self.field_errors:
                err = self.field_errors[field]
                err.setText(f"{_cap(f.title)}. What to do: {f.fix}." if f.fix else _cap(f.title))
                err.show()
                self.fields[field].setFocus()
                self.banner.hide()
            else:
                self.banner.show_failure(f, "save the line")
            self.apply_role()

        self.client.call("PATCH", f"/api/v1/review/{eid}/lines/{line}", json=body, on_ok=alive(self, done),
                         on_error=alive(self, failed))

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
        reselect(self.table, items, "id", keep, self._show)

    def _selected(self, *_: QItemSelection) -> None:
        rows = self.table.selectionModel().selectedRows()
        self._show(self.model.row(rows[0].row()) if rows else None)

    def _show(self, item: dict[str, Any] | None, *, line: int | None = None) -> None:
        same = item is not None and self.current is not None and item["id"] == self.current["id"]
        keep = line if line is not None else (self.line_index() if same else None)
        self.current = item
        self.lines.blockSignals(True)
        self.lines.setRowCount(0)
        self.lines.blockSignals(False)
        if item is None:
            self.header.setText("Select an encounter to see its lines and findings.")
            self.general.setText("")
            self._fill_form()
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
        if item["lines"]:
            self.lines.blockSignals(True)
            self.lines.selectRow(keep if keep is not None and keep < len(item["lines"]) else 0)
            self.lines.blockSignals(False)
        self._fill_form()
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


def _field_of(key: str | None) -> str:
    """The form field an error's key names: ``units`` (the engine's check) or ``body.dx_pointers[0]``
    (the request's shape) -> ``dx_pointers``."""
    if not key:
        return ""
    return key.removeprefix("body.").split("[", 1)[0].split(".", 1)[0]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
