"""Claims: what happened to each delivered claim at the clearinghouse and the payer (H4).

The list shows every claim with its state (a symbol AND a colour, so it does not rely on
colour alone), amounts, and whether a rejected / denied claim waits in the mismatch queue; a
filter asks the engine for one state. The detail shows the reasons with their descriptions and
the history of answers (999, 277CA, 835, FHIR ClaimResponse). The history carries remittance
detail, so the engine shows it to coders and up; the front desk sees states, amounts and
reasons from the list.

The dashboard opens it with a filter (H15): ``open_with`` takes GET /claims' query string
(``state=denied&reason=CO-16&from=…&to=…&provider=…&payer=…``, or ``age=`` / ``lag=`` for a
bucket), so the list holds exactly the claims behind the figure clicked. The filter is shown
in words above the list with a **Clear** button; picking another state replaces the filter's.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, quote

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.states import ClaimState, Role
from ui.client import ApiFailure, unreadable_answer
from ui.models import Column, RecordsModel
from ui.pages import (
    Page,
    Session,
    alive,
    needs_role_text,
    record_table,
    reselect,
    short_date,
    when,
    with_empty_state,
)

# state -> (label, symbol, colour, what it means)
STATE_LOOK: dict[str, tuple[str, str, str, str]] = {
    ClaimState.SUBMITTED: ("Submitted", "↑", "#5f6b7a", "Sent; no answer from the clearinghouse or payer yet"),
    ClaimState.ACCEPTED: ("Accepted", "✓", "#1565c0", "Taken in by the clearinghouse / payer; not adjudicated yet"),
    ClaimState.REJECTED: ("Rejected", "✕", "#c62828", "Refused before adjudication: correct and resend"),
    ClaimState.PAID: ("Paid", "$", "#2e7d32", "Adjudicated and paid what the payer allows"),
    ClaimState.PARTIALLY_PAID: ("Partially paid", "½", "#ef6c00", "Paid in part: see the reasons for the rest"),
    ClaimState.DENIED: ("Denied", "⊘", "#ad1457", "Adjudicated and not paid: see the reasons"),
}
STATES: list[tuple[str, str]] = [("", "All states")] + [(s.value, STATE_LOOK[s][0]) for s in ClaimState]
KIND_LABEL = {"999": "999 file acknowledgment", "277CA": "277CA claim acknowledgment", "835": "835 remittance",
              "ClaimResponse": "FHIR ClaimResponse"}
EMPTY = ("No claims yet — a claim appears here when sync delivers an encounter to the billing system, "
         "and moves as the clearinghouse and payer answer.")
_icons: dict[str, QIcon] = {}


def state_label(state: str) -> str:
    look = STATE_LOOK.get(state)
    return f"{look[1]} {look[0]}" if look else state


def state_icon(state: str) -> QIcon:
    """A filled dot in the state's colour (the label carries the symbol too)."""
    icon = _icons.get(state)
    if icon is None:
        pm = QPixmap(14, 14)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setBrush(QBrush(QColor(STATE_LOOK.get(state, ("", "", "#999999", ""))[2])))
        p.setPen(Qt.PenStyle.NoPen)
        p.drawEllipse(1, 1, 12, 12)
        p.end()
        icon = _icons[state] = QIcon(pm)
    return icon


def reason_code(r: dict[str, Any]) -> str:
    """``CO-45``, ``RARC N362``, ``STC A7:21``."""
    code = f"{r.get('group')}-{r.get('code')}" if r.get("group") else str(r.get("code", ""))
    kind = str(r.get("kind", ""))
    return code if kind in ("carc", "") else f"{kind.upper()} {code}"


def reason_description(r: dict[str, Any]) -> str:
    return str(r.get("text") or "")


def _money(v: Any) -> str:
    try:
        return f"${Decimal(str(v)):,.2f}" if v not in (None, "") else "—"
    except InvalidOperation:
        return "—"


def _day(iso: str) -> str:
    return iso if len(iso or "") == 10 else short_date(iso or "")


ADJUDICATED = (ClaimState.PAID, ClaimState.PARTIALLY_PAID, ClaimState.DENIED)
DRILL_KEYS = ("state", "reason", "age", "lag", "from", "to", "provider", "payer")  # GET /claims' filters


def parse_filter(arg: str) -> dict[str, list[str]]:
    """A dashboard drill's query string -> {filter: values}; unknown names are dropped."""
    out: dict[str, list[str]] = {}
    for k, v in parse_qsl(arg, keep_blank_values=False):
        if k in DRILL_KEYS and v:
            out.setdefault(k, []).append(v)
    return out


