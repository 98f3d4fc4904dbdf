"""In-app help: short pages per role (front desk, coder, manager, IT), opened from where you are.

The pages are markdown files shipped in ``ui/help/`` (package data, and in the frozen bundle).
:func:`topic_for_page` says which page and section belong to each window page, so the "?"
beside a page (and F1) opens the section about that page; the viewer lists every role's page on
the left so anyone can read the others. Nothing here talks to the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut, QTextCursor
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QTextBrowser,
    QToolButton,
    QWidget,
)


@dataclass(frozen=True)
class Topic:
    key: str
    title: str
    file: str


TOPICS = (Topic("front-desk", "Front desk", "front-desk.md"), Topic("coder", "Coder", "coder.md"),
          Topic("manager", "Practice manager", "manager.md"), Topic("it", "IT", "it.md"))

# window page -> (topic, section heading slug or "")
PAGE_TOPIC: dict[str, tuple[str, str]] = {
    "status": ("front-desk", "what-the-tray-icon-means"),
    "encounters": ("front-desk", "the-encounters-page"),
    "review": ("coder", "the-review-queue"),
    "quarantine": ("manager", "quarantine"),
    "mismatches": ("manager", "mismatches"),
    "claims": ("manager", "claims"),
    "dashboard": ("manager", "the-dashboard-kpis"),
    "goals": ("manager", "goals"),
    "activity": ("manager", "activity"),
    "settings": ("it", "export-folders"),
    "testmode": ("it", "test-mode-and-go-live"),
}


def slug(heading: str) -> str:
    """"The dashboard (KPIs)" -> "the-dashboard-kpis"."""
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def topic_for_page(page: str) -> tuple[Topic, str]:
    key, section = PAGE_TOPIC.get(page, ("front-desk", ""))
    return next(t for t in TOPICS if t.key == key), section


def load(topic: Topic) -> str:
    """The topic's markdown text (a missing file says so instead of failing: help must open)."""
    try:
        return resources.files("ui").joinpath("help", topic.file).read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError):
        return f"# {topic.title}\n\nThis help page is missing from the installation. Reinstall ChargeBridge."


def headings(markdown: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^#{1,3} +(.+)$", markdown, re.MULTILINE)]


class HelpViewer(QDialog):
    """A non-modal help window: topics on the left, the page on the right, opened at a section."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("ChargeBridge help")
        self.setObjectName("helpViewer")
        self.resize(860, 620)
        lay = QHBoxLayout(self)
        self.topics = QListWidget()
        self.topics.setAccessibleName("Help topics")
        self.topics.setMaximumWidth(180)
        for t in TOPICS:
            item = QListWidgetItem(t.title)
            item.setData(Qt.ItemDataRole.UserRole, t.key)
            self.topics.addItem(item)
        self.topics.currentRowChanged.connect(lambda i: self._show(TOPICS[i], "") if i >= 0 else None)
        lay.addWidget(self.topics)
        self.browser = QTextBrowser()
        self.browser.setAccessibleName("Help page")
        self.browser.setOpenExternalLinks(False)
        self.browser.document().setDefaultStyleSheet("table { border-collapse: collapse; } "
                                                     "th, td { padding: 3px 6px; }")
        lay.addWidget(self.browser, 1)
        self.topic: Topic = TOPICS[0]
        self.section = ""
        QShortcut(QKeySequence(QKeySequence.StandardKey.Close), self).activated.connect(self.close)

    def open_topic(self, topic: Topic, section: str = "") -> None:
        row = TOPICS.index(topic)
        self.topics.blockSignals(True)
        self.topics.setCurrentRow(row)
        self.topics.blockSignals(False)
        self.show()
        self.raise_()
        self.activateWindow()
        self._show(topic, section)

    def open_for_page(self, page: str) -> None:
        topic, section = topic_for_page(page)
        self.open_topic(topic, section)

    def _show(self, topic: Topic, section: str) -> None:
        self.topic, self.section = topic, section
        self.browser.setMarkdown(load(topic))
        self.setWindowTitle(f"ChargeBridge help — {topic.title}")
        self.scroll_to(section)

    def scroll_to(self, section: str) -> bool:
        """Put the heading whose slug is ``section`` at the top of the view; False if there is none."""
        doc = self.browser.document()
        view = self.browser.viewport()
        doc.setTextWidth(view.width())  # lay the page out at the view's width now, not on the next paint
        frame = doc.rootFrame()
        fmt = frame.frameFormat()
        fmt.setBottomMargin(max(view.height() - 40, 0))  # room below, so even the last heading reaches the top
        frame.setFrameFormat(fmt)
        bar = self.browser.verticalScrollBar()
        block = doc.begin()
        while block.isValid():
            if block.blockFormat().headingLevel() and slug(block.text()) == section:
                self.browser.setTextCursor(QTextCursor(block))
                top = doc.documentLayout().blockBoundingRect(block).top()
                bar.setMaximum(max(bar.maximum(), int(doc.size().height()) - view.height()))
                bar.setValue(int(top))
                return True
            block = block.next()
        bar.setValue(0)
        return False

    def current_heading(self) -> str:
        """The first heading at or below the top of the view (what the reader sees first)."""
        doc = self.browser.document()
        y = self.browser.verticalScrollBar().value()
        block = doc.begin()
        while block.isValid():
            if block.blockFormat().headingLevel() and doc.documentLayout().blockBoundingRect(block).top() >= y - 2:
                return block.text()
            block = block.next()
        return ""


def help_button(on_click: object, tip: str = "Help for this page (F1)") -> QToolButton:
    """The round "?" beside a page's title."""
    b = QToolButton()
    b.setText("?")
    b.setObjectName("helpButton")
    b.setToolTip(tip)
    b.setAccessibleName("Help for this page")
    b.setStyleSheet("#helpButton { font-weight: 700; min-width: 22px; min-height: 22px; border-radius: 11px; "
                    "border: 1px solid #52606d; color: #1f2933; background: #f5f7fa; }"
                    "#helpButton:hover { background: #e4e7eb; }")
    b.clicked.connect(on_click)
    return b
