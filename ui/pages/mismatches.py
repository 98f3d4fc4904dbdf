"""Mismatches: where what the EHR documented and what the billing system (RCM) holds differ.

The detail puts both sides next to each other, one row per field, and highlights the rows the
reconciliation's ``diff`` names (colour AND a "≠" marker, so it does not rely on colour). The
actions change billing data, so they need the manager role, and after 15 idle minutes they ask
the user to sign in again (``Session.guard``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
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

from core.states import FindingKind, ResolveAction, Role
from ui.client import ApiFailure, unreadable_answer
from ui.models import Column, RecordsModel
from ui.pages import Page, Session, alive, gate, record_table, reselect, when, with_empty_state

KINDS: dict[str, tuple[str, str]] = {
    FindingKind.MISSING_IN_RCM: ("Not in the billing system",
                                 "Documented in the EHR, but the billing system has no claim for it."),
    FindingKind.FIELD_MISMATCH: ("Fields differ", "Both sides have this visit, but some fields differ (highlighted)."),
    FindingKind.ORPHAN_IN_RCM: ("Only in the billing system",
                                "The billing system has a claim that the EHR did not document."),
    FindingKind.MISSING_CHARGE: ("Missing charge", "A scheduled visit with no charge documented a few days later."),
    FindingKind.CLAIM_REJECTED: ("Claim rejected", "Refused before adjudication: correct and resend, or ignore."),
    FindingKind.CLAIM_DENIED: ("Claim denied", "Adjudicated and not paid: correct and resend, or ignore."),
}
CLAIM_KINDS = (FindingKind.CLAIM_REJECTED, FindingKind.CLAIM_DENIED)
ACTIONS: dict[str, tuple[str, str]] = {
    ResolveAction.RESEND: ("Resen&d EHR version", ("Send the EHR's version to the billing system (as a correction "
                                                   "when it already has a claim)")),
    ResolveAction.ACCEPT_RCM: ("Accept &RCM version",
                               "Keep what the billing system has, and update ChargeBridge's copy to match"),
    ResolveAction.IGNORE: ("&Ignore…", "Close this mismatch without changing anything; you will be asked for a reason"),
}
FIELD_LABEL = {
    "patient.family": "Family name", "patient.given": "Given name", "patient.dob": "Date of birth",
    "mrn": "MRN", "date_of_service": "Date of service", "rendering_npi": "Rendering NPI",
    "diagnoses": "Diagnoses (ICD-10-CM)",
}
HIGHLIGHT = QColor("#ffe08a")
EMPTY = "No open mismatches — the EHR and the billing system agree. Reconciliation runs after each sync and nightly."


def _patient(f: dict[str, Any]) -> str:
    loc, rem = f.get("local") or {}, f.get("remote") or {}
    fam = loc.get("family") or rem.get("patient_family") or ""
    giv = loc.get("given") or rem.get("patient_given") or ""
    return f"{fam}, {giv}".strip(", ")


def _line_text(ln: dict[str, Any] | None) -> str:
    if not ln:
        return "—"
    parts = [f"{ln.get('units') or '?'} × ${ln.get('unit_charge') or '?'}"]
    if ln.get("modifiers"):
        parts.append("mod " + "-".join(ln["modifiers"]))
    if ln.get("dx_codes"):
        parts.append("dx " + ", ".join(ln["dx_codes"]))
    if ln.get("service_date"):
        parts.append(ln["service_date"])
    return " · ".join(parts)


def claim_rows(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """A rejected / denied claim (H4): the claim, then one row per reason code (``diff`` holds
    the reasons: kind, code, group, amount, text)."""
    from ui.pages.claims import reason_code, reason_description

    rem = f.get("remote") or {}
    answer = f" (from {rem['answer']})" if rem.get("answer") else ""
    rows = [("claim", "Claim", str(rem.get("claim_id") or f.get("remote_id", "")), f"{rem.get('state', '')}{answer}")]
    for r in f.get("diff") or []:
        rows.append((f"reason {reason_code(r)}", f"Reason {reason_code(r)}",
                     reason_description(r) or "(no description given)", f"${r['amount']}" if r.get("amount") else ""))
    if not f.get("diff"):
        rows.append(("reason", "Reason", "the payer gave no reason code", ""))
    return rows


def side_by_side(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Rows of (key, label, EHR value, RCM value) for a finding; ``key`` is what ``diff`` names."""
    if f.get("kind") in CLAIM_KINDS:
        return claim_rows(f)
    loc, rem = f.get("local") or {}, f.get("remote") or {}
    none_l = "— not documented in the EHR —" if not loc else ""
    none_r = "— not in the billing system —" if not rem else ""

    def lv(v: Any) -> str:
        return none_l or (", ".join(v) if isinstance(v, list) else str(v or ""))

    def rv(v: Any) -> str:
        return none_r or (", ".join(v) if isinstance(v, list) else str(v or ""))

    rows = [
        ("patient.family", FIELD_LABEL["patient.family"], lv(loc.get("family")), rv(rem.get("patient_family"))),
        ("patient.given", FIELD_LABEL["patient.given"], lv(loc.get("given")), rv(rem.get("patient_given"))),
        ("patient.dob", FIELD_LABEL["patient.dob"], lv(loc.get("dob")), rv(rem.get("patient_dob"))),
        ("mrn", FIELD_LABEL["mrn"], lv(loc.get("mrn")), rv(rem.get("patient_mrn"))),
        ("date_of_service", FIELD_LABEL["date_of_service"], lv(loc.get("dos")), rv(rem.get("dos"))),
        ("rendering_npi", FIELD_LABEL["rendering_npi"], lv(loc.get("rendering_npi")), rv(rem.get("rendering_npi"))),
        ("diagnoses", FIELD_LABEL["diagnoses"], lv(loc.get("diagnoses")), rv(rem.get("diagnoses"))),
    ]
    codes: list[str] = []
    for ln in (loc.get("lines") or []) + (rem.get("lines") or []):
        if ln.get("code") not in codes:
            codes.append(ln.get("code", ""))
    for code in codes:
        a = next((ln for ln in loc.get("lines") or [] if ln.get("code") == code), None)
        b = next((ln for ln in rem.get("lines") or [] if ln.get("code") == code), None)
        ehr = none_l or (_line_text(a) if a else "— not documented —")
        rcm = none_r or (_line_text(b) if b else "— not billed —")
        rows.append((f"line {code}", f"Line {code}", ehr, rcm))
    known = {r[0] for r in rows}
    for d in f.get("diff") or []:  # anything the table above does not show: its own row
        fld = d.get("field", "")
        if fld not in known and not any(fld.startswith(k + ".") for k in known):
            rows.append((fld, fld, d.get("ehr", ""), d.get("rcm", "")))
            known.add(fld)
    return rows


