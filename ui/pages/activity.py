"""Activity: the audit trail — who changed what, when. Managers and admins only (the engine
refuses others); front-desk users get a plain explanation instead of an error."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QStackedWidget,
    QTableView,
    QWidget,
)

from core.states import Role
from ui.client import ApiFailure
from ui.models import ACTION_LABEL, AuditModel
from ui.pages import Page, Session, empty_label, needs_role_text

EMPTY = "No activity recorded yet. Changes to settings, users, sync and mismatches appear here."


class ActivityPage(Page):
    name = "activity"
    title = "Activity"
    refresh_on_show = False

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(session, parent)
        self.model = AuditModel(self.client, page_size=200, parent=self)
        bar = QHBoxLayout()
        lab = QLabel("Sho&w:")
        self.action = QComboBox()
        self.action.addItem("All activity", "")
        for key, text in ACTION_LABEL.items():
            self.action.addItem(text, key)
        self.action.setToolTip("Show only one kind of change")
        lab.setBuddy(self.action)
        self.action.currentIndexChanged.connect(lambda _: self._apply())
        bar.addWidget(lab)
        bar.addWidget(self.action)
        bar.addStretch(1)
        self.count_label = QLabel("")
        bar.addWidget(self.count_label)
        self.bar = QWidget()
        self.bar.setLayout(bar)
        self._outer.addWidget(self.bar)

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        for col, width in enumerate((130, 120, 190, 150)):
            self.table.setColumnWidth(col, width)
        self.table.setAccessibleName("Activity trail")
        self.empty = empty_label(EMPTY)
        self.no_role = empty_label("")
        self.stack = QStackedWidget()
        for widget in (self.table, self.empty, self.no_role):
            self.stack.addWidget(widget)
        self._outer.addWidget(self.stack, 1)
        self.model.page_loaded.connect(self._loaded)
        self.model.failed.connect(self._failed)
        self.apply_role()

    def apply_role(self) -> None:
        allowed = self.session.at_least(Role.MANAGER)
        self.bar.setVisible(allowed)
        if not allowed:
            self.no_role.setText("The activity trail " + needs_role_text(Role.MANAGER, self.session.role)[0].lower()
                                 + needs_role_text(Role.MANAGER, self.session.role)[1:])
            self.stack.setCurrentWidget(self.no_role)

    def refresh(self) -> None:
        if not self.session.at_least(Role.MANAGER):
            self.apply_role()
            return  # the engine would say 403; the page already says why, without a request
        self.banner.hide()
        self.model.reload()

    def _apply(self) -> None:
        self.model.action = self.action.currentData()
        self.refresh()

    def _loaded(self) -> None:
        total = self.model.total or 0
        self.stack.setCurrentWidget(self.table if total else self.empty)
        shown = self.model.rowCount()
        self.count_label.setText(f"{shown:,} of {total:,} entries" if total else "")

    def _failed(self, failure: ApiFailure) -> None:
        self.banner.show_failure(failure, "load the activity trail")