def describe_filter(f: dict[str, list[str]]) -> str:
    """``Denial reason CO-16 · DOS 2025-03-01–2025-03-31 · provider 1234567893`` — the filter in words."""
    parts = []
    states = f.get("state") or []
    if states and not (len(states) == 1 and f.get("reason")):
        parts.append("State " + ", ".join(STATE_LOOK[ClaimState(s)][0] if s in ClaimState._value2member_map_
                                           else s for s in states))
    if f.get("reason"):
        parts.append(("Denial reason " if states == [ClaimState.DENIED] else "Reason ") + f["reason"][0])
    if f.get("age"):
        parts.append(f"Waiting {f['age'][0]} days (open claims)")
    if f.get("lag"):
        parts.append(f"Delivered {f['lag'][0]} days after the visit")
    lo, hi = (f.get("from") or [""])[0], (f.get("to") or [""])[0]
    if lo or hi:
        parts.append(f"DOS {lo or '…'}–{hi or '…'}")
    for k in ("provider", "payer"):
        if f.get(k):
            parts.append(f"{k} {f[k][0]}")
    return " · ".join(parts)


class ClaimsModel(RecordsModel):
    def extra_data(self, row: dict[str, Any], column: int, role: int) -> Any:
        if column != 0:
            return None
        if role == Qt.ItemDataRole.DecorationRole:
            return state_icon(row.get("state", ""))
        if role == Qt.ItemDataRole.ForegroundRole:
            return QBrush(QColor(STATE_LOOK.get(row.get("state", ""), ("", "", "#000000", ""))[2]))
        return None


