"""Goals (manager): a target for each KPI and the baseline period every KPI is compared with.

Reads ``GET /api/v1/goals`` (the targets, the baseline period and the catalog of KPIs) and saves
with ``PUT /api/v1/goals``; the engine checks the values (and says which one is wrong, which
this page highlights). An empty target means "no goal for this KPI".
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QDate, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDateEdit,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from core.states import Role
from ui.client import ApiFailure
from ui.pages import Page, Session, alive, gate

UNIT_WORDS = {"percent": "%", "days": "days", "hours": "hours", "count": "count", "dollars": "$"}
COLS = ("KPI", "Unit", "Better when", "Target", "How it is computed")


class GoalsPage(Page):
    name = "goals"
    title = "Goals"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.view: dict[str, Any] = {}
        self.saved = 0
        lay = self._outer
        intro = QLabel("Set a target for the KPIs the practice wants to improve, and the period to compare with "
                       "(for example the three months before ChargeBridge). The dashboard shows each KPI against "
                       "both. Leave a target empty for no goal.")
        intro.setWordWrap(True)
        lay.addWidget(intro)

        base = QHBoxLayout()
        self.use_baseline = QCheckBox("Compare with a &baseline period from")
        self.use_baseline.setToolTip("The KPIs over this period are shown next to today's as 'baseline'")
        self.base_from = QDateEdit()
        self.base_to = QDateEdit()
        for w, tip in ((self.base_from, "First day of the baseline period"),
                       (self.base_to, "Last day of the baseline period")):
            w.setCalendarPopup(True)
            w.setDisplayFormat("yyyy-MM-dd")
            w.setToolTip(tip)
            w.setAccessibleName(tip)
        self.use_baseline.toggled.connect(self._baseline_toggled)
        base.addWidget(self.use_baseline)
        base.addWidget(self.base_from)
        base.addWidget(QLabel("to"))
        base.addWidget(self.base_to)
        base.addStretch(1)
        lay.addLayout(base)

        self.table = QTableWidget(0, len(COLS))
        self.table.setHorizontalHeaderLabels(COLS)
        self.table.verticalHeader().hide()
        self.table.setAccessibleName("Targets")
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setStretchLastSection(True)
        lay.addWidget(self.table, 1)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.revert_btn = QPushButton("&Revert")
        self.revert_btn.setToolTip("Forget the changes on this page and show what the engine has")
        self.revert_btn.clicked.connect(self.refresh)
        self.save_btn = QPushButton("&Save goals")
        self.save_btn.clicked.connect(lambda: self.session.guard(self.save, "save the goals"))
        buttons.addWidget(self.revert_btn)
        buttons.addWidget(self.save_btn)
        lay.addLayout(buttons)
        self._baseline_toggled(False)
        self.apply_role()

    def apply_role(self) -> None:
        gate(self.save_btn, self.session, Role.MANAGER, "Save the targets and the baseline period in the engine")
        self.table.setEnabled(self.session.at_least(Role.MANAGER))

    def _baseline_toggled(self, on: bool) -> None:
        self.base_from.setEnabled(on)
        self.base_to.setEnabled(on)

    # -- data -----------------------------------------------------------------------------------
    def refresh(self) -> None:
        if not self.session.at_least(Role.MANAGER):
            self.banner.show_text("Goals are set by a practice manager — sign in with a manager's token.", "info")
            return
        self.client.call("GET", "/api/v1/goals", on_ok=alive(self, self.show_goals),
                         on_error=alive(self, lambda f: self.banner.show_failure(f, "load the goals")))

    def show_goals(self, view: Any) -> None:
        if not isinstance(view, dict) or not isinstance(view.get("kpis"), list):
            self.banner.show_failure("the engine's goals answer could not be read — update ChargeBridge")
            return
        self.banner.hide()
        self.view = view
        bf, bt = str(view.get("baseline_from") or ""), str(view.get("baseline_to") or "")
        self.use_baseline.setChecked(bool(bf and bt))
        for w, text in ((self.base_from, bf), (self.base_to, bt)):
            d = QDate.fromString(text, "yyyy-MM-dd")
            w.setDate(d if d.isValid() else QDate.currentDate())
        got = view.get("targets")
        targets: dict[str, Any] = got if isinstance(got, dict) else {}
        kpis = [k for k in view["kpis"] if isinstance(k, dict) and isinstance(k.get("key"), str)]
        self.table.setRowCount(len(kpis))
        for r, k in enumerate(kpis):
            raw = targets.get(k["key"])
            t: dict[str, Any] = raw if isinstance(raw, dict) else {}
            label = QTableWidgetItem(str(k.get("label", k["key"])))
            label.setData(Qt.ItemDataRole.UserRole, k["key"])
            label.setFlags(label.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.table.setItem(r, 0, label)
            unit = QTableWidgetItem(UNIT_WORDS.get(str(k.get("unit")), str(k.get("unit", ""))))
            unit.setFlags(unit.flags() & ~Qt.ItemFlag.ItemIsEditable)
            self.table.setItem(r, 1, unit)
            combo = QComboBox()
            combo.addItem("higher is better", "higher")
            combo.addItem("lower is better", "lower")
            combo.setCurrentIndex(max(combo.findData(t.get("direction") or k.get("direction")), 0))
            combo.setProperty("default", k.get("direction"))
            self.table.setCellWidget(r, 2, combo)
            target = t.get("target")
            self.table.setItem(r, 3, QTableWidgetItem("" if target is None else f"{float(target):g}"))
            formula = QTableWidgetItem(str(k.get("formula", "")))
            formula.setFlags(formula.flags() & ~Qt.ItemFlag.ItemIsEditable)
            formula.setToolTip(str(k.get("formula", "")))
            self.table.setItem(r, 4, formula)

    def goals_body(self) -> dict[str, Any] | None:
        """What the page would save (``PUT /goals``), or None after showing what is wrong."""
        targets: dict[str, Any] = {}
        for r in range(self.table.rowCount()):
            key_item, target_item = self.table.item(r, 0), self.table.item(r, 3)
            combo = self.table.cellWidget(r, 2)
            if key_item is None:
                continue
            key = str(key_item.data(Qt.ItemDataRole.UserRole))
            text = (target_item.text() if target_item else "").strip()
            text = text.replace("%", "").replace("$", "").replace(",", "")
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                self._mark(r, f"the target for {key_item.text()} is not a number: type e.g. 5 or 92.5")
                return None
            direction = combo.currentData() if isinstance(combo, QComboBox) else None
            entry: dict[str, Any] = {"target": value}
            if isinstance(combo, QComboBox) and direction != combo.property("default"):
                entry["direction"] = direction
            targets[key] = entry
        on = self.use_baseline.isChecked()
        if on and self.base_from.date() > self.base_to.date():
            self.banner.show_failure("the baseline period ends before it starts — pick the first day, then the last")
            return None
        return {"baseline_from": self.base_from.date().toString("yyyy-MM-dd") if on else "",
                "baseline_to": self.base_to.date().toString("yyyy-MM-dd") if on else "",
                "targets": targets}

    def _mark(self, row: int, text: str) -> None:
        item = self.table.item(row, 3)
        if item is not None:
            item.setBackground(QColor("#fdecea"))
            self.table.setCurrentCell(row, 3)
        self.banner.show_failure(text)

    def save(self) -> None:
        body = self.goals_body()
        if body is None:
            return
        self.save_btn.setEnabled(False)

        def done(view: Any) -> None:
            self.saved += 1
            self.apply_role()
            self.session.message.emit("Goals saved — the dashboard compares with them now")
            if isinstance(view, dict) and isinstance(view.get("kpis"), list):
                self.show_goals(view)
            else:
                self.refresh()

        def fail(f: ApiFailure) -> None:
            self.apply_role()
            if f.key:
                for r in range(self.table.rowCount()):
                    item = self.table.item(r, 0)
                    if item is not None and str(item.data(Qt.ItemDataRole.UserRole)) in f.key:
                        self._mark(r, "")
            self.banner.show_failure(f, "save the goals")

        self.client.call("PUT", "/api/v1/goals", json=body, on_ok=alive(self, done), on_error=alive(self, fail))
