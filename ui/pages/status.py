"""Status: is everything flowing, and if not, what needs a person — one click away."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCommandLinkButton,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from core.states import DocumentStatus, EncounterState, EngineState, OutboxState, Role
from ui.alerts import active_alerts, presented_state
from ui.client import ApiFailure
from ui.common import page_items
from ui.pages import Page, Session, alive, gate, parse_ts, relative, when
from ui.pages.checklist_box import ChecklistBox

STATE_TEXT: dict[str, tuple[str, str]] = {
    EngineState.IDLE: ("All good", "#1b7f3b"),
    EngineState.SYNCING: ("Sending charges…", "#1f5fbf"),
    EngineState.PAUSED: ("Sync is paused", "#4b5563"),
    EngineState.ATTENTION: ("Needs attention", "#9a6b00"),
    EngineState.ERROR: ("Problem", "#c62828"),
    EngineState.OFFLINE: ("Engine not reachable", "#6b7280"),
}


def _state_icon(state: str) -> Any:
    try:
        from ui.icons import state_icon

        return state_icon(state)
    except Exception:  # the icon set is optional here; the text carries the state
        return None


class StatusPage(Page):
    name = "status"
    title = "Status"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.last: dict[str, Any] = {}
        self.mismatch_count = 0
        lay = self._outer

        head = QHBoxLayout()
        self.icon = QLabel()
        self.icon.setFixedSize(40, 40)
        head.addWidget(self.icon)
        col = QVBoxLayout()
        self.state_label = QLabel("Loading…")
        self.state_label.setStyleSheet("font-size: 18pt; font-weight: 600;")
        self.state_label.setAccessibleName("Engine state")
        self.reason_label = QLabel("")
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        col.addWidget(self.state_label)
        col.addWidget(self.reason_label)
        head.addLayout(col, 1)
        self.sync_btn = QPushButton("S&ync now")
        self.sync_btn.setToolTip("Send ready charges to the billing system now, even outside business hours")
        self.sync_btn.clicked.connect(self.sync_now)
        self.pause_btn = QPushButton("&Pause sync")
        self.pause_btn.clicked.connect(lambda: self.session.guard(lambda: self._post("/api/v1/pause", "pause sync"),
                                                                  "pause sync"))
        self.resume_btn = QPushButton("Res&ume sync")
        self.resume_btn.clicked.connect(lambda: self.session.guard(lambda: self._post("/api/v1/resume",
                                                                                      "resume sync"), "resume sync"))
        for b in (self.sync_btn, self.pause_btn, self.resume_btn):
            head.addWidget(b, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(head)

        # active alerts (agent/alerts.py via /status "alerts"): what is wrong and what to do
        self.alert_box = QGroupBox("Alerts")
        self.alert_box.setObjectName("status-alerts")
        self.alert_box.setStyleSheet("QGroupBox#status-alerts { background: #fff7e0; border: 1px solid #e0b040; "
                                     "border-radius: 4px; margin-top: 1.2em; padding-top: 4px; } "
                                     "QGroupBox#status-alerts::title { color: #9a6b00; font-weight: 600; "
                                     "subcontrol-origin: margin; left: 8px; }")
        self.alert_lay = QVBoxLayout(self.alert_box)
        self.alert_labels: list[QLabel] = []
        self.alert_box.setVisible(False)
        lay.addWidget(self.alert_box)

        # what needs a person: one click to the page where it is fixed
        self.attention_box = QGroupBox("Needs attention")
        self.attention_lay = QVBoxLayout(self.attention_box)
        self.attention_buttons: list[QCommandLinkButton] = []
        lay.addWidget(self.attention_box)
        # the first-week checklist (manager / admin; hidden once dismissed): ui/pages/checklist_box.py
        self.checklist = ChecklistBox(session)
        self.checklist.failed.connect(lambda f: self.banner.show_failure(f, "update the first-week checklist"))
        lay.addWidget(self.checklist)

        grid = QHBoxLayout()
        enc = QGroupBox("Encounters")
        g = QGridLayout(enc)
        self.count_labels: dict[str, QLabel] = {}
        for i, (key, text, tip) in enumerate((
                (EncounterState.READY, "Ready to send", "Validated encounters waiting for (or already through) sync"),
                (EncounterState.NEEDS_REVIEW, "Need review", "Encounters with validation errors to fix in the EHR"),
                (EncounterState.EXPECTED, "Expected visits", "Scheduled visits with no charge documented yet"),
                (DocumentStatus.QUARANTINED, "In quarantine",
                 "Files that could not be read; see the Quarantine page"))):
            self.count_labels[key] = self._row(g, i, text, tip)
        grid.addWidget(enc, 1)
        out = QGroupBox("Sending to the billing system")
        g = QGridLayout(out)
        self.outbox_labels: dict[str, QLabel] = {}
        for i, (key, text, tip) in enumerate((
                (OutboxState.QUEUED, "Queued", "Waiting for the next sync"),
                (OutboxState.FAILED, "Retrying", ("A send failed for a reason that may pass (network, busy server); "
                                                  "it is retried automatically")),
                (OutboxState.DELIVERED, "Delivered", "Accepted by the billing system"),
                (OutboxState.REJECTED, "Rejected",
                 "Refused by the billing system; the reason is on the Encounters page"))):
            self.outbox_labels[key] = self._row(g, i, text, tip)
        self.last_sync_label = self._row(g, 4, "Last sync", "When charges were last sent, and what happened")
        self.next_sync_label = self._row(g, 5, "Next sync", "The next scheduled run (inside business hours)")
        grid.addWidget(out, 1)
        lay.addLayout(grid)

        conn = QGroupBox("Connections")
        self.conn_lay = QVBoxLayout(conn)
        self.conn_labels: list[QLabel] = []
        lay.addWidget(conn)
        lay.addStretch(1)
        self.apply_role()

    @staticmethod
    def _row(g: QGridLayout, i: int, text: str, tip: str) -> QLabel:
        name = QLabel(text)
        name.setToolTip(tip)
        val = QLabel("–")
        val.setToolTip(tip)
        val.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        val.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        val.setWordWrap(True)
        g.addWidget(name, i, 0)
        g.addWidget(val, i, 1)
        return val

    # -- roles --------------------------------------------------------------------------------
    def apply_role(self) -> None:
        paused = bool(self.last.get("paused"))
        gate(self.pause_btn, self.session, Role.MANAGER, "Stop sending charges until you resume (watching and "
             "checking exports go on)", extra_ok=not paused, extra_tip="Sync is already paused")
        gate(self.resume_btn, self.session, Role.MANAGER, "Start sending charges again, and catch up now",
             extra_ok=paused, extra_tip="Sync is running; nothing to resume")

    # -- data ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.client.call("GET", "/api/v1/status", on_ok=alive(self, self.show_status),
                         on_error=alive(self, self._failed))
        self.client.call("GET", "/api/v1/mismatches", params={"page": 1, "page_size": 1},
                         on_ok=alive(self, self._mismatches),
                         on_error=alive(self, lambda f: None))  # the status call reports reachability
        self.checklist.refresh()

    def _failed(self, failure: ApiFailure) -> None:
        if failure.status == 0:  # no answer at all: show it as the offline state, not stale numbers
            self.show_status({"state": EngineState.OFFLINE, "reason": failure.title})
        self.banner.show_failure(failure, "load the status")

    def _mismatches(self, answer: Any) -> None:
        try:
            self.mismatch_count = page_items(answer)[1]
        except ValueError:
            return  # the status call reports what is wrong with the engine
        self._attention()

    def show_status(self, st: dict[str, Any]) -> None:
        self.last = st
        state = str(st.get("state") or EngineState.OFFLINE)
        alerts = active_alerts(st)
        if state in EngineState.__members__.values():  # amber while an alert holds (ui/alerts.py)
            state = presented_state(EngineState(state), alerts)
        text, color = STATE_TEXT.get(state, (state, "#333"))
        self.state_label.setText(text)
        self.state_label.setStyleSheet(f"font-size: 18pt; font-weight: 600; color: {color};")
        icon = _state_icon(state)
        if icon is not None:
            self.icon.setPixmap(icon.pixmap(40, 40))
        reason = st.get("reason", "")
        if state == EngineState.ATTENTION:  # the list below says what, with a link to each; no need to repeat it
            reason = "Everything else is flowing. The items below need a person."
        self.reason_label.setText(reason[:1].upper() + reason[1:] if reason else "Nothing needs you right now.")
        if state != EngineState.OFFLINE:
            self.banner.hide()
        counts = st.get("counts", {})
        for k, lab in self.count_labels.items():
            lab.setText(f"{counts.get(k, 0):,}")
        outbox = st.get("outbox", {})
        for k, lab in self.outbox_labels.items():
            lab.setText(f"{outbox.get(k, 0):,}")
        self.last_sync_label.setText(self._last_sync_text(st.get("last_sync") or {}))
        nxt = st.get("next_sync", "")
        has_rcm = any(c.get("kind") == "rcm" for c in st.get("connectors", []))
        if state != EngineState.OFFLINE and not has_rcm:
            self.next_sync_label.setText("no billing system set up — add it in Settings")
        elif st.get("paused"):
            self.next_sync_label.setText("paused — press Resume sync")
        elif nxt:
            dt = parse_ts(nxt)
            secs = (dt - datetime.now(UTC)).total_seconds() if dt else 0
            self.next_sync_label.setText(f"{when(nxt).split(' (')[0]} ({relative(-secs) if secs > 0 else 'now'})")
        else:
            self.next_sync_label.setText("not scheduled")
        self._connectors(st.get("connectors", []))
        self._alerts(alerts if state != EngineState.OFFLINE else [])
        self._attention()
        self.apply_role()

    @staticmethod
    def _last_sync_text(last: dict[str, Any]) -> str:
        if not last:
            return "never"
        head = when(last.get("at", ""))
        if last.get("skipped"):
            return f"{head}: did nothing — {last['skipped']}"
        if last.get("error"):
            return f"{head}: failed — {last['error']}"
        return f"{head}: {last.get('delivered', 0)} delivered, {last.get('rejected', 0)} rejected"

    def _connectors(self, conns: list[dict[str, Any]]) -> None:
        for lab in self.conn_labels:
            lab.deleteLater()
        self.conn_labels = []
        if not self.last or self.last.get("state") == EngineState.OFFLINE:
            return
        if not any(c.get("kind") == "ehr" for c in conns):
            conns = [*conns, {"kind": "ehr", "healthy": False, "name": "",
                              "detail": "none is watched yet: add the EHR's export folder in Settings"}]
        if not any(c.get("kind") == "rcm" for c in conns):
            conns = [*conns, {"kind": "rcm", "healthy": False, "name": "",
                              "detail": "not set up yet: charges are checked but not sent; add it in Settings → "
                                        "Billing system"}]
        for c in conns:
            ok = c.get("healthy")
            name = str(c.get("name", ""))
            kind = "Export folder" if c.get("kind") == "ehr" else "Billing system"
            name = name.split(" ", 1)[1] if " " in name else name
            lab = QLabel(f"<span style='color:{'#1b7f3b' if ok else '#c62828'}'>{'✔' if ok else '✖'}</span> "
                         f"<b>{kind}</b>{' ' + _esc(name) if name else ''} — {_esc(str(c.get('detail', '')))}")
            lab.setWordWrap(True)
            lab.setToolTip("Working" if ok else "Not working: " + str(c.get("detail", "")))
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.conn_lay.addWidget(lab)
            self.conn_labels.append(lab)

    def _alerts(self, alerts: list[dict[str, Any]]) -> None:
        for lab in self.alert_labels:
            lab.deleteLater()
        self.alert_labels = []
        self.alert_box.setTitle(f"Alert{'s' if len(alerts) != 1 else ''} ({len(alerts)})")
        self.alert_box.setVisible(bool(alerts))
        for a in alerts:
            title = str(a["title"])
            since = f" <span style='color:#6b7280'>(since {_esc(when(str(a['since'])))})</span>" \
                if a.get("since") else ""
            fix = str(a.get("fix") or "")
            lab = QLabel(f"<b>⚠ {_esc(title[:1].upper() + title[1:])}</b>{since}"
                         + (f"<br>What to do: {_esc(fix)}" if fix else ""))
            lab.setWordWrap(True)
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lab.setAccessibleName(f"Alert: {title}")
            self.alert_lay.addWidget(lab)
            self.alert_labels.append(lab)

    def _attention(self) -> None:
        for b in self.attention_buttons:
            b.deleteLater()
        self.attention_buttons = []
        st = self.last
        counts, outbox = st.get("counts", {}), st.get("outbox", {})
        items = []
        if counts.get(DocumentStatus.QUARANTINED):
            n = counts[DocumentStatus.QUARANTINED]
            items.append((f"{n} file{'s' if n != 1 else ''} in quarantine",
                          "They could not be read. Open the Quarantine page to see why, fix and reprocess.",
                          "quarantine", ""))
        if counts.get(EncounterState.NEEDS_REVIEW):
            n = counts[EncounterState.NEEDS_REVIEW]
            items.append((f"{n} encounter{'s' if n != 1 else ''} need{'s' if n == 1 else ''} review",
                          "Validation found errors; fix them in the EHR and export again.",
                          "encounters", EncounterState.NEEDS_REVIEW))
        if self.mismatch_count:
            n = self.mismatch_count
            items.append((f"{n} open mismatch{'es' if n != 1 else ''} with the billing system",
                          "What the EHR documented differs from what the RCM holds.", "mismatches", ""))
        if outbox.get("rejected"):
            n = outbox["rejected"]
            items.append((f"{n} charge{'s' if n != 1 else ''} rejected by the billing system",
                          "The RCM's reason is shown on the Encounters page (Billing system column).",
                          "encounters", ""))
        self.attention_box.setVisible(bool(items))
        for title, desc, page, arg in items:
            b = QCommandLinkButton(title, desc)
            b.setToolTip(f"Open the {page.title()} page")
            b.clicked.connect(lambda _=False, p=page, a=arg: self.session.navigate.emit(p, a))
            self.attention_lay.addWidget(b)
            self.attention_buttons.append(b)

    # -- actions ------------------------------------------------------------------------------
    def sync_now(self) -> None:
        self.sync_btn.setEnabled(False)

        def done(_: Any) -> None:
            self.sync_btn.setEnabled(True)
            self.session.message.emit("Sync started — the status updates when it finishes")
            self.refresh()

        def fail(f: ApiFailure) -> None:
            self.sync_btn.setEnabled(True)
            self.banner.show_failure(f, "start a sync")

        self.client.call("POST", "/api/v1/sync", on_ok=alive(self, done), on_error=alive(self, fail))

    def _post(self, path: str, doing: str) -> None:
        def done(_: Any) -> None:
            self.session.message.emit(f"Done: {doing}")
            self.refresh()

        self.client.call("POST", path, on_ok=alive(self, done),
                         on_error=alive(self, lambda f: self.banner.show_failure(f, doing)))


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
