"""Dashboard, goals and the monthly PDF report against a REAL engine (in-process, real SQLCipher
store, real keyring), seeded with claims born through agent.claims and moved by real answers.

Expected figures are worked out by hand next to the seed; the window must show what the engine
computes (asked over HTTP here as well) for the period and the provider chosen. Nothing sleeps:
waits are qtbot.waitUntil with timeouts. Artifacts: tests/artifacts/page-dashboard.png,
page-goals.png, report-page1.png (the PDF's first page, rendered by poppler's pdftoppm).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from agent import claims
from agent.engine import Engine
from agent.store import Store
from core import secrets as keys
from core.answers import Answer, Reason
from core.secrets import API_TOKEN
from core.states import AnswerKind, ClaimState
from tests.conftest import ROOT, run_cli, start_test_engine
from ui.app import protect_none_refcount
from ui.client import ApiClient
from ui.main_window import MainWindow
from ui.pages.dashboard import DashboardPage

protect_none_refcount()

WAIT = 20_000
ARTIFACTS = ROOT / "tests" / "artifacts"
MARCH = ("2025-03-01", "2025-03-31")
# id: (dos, rendering NPI, payer, billed, delivered on)
CLAIMS = {
    1: ("2025-03-03", "1234567893", "P1", "100.00", "2025-03-05"),  # lag 2, paid
    2: ("2025-03-04", "1234567893", "P1", "200.00", "2025-03-04"),  # lag 0, denied CO-16
    3: ("2025-03-10", "1987654328", "P2", "300.00", "2025-03-20"),  # lag 10, denied CO-97
    4: ("2025-03-12", "1987654328", "P2", "400.00", "2025-03-13"),  # lag 1, paid
    5: ("2025-03-15", "1234567893", "P2", "50.00", "2025-03-16"),  # lag 1, still open (submitted)
    6: ("2025-02-20", "1234567893", "P1", "999.00", "2025-02-21"),  # February: outside the period
}
# March, whole practice: adjudicated C1 C2 C3 C4 = 4, denied C2 C3 = 2 -> denial rate 50 %
# March, NPI 1234567893: adjudicated C1 C2 = 2, denied C2 = 1 -> 50 %; NPI 1987654328: C3 C4 -> 50 % too,
# so the provider filter is checked on the denied dollars instead: A: 200, B: 300 (practice: 500).
DENIED_DOLLARS = {"": 500.0, "1234567893": 200.0, "1987654328": 300.0}


def _ts(day: str) -> str:
    return f"{day}T12:00:00.000+00:00"


def seed(store: Store) -> None:
    with store.tx():
        store.conn.execute("INSERT INTO documents (id, sha256, origin, source, format, size, content, status, "
                           "received_at) VALUES (9001, 'seed', 'fixture', 'cli', 'hl7v2', 1, x'00', 'processed', ?)",
                           (_ts("2025-03-01"),))
        for cid, (dos, npi, payer, billed, _) in CLAIMS.items():
            data = {"dos_start": dos, "rendering": {"npi": npi}, "coverages": [{"payer_id": payer}],
                    "lines": [{"code": "99213", "units": 1, "unit_charge": billed}]}
            store.conn.execute(
                "INSERT INTO encounters (id, business_key, kind, source, source_id, document_id, state, mrn, dos, "
                "data, findings, content_hash, created_at, updated_at) VALUES (?,?,'charge','test',?,9001,'ready',"
                "?,?,?,'[]','h',?,?)", (9000 + cid, f"seed{cid}", f"V{cid}", f"MRN{cid}", dos, json.dumps(data),
                                       _ts(dos), _ts(dos)))
    for cid, (_, _, _, _, at) in CLAIMS.items():
        with store.tx():
            claims.record_delivery(store, encounter_id=9000 + cid, version=1, claim_id=f"C{cid}", target="fhir",
                                   remote_ids={"Claim": f"C{cid}"}, at=_ts(at))
    claims.apply_answers(store, [
        Answer(AnswerKind.CLAIM_RESPONSE, "d1", ClaimState.PAID, claim_ref="C1", paid="100.00",
               answered_on="2025-03-20"),
        Answer(AnswerKind.CLAIM_RESPONSE, "d2", ClaimState.DENIED, claim_ref="C2", paid="0",
               reasons=[Reason("carc", "16", group="CO", amount="200.00")], answered_on="2025-03-25"),
        Answer(AnswerKind.CLAIM_RESPONSE, "d3", ClaimState.DENIED, claim_ref="C3", paid="0",
               reasons=[Reason("carc", "97", group="CO", amount="300.00")], answered_on="2025-03-26"),
        Answer(AnswerKind.CLAIM_RESPONSE, "d4", ClaimState.PAID, claim_ref="C4", paid="400.00",
               answered_on="2025-03-27"),
        Answer(AnswerKind.CLAIM_RESPONSE, "d6", ClaimState.DENIED, claim_ref="C6", paid="0",
               reasons=[Reason("carc", "4", group="CO", amount="999.00")], answered_on="2025-03-01"),
    ])


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    eng = start_test_engine(tmp_path)
    seed(eng.store())
    yield eng
    eng.stop()


@pytest.fixture()
def window(engine: Engine, qtbot: Any) -> Iterator[Callable[..., MainWindow]]:
    made: list[tuple[MainWindow, ApiClient]] = []

    def make(role: str = "manager") -> MainWindow:
        client = ApiClient(engine.base, engine.tokens[role])  # type: ignore[attr-defined]
        win = MainWindow(client, role=role, user=f"{role}-user", paths=engine.paths)
        qtbot.addWidget(win)
        win.resize(1280, 980)
        win.show()
        made.append((win, client))
        return win

    yield make
    for win, client in made:
        win.close()
        client.close()
    QApplication.processEvents()


def api(eng: Engine, path: str, **params: str) -> Any:
    r = requests.get(f"{eng.url}{path}", params=params, timeout=30,  # type: ignore[attr-defined]
                     headers={"Authorization": f"Bearer {eng.tokens['manager']}"})  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    return r.json()


def kpi_value(report: dict[str, Any], key: str) -> float | None:
    return next(k["value"] for k in report["kpis"] if k["key"] == key)


def open_dashboard(win: MainWindow, qtbot: Any) -> DashboardPage:
    win.show_page("dashboard")
    page = win.pages["dashboard"]
    assert isinstance(page, DashboardPage)
    page.set_period(*MARCH)
    qtbot.waitUntil(lambda: page.report.get("start") == MARCH[0] and page.series.get("start") == MARCH[0],
                    timeout=WAIT)
    qtbot.waitUntil(lambda: win.client.pool.activeThreadCount() == 0, timeout=WAIT)
    QApplication.processEvents()
    return page


def shot(widget: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert widget.grab().save(str(path)), path
    return path


def click_bar(qtbot: Any, chart: Any, i: int) -> None:
    chart.repaint()  # the hit areas are where the chart was last painted
    QApplication.processEvents()
    assert len(chart.hit_rects) > i, chart.hit_rects
    qtbot.mouseClick(chart, Qt.MouseButton.LeftButton, pos=chart.hit_rects[i].center().toPoint())


# -- the dashboard shows the engine's figures ------------------------------------------------------
def test_dashboard_shows_the_engines_kpis_and_a_filter_change_refetches(engine: Engine, window, qtbot) -> None:
    win = window("manager")
    page = open_dashboard(win, qtbot)
    truth = api(engine, "/kpi", **{"from": MARCH[0], "to": MARCH[1]})
    assert kpi_value(truth, "denial_rate") == 50.0  # by hand: 2 denied of 4 adjudicated
    assert page.cards["denial_rate"].value.text() == "50.0 %"
    assert page.cards["denial_rate"].isVisible()
    # top denial reasons: CO-16 (C2) and CO-97 (C3), one claim each; February's CO-4 is not in March
    labels = [b.label for b in page.denials.bars]
    assert any(lab.startswith("CO-16") for lab in labels) and any(lab.startswith("CO-97") for lab in labels)
    assert not any(lab.startswith("CO-4 ") or lab == "CO-4" for lab in labels)
    assert sum(b.value for b in page.denials.bars) == 2
    # charge lag: 5 March claims delivered (lags 2, 0, 10, 1, 1); A/R: the one open claim (C5)
    assert sum(b.value for b in page.lag.bars) == 5
    assert sum(b.value for b in page.ar.bars) == 1
    assert [b.value for b in page.lag.bars] == [float(b["count"]) for b in truth["charge_lag"]]
    # the KPI table lists every KPI the engine computed, with the same text as the cards
    assert page.kpi_table.rowCount() == len(truth["kpis"])
    # the provider list came with the answer: both rendering NPIs of March
    providers = [page.provider.itemData(i) for i in range(page.provider.count())]
    assert set(providers) >= {"1234567893", "1987654328"}
    shot(win, "page-dashboard")

    # a filter change asks the engine again; the provider's own figures replace the practice's
    denied = next(k for k in page.report["kpis"] if k["key"] == "denied_dollars")
    assert denied["value"] == DENIED_DOLLARS[""]
    assert "all providers and payers" in page.summary.text()
    for npi in ("1234567893", "1987654328"):
        before = page.requests_sent
        page.provider.setCurrentIndex(page.provider.findData(npi))
        qtbot.waitUntil(lambda npi=npi: page.report.get("provider") == npi, timeout=WAIT)
        assert page.requests_sent == before + 1
        denied = next(k for k in page.report["kpis"] if k["key"] == "denied_dollars")
        assert denied["value"] == DENIED_DOLLARS[npi]
        assert "filtered to provider " + npi in page.summary.text()
    page.provider.setCurrentIndex(0)
    page.payer.setCurrentIndex(page.payer.findData("P2"))
    qtbot.waitUntil(lambda: page.report.get("payer") == "P2" and not page.report.get("provider"), timeout=WAIT)
    # P2 in March: C3 denied (300), C4 paid, C5 open -> 1 of 2 adjudicated denied
    assert kpi_value(page.report, "denial_rate") == 50.0
    assert next(k for k in page.report["kpis"] if k["key"] == "denied_dollars")["value"] == 300.0

    # another period, all payers again: February has one claim, denied
    page.payer.setCurrentIndex(0)
    page.set_period("2025-02-01", "2025-02-28")
    qtbot.waitUntil(lambda: page.report.get("start") == "2025-02-01", timeout=WAIT)
    qtbot.waitUntil(lambda: page.cards["denial_rate"].value.text() == "100.0 %", timeout=WAIT)
    assert [b.label for b in page.denials.bars][0].startswith("CO-4")


def _bars(chart: Any) -> dict[str, float]:
    return {b.label.split(" ")[0]: b.value for b in chart.bars if b.value}


def test_provider_and_payer_narrow_every_chart_and_the_trend(engine: Engine, window, qtbot) -> None:
    """Worked by hand from the seed (March 2025): provider 1234567893 has C1 (paid, lag 2), C2 (denied
    CO-16, lag 0) and C5 (open since 2025-03-16: A/R 90+, lag 1); with payer P2 only C5 is left."""
    win = window("manager")
    page = open_dashboard(win, qtbot)
    assert _bars(page.denials) == {"CO-97": 1.0, "CO-16": 1.0}  # the whole practice
    page.provider.setCurrentIndex(page.provider.findData("1234567893"))
    qtbot.waitUntil(lambda: page.report.get("provider") == "1234567893"
                    and page.series.get("provider") == "1234567893", timeout=WAIT)
    assert kpi_value(page.report, "denial_rate") == 50.0  # C2 of C1, C2
    assert kpi_value(page.report, "charge_lag_days") == 1.0  # (2 + 0 + 1) / 3
    assert _bars(page.denials) == {"CO-16": 1.0}  # C3's CO-97 belongs to the other provider
    assert _bars(page.lag) == {"0-1": 2.0, "2-3": 1.0}
    assert _bars(page.ar) == {"90+": 1.0}
    assert page.denial_table.rowCount() == 1
    march = next(p for p in page.series["points"] if p["period"].startswith("2025-03"))
    assert march["value"] == 50.0 and march["denominator"] == 2  # the trend narrowed too

    # both at once: provider 1234567893 AND payer P2 -> C5 only (open, nothing adjudicated)
    page.payer.setCurrentIndex(page.payer.findData("P2"))
    qtbot.waitUntil(lambda: page.report.get("payer") == "P2" and page.series.get("payer") == "P2", timeout=WAIT)
    assert page.provider.currentData() == "1234567893"  # the other choice stays
    assert page.report["provider"] == "1234567893"
    assert kpi_value(page.report, "denial_rate") is None
    assert kpi_value(page.report, "denied_dollars") == 0.0
    assert _bars(page.denials) == {}
    assert _bars(page.lag) == {"0-1": 1.0}
    assert _bars(page.ar) == {"90+": 1.0}
    assert "filtered to provider 1234567893 · payer P2" in page.summary.text()
    assert all(p["value"] is None for p in page.series["points"])
    # the figures are the engine's own for the same filters
    truth = api(engine, "/kpi", **{"from": MARCH[0], "to": MARCH[1], "provider": "1234567893", "payer": "P2"})
    assert [b.value for b in page.ar.bars] == [float(b["count"]) for b in truth["ar_buckets"]]
    assert page.provider.findData("1987654328") > 0  # the lists still offer every provider of the period
    shot(win, "page-dashboard-filtered")


def test_stale_answers_are_dropped(engine: Engine, window, qtbot) -> None:
    win = window("manager")
    page = open_dashboard(win, qtbot)
    page.set_period("2025-02-01", "2025-02-28")  # answered … but superseded before it lands
    page.set_period(*MARCH)
    qtbot.waitUntil(lambda: win.client.pool.activeThreadCount() == 0, timeout=WAIT)
    QApplication.processEvents()
    assert page.stale_dropped >= 1
    assert page.report["start"] == MARCH[0]


def shown_claims(win: MainWindow, qtbot: Any, before: int) -> set[str]:
    page = win.pages["claims"]
    qtbot.waitUntil(lambda: page.loads > before, timeout=WAIT)  # type: ignore[attr-defined]
    assert win.current_page() is page
    return {r["claim_id"] for r in page.model.rows}  # type: ignore[attr-defined]


def test_a_click_on_a_figure_opens_exactly_the_claims_behind_it(engine: Engine, window, qtbot) -> None:
    win = window("manager")
    page = open_dashboard(win, qtbot)
    claims_page = win.pages["claims"]
    # a denial reason bar -> the denied March claims with that reason: CO-97 (C3, $300) comes first
    n = claims_page.loads  # type: ignore[attr-defined]
    assert page.denials.bars[0].label.startswith("CO-97")
    click_bar(qtbot, page.denials, 0)
    assert shown_claims(win, qtbot, n) == {"C3"}
    assert claims_page.filter_label.text() == "Showing: Denial reason CO-97 · DOS 2025-03-01–2025-03-31"  # type: ignore[attr-defined]
    assert claims_page.clear_btn.isVisible()  # type: ignore[attr-defined]
    assert getattr(claims_page, "state").currentData() == ClaimState.DENIED
    shot(win, "claims-drill")
    # Clear: every claim again, February's too
    n = claims_page.loads  # type: ignore[attr-defined]
    qtbot.mouseClick(claims_page.clear_btn, Qt.MouseButton.LeftButton)  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: claims_page.loads > n, timeout=WAIT)  # type: ignore[attr-defined]
    assert {r["claim_id"] for r in claims_page.model.rows} == {f"C{i}" for i in CLAIMS}  # type: ignore[attr-defined]
    assert not claims_page.filter_label.isVisible()  # type: ignore[attr-defined]
    # an A/R bucket -> the open claims of that age: 90+ holds C5 (submitted 2025-03-16)
    win.show_page("dashboard")
    qtbot.waitUntil(lambda: bool(page.ar.bars), timeout=WAIT)
    n = claims_page.loads  # type: ignore[attr-defined]
    click_bar(qtbot, page.ar, 3)
    assert shown_claims(win, qtbot, n) == {"C5"}
    # a charge-lag bucket -> 0-1 days: C2 (0), C4 (1), C5 (1)
    win.show_page("dashboard")
    n = claims_page.loads  # type: ignore[attr-defined]
    click_bar(qtbot, page.lag, 0)
    assert shown_claims(win, qtbot, n) == {"C2", "C4", "C5"}
    # a KPI card -> the claims it counted: denial rate -> March's denied claims, narrowed like the page
    win.show_page("dashboard")
    page.provider.setCurrentIndex(page.provider.findData("1234567893"))
    qtbot.waitUntil(lambda: page.report.get("provider") == "1234567893", timeout=WAIT)
    n = claims_page.loads  # type: ignore[attr-defined]
    qtbot.mouseClick(page.cards["denial_rate"], Qt.MouseButton.LeftButton)
    assert shown_claims(win, qtbot, n) == {"C2"}
    assert "provider 1234567893" in claims_page.filter_label.text()  # type: ignore[attr-defined]
    win.show_page("dashboard")
    n = claims_page.loads  # type: ignore[attr-defined]
    qtbot.mouseClick(page.cards["days_in_ar"], Qt.MouseButton.LeftButton)  # every claim but rejected ones
    assert shown_claims(win, qtbot, n) == {"C1", "C2", "C5"}
    # the missed-charge rate goes to the expected visits
    win.show_page("dashboard")
    page.provider.setCurrentIndex(0)
    qtbot.waitUntil(lambda: not page.report.get("provider") and page.cards["missed_charge_rate"].isVisible(),
                    timeout=WAIT)
    qtbot.mouseClick(page.cards["missed_charge_rate"], Qt.MouseButton.LeftButton)
    assert win.current_page() is win.pages["encounters"]
    assert win.pages["encounters"].state.currentData() == "expected"  # type: ignore[attr-defined]
    # a point of the trend narrows the dashboard to that period
    win.show_page("dashboard")
    page.grain.setCurrentIndex(page.grain.findData("week"))
    qtbot.waitUntil(lambda: page.series.get("grain") == "week", timeout=WAIT)
    click_bar(qtbot, page.trend, 1)  # the second week of March 2025: Monday 3rd
    qtbot.waitUntil(lambda: page.report.get("start") == "2025-03-03", timeout=WAIT)
    assert page.report["end"] == "2025-03-09"


def test_front_desk_sees_no_figures(engine: Engine, window, qtbot) -> None:
    win = window("front_desk")
    win.show_page("dashboard")
    page = win.pages["dashboard"]
    assert page.denied_label.isVisible() and not page.body_scroll.isVisible()  # type: ignore[attr-defined]
    assert page.requests_sent == 0  # type: ignore[attr-defined]


# -- exports ----------------------------------------------------------------------------------------
def test_csv_of_every_table_and_the_pdf_report(engine: Engine, window, qtbot, tmp_path: Path) -> None:
    win = window("manager")
    page = open_dashboard(win, qtbot)
    page.save_path = lambda suggested, kind: str(tmp_path / suggested)
    files = {}
    for key in ("kpis", "denials", "ar", "lag"):
        path = page.export_csv(key)
        assert path, key
        with open(path, newline="", encoding="utf-8") as fh:
            files[key] = list(csv.reader(fh))
    assert files["kpis"][0][:3] == ["KPI", "Value", "Target"]
    assert len(files["kpis"]) == 1 + len(page.report["kpis"])
    assert {(r[1], r[2], r[4]) for r in files["denials"][1:]} == {("CO", "16", "1"), ("CO", "97", "1")}
    assert sum(int(r[1]) for r in files["lag"][1:]) == 5
    assert sum(int(r[1]) for r in files["ar"][1:]) == 1
    # a reason text that a spreadsheet would run is written as text
    from ui.pages.dashboard import write_csv

    write_csv(tmp_path / "x.csv", ["a"], [["=HYPERLINK(1)"], ["-12.5"]])
    assert (tmp_path / "x.csv").read_text().splitlines()[1:] == ["'=HYPERLINK(1)", "-12.5"]

    pdf = Path(page.export_pdf())
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert has_color(pdf_first_page(pdf, tmp_path / "dash-report"), QColor("#0072B2"))  # gauges, trend
    assert any(has_color(pdf_first_page(pdf, tmp_path / f"dash-report-{n}", page=n), QColor("#D55E00"))
               for n in (1, 2))  # the top denial reasons' bars


def pdf_first_page(pdf: Path, prefix: Path, page: int = 1) -> Path:
    assert shutil.which("pdftoppm"), "pdftoppm (poppler-utils) is missing: run scripts/setup.sh"
    subprocess.run(["pdftoppm", "-r", "80", "-png", "-f", str(page), "-l", str(page), "-singlefile", str(pdf),
                    str(prefix)],
                   check=True, timeout=60)
    png = prefix.with_suffix(".png")
    assert png.is_file()
    return png


def has_color(png: Path, color: QColor, tolerance: int = 24) -> bool:
    img = QImage(str(png))
    assert not img.isNull()
    for y in range(0, img.height(), 2):
        for x in range(0, img.width(), 2):
            c = img.pixelColor(x, y)
            if (abs(c.red() - color.red()) < tolerance and abs(c.green() - color.green()) < tolerance
                    and abs(c.blue() - color.blue()) < tolerance):
                return True
    return False


def test_report_verb_through_the_running_engine(engine: Engine, tmp_path: Path) -> None:
    """`chargebridge report --month 2025-03 --pdf FILE`: the CLI asks the engine, the launcher's
    render-report draws it with the chart widgets; the first page is kept as an artifact."""
    keys.set_secret(engine.paths, API_TOKEN, engine.tokens["manager"])  # type: ignore[attr-defined]
    out = tmp_path / "march.pdf"
    r = run_cli("report", "--month", "2025-03", "--pdf", str(out), home=engine.paths.home,
                env={"QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    assert "(2 pages;" in r.stdout
    assert out.read_bytes()[:5] == b"%PDF-"
    png = pdf_first_page(out, tmp_path / "page1")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, ARTIFACTS / "report-page1.png")
    assert has_color(png, QColor("#0072B2"))  # the gauges' arcs and the trend lines
    page2 = pdf_first_page(out, tmp_path / "page2", page=2)
    assert has_color(page2, QColor("#D55E00"))  # the top denial reasons' bars
    img = QImage(str(png))
    assert img.width() > 500 and img.height() > 600  # Letter at 80 dpi: 680 x 880

    bad = run_cli("report", "--month", "2025-13", "--pdf", str(out), home=engine.paths.home)
    assert bad.returncode == 2 and "YYYY-MM" in bad.stderr


def test_report_verb_without_an_engine(tmp_path: Path, keyring_ok: None) -> None:
    eng = start_test_engine(tmp_path)
    seed(eng.store())
    eng.stop()  # the CLI reads the store itself
    out = tmp_path / "march.pdf"
    r = run_cli("report", "--month", "2025-03", "--pdf", str(out), home=eng.paths.home,
                env={"QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:5] == b"%PDF-"
    assert has_color(pdf_first_page(out, tmp_path / "p1"), QColor("#0072B2"))


# -- goals ---------------------------------------------------------------------------------------------
def test_goals_page_saves_targets_the_dashboard_shows(engine: Engine, window, qtbot) -> None:
    win = window("manager")
    win.show_page("goals")
    page = win.pages["goals"]
    qtbot.waitUntil(lambda: page.table.rowCount() > 0, timeout=WAIT)  # type: ignore[attr-defined]
    table = page.table  # type: ignore[attr-defined]
    row = next(r for r in range(table.rowCount())
               if table.item(r, 0).data(Qt.ItemDataRole.UserRole) == "denial_rate")
    table.item(row, 3).setText("5")
    page.use_baseline.setChecked(True)  # type: ignore[attr-defined]
    from PySide6.QtCore import QDate

    page.base_from.setDate(QDate(2025, 2, 1))  # type: ignore[attr-defined]
    page.base_to.setDate(QDate(2025, 2, 28))  # type: ignore[attr-defined]
    page.save()  # type: ignore[attr-defined]
    qtbot.waitUntil(lambda: page.saved == 1, timeout=WAIT)  # type: ignore[attr-defined]
    goals = api(engine, "/goals")
    assert goals["targets"]["denial_rate"]["target"] == 5.0
    assert (goals["baseline_from"], goals["baseline_to"]) == ("2025-02-01", "2025-02-28")
    shot(win, "page-goals")

    # a target that is not a number is refused on the page, nothing is sent
    table.item(row, 3).setText("five")
    page.save()  # type: ignore[attr-defined]
    assert "not a number" in page.banner.text
    assert api(engine, "/goals")["targets"]["denial_rate"]["target"] == 5.0

    dash = open_dashboard(win, qtbot)
    card = dash.cards["denial_rate"]
    # March 50 % against a 5 % target (off), baseline February 100 %
    assert "target 5.0 %" in card.sub.text() and "baseline 100.0 %" in card.sub.text()
    assert "off target" in card.sub.text()
    assert "denial_rate" in dash.gauge_keys
    assert dash.trend.target == 5.0


def test_gauge_click_and_keyboard(engine: Engine, window, qtbot) -> None:
    win = window("manager")
    page = open_dashboard(win, qtbot)
    g = page.gauges[0]
    g.setFocus()
    qtbot.keyClick(g, Qt.Key.Key_Right)
    qtbot.keyClick(g, Qt.Key.Key_Return)
    assert page.last_drill is not None
    assert page.last_drill[0] in ("claims", "encounters", "mismatches", "status")
