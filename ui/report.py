"""The monthly KPI report as a PDF, drawn by the dashboard's own chart widgets (QPdfWriter +
QPainter), and the converters from the engine's KPI answers to chart data both use.

Two ways in:

* the dashboard's **Monthly report (PDF)** button calls :func:`render_pdf` with what it shows;
* ``chargebridge report --month YYYY-MM --pdf FILE``: the CLI (``agent``, which may not import Qt)
  gathers the figures from the engine's API — or from the store when no engine runs — and starts
  ``chargebridge render-report --pdf FILE`` with them as JSON on stdin; the launcher
  (``installer.entry``) sends that here (:func:`main`). This module only draws: it never talks
  to the engine, so the same figures give the same PDF.

The JSON (``payload``) is ``{"title", "period", "generated_at", "report": KpiReport,
"series": [KpiSeries, ...]}`` (core.schemas). It comes from our own CLI, but it is still read
with a size budget and field by field: anything unexpected is skipped, never a crash mid-page.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMarginsF, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPageLayout, QPageSize, QPainter, QPdfWriter, QPen

from ui.charts import (
    MUTED,
    STATUS_COLOR,
    TEXT,
    UNIT,
    Bar,
    BarChart,
    Gauge,
    GaugeData,
    LineChart,
    Series,
    fmt_number,
)

MAX_PAYLOAD = 8 * 1024 * 1024  # bytes of JSON on stdin: a year of KPIs is a few hundred KB
# KPIs the report and the dashboard put first (the rest follow in the engine's order)
HEADLINE = ("clean_claim_rate", "first_pass_acceptance", "denial_rate", "days_in_ar", "charge_lag_days",
            "auto_capture_rate", "missed_charge_rate", "open_mismatches")
TREND_KPIS = ("denial_rate", "clean_claim_rate", "charge_lag_days", "days_in_ar")
STATUS_WORDS = {"met": "on target", "not_met": "off target", "no_data": "no data", "no_target": "no target set"}
AR_COLORS = ("#009E73", "#56B4E9", "#E69F00", "#D55E00")  # 0-30 … 90+: calm to alarming


# -- converters (engine answer -> chart data) ------------------------------------------------------
def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _str(v: Any, limit: int = 200) -> str:
    return str(v)[:limit] if isinstance(v, (str, int, float)) else ""


def kpis_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's KPI rows, headline KPIs first."""
    rows = [k for k in report.get("kpis") or [] if isinstance(k, dict) and isinstance(k.get("key"), str)]
    order = {k: i for i, k in enumerate(HEADLINE)}
    return sorted(rows, key=lambda k: order.get(k["key"], len(order)))


def unit_of(kpi: dict[str, Any]) -> str:
    return UNIT.get(_str(kpi.get("unit")), "")


def gauge_of(kpi: dict[str, Any]) -> GaugeData:
    high = 100.0 if kpi.get("unit") == "percent" else None
    return GaugeData(value=_num(kpi.get("value")), target=_num(kpi.get("target")),
                     baseline=_num(kpi.get("baseline")), higher_is_better=kpi.get("direction") != "lower",
                     high=high)


def denial_bars(report: dict[str, Any], limit: int = 10) -> list[Bar]:
    out = []
    for r in (report.get("denial_reasons") or [])[:limit]:
        if not isinstance(r, dict):
            continue
        code = "-".join(x for x in (_str(r.get("group"), 8), _str(r.get("code"), 16)) if x)
        desc = _str(r.get("description"), 60)
        amount = _num(r.get("amount"))
        out.append(Bar(f"{code} {desc}".strip(), _num(r.get("claims")) or 0.0, color="#D55E00",
                       note=fmt_number(amount, "$") if amount else ""))
    return out


def bucket_bars(buckets: Any, colors: Sequence[str] = ()) -> list[Bar]:
    out = []
    for i, b in enumerate(buckets or []):
        if not isinstance(b, dict):
            continue
        amount = _num(b.get("amount"))
        out.append(Bar(_str(b.get("label"), 24), _num(b.get("count")) or 0.0,
                       color=colors[i % len(colors)] if colors else "",
                       note=fmt_number(amount, "$") if amount else ""))
    return out


def series_of(series: dict[str, Any]) -> tuple[list[str], list[Series], float | None]:
    points = [p for p in series.get("points") or [] if isinstance(p, dict)]
    labels = [_str(p.get("period"), 10) for p in points]
    values = [_num(p.get("value")) for p in points]
    return labels, [Series(_str(series.get("label")) or _str(series.get("kpi")), values)], _num(series.get("target"))


