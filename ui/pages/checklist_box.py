"""The first-week checklist on the Status page (manager and admin; H15, issue 12 item 6).

Every item is ticked by the engine from its own state (``GET /api/v1/checklist``): nobody ticks
a box by hand. An open item says what to do next and, where it is done in the window, opens that
page; the RCM item can run the connection test from here (``POST /checklist/rcm-test``, whose
outcome the engine keeps). Once every item is done, **Dismiss** hides the checklist for this home
(``POST /checklist/dismiss``; the engine refuses while an item is open).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from core.states import Role
from ui.client import ApiFailure
from ui.pages import Session, alive

PAGE_LABEL = {"settings": "Settings", "review": "Review", "claims": "Claims", "mismatches": "Mismatches",
              "status": "Status"}


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class ChecklistBox(QGroupBox):
    """``GET /checklist`` on screen; hidden for roles below manager and once dismissed."""

    loaded = Signal()  # an answer is on screen (tests wait on it)
    failed = Signal(object)  # an ApiFailure the page shows in its banner

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__("First week", parent)
        self.session = session
        self.state: dict[str, Any] = {}
        self.dismissed = False  # once the engine said so, an older answer still in flight can't bring it back
        self.rows: dict[str, tuple[QLabel, QLabel]] = {}
        lay = QVBoxLayout(self)
        head = QHBoxLayout()
        self.progress = QLabel("")
        self.progress.setAccessibleName("First-week checklist progress")
        head.addWidget(self.progress, 1)
        self.test_btn = QPushButton("&Test RCM connection")
        self.test_btn.setToolTip("Ask the billing system whether it answers with the saved settings and secret")
        self.test_btn.clicked.connect(self.test_rcm)
        self.dismiss_btn = QPushButton("Dis&miss checklist")
        self.dismiss_btn.clicked.connect(self.dismiss)
        head.addWidget(self.test_btn)
        head.addWidget(self.dismiss_btn)
        lay.addLayout(head)
        self.grid = QGridLayout()
        self.grid.setColumnStretch(1, 1)
        lay.addLayout(self.grid)
        self.hide()

    # -- data ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        if not self.session.at_least(Role.MANAGER):
            self.hide()
            return
        self.session.client.call("GET", "/api/v1/checklist", on_ok=alive(self, self.show_checklist),
                                 on_error=alive(self, lambda f: None))  # the status call reports the engine

    def test_rcm(self) -> None:
        self.test_btn.setEnabled(False)
        self.test_btn.setText("Testing…")

        def done(answer: Any) -> None:
            self.test_btn.setText("&Test RCM connection")
            self.show_checklist(answer)

        def fail(f: ApiFailure) -> None:
            self.test_btn.setText("&Test RCM connection")
            self.test_btn.setEnabled(True)
            self.failed.emit(f)

        self.session.client.call("POST", "/api/v1/checklist/rcm-test", on_ok=alive(self, done),
                                 on_error=alive(self, fail))

    def dismiss(self) -> None:
        self.session.client.call("POST", "/api/v1/checklist/dismiss", on_ok=alive(self, self.show_checklist),
                                 on_error=alive(self, self.failed.emit))

    def show_checklist(self, answer: Any) -> None:
        if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
            return
        self.state = answer
        items = [i for i in answer["items"] if isinstance(i, dict)]
        while self.grid.count():
            item = self.grid.takeAt(0)
            w = item.widget() if item is not None else None
            if w is not None:
                w.deleteLater()
        self.rows = {}
        for r, it in enumerate(items):
            ok = bool(it.get("ok"))
            mark = QLabel("✔" if ok else "○")
            mark.setStyleSheet(f"color: {'#1b7f3b' if ok else '#9a6b00'}; font-size: 13pt; font-weight: 700;")
            mark.setAccessibleName("done" if ok else "to do")
            title = str(it.get("title", ""))
            nxt = str(it.get("next", ""))
            text = QLabel(f"<span style='color:{'#52606d' if ok else '#1f2933'}'>{_esc(title[:1].upper() + title[1:])}"
                          "</span>" + (f"<br><small>Next: {_esc(nxt)}</small>" if nxt and not ok else ""))
            text.setWordWrap(True)
            text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.grid.addWidget(mark, r, 0, Qt.AlignmentFlag.AlignTop)
            self.grid.addWidget(text, r, 1)
            page = str(it.get("page", ""))
            if not ok and page in PAGE_LABEL:
                go = QPushButton(f"Open {PAGE_LABEL[page]}")
                go.setToolTip(f"Go to the {PAGE_LABEL[page]} page to do this")
                go.clicked.connect(lambda _=False, p=page: self.session.navigate.emit(p, ""))
                self.grid.addWidget(go, r, 2, Qt.AlignmentFlag.AlignTop)
            self.rows[str(it.get("key", ""))] = (mark, text)
        done, total = int(answer.get("done", 0)), int(answer.get("total", len(items)))
        all_done = bool(answer.get("all_done"))
        self.progress.setText(f"<b>{done} of {total} done.</b> "
                              + ("Everything a first week should show has happened — you can dismiss this."
                                 if all_done else "These tick themselves as ChargeBridge sees each one happen."))
        rcm = next((i for i in items if i.get("key") == "rcm_test"), None)
        self.test_btn.setVisible(rcm is not None and not rcm.get("ok"))
        self.test_btn.setEnabled(True)
        self.dismiss_btn.setEnabled(all_done)
        self.dismiss_btn.setToolTip("Hide this checklist for good" if all_done
                                    else "Available once every item is done")
        self.dismissed = self.dismissed or bool(answer.get("dismissed"))
        self.setVisible(self.session.at_least(Role.MANAGER) and not self.dismissed)
        self.loaded.emit()
