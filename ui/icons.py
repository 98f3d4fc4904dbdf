"""Tray icons, one per engine state (:class:`core.states.EngineState`), drawn with QPainter
(no image files to ship or lose).

Every state has its own *silhouette*, not just its own colour, so the icon still reads for
people who do not see the colours, on a monochrome panel and at 16 px:

==========  ==============================================  ==========================
state       shape                                           colours
==========  ==============================================  ==========================
idle        filled circle with a check mark                 green, white check
syncing     two circular arrows chasing each other          blue
paused      two vertical bars                               slate grey
attention   triangle with "!"                               amber, near-black "!"
error       octagon (stop sign) with "×"                    red, white ×
offline     hollow dashed circle crossed by a slash         mid grey
==========  ==============================================  ==========================

The glyphs inside a shape (check, "!", ×) are opaque, in a colour with >= 4.5:1 contrast to
their fill, so they read the same on any panel colour. Every shape gets a
thin light halo, so it keeps at least 3:1 contrast (WCAG 1.4.11) on a dark panel as well as
on a light one.

Everything is drawn in a 64x64 design grid and scaled, so each size is drawn natively
(crisper than scaling one bitmap down).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QBrush,
    QColor,
    QIcon,
    QImage,
    QPainter,
    QPainterPath,
    QPainterPathStroker,
    QPen,
    QPixmap,
    QPolygonF,
)

from core.states import EngineState

STATES: tuple[EngineState, ...] = tuple(EngineState)
SIZES: tuple[int, ...] = (16, 20, 22, 24, 32, 48, 64)

# Fill colours; chosen so the glyph on top has >= 4.5:1 contrast and the fill against a
# white or a #303030 panel (with the halo) >= 3:1.
COLORS: dict[EngineState, str] = {
    EngineState.IDLE: "#1b7f3b",       # green; white check 5.3:1
    EngineState.SYNCING: "#1f5fbf",    # blue
    EngineState.PAUSED: "#4b5563",     # slate grey
    EngineState.ATTENTION: "#f2b705",  # amber; near-black "!" 11:1
    EngineState.ERROR: "#c62828",      # red; white x 5.6:1
    EngineState.OFFLINE: "#6b7280",    # mid grey
}
GLYPH_DARK = "#1a1a1a"
GLYPH_LIGHT = "#ffffff"
HALO = QColor(255, 255, 255, 220)

_GRID = 64.0
_cache: dict[EngineState, QIcon] = {}


# -- shapes (in the 64x64 grid) ------------------------------------------------------------
def _stroke(path: QPainterPath, width: float, *, cap: Qt.PenCapStyle = Qt.PenCapStyle.RoundCap,
            dashes: list[float] | None = None) -> QPainterPath:
    """An outline turned into a fillable area, so every shape is one path (halo, fill, mask)."""
    s = QPainterPathStroker()
    s.setWidth(width)
    s.setCapStyle(cap)
    s.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    if dashes:
        s.setDashPattern(dashes)
    return s.createStroke(path)


def _circle() -> QPainterPath:
    p = QPainterPath()
    p.addEllipse(QRectF(6, 6, 52, 52))
    return p


def _check() -> QPainterPath:
    p = QPainterPath(QPointF(18, 33))
    p.lineTo(28, 43)
    p.lineTo(46, 22)
    return _stroke(p, 8)


def _arrows() -> QPainterPath:
    """Two arcs of ~130 degrees, each ending in an arrow head, going round the same way."""
    out = QPainterPath()
    r, cx, cy = 21.0, 32.0, 32.0
    box = QRectF(cx - r, cy - r, 2 * r, 2 * r)
    for start in (200.0, 20.0):  # degrees, counter-clockwise in Qt's arc convention
        span = -125.0  # clockwise
        arc = QPainterPath()
        arc.arcMoveTo(box, start)
        arc.arcTo(box, start, span)
        out = out.united(_stroke(arc, 8, cap=Qt.PenCapStyle.FlatCap))
        # arrow head at the arc's end, pointing along the clockwise tangent
        end = math.radians(start + span)
        tip_x, tip_y = cx + r * math.cos(end), cy - r * math.sin(end)
        tx, ty = math.sin(end), math.cos(end)  # clockwise tangent in screen coordinates
        nx, ny = math.cos(end), -math.sin(end)  # outward normal
        head = QPolygonF([
            QPointF(tip_x + tx * 9, tip_y + ty * 9),
            QPointF(tip_x + nx * 10, tip_y + ny * 10),
            QPointF(tip_x - nx * 10, tip_y - ny * 10),
        ])
        hp = QPainterPath()
        hp.addPolygon(head)
        hp.closeSubpath()
        out = out.united(hp)
    return out


def _bars() -> QPainterPath:
    p = QPainterPath()
    p.addRoundedRect(QRectF(13, 8, 14, 48), 3, 3)
    p.addRoundedRect(QRectF(37, 8, 14, 48), 3, 3)
    return p


def _triangle() -> QPainterPath:
    p = QPainterPath()
    p.addPolygon(QPolygonF([QPointF(32, 4), QPointF(61, 57), QPointF(3, 57)]))
    p.closeSubpath()
    # soften the corners a little: a round-joined stroke of the same outline
    return p.united(_stroke(p, 4))


def _bang() -> QPainterPath:
    p = QPainterPath()
    p.addRoundedRect(QRectF(28, 20, 8, 22), 3, 3)
    p.addEllipse(QRectF(28, 45, 8, 8))
    return p


def _octagon() -> QPainterPath:
    pts = []
    for i in range(8):
        a = math.radians(22.5 + 45 * i)
        pts.append(QPointF(32 + 30.5 * math.cos(a), 32 + 30.5 * math.sin(a)))
    p = QPainterPath()
    p.addPolygon(QPolygonF(pts))
    p.closeSubpath()
    return p


def _cross() -> QPainterPath:
    p = QPainterPath(QPointF(21, 21))
    p.lineTo(43, 43)
    p.moveTo(43, 21)
    p.lineTo(21, 43)
    return _stroke(p, 8)


def _dashed_ring() -> QPainterPath:
    ring = QPainterPath()
    ring.addEllipse(QRectF(9, 9, 46, 46))
    # dash pattern in units of the stroke width: 8 dashes round the ring
    circumference = math.pi * 46
    seg = circumference / 8 / 6.0
    dashed = _stroke(ring, 6, cap=Qt.PenCapStyle.FlatCap, dashes=[seg * 0.62, seg * 0.38])
    slash = QPainterPath(QPointF(14, 50))
    slash.lineTo(50, 14)
    return dashed.united(_stroke(slash, 6))


# state -> (shape, glyph or None, glyph colour)
_DESIGN: dict[EngineState, tuple[Callable[[], QPainterPath], Callable[[], QPainterPath] | None, str]] = {
    EngineState.IDLE: (_circle, _check, GLYPH_LIGHT),
    EngineState.SYNCING: (_arrows, None, GLYPH_LIGHT),
    EngineState.PAUSED: (_bars, None, GLYPH_LIGHT),
    EngineState.ATTENTION: (_triangle, _bang, GLYPH_DARK),
    EngineState.ERROR: (_octagon, _cross, GLYPH_LIGHT),
    EngineState.OFFLINE: (_dashed_ring, None, GLYPH_LIGHT),
}


def render(state: EngineState | str, size: int) -> QImage:
    """The icon of ``state`` drawn at ``size`` x ``size`` (ARGB). Works without a display."""
    try:
        state = EngineState(state)
    except ValueError:
        raise ValueError(f"unknown state {state!r}; one of {', '.join(STATES)}") from None
    shape_fn, glyph_fn, glyph_color = _DESIGN[state]
    img = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(Qt.GlobalColor.transparent)
    p = QPainter(img)
    try:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.scale(size / _GRID, size / _GRID)
        shape = shape_fn()
        # halo: a light rim outside the shape, so dark fills still show on a dark panel
        halo_w = max(3.0, _GRID / size * 1.2)
        p.setPen(QPen(HALO, halo_w, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawPath(shape)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QBrush(QColor(COLORS[state])))
        p.drawPath(shape)
        if glyph_fn is not None:
            # the glyph is fully opaque in a colour chosen for contrast with the fill, so it reads
            # the same on any panel; the silhouette alone already tells the states apart
            p.setBrush(QBrush(QColor(glyph_color)))
            p.drawPath(glyph_fn())
    finally:
        p.end()
    return img


def state_icon(state: EngineState | str) -> QIcon:
    """A QIcon with a natively drawn pixmap for every size in :data:`SIZES` (cached).

    Needs a QGuiApplication (QPixmap); :func:`render` does not.
    """
    key = EngineState(state)
    icon = _cache.get(key)
    if icon is None:
        icon = QIcon()
        for s in SIZES:
            icon.addPixmap(QPixmap.fromImage(render(key, s)))
        _cache[key] = icon
    return icon


def alpha_mask(img: QImage, threshold: int = 128) -> bytes:
    """One byte per pixel: 1 where the icon is (mostly) opaque. Used to compare silhouettes."""
    a = img.convertToFormat(QImage.Format.Format_Alpha8)
    w, h, bpl = a.width(), a.height(), a.bytesPerLine()
    raw = bytes(a.constBits())
    return bytes(1 if raw[y * bpl + x] >= threshold else 0 for y in range(h) for x in range(w))