def kpi_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The KPI table (dashboard and CSV): headers and one text row per KPI."""
    head = ["KPI", "Value", "Target", "Baseline", "Status", "Numerator", "Denominator"]
    rows = []
    for k in kpis_of(report):
        u = unit_of(k)

        def f(v: Any, u: str = u) -> str:
            n = _num(v)
            return fmt_number(n, u) if n is not None else ""

        rows.append([_str(k.get("label")), f(k.get("value")), f(k.get("target")), f(k.get("baseline")),
                     STATUS_WORDS.get(_str(k.get("status")), _str(k.get("status"))),
                     f(k.get("numerator"), ""), f(k.get("denominator"), "")])
    return head, rows


def denial_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["Kind", "Group", "Code", "Description", "Claims", "Amount"]
    rows = [[_str(r.get("kind")), _str(r.get("group")), _str(r.get("code")), _str(r.get("description")),
             _str(r.get("claims")), _str(r.get("amount"))]
            for r in report.get("denial_reasons") or [] if isinstance(r, dict)]
    return head, rows


def bucket_rows(buckets: Any) -> tuple[list[str], list[list[str]]]:
    return ["Bucket", "Claims", "Amount"], [[_str(b.get("label")), _str(b.get("count")), _str(b.get("amount"))]
                                            for b in buckets or [] if isinstance(b, dict)]


# -- the PDF ---------------------------------------------------------------------------------------
class _Pager:
    """Lays blocks top to bottom on Letter pages; a block that does not fit starts a new page."""

    def __init__(self, writer: QPdfWriter, painter: QPainter) -> None:
        self.writer, self.p = writer, painter
        self.width = float(writer.width())
        self.height = float(writer.height())
        self.y = 0.0
        self.pages = 1

    def take(self, h: float) -> QRectF:
        if self.y + h > self.height and self.y > 0:
            self.writer.newPage()
            self.pages += 1
            self.y = 0.0
        r = QRectF(0, self.y, self.width, h)
        self.y += h
        return r


def render_pdf(payload: dict[str, Any], path: Path | str) -> int:
    """Write the report to ``path``; returns the number of pages. Needs a QApplication."""
    report = payload.get("report") if isinstance(payload.get("report"), dict) else {}
    assert isinstance(report, dict)
    series = [s for s in payload.get("series") or [] if isinstance(s, dict)]
    writer = QPdfWriter(str(path))
    writer.setResolution(96)  # one unit = one screen pixel at 96 dpi: charts look as on screen
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.Letter), QPageLayout.Orientation.Portrait,
                                     QMarginsF(14, 14, 14, 14), QPageLayout.Unit.Millimeter))
    writer.setTitle(_str(payload.get("title")) or "ChargeBridge monthly report")
    writer.setCreator("ChargeBridge")
    p = QPainter(writer)
    if not p.isActive():
        raise OSError(13, "the file cannot be opened for writing")
    try:
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        base = QFont(p.font())
        base.setPointSizeF(9)
        p.setFont(base)
        pager = _Pager(writer, p)
        _heading(p, pager, payload, report)
        _kpi_table(p, pager, report, base)
        _gauges(p, pager, report, base)
        for i in range(0, len(series), 2):  # trend charts, two per row
            row = pager.take(230)
            w = row.width() / 2
            for j, s in enumerate(series[i:i + 2]):
                chart = LineChart(_str(s.get("label")), unit=UNIT.get(_str(s.get("unit")), ""))
                labels, ss, target = series_of(s)
                chart.set_data(labels, ss, target=target)
                p.setFont(base)
                chart.draw(p, QRectF(row.left() + j * w, row.top() + 8, w - 12, row.height() - 16))
        blocks = [("Top denial reasons", denial_bars(report), True),
                  ("A/R by age (open claims)", bucket_bars(report.get("ar_buckets"), AR_COLORS), False),
                  ("Charge lag: days from visit to delivery", bucket_bars(report.get("charge_lag"), ("#0072B2",)),
                   False)]
        for title, bars, horizontal in blocks:
            rect = pager.take(230 if horizontal else 200)
            bc = BarChart(title, horizontal=horizontal)
            bc.set_data(bars)
            p.setFont(base)
            bc.draw(p, rect.adjusted(0, 8, 0, -8))
        pages = pager.pages
    finally:
        p.end()
    return pages


def _heading(p: QPainter, pager: _Pager, payload: dict[str, Any], report: dict[str, Any]) -> None:
    rect = pager.take(64)
    big = QFont(p.font())
    big.setPointSizeF(17)
    big.setBold(True)
    p.setFont(big)
    p.setPen(TEXT)
    p.drawText(QRectF(rect.left(), rect.top(), rect.width(), 30), int(Qt.AlignmentFlag.AlignLeft),
               _str(payload.get("title")) or "ChargeBridge monthly report")
    small = QFont(p.font())
    small.setPointSizeF(9)
    small.setBold(False)
    p.setFont(small)
    p.setPen(MUTED)
    line = (f"Dates of service {_str(report.get('start'))} to {_str(report.get('end'))}"
            + (f" · baseline {_str(report.get('baseline_from'))} to {_str(report.get('baseline_to'))}"
               if report.get("baseline_from") else "")
            + f" · computed {_str(report.get('computed_at'))[:16].replace('T', ' ')}")
    p.drawText(QRectF(rect.left(), rect.top() + 32, rect.width(), 20), int(Qt.AlignmentFlag.AlignLeft), line)
    p.setPen(QPen(QColor("#d9dee3"), 1))
    p.drawLine(QPointF(rect.left(), rect.bottom() - 4), QPointF(rect.right(), rect.bottom() - 4))


def _kpi_table(p: QPainter, pager: _Pager, report: dict[str, Any], base: QFont) -> None:
    head, rows = kpi_rows(report)
    head, rows = head[:5], [r[:5] for r in rows]
    fm = QFontMetricsF(base)
    row_h = fm.height() + 6
    widths = (0.38, 0.16, 0.14, 0.14, 0.18)
    statuses = [_str(k.get("status")) for k in kpis_of(report)]
    for i, cells in enumerate([head, *rows]):
        rect = pager.take(row_h)
        x = rect.left()
        bold = QFont(base)
        bold.setBold(i == 0)
        p.setFont(bold)
        if i % 2 == 0 and i:
            p.fillRect(rect, QColor("#f5f7fa"))
        for j, (cell, w) in enumerate(zip(cells, widths, strict=True)):
            cw = rect.width() * w
            color = TEXT
            if i and j == 4:
                color = {"met": STATUS_COLOR["met"], "not_met": STATUS_COLOR["off"]}.get(statuses[i - 1], MUTED)
            p.setPen(color)
            align = Qt.AlignmentFlag.AlignLeft if j == 0 else Qt.AlignmentFlag.AlignRight
            p.drawText(QRectF(x + 4, rect.top(), cw - 8, rect.height()),
                       int(align | Qt.AlignmentFlag.AlignVCenter), cell)
            x += cw
    pager.take(8)


def _gauges(p: QPainter, pager: _Pager, report: dict[str, Any], base: QFont) -> None:
    rows = kpis_of(report)
    targeted = [k for k in rows if _num(k.get("target")) is not None][:4]
    if not targeted:  # no goals set yet: the four figures a manager reads first, as the dashboard does
        targeted = [k for k in rows if k["key"] in ("denial_rate", "clean_claim_rate", "days_in_ar",
                                                    "charge_lag_days")][:4]
    if not targeted:
        return
    rect = pager.take(170)
    w = rect.width() / 4
    for i, k in enumerate(targeted):
        g = Gauge(_str(k.get("label")), unit=unit_of(k))
        g.set_data(gauge_of(k))
        p.setFont(base)
        g.draw(p, QRectF(rect.left() + i * w, rect.top() + 4, w - 10, rect.height() - 8))


# -- `chargebridge render-report` (the launcher sends it here) -----------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="chargebridge render-report",
                                 description="draw the KPI report (JSON on stdin) as a PDF")
    ap.add_argument("--pdf", required=True, help="the PDF file to write")
    args = ap.parse_args(argv)
    raw = sys.stdin.buffer.read(MAX_PAYLOAD + 1)
    if len(raw) > MAX_PAYLOAD:
        print("chargebridge render-report: the report data is larger than 8 MB — choose a shorter period",
              file=sys.stderr)
        return 2
    try:
        payload = json.loads(raw)
    except ValueError:
        print("chargebridge render-report: the report data is not JSON — run it through `chargebridge report`",
              file=sys.stderr)
        return 2
    if not isinstance(payload, dict):
        print("chargebridge render-report: the report data is not an object", file=sys.stderr)
        return 2
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and sys.platform.startswith("linux"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # a server without a desktop
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["chargebridge-report"])
    out = Path(args.pdf)
    tmp = out.with_name(out.name + ".part")
    try:
        pages = render_pdf(payload, tmp)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        print(f"chargebridge render-report: cannot write {out}: {exc.strerror} — choose another file",
              file=sys.stderr)
        return 1
    del app
    print(json.dumps({"pdf": str(out), "pages": pages}))
    return 0
