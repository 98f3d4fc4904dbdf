"""Test mode, shown wherever a person looks: a banner across the window, a first tooltip line and
a disabled menu item in the tray, and a marker on the tray icon.

``[mode] test = true`` (H8) makes sync record what it would send instead of sending it. Nobody
must mistake that for a live practice: charges "delivered" in test mode never reached the
billing system. The engine says whether it is in test mode in ``/health`` and ``/status``
(``test_mode``); this module only presents it. It imports only ``core``/``ui.common``, so the
tray, the window and the Test mode page can all use it.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QWidget

# one wording everywhere (window banner, tray tooltip, tray menu)
HEADLINE = "TEST MODE — nothing is sent to the real RCM"
TRAY_LINE = "ChargeBridge — TEST MODE: nothing is sent to the real RCM"
MENU_TEXT = "Test mode: nothing is sent to the RCM"
DETAIL = ("Charges are recorded as they would be sent, so you can check them before going live. "
          "Claims, reconciliation and the dashboard work on these test sends.")
BG, FG, BORDER = "#fff3cd", "#5c3d00", "#b26a00"  # amber: unmistakable, readable (8.9:1)
MARK = "#b26a00"  # the tray icon's corner mark


class TestModeBanner(QFrame):
    """The strip across the top of the window while the engine is in test mode. It cannot be
    dismissed: it goes away when the engine goes live. ``open_page`` asks for the Test mode page
    (the go-live checklist)."""

    __test__ = False  # not a pytest class
    open_page = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("testModeBanner")
        self.setStyleSheet(f"#testModeBanner {{ background: {BG}; border-bottom: 2px solid {BORDER}; }}"
                           f"#testModeBanner QLabel {{ color: {FG}; }}")
        self.setAccessibleName("Test mode")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 6, 12, 6)
        self.label = QLabel(f"<b>{HEADLINE}.</b> {DETAIL} "
                            f"<a href='#golive' style='color: {FG};'><b>Go-live checklist…</b></a>")
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.LinksAccessibleByMouse
                                           | Qt.TextInteractionFlag.LinksAccessibleByKeyboard)
        self.label.setToolTip("Open the Test mode page: what was recorded, and what is missing before go-live")
        self.label.linkActivated.connect(lambda _href: self.open_page.emit())
        lay.addWidget(self.label, 1)
        self.hide()

    def set_on(self, on: bool) -> None:
        self.setVisible(on)

    @property
    def text(self) -> str:
        return self.label.text()


def marked(icon: QIcon, sizes: tuple[int, ...]) -> QIcon:
    """``icon`` with a test-mode mark in its bottom-right corner: an amber square with a white
    "T", drawn from rectangles (no font needed), on a light rim so it reads on any panel. The
    state's own silhouette stays visible in the other three quarters."""
    out = QIcon()
    for s in sizes:
        pm = icon.pixmap(s, s).copy()
        if pm.isNull():
            continue
        p = QPainter(pm)
        try:
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            side = max(7.0, s * 0.5)
            box = QRectF(s - side, s - side, side, side)
            path = QPainterPath()
            path.addRoundedRect(box, side * 0.18, side * 0.18)
            p.setPen(QPen(QColor(255, 255, 255, 230), max(1.0, s / 32)))
            p.setBrush(QBrush(QColor(MARK)))
            p.drawPath(path)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QBrush(QColor("#ffffff")))
            bar = side * 0.2
            p.drawRect(QRectF(box.left() + side * 0.18, box.top() + side * 0.18, side * 0.64, bar))  # T's top
            p.drawRect(QRectF(box.center().x() - bar / 2, box.top() + side * 0.18, bar, side * 0.64))  # T's stem
        finally:
            p.end()
        out.addPixmap(pm)
    return out


def marked_pixmap(icon: QIcon, size: int) -> QPixmap:
    """One size of :func:`marked` (tests and screenshots)."""
    return marked(icon, (size,)).pixmap(size, size)
