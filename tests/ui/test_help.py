"""In-app help: every page of the window opens the help at the section about it (the "?" beside
the page tabs, and F1); every role's page ships and every section a page points at exists.
Screenshot: tests/artifacts/page-help.png."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from tests.conftest import ROOT
from ui.app import protect_none_refcount
from ui.client import ApiClient
from ui.help import PAGE_TOPIC, TOPICS, headings, load, slug
from ui.main_window import PAGES, MainWindow

protect_none_refcount()
ARTIFACTS = ROOT / "tests" / "artifacts"


def test_every_role_has_a_page_and_every_link_has_its_section() -> None:
    assert {t.key for t in TOPICS} == {"front-desk", "coder", "manager", "it"}
    for t in TOPICS:
        text = load(t)
        assert "missing from the installation" not in text, t.file
        assert len(text) > 400, t.file
    for page in PAGES:
        assert page in PAGE_TOPIC, f"the {page} page has no help section"
    for page, (topic, section) in PAGE_TOPIC.items():
        t = next(x for x in TOPICS if x.key == topic)
        assert section in {slug(h) for h in headings(load(t))}, (page, section)
    # what the front desk must know: each tray state and what to do when amber or red
    fd = load(TOPICS[0]).lower()
    for word in ("amber", "red", "green", "paused", "not reachable", "tell it"):
        assert word in fd, word


@pytest.fixture()
def win(qtbot: Any) -> Iterator[MainWindow]:
    # help needs no engine: the window's requests fail quietly in the background
    client = ApiClient("http://127.0.0.1:9", "token")
    w = MainWindow(client, role="admin", user="admin-user")
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()
    client.close()
    QApplication.processEvents()


def test_help_opens_at_the_section_of_each_page(win: MainWindow, qtbot: Any) -> None:
    for name in PAGES:
        win.tabs.setCurrentWidget(win.pages[name])
        qtbot.mouseClick(win.help_btn, Qt.MouseButton.LeftButton)  # the "?" beside the page tabs
        viewer = win.help_viewer
        assert viewer is not None and viewer.isVisible()
        topic, section = PAGE_TOPIC[name]
        assert viewer.topic.key == topic and viewer.section == section
        assert slug(viewer.current_heading()) == section, name  # the section is what the reader sees first
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    win.show_page("status")
    viewer = win.show_help()
    assert viewer.grab().save(str(ARTIFACTS / "page-help.png"))
    # F1 opens it for the page shown; the topic list switches pages
    viewer.close()
    win.show_page("review")
    win.activateWindow()
    qtbot.keyClick(win, Qt.Key.Key_F1)
    assert viewer.isVisible() and viewer.topic.key == "coder"
    viewer.topics.setCurrentRow(3)
    assert viewer.topic.key == "it" and "Backup" in viewer.browser.toPlainText()
