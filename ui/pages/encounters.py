"""Encounters: every visit ChargeBridge has read, searched, filtered and paged by the engine.

The table never holds more than the pages scrolled through (see :mod:`ui.models`); typing in
the search box waits for a pause (300 ms) before asking, and each new filter supersedes the
answers still in flight for the old one.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelection, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSplitter,
    QTableView,
    QWidget,
)

from core.states import EncounterState
from ui.client import ApiFailure
from ui.models import STATE_LABEL, SYNC_LABEL, EncountersModel
from ui.pages import Page, Session, with_empty_state

STATES: list[tuple[str, str]] = [("", "All states"), (EncounterState.READY, "Ready"),
                                 (EncounterState.NEEDS_REVIEW, "Needs review"),
                                 (EncounterState.EXPECTED, "Expected visits")]
SORTS = [(("id", True), "Newest received first"), (("id", False), "Oldest received first"),
         (("dos", True), "Date of service, newest first"), (("dos", False), "Date of service, oldest first")]
EMPTY = "No encounters yet — drop EHR exports into a watched folder (see Settings → Watched folders)."


class EncountersPage(Page):
    name = "encounters"
    title = "Encounters"
    refresh_on_show = False

    def __init__(self, session: Session, parent: QWidget | None = None, *, page_size: int = 200) -> None:
        super().__init__(session, parent)
        self.model = EncountersModel(self.client, page_size=page_size, parent=self)
        lay = self._outer

        self._debounce = QTimer(self)  # typing: ask once the user pauses, not per key
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(300)
        self._debounce.timeout.connect(self._apply)

        bar = QHBoxLayout()
        find = QLabel("&Find:")
        self.search = QLineEdit()
        self.search.setPlaceholderText("MRN, visit id, patient name or procedure code  (Ctrl+F)")
        self.search.setToolTip("Type part of an MRN, a visit id or a patient's name, or the start of a CPT/HCPCS "
                               "code. Several words must all match. Esc clears.")
        self.search.setClearButtonEnabled(True)
        find.setBuddy(self.search)
        self.search.textChanged.connect(lambda _: self._debounce.start())
        self.search.returnPressed.connect(self._apply)
        bar.addWidget(find)
        bar.addWidget(self.search, 1)
        st = QLabel("Sho&w:")
        self.state = QComboBox()
        for key, text in STATES:
            self.state.addItem(text, key)
        self.state.setToolTip("Show only encounters in this state")
        st.setBuddy(self.state)
        self.state.currentIndexChanged.connect(lambda _: self._apply())
        bar.addWidget(st)
        bar.addWidget(self.state)
        so = QLabel("S&ort:")
        self.sort = QComboBox()
        for sort_key, text in SORTS:
            self.sort.addItem(text, sort_key)
        self.sort.setToolTip("Order of the list (sorted by the engine, across all pages)")
        so.setBuddy(self.sort)
        self.sort.currentIndexChanged.connect(lambda _: self._apply())
        bar.addWidget(so)
        bar.addWidget(self.sort)
        lay.addLayout(bar)

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(24)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        for col, width in enumerate((110, 190, 100, 110, 150, 90, 110)):
            self.table.setColumnWidth(col, width)
        self.table.setAccessibleName("Encounters")
        self.table.setToolTip("")
        self.table.selectionModel().selectionChanged.connect(self._selected)

        self.empty, self.stack = with_empty_state(self.table, EMPTY)

        self.detail = QPlainTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText("Select an encounter to see its validation findings and billing status.")
        self.detail.setAccessibleName("Encounter details")
        self.detail.setMaximumHeight(140)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.stack)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        lay.addWidget(split, 1)

        self.count_label = QLabel("")
        self.count_label.setAccessibleName("How many encounters are shown")
        lay.addWidget(self.count_label)

        self.model.loading_changed.connect(self._loading)
        self.model.page_loaded.connect(self._update_counts)
        self.model.failed.connect(self._failed)
        self.model.modelReset.connect(self._update_counts)

    # -- filters -----------------------------------------------------------------------------
    def _apply(self) -> None:
        self._debounce.stop()
        sort, desc = self.sort.currentData()
        self.model.set_filter(q=self.search.text(), state=self.state.currentData(), sort=sort, desc=desc)

    def refresh(self) -> None:
        self.banner.hide()
        sort, desc = self.sort.currentData()
        self.model.set_filter(q=self.search.text(), state=self.state.currentData(), sort=sort, desc=desc,
                              force=True)

    def open_with(self, arg: str) -> None:
        """Linked from Status: e.g. "needs_review" shows only those, with the search cleared."""
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        i = self.state.findData(arg or "")
        self.state.blockSignals(True)
        self.state.setCurrentIndex(max(i, 0))
        self.state.blockSignals(False)
        self.refresh()

    def focus_filter(self) -> bool:
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()
        return True

    def keyPressEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        if event.key() == Qt.Key.Key_Escape and (self.search.text() or self.state.currentIndex()):
            self.search.clear()
            self.state.setCurrentIndex(0)
            self._apply()
            return
        super().keyPressEvent(event)

    # -- feedback ----------------------------------------------------------------------------
    def _loading(self, on: bool) -> None:
        if on and self.model.rowCount() == 0:
            self.count_label.setText("Loading…")

    def _update_counts(self) -> None:
        m = self.model
        if m.total is None:
            return
        shown = m.rowCount()
        if m.total == 0:
            if m.filtered:
                state = STATE_LABEL.get(m.state, m.state)
                if m.q and m.state:
                    what = f"No encounters in “{state}” match “{m.q}”"
                elif m.q:
                    what = f"No encounters match “{m.q}”"
                else:
                    what = f"No encounters are in “{state}” right now"
                self.empty.setText(f"{what} — change the search, or press Esc to show all encounters.")
            else:
                self.empty.setText(EMPTY)
            self.stack.setCurrentWidget(self.empty)
            self.count_label.setText("")
            return
        self.stack.setCurrentWidget(self.table)
        more = " — scroll down for more" if shown < m.total else ""
        if getattr(m, "total_capped", False):  # the engine stopped counting a broad search
            self.count_label.setText(f"Showing {shown:,} of more than {m.total - 1:,} matches — "
                                     "narrow the search to see them all")
        else:
            self.count_label.setText(f"Showing {shown:,} of {m.total:,} encounters{more}")

    def _failed(self, failure: ApiFailure) -> None:
        self.banner.show_failure(failure, "load the encounters")
        self.count_label.setText("Not loaded — press Ctrl+R to try again")

    def _selected(self, selected: QItemSelection, _: QItemSelection) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            self.detail.clear()
            return
        r = self.model.row(rows[0].row())
        lines = [f"Visit {r['source_id']} — {r['patient']}, MRN: {r['mrn']}, date of service {r['dos']}",
                 f"State: {STATE_LABEL.get(r['state'], r['state'])}. Billing system: "
                 f"{SYNC_LABEL.get(r.get('sync_state', ''), r.get('sync_state', ''))}"
                 + (f" — {r['sync_error']}" if r.get("sync_error") else "")]
        findings = r.get("findings") or []
        if findings:
            lines.append("To fix in the EHR, then export again:")
            lines += [f"  • {f.get('field', '')}: {f.get('message', '')}" for f in findings]
        self.detail.setPlainText("\n".join(lines))