def differing_keys(f: dict[str, Any], rows: list[tuple[str, str, str, str]]) -> dict[str, list[dict[str, str]]]:
    """Row key -> the diff entries that land on it ("line 99213.units" lands on "line 99213")."""
    keys = [r[0] for r in rows]
    out: dict[str, list[dict[str, str]]] = {}
    if f.get("kind") in CLAIM_KINDS:  # reasons, not field differences
        return out
    for d in f.get("diff") or []:
        fld = d.get("field", "")
        key = fld if fld in keys else next((k for k in keys if fld.startswith(k + ".")), fld)
        out.setdefault(key, []).append(d)
    return out


def _field_words(field: str) -> str:
    """'line 99213.units' -> 'Line 99213 units'; 'rendering_npi' -> 'Rendering NPI'."""
    if field in FIELD_LABEL:
        return FIELD_LABEL[field]
    head, _, sub = field.partition(".")
    head = FIELD_LABEL.get(head, head[:1].upper() + head[1:])
    return f"{head} {sub.replace('_', ' ')}".strip()


def _esc(s: str) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class IgnoreDialog(QDialog):
    """Asks why a mismatch is ignored: the reason is required and goes into the audit trail."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Ignore this mismatch")
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Ignoring closes the mismatch without changing anything. Say why — it is kept in "
                             "the activity trail."))
        form = QFormLayout()
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("e.g. billed manually; not billable; duplicate visit")
        self.reason.setToolTip("Required. Do not type patient details here.")
        form.addRow("&Reason:", self.reason)
        lay.addLayout(form)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok.setText("&Ignore mismatch")
        self.ok.setEnabled(False)
        self.ok.setToolTip("Type a reason first")
        self.reason.textChanged.connect(lambda t: self.ok.setEnabled(bool(t.strip())))
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)


class MismatchesPage(Page):
    name = "mismatches"
    title = "Mismatches"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.model = RecordsModel([
            Column("Kind", lambda r: KINDS.get(r["kind"], (r["kind"],))[0],
                   lambda r: KINDS.get(r["kind"], ("", ""))[1]),
            Column("Patient", _patient),
            Column("Date of service", lambda r: r.get("dos", "")),
            Column("Age", lambda r: f"{r.get('age_days', 0)} day{'s' if r.get('age_days', 0) != 1 else ''}",
                   lambda r: f"First found {when(r.get('first_seen', ''))}"
                   + (f"; came back {r['reopened']}×" if r.get("reopened") else "")),
            Column("Assignee", lambda r: r.get("assignee") or "—", lambda r: "Who is looking into it"),
        ], parent=self)
        self.current: dict[str, Any] | None = None
        self.highlighted: dict[str, list[dict[str, str]]] = {}
        self.ignore_dialog: IgnoreDialog | None = None

        self.list = record_table(self.model, "Open mismatches", self._selected)
        self.list.horizontalHeader().setStretchLastSection(True)
        for col, width in enumerate((150, 125, 95, 55)):
            self.list.setColumnWidth(col, width)
        self.empty, self.stack = with_empty_state(self.list, EMPTY)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.kind_label = QLabel("Select a mismatch to compare both sides.")
        self.kind_label.setWordWrap(True)
        self.kind_label.setStyleSheet("font-weight: 600;")
        rl.addWidget(self.kind_label)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.legend.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.legend.hide()
        rl.addWidget(self.legend)
        self.compare = QTableWidget(0, 3)
        self.compare.setHorizontalHeaderLabels(["Field", "EHR (documented)", "Billing system (RCM)"])
        self.compare.verticalHeader().hide()
        self.compare.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.compare.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        hh = self.compare.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.compare.setAccessibleName("EHR and billing system side by side")
        rl.addWidget(self.compare, 1)
        self.comments = QLabel("")
        self.comments.setWordWrap(True)
        rl.addWidget(self.comments)
        btns = QHBoxLayout()
        btns.addStretch(1)
        self.buttons: dict[str, QPushButton] = {}
        for action, (text, tip) in ACTIONS.items():
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False, a=action: self._action_clicked(a))
            btns.addWidget(b)
            self.buttons[action] = b
        rl.addLayout(btns)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.stack)
        split.addWidget(right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        self._outer.addWidget(split, 1)
        self.apply_role()

    # -- roles ----------------------------------------------------------------------------------
    def apply_role(self) -> None:
        allowed = (self.current or {}).get("actions") or []
        kind = KINDS.get((self.current or {}).get("kind", ""), ("",))[0]
        possible = ", ".join(ACTIONS[a][0].replace("&", "").rstrip("…") for a in allowed) or "none"
        for action, b in self.buttons.items():
            if self.current is None:
                gate(b, self.session, Role.MANAGER, ACTIONS[action][1], extra_ok=False,
                     extra_tip="Select a mismatch first")
            else:
                gate(b, self.session, Role.MANAGER, ACTIONS[action][1], extra_ok=action in allowed,
                     extra_tip=f"Does not apply to “{kind}”. Possible here: {possible}")

    # -- data ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.client.call("GET", "/api/v1/mismatches", params=RecordsModel.PARAMS, on_ok=alive(self, self._loaded),
                         on_error=alive(self, lambda f: self.banner.show_failure(f, "load the mismatches")))

    def _loaded(self, answer: Any) -> None:
        keep = self.current["id"] if self.current else None
        try:
            self.model.set_page(answer)
        except ValueError:
            self.banner.show_failure(unreadable_answer(), "load the mismatches")
            return
        items = self.model.rows
        if self.model.truncated:
            self.banner.show_text(f"Showing the first {len(items):,} of {self.model.total:,} open mismatches.")
        self.stack.setCurrentWidget(self.list if items else self.empty)
        reselect(self.list, items, "id", keep, self.show_finding)

    def _selected(self, *_: Any) -> None:
        rows = self.list.selectionModel().selectedRows()
        self.show_finding(self.model.row(rows[0].row()) if rows else None)

    def show_finding(self, f: dict[str, Any] | None) -> None:
        self.current = f
        self.apply_role()
        self.compare.setRowCount(0)
        self.highlighted = {}
        if f is None:
            self.kind_label.setText("Select a mismatch to compare both sides.")
            self.legend.hide()
            self.comments.setText("")
            return
        title, desc = KINDS.get(f["kind"], (f["kind"], ""))
        self.kind_label.setText(f"{title}: {desc}")
        claim = f["kind"] in CLAIM_KINDS
        self.compare.setHorizontalHeaderLabels(["Claim / reason", "What the payer said", "Amount / state"] if claim
                                               else ["Field", "EHR (documented)", "Billing system (RCM)"])
        rows = side_by_side(f)
        self.highlighted = differing_keys(f, rows)
        self.legend.setVisible(bool(self.highlighted))
        self.legend.setText("" if claim else (
            "<span style='background:#ffe08a'>&nbsp;≠ highlighted&nbsp;</span> rows differ: "
            + "; ".join(f"<b>{_field_words(d['field'])}</b> EHR {_esc(d['ehr'])}, RCM {_esc(d['rcm'])}"
                        for d in f.get("diff") or [])))
        self.compare.setRowCount(len(rows))
        bold = QFont()
        bold.setBold(True)
        for i, (key, label, ehr, rcm) in enumerate(rows):
            diffs = self.highlighted.get(key)
            items = [QTableWidgetItem(("≠ " if diffs else "") + label), QTableWidgetItem(ehr),
                     QTableWidgetItem(rcm)]
            for it in items:
                if diffs:
                    it.setBackground(QBrush(HIGHLIGHT))
                    it.setFont(bold)
                    it.setToolTip("Differs: " + "; ".join(
                        f"{d['field']}: EHR {d['ehr']} | RCM {d['rcm']}" for d in diffs))
            for col, it in enumerate(items):
                self.compare.setItem(i, col, it)
        if claim and f.get("diff") and self.session.at_least(Role.CODER):
            self._describe_reasons(f)
        comments = f.get("comments") or []
        self.comments.setText("\n".join(f"{c.get('by', '')}: {c.get('text', '')}" for c in comments[-3:]))

    def _describe_reasons(self, f: dict[str, Any]) -> None:
        """The reason codes' descriptions come with the claim (the engine's code lists)."""
        from urllib.parse import quote

        claim_id = str((f.get("remote") or {}).get("claim_id") or "")
        if not claim_id:
            return
        fid = f["id"]

        def got(d: Any) -> None:
            if self.current is None or self.current.get("id") != fid or not isinstance(d, dict):
                return
            from ui.pages.claims import reason_code

            text = {reason_code(r): r.get("text") or "" for r in d.get("reasons") or [] if isinstance(r, dict)}
            for i in range(self.compare.rowCount()):
                head = self.compare.item(i, 0)
                desc = text.get(head.text()[7:]) if head is not None and head.text().startswith("Reason ") else ""
                if desc:
                    cell = QTableWidgetItem(desc)
                    cell.setToolTip(desc)
                    self.compare.setItem(i, 1, cell)

        self.client.call("GET", f"/api/v1/claims/{quote(claim_id, safe='')}", on_ok=alive(self, got),
                         on_error=lambda _f: None)  # the codes stay shown without descriptions

    # -- actions ------------------------------------------------------------------------------
    def _action_clicked(self, action: str) -> None:
        if self.current is None:
            return
        fid = self.current["id"]
        if action == ResolveAction.IGNORE:
            self.session.guard(lambda: self._ask_reason(fid), "ignore the mismatch")
        else:
            verb = ("re-send the EHR version" if action == ResolveAction.RESEND
                    else "accept the billing system's version")
            self.session.guard(lambda: self.resolve(fid, action), verb)

    def _ask_reason(self, fid: int) -> None:
        if self.ignore_dialog is not None:
            self.ignore_dialog.deleteLater()
        dlg = IgnoreDialog(self)
        self.ignore_dialog = dlg
        dlg.accepted.connect(lambda: self.resolve(fid, ResolveAction.IGNORE, dlg.reason.text().strip()))
        dlg.open()  # window-modal, without a nested event loop

    def resolve(self, fid: int, action: str, reason: str = "",
                then: Callable[[dict[str, Any]], None] | None = None) -> None:
        for b in self.buttons.values():
            b.setEnabled(False)

        def done(out: dict[str, Any]) -> None:
            self.banner.show_text(f"Mismatch {out.get('id', fid)} is now {out.get('status', 'closed')}.", "ok")
            self.session.message.emit("Mismatch updated")
            self.current = None
            self.refresh()
            if then:
                then(out)

        def fail(f: ApiFailure) -> None:
            self.apply_role()
            self.banner.show_failure(f, "update the mismatch")

        self.client.call("POST", f"/api/v1/mismatches/{fid}/resolve", json={"action": action, "reason": reason},
                         on_ok=alive(self, done), on_error=alive(self, fail), timeout=120)
