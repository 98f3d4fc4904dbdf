"""Small chart widgets drawn with QPainter: a trend line chart, a bar chart and a goal gauge.

Why not QtCharts: it ships only in PySide6-Addons, which would add far more than the frozen
bundle's size budget allows (PySide6-Essentials has no QtCharts). These three charts are all the
dashboard needs, and drawing them ourselves keeps them identical on screen and in the monthly
PDF report: each widget's :meth:`draw` paints into any ``QPainter`` (a widget, a ``QImage`` or a
``QPdfWriter``) and a rectangle, so the report renders the very same code.

Colours: the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies),
with text and axes in dark grey on white (contrast > 7:1). Nothing relies on colour alone: the
gauge writes its value and its target, lines carry a legend with their names, a target line is
dashed, and every chart sets an accessible description that reads its figures out.

Widgets emit ``picked(int)`` with the index of the point or bar clicked (or activated with the
keyboard: arrows choose, Enter opens) — the dashboard goes from there to the claims behind it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetricsF,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

# Okabe & Ito (2008), "Color Universal Design": blue, vermillion, bluish green, orange, sky blue,
# reddish purple, yellow — in the order that keeps neighbours most distinct.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#F0E442")
TEXT = QColor("#1f2933")
MUTED = QColor("#52606d")
GRID = QColor("#d9dee3")
GOOD = QColor("#009E73")
WARN = QColor("#E69F00")
BAD = QColor("#D55E00")
FOCUS = QColor("#1f5fbf")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round axis ticks covering ``lo..hi`` (1, 2, 2.5, 5 × 10^n steps); at least two ticks."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo < 1e-12:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t < hi + step * 0.999:
        ticks.append(round(t, 10))
        t += step
    return ticks if len(ticks) >= 2 else [start, start + step]


def fmt_number(v: float, unit: str = "") -> str:
    """12.5 -> "12.5", 1234 -> "1,234", 12.34 with unit "%" -> "12.3 %" (percent values, 0-100)."""
    if unit == "%":
        return f"{v:.1f} %"
    if unit == "$":
        return f"${v:,.0f}" if abs(v) >= 100 else f"${v:,.2f}"
    if abs(v - round(v)) < 1e-9:
        text = f"{round(v):,}"
    else:
        text = f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"
    return f"{text} {unit}".rstrip() if unit else text


# the engine's KPI units (core.schemas.KpiUnit) -> the suffix fmt_number writes
UNIT = {"percent": "%", "days": "days", "hours": "h", "dollars": "$", "count": ""}


def _font(base: QFont, scale: float = 1.0, bold: bool = False) -> QFont:
    f = QFont(base)
    size = base.pointSizeF() if base.pointSizeF() > 0 else 9.0
    f.setPointSizeF(size * scale)
    f.setBold(bold)
    return f


@dataclass
class Series:
    """One line of a trend chart: ``values[i]`` belongs to the chart's ``labels[i]`` (None = no
    data for that period: the line breaks there)."""

    name: str
    values: list[float | None]
    color: str = ""
    dashed: bool = False


@dataclass
class Bar:
    label: str
    value: float
    color: str = ""
    note: str = ""  # e.g. the amount in dollars next to a count


class _Chart(QWidget):
    """Common parts: title, unit, a focus index for the keyboard, ``picked`` on click/Enter."""

    picked = Signal(int)

    def __init__(self, title: str = "", *, unit: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.unit = unit
        self.focus_index = -1
        self.hit_rects: list[QRectF] = []  # where each point / bar was last drawn (widget coords)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAccessibleName(title)
        self.setMouseTracking(True)

    def item_count(self) -> int:
        return 0

    def describe(self) -> str:
        return self.title

    def _changed(self) -> None:
        self.setAccessibleDescription(self.describe())
        self.setToolTip(self.describe() + ("\nClick a figure to see what is behind it." if self.item_count() else ""))
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.fillRect(self.rect(), QColor("white"))
        self.hit_rects = self.draw(p, QRectF(self.rect()).adjusted(4, 4, -4, -4))
        if self.hasFocus():
            pen = QPen(FOCUS, 1.5, Qt.PenStyle.DotLine)
            p.setPen(pen)
            p.drawRect(QRectF(self.rect()).adjusted(1, 1, -1, -1))
        p.end()

    def draw(self, p: QPainter, rect: QRectF) -> list[QRectF]:  # pragma: no cover - overridden
        return []

    def _title(self, p: QPainter, rect: QRectF) -> QRectF:
        """Draws the title at the top of ``rect``; returns what is left below it."""
        if not self.title:
            return rect
        f = _font(p.font(), 1.15, bold=True)
        p.setFont(f)
        p.setPen(TEXT)
        h = QFontMetricsF(f).height() + 4
        p.drawText(QRectF(rect.left(), rect.top(), rect.width(), h),
                   int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                   QFontMetricsF(f).elidedText(self.title, Qt.TextElideMode.ElideRight, rect.width()))
        return rect.adjusted(0, h + 2, 0, 0)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        pos = event.position()
        for i, r in enumerate(self.hit_rects):
            if r.contains(pos):
                self.focus_index = i
                self.update()
                self.picked.emit(i)
                return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        over = any(r.contains(event.position()) for r in self.hit_rects)
        self.setCursor(Qt.CursorShape.PointingHandCursor if over else Qt.CursorShape.ArrowCursor)
        super().mouseMoveEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        n = self.item_count()
        key = event.key()
        if n and key in (Qt.Key.Key_Right, Qt.Key.Key_Down):
            self.focus_index = min(self.focus_index + 1, n - 1)
            self.update()
        elif n and key in (Qt.Key.Key_Left, Qt.Key.Key_Up):
            self.focus_index = max(self.focus_index - 1, 0)
            self.update()
        elif n and key in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space) and self.focus_index >= 0:
            self.picked.emit(self.focus_index)
        else:
            super().keyPressEvent(event)


# -- trend line chart ---------------------------------------------------------------------------
class LineChart(_Chart):
    """A trend over periods: one or more series, optional dashed target and dotted baseline."""

    def __init__(self, title: str = "", *, unit: str = "", parent: QWidget | None = None) -> None:
        super().__init__(title, unit=unit, parent=parent)
        self.labels: list[str] = []
        self.series: list[Series] = []
        self.target: float | None = None
        self.baseline: float | None = None
        self.setMinimumSize(260, 180)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(420, 240)

    def set_data(self, labels: Sequence[str], series: Sequence[Series], *, target: float | None = None,
                 baseline: float | None = None) -> None:
        self.labels = list(labels)
        self.series = [s for s in series if len(s.values) == len(self.labels)]
        self.target, self.baseline = target, baseline
        self.focus_index = -1
        self._changed()

    def item_count(self) -> int:
        return len(self.labels)

    def describe(self) -> str:
        if not self.labels or not self.series:
            return f"{self.title}: no data for this period"
        parts = []
        for s in self.series:
            known = [(lab, v) for lab, v in zip(self.labels, s.values, strict=True) if v is not None]
            if known:
                parts.append(f"{s.name} from {fmt_number(known[0][1], self.unit)} ({known[0][0]}) to "
                             f"{fmt_number(known[-1][1], self.unit)} ({known[-1][0]})")
        if self.target is not None:
            parts.append(f"target {fmt_number(self.target, self.unit)}")
        return f"{self.title}: " + "; ".join(parts)

    def draw(self, p: QPainter, rect: QRectF) -> list[QRectF]:
        rect = self._title(p, rect)
        small = _font(p.font(), 0.9)
        p.setFont(small)
        fm = QFontMetricsF(small)
        values = [v for s in self.series for v in s.values if v is not None]
        refs = [v for v in (self.target, self.baseline) if v is not None]
        if not self.labels or not values:
            p.setPen(MUTED)
            p.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), "No data for this period")
            return []
        lo = min([0.0, *values, *refs])
        hi = max([*values, *refs])
        ticks = nice_ticks(lo, hi)
        lo, hi = ticks[0], ticks[-1]
        tick_text = [fmt_number(t, self.unit) for t in ticks]
        left = max(fm.horizontalAdvance(t) for t in tick_text) + 8
        legend_h = fm.height() + 6
        plot = QRectF(rect.left() + left, rect.top() + 4, rect.width() - left - 8,
                      rect.height() - 4 - fm.height() * 1.6 - legend_h)
        if plot.width() < 20 or plot.height() < 20:
            return []

        def y_of(v: float) -> float:
            return plot.bottom() - (v - lo) / (hi - lo) * plot.height()

        n = len(self.labels)

        def x_of(i: int) -> float:
            return plot.left() + (plot.width() * (i + 0.5) / n)

        # grid + y axis labels
        for t, text in zip(ticks, tick_text, strict=True):
            y = y_of(t)
            p.setPen(QPen(GRID, 1))
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.setPen(MUTED)
            p.drawText(QRectF(rect.left(), y - fm.height() / 2, left - 6, fm.height()),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), text)
        p.setPen(QPen(MUTED, 1))
        p.drawLine(plot.bottomLeft(), plot.bottomRight())
        # x labels: as many as fit without overlapping
        widest = max(fm.horizontalAdvance(lab) for lab in self.labels) + 10
        every = max(1, math.ceil(widest / max(plot.width() / n, 1)))
        for i, lab in enumerate(self.labels):
            if i % every:
                continue
            x = x_of(i)
            p.drawText(QRectF(x - widest / 2, plot.bottom() + 3, widest, fm.height()),
                       int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop), lab)
        # reference lines
        for value, style, name in ((self.target, Qt.PenStyle.DashLine, "target"),
                                   (self.baseline, Qt.PenStyle.DotLine, "baseline")):
            if value is None:
                continue
            y = y_of(value)
            p.setPen(QPen(TEXT if name == "target" else MUTED, 1.5, style))
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            p.drawText(QRectF(plot.right() - 120, y - fm.height() - 1, 118, fm.height()),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom), name)
        # series
        legend: list[tuple[str, QColor, bool]] = []
        for k, s in enumerate(self.series):
            color = QColor(s.color or PALETTE[k % len(PALETTE)])
            pen = QPen(color, 2.2, Qt.PenStyle.DashLine if s.dashed else Qt.PenStyle.SolidLine)
            path = QPainterPath()
            started = False
            for i, v in enumerate(s.values):
                if v is None:
                    started = False
                    continue
                pt = QPointF(x_of(i), y_of(v))
                if started:
                    path.lineTo(pt)
                else:
                    path.moveTo(pt)
                    started = True
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(path)
            p.setBrush(color)
            for i, v in enumerate(s.values):
                if v is not None:
                    r = 4.5 if i == self.focus_index else 2.8
                    p.drawEllipse(QPointF(x_of(i), y_of(v)), r, r)
            legend.append((s.name, color, s.dashed))
        # legend
        x = plot.left()
        y = rect.bottom() - legend_h + 4
        for name, color, dashed in legend:
            p.setPen(QPen(color, 2.5, Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine))
            p.drawLine(QPointF(x, y + fm.height() / 2), QPointF(x + 18, y + fm.height() / 2))
            p.setPen(TEXT)
            w = fm.horizontalAdvance(name)
            p.drawText(QRectF(x + 22, y, w + 4, fm.height()), int(Qt.AlignmentFlag.AlignVCenter), name)
            x += 22 + w + 16
        # one clickable column per period
        col = plot.width() / n
        return [QRectF(plot.left() + i * col, plot.top(), col, plot.height()) for i in range(n)]


# -- bar chart ----------------------------------------------------------------------------------
class BarChart(_Chart):
    """Labelled bars, horizontal (long labels: denial reasons) or vertical (buckets, histograms)."""

    def __init__(self, title: str = "", *, unit: str = "", horizontal: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(title, unit=unit, parent=parent)
        self.bars: list[Bar] = []
        self.horizontal = horizontal
        self.setMinimumSize(260, 180)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(420, 240)

    def set_data(self, bars: Sequence[Bar]) -> None:
        self.bars = list(bars)
        self.focus_index = -1
        self._changed()

    def item_count(self) -> int:
        return len(self.bars)

    def describe(self) -> str:
        if not self.bars:
            return f"{self.title}: nothing in this period"
        return f"{self.title}: " + "; ".join(f"{b.label} {fmt_number(b.value, self.unit)}"
                                              + (f" ({b.note})" if b.note else "") for b in self.bars)

    def draw(self, p: QPainter, rect: QRectF) -> list[QRectF]:
        rect = self._title(p, rect)
        small = _font(p.font(), 0.9)
        p.setFont(small)
        fm = QFontMetricsF(small)
        if not self.bars:
            p.setPen(MUTED)
            p.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), "Nothing in this period")
            return []
        hi = max(*(b.value for b in self.bars), 0.0)
        hi = nice_ticks(0, hi)[-1] if hi > 0 else 1.0
        return self._draw_h(p, rect, fm, hi) if self.horizontal else self._draw_v(p, rect, fm, hi)

    def _color(self, i: int, b: Bar) -> QColor:
        return QColor(b.color or PALETTE[0])

    def _draw_h(self, p: QPainter, rect: QRectF, fm: QFontMetricsF, hi: float) -> list[QRectF]:
        label_w = min(max(fm.horizontalAdvance(b.label) for b in self.bars) + 8, rect.width() * 0.45)
        value_texts = [fmt_number(b.value, self.unit) + (f"  {b.note}" if b.note else "") for b in self.bars]
        value_w = max(fm.horizontalAdvance(t) for t in value_texts) + 8
        n = len(self.bars)
        row = min(rect.height() / n, fm.height() * 2.2)
        bar_h = max(row * 0.62, 4)
        area_w = max(rect.width() - label_w - value_w, 10)
        hits = []
        for i, (b, vt) in enumerate(zip(self.bars, value_texts, strict=True)):
            top = rect.top() + i * row
            p.setPen(TEXT)
            label = fm.elidedText(b.label, Qt.TextElideMode.ElideRight, label_w - 8)
            p.drawText(QRectF(rect.left(), top, label_w - 8, row),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), label)
            w = area_w * max(b.value, 0) / hi
            bar = QRectF(rect.left() + label_w, top + (row - bar_h) / 2, max(w, 1.5), bar_h)
            p.fillRect(bar, self._color(i, b))
            if i == self.focus_index:
                p.setPen(QPen(FOCUS, 2))
                p.drawRect(bar.adjusted(-1, -1, 1, 1))
            p.setPen(TEXT)
            p.drawText(QRectF(bar.right() + 6, top, value_w, row), int(Qt.AlignmentFlag.AlignVCenter), vt)
            hits.append(QRectF(rect.left(), top, rect.width(), row))
        return hits

    def _draw_v(self, p: QPainter, rect: QRectF, fm: QFontMetricsF, hi: float) -> list[QRectF]:
        n = len(self.bars)
        label_h = fm.height() + 4
        value_h = fm.height() + 2
        plot = QRectF(rect.left() + 4, rect.top() + value_h, rect.width() - 8, rect.height() - label_h - value_h)
        col = plot.width() / n
        bar_w = max(min(col * 0.7, 80), 3)
        p.setPen(QPen(MUTED, 1))
        p.drawLine(plot.bottomLeft(), plot.bottomRight())
        hits = []
        for i, b in enumerate(self.bars):
            cx = plot.left() + col * (i + 0.5)
            h = plot.height() * max(b.value, 0) / hi
            bar = QRectF(cx - bar_w / 2, plot.bottom() - h, bar_w, max(h, 1.0))
            p.fillRect(bar, self._color(i, b))
            if i == self.focus_index:
                p.setPen(QPen(FOCUS, 2))
                p.drawRect(bar.adjusted(-1, -1, 1, 1))
            p.setPen(TEXT)
            p.drawText(QRectF(cx - col / 2, bar.top() - value_h, col, value_h),
                       int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom),
                       fm.elidedText(fmt_number(b.value, self.unit), Qt.TextElideMode.ElideRight, col))
            p.drawText(QRectF(cx - col / 2, plot.bottom() + 2, col, label_h),
                       int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop),
                       fm.elidedText(b.label, Qt.TextElideMode.ElideRight, col))
            hits.append(QRectF(cx - col / 2, plot.top(), col, plot.height() + label_h))
        return hits


# -- goal gauge -----------------------------------------------------------------------------------
@dataclass
class GaugeData:
    value: float | None
    target: float | None = None
    baseline: float | None = None
    higher_is_better: bool = True
    low: float = 0.0
    high: float | None = None  # scale end; default: a round number above value/target/baseline
    extra: dict[str, str] = field(default_factory=dict)


def gauge_status(d: GaugeData) -> str:
    """"met" | "near" (within 10 % of the way from baseline to target) | "off" | "" (no target)."""
    if d.value is None or d.target is None:
        return ""
    good = d.value >= d.target if d.higher_is_better else d.value <= d.target
    if good:
        return "met"
    span = abs(d.target - d.baseline) if d.baseline is not None else abs(d.target) or 1.0
    return "near" if abs(d.target - d.value) <= 0.1 * (span or 1.0) else "off"


STATUS_TEXT = {"met": "on target", "near": "close to target", "off": "off target", "": "no target set"}
STATUS_COLOR = {"met": GOOD, "near": WARN, "off": BAD, "": MUTED}


class Gauge(_Chart):
    """A half-circle dial: the value's arc, a target tick and a baseline tick, the value in words."""

    def __init__(self, title: str = "", *, unit: str = "", parent: QWidget | None = None) -> None:
        super().__init__(title, unit=unit, parent=parent)
        self.data = GaugeData(None)
        self.setMinimumSize(170, 140)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(200, 160)

    def set_data(self, data: GaugeData) -> None:
        self.data = data
        self._changed()

    def item_count(self) -> int:
        return 1 if self.data.value is not None else 0

    def describe(self) -> str:
        d = self.data
        if d.value is None:
            return f"{self.title}: no data"
        text = f"{self.title}: {fmt_number(d.value, self.unit)}"
        if d.target is not None:
            text += f", target {fmt_number(d.target, self.unit)}"
        if d.baseline is not None:
            text += f", baseline {fmt_number(d.baseline, self.unit)}"
        return f"{text} — {STATUS_TEXT[gauge_status(d)]}"

    def draw(self, p: QPainter, rect: QRectF) -> list[QRectF]:
        rect = self._title(p, rect)
        d = self.data
        small = _font(p.font(), 0.85)
        big = _font(p.font(), 1.5, bold=True)
        fm_s = QFontMetricsF(small)
        fm_b = QFontMetricsF(big)
        text_h = fm_b.height() + fm_s.height() * 1.1
        size = min(rect.width() - 10, (rect.height() - text_h) * 2 - 10)
        if size < 30:
            return []
        arc = QRectF(rect.center().x() - size / 2, rect.top() + 6, size, size)
        known = [v for v in (d.value, d.target, d.baseline) if v is not None]
        high = d.high if d.high is not None else (nice_ticks(d.low, max([*known, d.low + 1e-9]) * 1.1)[-1]
                                                  if known else 1.0)
        span = (high - d.low) or 1.0

        def angle_of(v: float) -> float:  # degrees, 180 (left) .. 0 (right)
            return 180.0 - 180.0 * min(max((v - d.low) / span, 0.0), 1.0)

        thick = max(size * 0.11, 6)
        inner = arc.adjusted(thick / 2, thick / 2, -thick / 2, -thick / 2)
        p.setPen(QPen(GRID, thick, Qt.PenStyle.SolidLine, Qt.PenCapStyle.FlatCap))
        p.drawArc(inner, 0, 180 * 16)
        status = gauge_status(d)
        if d.value is not None:
            a = angle_of(d.value)
            p.setPen(QPen(STATUS_COLOR[status] if status else QColor(PALETTE[0]), thick, Qt.PenStyle.SolidLine,
                          Qt.PenCapStyle.FlatCap))
            p.drawArc(inner, 180 * 16, int(-(180 - a) * 16))
        cx, cy, r = inner.center().x(), inner.center().y(), inner.width() / 2
        for v, color, width, style in ((d.baseline, MUTED, 2.0, Qt.PenStyle.DotLine),
                                       (d.target, TEXT, 2.5, Qt.PenStyle.SolidLine)):
            if v is None:
                continue
            rad = math.radians(angle_of(v))
            p.setPen(QPen(color, width, style))
            p.drawLine(QPointF(cx + math.cos(rad) * (r - thick * 0.9), cy - math.sin(rad) * (r - thick * 0.9)),
                       QPointF(cx + math.cos(rad) * (r + thick * 0.9), cy - math.sin(rad) * (r + thick * 0.9)))
        p.setFont(big)
        p.setPen(TEXT)
        value_text = fmt_number(d.value, self.unit) if d.value is not None else "–"
        vrect = QRectF(rect.left(), cy - fm_b.height(), rect.width(), fm_b.height())
        p.drawText(vrect, int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom), value_text)
        p.setFont(small)
        sub = []
        if d.target is not None:
            sub.append(f"target {fmt_number(d.target, self.unit)}")
        if d.baseline is not None:
            sub.append(f"was {fmt_number(d.baseline, self.unit)}")
        p.setPen(STATUS_COLOR[status] if status in ("met", "off") else MUTED)
        line2 = STATUS_TEXT[status] if d.value is not None else "no data"
        p.drawText(QRectF(rect.left(), cy + 2, rect.width(), fm_s.height()),
                   int(Qt.AlignmentFlag.AlignHCenter), line2)
        p.setPen(MUTED)
        p.drawText(QRectF(rect.left(), cy + 2 + fm_s.height(), rect.width(), fm_s.height()),
                   int(Qt.AlignmentFlag.AlignHCenter),
                   fm_s.elidedText(" · ".join(sub), Qt.TextElideMode.ElideRight, rect.width()))
        return [QRectF(arc.left(), arc.top(), arc.width(), arc.height() / 2 + fm_s.height() * 2)]
