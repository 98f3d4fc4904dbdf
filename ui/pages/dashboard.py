"""Dashboard (manager): is billing getting better? KPIs against goals and baseline, trends, top
denial reasons, A/R by age and the charge-lag histogram, for a date range, a provider and a payer
(either, both or neither: every figure, reason, bucket, baseline and the trend narrow to them) —
from ``GET /api/v1/kpi`` and ``/kpi/series`` only.

A filter change asks the engine again (a provider, payer or period choice at once; typed dates
debounced 150 ms; each new filter supersedes the answers
still in flight for the old one); the charts are repainted from the answer at once, which is
cheap — the drawing does not depend on how many claim lines the engine read (see
tests/bench/bench_dashboard.py). A click on a figure opens exactly the claims behind it (the
Claims page with ``GET /claims``' filters: same dates of service, provider and payer, plus the
reason, A/R bucket, lag bucket or states the figure counted), or the encounters / mismatches.
Every table has an **Export CSV** button, and **Monthly report (PDF)** writes the charts shown
through :mod:`ui.report` (the same drawing as ``chargebridge report``).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from PySide6.QtCore import QDate, Qt, QTimer, Signal
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDateEdit,
    QFileDialog,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.states import ClaimState, EncounterState, Role
from ui.charts import STATUS_COLOR, UNIT, BarChart, Gauge, LineChart, fmt_number
from ui.client import ApiFailure
from ui.pages import Page, Session, alive
from ui.report import (
    AR_COLORS,
    HEADLINE,
    TREND_KPIS,
    bucket_bars,
    bucket_rows,
    denial_bars,
    denial_rows,
    gauge_of,
    kpi_rows,
    kpis_of,
    render_pdf,
    series_of,
    unit_of,
)

RANGES = [("last_90", "Last 90 days"), ("this_month", "This month"), ("last_month", "Last month"),
          ("ytd", "Year to date"), ("last_12", "Last 12 months"), ("custom", "Custom")]
GRAINS = [("month", "by month"), ("week", "by week"), ("day", "by day")]
# where a click on a KPI goes: (page, argument) — the encounters page filters by state
KPI_DRILL: dict[str, tuple[str, str]] = {
    "missed_charge_rate": ("encounters", EncounterState.EXPECTED),
    "auto_capture_rate": ("encounters", ""), "touch_rate": ("encounters", ""),
    "mismatch_resolution_hours": ("mismatches", ""), "open_mismatches": ("mismatches", ""),
    "sync_uptime": ("status", ""), "sync_failures": ("status", ""),
}
_ANSWERED = [s.value for s in ClaimState if s != ClaimState.SUBMITTED]
# the claims a claim KPI counted (its states; none: every claim of the period) — the Claims page
# asks GET /claims for them with the dashboard's dates of service, provider and payer
CLAIM_DRILL: dict[str, list[str]] = {
    "denial_rate": [ClaimState.DENIED.value], "denial_dollar_rate": [ClaimState.DENIED.value],
    "denied_dollars": [ClaimState.DENIED.value], "first_pass_acceptance": _ANSWERED, "clean_claim_rate": _ANSWERED,
    "days_in_ar": [s.value for s in ClaimState if s != ClaimState.REJECTED], "charge_lag_days": [],
}
TREND_LABEL = {"denial_rate": "Denial rate", "clean_claim_rate": "Clean-claim rate", "charge_lag_days": "Charge lag",
               "days_in_ar": "Days in A/R"}
NEEDS_MANAGER = "The dashboard is for practice managers — sign in with a manager's token to see it."


def range_dates(key: str, today: date) -> tuple[date, date]:
    if key == "this_month":
        return today.replace(day=1), today
    if key == "last_month":
        end = today.replace(day=1) - timedelta(days=1)
        return end.replace(day=1), end
    if key == "ytd":
        return today.replace(month=1, day=1), today
    if key == "last_12":
        return (today.replace(day=1) - timedelta(days=335)).replace(day=1), today
    return today - timedelta(days=89), today


def write_csv(path: Path | str, head: list[str], rows: list[list[str]]) -> None:
    """A CSV a spreadsheet opens safely: cells that a spreadsheet would run as a formula get a
    leading apostrophe (reason texts and payer names come from outside)."""
    def cell(v: str) -> str:
        return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") and not _numeric(v) else v

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        w.writerows([[cell(str(c)) for c in r] for r in rows])


def _numeric(v: str) -> bool:
    try:
        float(v.replace(",", "").replace("$", "").replace("%", "").strip())
    except ValueError:
        return False
    return True


class KpiCard(QFrame):
    """One KPI: value in big type, target and baseline below, a coloured edge for its status."""

    clicked = Signal(str)

    def __init__(self, key: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = key
        self.setObjectName("kpiCard")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 6, 10, 6)
        self.title = QLabel()
        self.title.setStyleSheet("color: #52606d;")
        self.value = QLabel("–")
        self.value.setStyleSheet("font-size: 18pt; font-weight: 600; color: #1f2933;")
        self.sub = QLabel("")
        self.sub.setStyleSheet("color: #52606d;")
        self.sub.setWordWrap(True)
        for w in (self.title, self.value, self.sub):
            lay.addWidget(w)
        self._status = ""

    def set_kpi(self, k: dict[str, Any]) -> None:
        u = unit_of(k)
        self.title.setText(str(k.get("label", self.key)))
        v = k.get("value")
        self.value.setText(fmt_number(float(v), u) if isinstance(v, (int, float)) else "–")
        parts = []
        if isinstance(k.get("target"), (int, float)):
            parts.append(f"target {fmt_number(float(k['target']), u)}")
        if isinstance(k.get("baseline"), (int, float)):
            parts.append(f"baseline {fmt_number(float(k['baseline']), u)}")
        status = str(k.get("status", ""))
        words = {"met": "on target", "not_met": "off target", "no_data": "no data yet",
                 "no_target": "no target set"}.get(status, status)
        self.sub.setText(" · ".join([*parts, words]))
        color = {"met": STATUS_COLOR["met"], "not_met": STATUS_COLOR["off"]}.get(status, STATUS_COLOR[""]).name()
        self._status = status
        self.setStyleSheet(f"#kpiCard {{ background: white; border: 1px solid #d9dee3; "
                           f"border-left: 5px solid {color}; border-radius: 4px; }}")
        self.setAccessibleName(f"{self.title.text()}: {self.value.text()}, {self.sub.text()}")
        self.setToolTip(f"{self.sub.text()}\nClick to see what is behind it.")

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        self.clicked.emit(self.key)

    def keyPressEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space):
            self.clicked.emit(self.key)
        else:
            super().keyPressEvent(event)


class DashboardPage(Page):
    name = "dashboard"
    title = "Dashboard"
    report_shown = Signal()  # an answer is on screen (tests and the benchmark wait on it)

    def __init__(self, session: Session, parent: QWidget | None = None,
                 today: Callable[[], date] = date.today) -> None:
        super().__init__(session, parent)
        self.today = today
        self.report: dict[str, Any] = {}
        self.series: dict[str, Any] = {}
        self.generation = 0  # answers for an older filter are dropped
        self.series_generation = 0  # the same for the trend (its own choices: KPI, grain)
        self.stale_dropped = 0
        self.requests_sent = 0
        self.last_drill: tuple[str, str, str] | None = None
        self.painted_at = 0.0  # perf_counter() when the last answer was put on screen
        self._lists_for: tuple[str, str] = ("", "")  # the period the provider/payer lists belong to
        self._series_for: tuple[Any, ...] = ()  # the period and filters the trend was asked for
        self.save_path: Callable[[str, str], str] = self._ask_path  # tests give a path instead of a dialog
        lay = self._outer

        # -- filters ------------------------------------------------------------------------
        bar = QHBoxLayout()
        self.range = QComboBox()
        for key, text in RANGES:
            self.range.addItem(text, key)
        self.range.setToolTip("Which dates of service to count")
        lab = QLabel("&Period:")
        lab.setBuddy(self.range)
        bar.addWidget(lab)
        bar.addWidget(self.range)
        self.start = QDateEdit()
        self.end = QDateEdit()
        for w, tip in ((self.start, "First date of service"), (self.end, "Last date of service")):
            w.setCalendarPopup(True)
            w.setDisplayFormat("yyyy-MM-dd")
            w.setToolTip(tip)
            w.setAccessibleName(tip)
        bar.addWidget(self.start)
        bar.addWidget(QLabel("to"))
        bar.addWidget(self.end)
        self.provider = QComboBox()
        self.provider.addItem("All providers", "")
        self.provider.setToolTip("Only claims of this rendering provider (NPI)")
        self.payer = QComboBox()
        self.payer.addItem("All payers", "")
        self.payer.setToolTip("Only claims of this payer")
        for text, combo in (("Pro&vider:", self.provider), ("Pa&yer:", self.payer)):
            lab = QLabel(text)
            lab.setBuddy(combo)
            bar.addWidget(lab)
            bar.addWidget(combo)
        bar.addStretch(1)
        self.pdf_btn = QPushButton("Monthly &report (PDF)…")
        self.pdf_btn.setToolTip("Write these figures and charts as a PDF (the month of the period's end)")
        self.pdf_btn.clicked.connect(self.export_pdf)
        bar.addWidget(self.pdf_btn)
        lay.addLayout(bar)
        self.summary = QLabel("")
        self.summary.setStyleSheet("color: #52606d;")
        self.summary.setAccessibleName("What the dashboard shows")
        lay.addWidget(self.summary)

        # -- content --------------------------------------------------------------------------
        body = QWidget()
        col = QVBoxLayout(body)
        cards = QGridLayout()
        self.cards: dict[str, KpiCard] = {}
        for i, key in enumerate(HEADLINE):
            card = KpiCard(key)
            card.clicked.connect(self.drill_kpi)
            self.cards[key] = card
            cards.addWidget(card, i // 4, i % 4)
        col.addLayout(cards)

        row = QHBoxLayout()
        trend_box = QGroupBox("Trend")
        tl = QVBoxLayout(trend_box)
        tb = QHBoxLayout()
        self.trend_kpi = QComboBox()
        for key in TREND_KPIS:
            self.trend_kpi.addItem(TREND_LABEL.get(key, key), key)
        self.trend_kpi.setToolTip("Which KPI the trend chart shows")
        self.grain = QComboBox()
        for key, text in GRAINS:
            self.grain.addItem(text, key)
        tb.addWidget(self.trend_kpi)
        tb.addWidget(self.grain)
        tb.addStretch(1)
        tl.addLayout(tb)
        self.trend = LineChart("")
        self.trend.setMinimumHeight(230)
        self.trend.picked.connect(self.drill_period)
        tl.addWidget(self.trend)
        row.addWidget(trend_box, 3)
        gauge_box = QGroupBox("Goals")
        gl = QGridLayout(gauge_box)
        self.gauges = [Gauge("") for _ in range(4)]
        for i, g in enumerate(self.gauges):
            g.picked.connect(lambda _=0, i=i: self._gauge_clicked(i))
            gl.addWidget(g, i // 2, i % 2)
        self.gauge_keys: list[str] = []
        row.addWidget(gauge_box, 2)
        col.addLayout(row)

        row = QHBoxLayout()
        self.denials = BarChart("Top denial reasons", horizontal=True)
        self.denials.picked.connect(self.drill_denial)
        self.ar = BarChart("A/R by age (open claims)")
        self.ar.picked.connect(self.drill_ar)
        self.lag = BarChart("Charge lag (days, visit to delivery)")
        self.lag.picked.connect(self.drill_lag)
        for chart, key in ((self.denials, "denials"), (self.ar, "ar"), (self.lag, "lag")):
            chart.setMinimumHeight(220)
            box = QVBoxLayout()
            box.addWidget(chart, 1)
            btn = QPushButton("Export CSV…")
            btn.setObjectName(f"csv_{key}")
            btn.setToolTip("Save this table as a CSV file for a spreadsheet")
            btn.clicked.connect(lambda _=False, k=key: self.export_csv(k))
            box.addWidget(btn, 0, Qt.AlignmentFlag.AlignRight)
            row.addLayout(box, 2 if key == "denials" else 1)
        col.addLayout(row)

        tables = QHBoxLayout()
        self.kpi_table = self._table("Every KPI")
        self.denial_table = self._table("Denial reasons")
        for table, key, title in ((self.kpi_table, "kpis", "Every KPI"), (self.denial_table, "denial_table",
                                                                          "Denial reasons")):
            group = QGroupBox(title)
            bl = QVBoxLayout(group)
            bl.addWidget(table)
            btn = QPushButton("Export CSV…")
            btn.setObjectName(f"csv_{key}")
            btn.setToolTip("Save this table as a CSV file for a spreadsheet")
            btn.clicked.connect(lambda _=False, k=key: self.export_csv(k))
            bl.addWidget(btn, 0, Qt.AlignmentFlag.AlignRight)
            tables.addWidget(group)
        col.addLayout(tables)
        self.kpi_table.cellActivated.connect(lambda r, _c: self._kpi_row_activated(r))

        self.body_scroll = QScrollArea()
        self.body_scroll.setWidgetResizable(True)
        self.body_scroll.setWidget(body)
        self.body_scroll.setFrameShape(QFrame.Shape.NoFrame)
        lay.addWidget(self.body_scroll, 1)
        self.denied_label = QLabel(NEEDS_MANAGER)
        self.denied_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.denied_label.setWordWrap(True)
        lay.addWidget(self.denied_label)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self.refresh)
        self._set_range("last_90")
        self.range.currentIndexChanged.connect(self._range_picked)
        for w in (self.start, self.end):
            w.dateChanged.connect(self._dates_edited)
        self.provider.currentIndexChanged.connect(lambda _: self._who_changed(self.provider))
        self.payer.currentIndexChanged.connect(lambda _: self._who_changed(self.payer))
        self.trend_kpi.currentIndexChanged.connect(lambda _: self._fetch_series())
        self.grain.currentIndexChanged.connect(lambda _: self._fetch_series())
        self.apply_role()

    @staticmethod
    def _table(name: str) -> QTableWidget:
        t = QTableWidget()
        t.setAccessibleName(name)
        t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        t.verticalHeader().hide()
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        t.horizontalHeader().setStretchLastSection(True)
        t.setMinimumHeight(180)
        return t

    # -- roles and filters ------------------------------------------------------------------
    def apply_role(self) -> None:
        ok = self.session.at_least(Role.MANAGER)
        self.body_scroll.setVisible(ok)
        self.denied_label.setVisible(not ok)
        self.pdf_btn.setEnabled(ok)

    def _set_range(self, key: str) -> None:
        s, e = range_dates(key, self.today())
        for w, d in ((self.start, s), (self.end, e)):
            w.blockSignals(True)
            w.setDate(QDate(d.year, d.month, d.day))
            w.blockSignals(False)
        i = self.range.findData(key)
        self.range.blockSignals(True)
        self.range.setCurrentIndex(i)
        self.range.blockSignals(False)

    def _range_picked(self, _: int) -> None:
        key = self.range.currentData()
        if key != "custom":
            self._set_range(key)
            self.refresh()  # a choice, not typing: ask at once
            return
        self._debounce.start()

    def _dates_edited(self, _: QDate) -> None:
        i = self.range.findData("custom")
        self.range.blockSignals(True)
        self.range.setCurrentIndex(i)
        self.range.blockSignals(False)
        self._debounce.start()

    def set_period(self, start: str, end: str) -> None:
        """Show ``start..end`` (YYYY-MM-DD) and fetch."""
        self.range.blockSignals(True)
        self.range.setCurrentIndex(self.range.findData("custom"))
        self.range.blockSignals(False)
        for w, text in ((self.start, start), (self.end, end)):
            w.blockSignals(True)
            w.setDate(QDate.fromString(text, "yyyy-MM-dd"))
            w.blockSignals(False)
        self.refresh()

    def filters(self) -> dict[str, str]:
        """The dates of service the engine is asked about."""
        return {"from": self.start.date().toString("yyyy-MM-dd"), "to": self.end.date().toString("yyyy-MM-dd")}

    def who(self) -> dict[str, str]:
        """The provider and / or payer chosen: the engine narrows every figure to them (both at once
        is fine: the claims of that provider with that payer)."""
        return {k: str(c.currentData()) for k, c in (("provider", self.provider), ("payer", self.payer))
                if c.currentData()}

    def _who_changed(self, combo: QComboBox) -> None:
        self.refresh()  # a choice, not typing: ask at once (the debounce is for the date fields)

    # -- data ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Ask the engine for the period, narrowed to the chosen provider and payer. The provider
        and payer lists are asked for once per period (with ``by``, not narrowed)."""
        self._debounce.stop()
        if not self.session.at_least(Role.MANAGER):
            return
        self.generation += 1
        gen = self.generation
        self.requests_sent += 1
        self.summary.setText("Loading…")
        q = {**self.filters(), **self.who()}
        # the figures first, alone: the engine answers one plain report fastest; the trend and the
        # provider / payer lists are asked for once it is on screen (see _after_paint)
        self.client.call("GET", "/api/v1/kpi", params=q,
                         on_ok=alive(self, lambda a: self._report(gen, a)),
                         on_error=alive(self, lambda f: self._failed(gen, f, "load the KPIs")))

    def _after_paint(self, gen: int) -> None:
        q = self.filters()
        period = (q["from"], q["to"])
        if period != self._lists_for:
            self._lists_for = period
            for by in ("provider", "payer"):
                self.client.call("GET", "/api/v1/kpi", params={**q, "by": by},
                                 on_ok=alive(self, lambda a, by=by: self._groups(gen, by, a)),
                                 on_error=alive(self, lambda f: None))
        if (*period, *sorted(self.who().items())) != self._series_for:
            self._fetch_series()

    def _fetch_series(self) -> None:
        if not self.session.at_least(Role.MANAGER):
            return
        self.series_generation += 1
        gen = self.series_generation
        q = self.filters()
        who = self.who()
        self._series_for = (q["from"], q["to"], *sorted(who.items()))
        params = {**q, **who, "kpi": self.trend_kpi.currentData(), "grain": self.grain.currentData()}
        self.client.call("GET", "/api/v1/kpi/series", params=params,
                         on_ok=alive(self, lambda a: self._series(gen, a)),
                         on_error=alive(self, lambda f: self._failed(self.generation, f, "load the trend")
                                        if gen == self.series_generation else None))

    def _failed(self, gen: int, failure: ApiFailure, doing: str) -> None:
        if gen != self.generation:
            return
        self.summary.setText("")
        self.banner.show_failure(failure, doing)

    def _report(self, gen: int, answer: Any) -> None:
        if gen != self.generation:
            self.stale_dropped += 1
            return
        if not isinstance(answer, dict) or not isinstance(answer.get("kpis"), list):
            self.banner.show_failure("the engine's KPI answer could not be read — update ChargeBridge")
            return
        self.banner.hide()
        self.show_report(answer)
        self._after_paint(gen)

    @staticmethod
    def narrowed_to(report: dict[str, Any]) -> str:
        """What the engine narrowed a report to, in words ("provider 1234567893 · payer P2")."""
        return " · ".join(f"{k} {report[k]}" for k in ("provider", "payer") if report.get(k))

    def show_report(self, report: dict[str, Any]) -> None:
        """Put a KPI answer on screen (cards, gauges, bar charts, tables)."""
        self.report = report
        by_key = {k["key"]: k for k in kpis_of(report)}
        for key, card in self.cards.items():
            card.setVisible(key in by_key)
            if key in by_key:
                card.set_kpi(by_key[key])
        targeted = [k for k in kpis_of(report) if isinstance(k.get("target"), (int, float))][:4]
        if not targeted:
            targeted = [by_key[k] for k in ("denial_rate", "clean_claim_rate", "days_in_ar", "charge_lag_days")
                        if k in by_key][:4]
        self.gauge_keys = [k["key"] for k in targeted]
        for i, g in enumerate(self.gauges):
            g.setVisible(i < len(targeted))
            if i < len(targeted):
                g.title = str(targeted[i].get("label", ""))
                g.unit = unit_of(targeted[i])
                g.setAccessibleName(g.title)
                g.set_data(gauge_of(targeted[i]))
        self.denials.set_data(denial_bars(report))
        self.ar.set_data(bucket_bars(report.get("ar_buckets"), AR_COLORS))
        self.lag.set_data(bucket_bars(report.get("charge_lag"), ("#0072B2",)))
        self._fill(self.kpi_table, *kpi_rows(report))
        self._fill(self.denial_table, *denial_rows(report))
        n_claims = sum(int(b.get("count") or 0) for b in report.get("charge_lag") or [] if isinstance(b, dict))
        who = self.narrowed_to(report)
        who = (f"filtered to {who} (every figure, chart and the trend; sync health stays the practice's)"
               if who else "all providers and payers")
        self.summary.setText(f"Dates of service {report.get('start', '')} to {report.get('end', '')} · {who}"
                             f" · {n_claims:,} claim{'s' if n_claims != 1 else ''} delivered"
                             + (f" · baseline {report['baseline_from']} to {report['baseline_to']}"
                                if report.get("baseline_from") else " · no baseline period set (Goals page)"))
        self.painted_at = time.perf_counter()
        self.report_shown.emit()

    def _series(self, gen: int, answer: Any) -> None:
        if gen != self.series_generation:
            self.stale_dropped += 1
            return
        if not isinstance(answer, dict) or not isinstance(answer.get("points"), list):
            return
        self.series = answer
        labels, series, target = series_of(answer)
        self.trend.title = str(answer.get("label", ""))
        self.trend.unit = UNIT.get(str(answer.get("unit", "")), "")
        base = next((k.get("baseline") for k in self.report.get("kpis") or []
                     if isinstance(k, dict) and k.get("key") == answer.get("kpi")), None)
        self.trend.set_data(labels, series, target=target,
                            baseline=float(base) if isinstance(base, (int, float)) else None)

    def _groups(self, gen: int, by: str, answer: Any) -> None:
        if gen != self.generation or not isinstance(answer, dict):
            return
        combo = self.provider if by == "provider" else self.payer
        keys = sorted({str(g.get("key")) for g in answer.get("groups") or [] if isinstance(g, dict) and g.get("key")})
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("All providers" if by == "provider" else "All payers", "")
        for k in keys:
            combo.addItem(k, k)
        if current and combo.findData(current) < 0:
            combo.addItem(str(current), current)
        combo.setCurrentIndex(max(combo.findData(current), 0))
        combo.blockSignals(False)

    @staticmethod
    def _fill(table: QTableWidget, head: list[str], rows: list[list[str]]) -> None:
        table.setUpdatesEnabled(False)
        table.clear()
        table.setColumnCount(len(head))
        table.setHorizontalHeaderLabels(head)
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                table.setItem(r, c, item)
        table.setUpdatesEnabled(True)

    # -- drilling down -----------------------------------------------------------------------
    def claims_filter(self, *, states: list[str] | tuple[str, ...] = (), **extra: str) -> str:
        """The Claims page's argument for the claims behind a figure: GET /claims' query string with
        the dates of service, provider and payer the figure was computed for (the report's own, so a
        click after the filters moved but before the answer came opens what is on screen)."""
        r = self.report
        shown = bool(r.get("start"))
        q: list[tuple[str, str]] = [("state", s) for s in states]
        q.append(("from", str(r["start"]) if shown else self.filters()["from"]))
        q.append(("to", str(r.get("end") or "") if shown else self.filters()["to"]))
        for k in ("provider", "payer"):
            v = r.get(k) if shown else self.who().get(k)
            if v:
                q.append((k, str(v)))
        q += [(k, v) for k, v in extra.items() if v]
        return urlencode(q)

    def _go(self, page: str, arg: str, what: str) -> None:
        """Open ``page`` filtered by ``arg``; the claims page when the window has one, else the
        encounters (a claim is an encounter delivered)."""
        window = self.window()
        pages = getattr(window, "pages", {})
        if page == "claims" and "claims" not in pages:
            page, arg = "encounters", ""
        self.last_drill = (page, arg, what)
        self.session.message.emit(f"Showing {what}")
        self.session.navigate.emit(page, arg)

    def drill_kpi(self, key: str) -> None:
        label = str(next((k.get("label") for k in kpis_of(self.report) if k.get("key") == key), key))
        if key in CLAIM_DRILL or key not in KPI_DRILL:
            self._go("claims", self.claims_filter(states=CLAIM_DRILL.get(key, [])), f"the claims behind {label}")
            return
        page, arg = KPI_DRILL[key]
        self._go(page, str(arg), f"what is behind {label}")

    def _gauge_clicked(self, i: int) -> None:
        if i < len(self.gauge_keys):
            self.drill_kpi(self.gauge_keys[i])

    def _kpi_row_activated(self, row: int) -> None:
        rows = kpis_of(self.report)
        if 0 <= row < len(rows):
            self.drill_kpi(rows[row]["key"])

    def drill_denial(self, i: int) -> None:
        reasons = [r for r in self.report.get("denial_reasons") or [] if isinstance(r, dict)]
        if 0 <= i < len(reasons):
            r = reasons[i]
            code = "-".join(x for x in (str(r.get("group") or ""), str(r.get("code") or "")) if x)
            self._go("claims", self.claims_filter(states=[ClaimState.DENIED.value], reason=code),
                     f"the denied claims with reason {code}")

    def drill_ar(self, i: int) -> None:
        buckets = [b for b in self.report.get("ar_buckets") or [] if isinstance(b, dict)]
        if 0 <= i < len(buckets):
            label = str(buckets[i].get("label", ""))
            self._go("claims", self.claims_filter(age=label), f"claims waiting for the payer ({label} days)")

    def drill_lag(self, i: int) -> None:
        buckets = [b for b in self.report.get("charge_lag") or [] if isinstance(b, dict)]
        if 0 <= i < len(buckets):
            label = str(buckets[i].get("label", ""))
            self._go("claims", self.claims_filter(lag=label), f"claims delivered {label} days after the visit")

    def drill_period(self, i: int) -> None:
        """A point of the trend: the dashboard narrows to that period (a month, week or day)."""
        points = [p for p in self.series.get("points") or [] if isinstance(p, dict)]
        if not 0 <= i < len(points):
            return
        period = str(points[i].get("period", ""))
        grain = self.series.get("grain")
        try:
            if grain == "month":
                start = date.fromisoformat(period + "-01")
                end = (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
            else:
                start = date.fromisoformat(period)
                end = start + timedelta(days=6 if grain == "week" else 0)
        except ValueError:
            return
        self.last_drill = ("dashboard", f"{start}..{end}", f"the period {period}")
        self.set_period(start.isoformat(), end.isoformat())

    # -- exports ---------------------------------------------------------------------------------
    def table_data(self, key: str) -> tuple[str, list[str], list[list[str]]]:
        r = self.report
        if key == "kpis":
            return ("kpis", *kpi_rows(r))
        if key in ("denials", "denial_table"):
            return ("denial-reasons", *denial_rows(r))
        if key == "ar":
            return ("ar-buckets", *bucket_rows(r.get("ar_buckets")))
        return ("charge-lag", *bucket_rows(r.get("charge_lag")))

    def export_csv(self, key: str) -> str:
        name, head, rows = self.table_data(key)
        suggested = f"chargebridge-{name}-{self.filters()['from']}-{self.filters()['to']}.csv"
        path = self.save_path(suggested, "CSV files (*.csv)")
        if not path:
            return ""
        try:
            write_csv(path, head, rows)
        except OSError as exc:
            self.banner.show_failure(f"could not write {path}: {exc.strerror} — choose another folder")
            return ""
        self.session.message.emit(f"Saved {len(rows)} rows to {path}")
        return path

    def export_pdf(self) -> str:
        end = self.end.date()
        month = f"{end.year():04d}-{end.month():02d}"
        path = self.save_path(f"chargebridge-report-{month}.pdf", "PDF files (*.pdf)")
        if not path:
            return ""
        payload = {"title": f"ChargeBridge report — {self.start.date().toString('yyyy-MM-dd')} to "
                            f"{end.toString('yyyy-MM-dd')}",
                   "report": self.report, "series": [self.series] if self.series else []}
        try:
            render_pdf(payload, path)
        except OSError as exc:
            self.banner.show_failure(f"could not write {path}: {exc.strerror} — choose another folder")
            return ""
        self.session.message.emit(f"Saved the report to {path}")
        return path

    def _ask_path(self, suggested: str, kind: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, "Save as", str(Path.home() / suggested), kind)
        return path