class ClaimsPage(Page):
    name = "claims"
    title = "Claims"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.model = ClaimsModel([
            Column("State", lambda r: state_label(r.get("state", ""))
                   + ("  • in queue" if r.get("in_mismatch_queue") else ""),
                   lambda r: STATE_LOOK.get(r.get("state", ""), ("", "", "", ""))[3]
                   + ("; waiting in the mismatch queue" if r.get("in_mismatch_queue") else "")),
            Column("Claim", lambda r: r.get("claim_id", ""), lambda r: "Our claim id (CLM01 / FHIR Claim identifier)"),
            Column("Date of service", lambda r: r.get("dos", "")),
            Column("Billed", lambda r: _money(r.get("billed")), align_right=True),
            Column("Paid", lambda r: _money(r.get("paid")) if r.get("state") in ADJUDICATED else "—",
                   align_right=True),
            Column("Reasons", lambda r: ", ".join(reason_code(x) for x in r.get("reasons") or []),
                   lambda r: "\n".join(f"{reason_code(x)} {reason_description(x)}".strip()
                                       for x in r.get("reasons") or [])),
        ], parent=self)
        self.current: dict[str, Any] | None = None
        self.detail: dict[str, Any] | None = None
        self._detail_request = 0
        self.drill: dict[str, list[str]] = {}  # the dashboard's filter, while shown
        self.loads = 0  # answers put on screen (tests wait on it)

        bar = QHBoxLayout()
        st = QLabel("Sho&w:")
        self.state = QComboBox()
        for key, text in STATES:
            self.state.addItem(text, key)
        self.state.setToolTip("Show only claims in this state (filtered by the engine)")
        st.setBuddy(self.state)
        self.state.currentIndexChanged.connect(lambda _: self._state_picked())
        bar.addWidget(st)
        bar.addWidget(self.state)
        bar.addStretch(1)
        self.count_label = QLabel("")
        self.count_label.setAccessibleName("How many claims are shown")
        bar.addWidget(self.count_label)
        self._outer.addLayout(bar)
        frow = QHBoxLayout()
        self.filter_label = QLabel("")
        self.filter_label.setWordWrap(True)
        self.filter_label.setStyleSheet("color: #0d47a1; font-weight: 600;")
        self.filter_label.setAccessibleName("Filter from the dashboard")
        self.clear_btn = QPushButton("&Clear filter")
        self.clear_btn.setToolTip("Show every claim again")
        self.clear_btn.clicked.connect(self.clear_filter)
        frow.addWidget(self.filter_label, 1)
        frow.addWidget(self.clear_btn)
        self._outer.addLayout(frow)
        self._show_filter()

        self.list = record_table(self.model, "Claims", self._selected)
        self.list.setWordWrap(False)
        self.list.horizontalHeader().setStretchLastSection(True)
        for col, width in enumerate((185, 150, 100, 80, 80)):
            self.list.setColumnWidth(col, width)
        self.empty, self.stack = with_empty_state(self.list, EMPTY)

        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        self.head = QLabel("Select a claim to see its reasons and the answers it received.")
        self.head.setWordWrap(True)
        self.head.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        rl.addWidget(self.head)
        self.queue_note = QLabel("")
        self.queue_note.setWordWrap(True)
        self.queue_note.setStyleSheet("color: #ad1457; font-weight: 600;")
        self.queue_btn = QPushButton("Open in &Mismatches")
        self.queue_btn.setToolTip("A manager corrects and resends (or ignores) it there")
        self.queue_btn.clicked.connect(lambda: self.session.navigate.emit("mismatches", ""))
        qrow = QHBoxLayout()
        qrow.addWidget(self.queue_note, 1)
        qrow.addWidget(self.queue_btn)
        rl.addLayout(qrow)
        rl.addWidget(QLabel("<b>Reasons</b>"))
        self.reasons = self._table(["Code", "Description", "Amount"], "Reason codes with their descriptions")
        rl.addWidget(self.reasons, 1)
        rl.addWidget(QLabel("<b>Answers, oldest first</b>"))
        self.answers = self._table(["Date", "Answer", "State", "Paid / adjusted / patient"], "History of answers",
                                   stretch=3)
        rl.addWidget(self.answers, 2)
        self.history_note = QLabel("")
        self.history_note.setWordWrap(True)
        rl.addWidget(self.history_note)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.stack)
        split.addWidget(right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setSizes([660, 600])
        self._outer.addWidget(split, 1)
        self.show_claim(None)

    @staticmethod
    def _table(headers: list[str], name: str, stretch: int = 1) -> QTableWidget:
        t = QTableWidget(0, len(headers))
        t.setHorizontalHeaderLabels(headers)
        t.verticalHeader().hide()
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.setWordWrap(True)
        hh = t.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
        t.setAccessibleName(name)
        return t

    def focus_filter(self) -> bool:
        self.state.setFocus()
        return True

    def open_with(self, arg: str) -> None:
        """``arg``: a state, or a dashboard drill's GET /claims query string (see the module text)."""
        if "=" in arg:
            self.drill = parse_filter(arg)
            states = self.drill.get("state") or []
            self.state.blockSignals(True)
            self.state.setCurrentIndex(max(self.state.findData(states[0]), 0) if len(states) == 1 else 0)
            self.state.blockSignals(False)
            self._show_filter()
            self.refresh()
            return
        if self.drill:
            self.drill = {}
            self._show_filter()
        i = self.state.findData(arg)
        if i >= 0 and i != self.state.currentIndex():
            self.state.setCurrentIndex(i)  # refreshes
        else:
            self.refresh()

    def _state_picked(self) -> None:
        if self.drill.get("state"):  # a state picked by hand replaces the filter's states
            self.drill.pop("state")
            self._show_filter()
        self.refresh()

    def clear_filter(self) -> None:
        """Every claim again (the state the filter chose goes too)."""
        self.drill = {}
        self.state.blockSignals(True)
        self.state.setCurrentIndex(0)
        self.state.blockSignals(False)
        self._show_filter()
        self.refresh()

    def _show_filter(self) -> None:
        text = describe_filter(self.drill)
        self.filter_label.setText(f"Showing: {text}" if text else "")
        self.filter_label.setVisible(bool(text))
        self.clear_btn.setVisible(bool(text))

    # -- data -----------------------------------------------------------------------------------
    def refresh(self) -> None:
        params: dict[str, Any] = {**RecordsModel.PARAMS, **self.drill}
        if self.state.currentData():
            params["state"] = self.state.currentData()
        self.client.call("GET", "/api/v1/claims", params=params, on_ok=alive(self, self._loaded),
                         on_error=alive(self, lambda f: self.banner.show_failure(f, "load the claims")))

    def _loaded(self, answer: Any) -> None:
        keep = self.current["claim_id"] if self.current else None
        try:
            self.model.set_page(answer)
        except ValueError:
            self.banner.show_failure(unreadable_answer(), "load the claims")
            return
        self.loads += 1
        items = self.model.rows
        shown = f"{len(items):,} of {self.model.total:,}" if self.model.truncated else f"{len(items):,}"
        self.count_label.setText(f"{shown} claim{'s' if self.model.total != 1 else ''}")
        self.stack.setCurrentWidget(self.list if items else self.empty)
        reselect(self.list, items, "claim_id", keep, self.show_claim)

    def _selected(self, *_: Any) -> None:
        rows = self.list.selectionModel().selectedRows()
        self.show_claim(self.model.row(rows[0].row()) if rows else None)

    def show_claim(self, c: dict[str, Any] | None) -> None:
        self.current = c
        self.detail = None
        self.answers.setRowCount(0)
        if c is None:
            self.head.setText("Select a claim to see its reasons and the answers it received.")
            self.reasons.setRowCount(0)
            self.queue_note.hide()
            self.queue_btn.hide()
            self.history_note.setText("")
            return
        look = STATE_LOOK.get(c["state"], (c["state"], "", "#000000", ""))
        control = ", ".join(f"{k} {v}" for k, v in sorted((c.get("control") or {}).items()))
        dates = [f"submitted {short_date(c.get('submitted_at', ''))}"]
        if c.get("answered_at"):
            dates.append(f"answered {_day(c['answered_at'])}")
        if c.get("adjudicated_on"):
            dates.append(f"adjudicated {c['adjudicated_on']}")
        self.head.setText(
            f"<span style='color:{look[2]}; font-size: 13pt'><b>{look[1]} {look[0]}</b></span> — {look[3]}<br>"
            f"Claim <b>{_esc(c['claim_id'])}</b> · encounter {c.get('encounter_id') or '—'} · date of service "
            f"{c.get('dos') or '—'} · via {_esc(c.get('target', ''))}"
            + (f" · payer claim {_esc(c['payer_claim_id'])}" if c.get("payer_claim_id") else "") + "<br>"
            f"Billed {_money(c.get('billed'))} · paid {_money(c.get('paid'))} · adjusted {_money(c.get('adjusted'))}"
            f" · patient {_money(c.get('patient_resp'))}<br>{' · '.join(dates)}"
            + (f"<br><small>Control numbers: {_esc(control)}</small>" if control else ""))
        queued = bool(c.get("in_mismatch_queue"))
        self.queue_note.setText(f"Waiting in the mismatch queue (#{c.get('finding_id')}): correct and resend, "
                                "or ignore with a reason." if queued else "")
        self.queue_note.setVisible(queued)
        self.queue_btn.setVisible(queued)
        self._fill_reasons(c.get("reasons") or [])
        if not self.session.at_least(Role.CODER):
            self.history_note.setText("The history of answers: " + needs_role_text(Role.CODER, self.session.role))
            return
        self.history_note.setText("Loading the answers…")
        self._detail_request += 1
        req = self._detail_request
        self.client.call("GET", f"/api/v1/claims/{quote(c['claim_id'], safe='')}",
                         on_ok=alive(self, lambda d: self._detail_loaded(req, d)),
                         on_error=alive(self, lambda f: self._detail_failed(req, f)))

    def _fill_reasons(self, reasons: list[dict[str, Any]]) -> None:
        self.reasons.setRowCount(len(reasons))
        for i, r in enumerate(reasons):
            for col, text in enumerate((reason_code(r), reason_description(r) or "(no description)",
                                        f"${r['amount']}" if r.get("amount") else "")):
                it = QTableWidgetItem(text)
                it.setToolTip(f"{reason_code(r)} {reason_description(r)}".strip())
                self.reasons.setItem(i, col, it)

    def _detail_loaded(self, req: int, d: Any) -> None:
        if req != self._detail_request:
            return  # an answer for a claim no longer selected
        if not isinstance(d, dict) or not isinstance(d.get("answers"), list):
            self._detail_failed(req, unreadable_answer())
            return
        self.detail = d
        self._fill_reasons(d.get("reasons") or [])
        answers = d["answers"]
        self.answers.setRowCount(len(answers))
        for i, a in enumerate(answers):
            det = a.get("detail") or {}
            amounts = " / ".join(_money(det.get(k)) for k in ("paid", "adjusted", "patient_resp"))
            codes = ", ".join(reason_code(r) for r in det.get("reasons") or [])
            cells = (_day(a.get("answered_on") or a.get("received_at", "")),
                     KIND_LABEL.get(a.get("kind", ""), a.get("kind", "")),
                     state_label(a.get("state", "")) or "(no state)", amounts + (f"  [{codes}]" if codes else ""))
            for col, text in enumerate(cells):
                it = QTableWidgetItem(text)
                it.setToolTip(f"received {when(a.get('received_at', ''))}")
                self.answers.setItem(i, col, it)
        self.history_note.setText("" if answers else "No answers yet: the claim is waiting for the "
                                                     "clearinghouse or payer.")

    def _detail_failed(self, req: int, f: ApiFailure) -> None:
        if req != self._detail_request:
            return
        self.history_note.setText("")
        self.banner.show_failure(f, "load the claim's answers")


def _esc(s: str) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
