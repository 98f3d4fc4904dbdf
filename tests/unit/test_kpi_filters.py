"""KPI provider / payer filters (agent/kpi.py ``provider=`` / ``payer=``) on the hand-built practice of
test_kpi.py: every figure, the denial reasons, the A/R and lag buckets and the trend narrow to the
filter. Expected values are worked out by hand next to each assert (see test_kpi.py's fixture)."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from agent import kpi
from agent.kpi_config import GoalsConfig
from agent.store import Store
from tests.unit.test_kpi import MARCH, TODAY, practice  # noqa: F401  (the fixture)


def _v(rep: dict[str, Any]) -> dict[str, Any]:
    return {k["key"]: k["value"] for k in rep["kpis"]}


def test_payer_filter_narrows_every_figure(practice: Store) -> None:  # noqa: F811
    rep = kpi.report(practice, GoalsConfig(), start=MARCH[0], end=MARCH[1], today=TODAY, payer="P1")
    assert rep["payer"] == "P1" and rep["provider"] == ""
    v = _v(rep)
    # P1's claims in March: C1 paid (once, untouched), C2 denied (once), C6 paid (sent twice): answered 3
    assert v["clean_claim_rate"] == 33.33  # C1 only
    assert v["first_pass_acceptance"] == 66.67  # C1, C2
    assert v["denial_rate"] == 33.33 and v["denial_dollar_rate"] == 44.44 and v["denied_dollars"] == 200.0
    # A/R: C1 15, C2 21, C6 13 = 49 / 3
    assert v["days_in_ar"] == 16.33
    # lag: C1 2, C2 0, C6 1 = 3 / 3
    assert v["charge_lag_days"] == 1.0
    # P1's charge encounters: E1, E2, E6, E8; nobody touched them; ready E1, E2, E6
    assert v["touch_rate"] == 0.0 and v["auto_capture_rate"] == 75.0
    # the expected visits name no payer: nothing to count for P1
    assert v["missed_charge_rate"] is None
    # findings of P1's encounters: C2's denial (open), C6's rejection (resolved in 6 h); C3's is P2's
    assert v["mismatch_resolution_hours"] == 6.0 and v["open_mismatches"] == 1.0
    assert v["sync_uptime"] == 66.67  # the practice's, whatever the filter
    assert [(r["code"], r["claims"]) for r in rep["denial_reasons"]] == [("16", 1)]
    # no open P1 claim (C4, C5 are P2's)
    assert [b["count"] for b in rep["ar_buckets"]] == [0, 0, 0, 0]
    # lag: C2 0, C6 1 -> 0-1: 2 ($350); C1 2 -> 2-3: 1 ($100)
    assert [(b["label"], b["count"], b["amount"]) for b in rep["charge_lag"] if b["count"]] == [
        ("0-1", 2, "350.00"), ("2-3", 1, "100.00")]


def test_provider_and_payer_together(practice: Store) -> None:  # noqa: F811
    rep = kpi.report(practice, GoalsConfig(), start=MARCH[0], end=MARCH[1], today=TODAY, provider="NPI-B",
                     payer="P2")
    v = _v(rep)
    # NPI-B at P2: C3 rejected (lag 10), C4 open since 03-13 (lag 1): answered C3 only
    assert v["clean_claim_rate"] == 0.0 and v["first_pass_acceptance"] == 0.0
    assert v["denial_rate"] is None  # nothing adjudicated
    assert v["days_in_ar"] == 18.0  # C4: 03-13 -> 03-31; rejected C3 left out
    assert v["charge_lag_days"] == 5.5  # (10 + 1) / 2
    # encounters E3, E4, E9: E9 edited
    assert v["touch_rate"] == 33.33 and v["auto_capture_rate"] == 66.67
    assert rep["denial_reasons"] == []
    assert [(b["label"], b["count"], b["amount"]) for b in rep["ar_buckets"] if b["count"]] == [
        ("0-30", 1, "400.00")]
    # a filter with no match: every claim figure empty, not the practice's
    none = _v(kpi.report(practice, GoalsConfig(), start=MARCH[0], end=MARCH[1], today=TODAY, payer="NOPE"))
    assert none["denial_rate"] is None and none["charge_lag_days"] is None and none["touch_rate"] is None


def test_filtered_series_and_baseline(practice: Store) -> None:  # noqa: F811
    # February: C7 (P1) denied; March: P1 1 of 3 adjudicated denied; P2 never adjudicated
    s = kpi.series(practice, GoalsConfig(), "denial_rate", start=date(2025, 2, 1), end=MARCH[1], grain="month",
                   today=TODAY, payer="P1")
    assert [(p["period"], p["value"]) for p in s["points"]] == [("2025-02", 100.0), ("2025-03", 33.33)]
    s = kpi.series(practice, GoalsConfig(), "denial_rate", start=date(2025, 2, 1), end=MARCH[1], grain="month",
                   today=TODAY, payer="P2")
    assert [p["value"] for p in s["points"]] == [None, None]
    # weekly lag for NPI-A: 03-03 week C1 (2), C2 (0) -> 1.0; 03-10 week C5 (1) -> 1.0
    s = kpi.series(practice, GoalsConfig(), "charge_lag_days", start=MARCH[0], end=date(2025, 3, 16), grain="week",
                   today=TODAY, provider="NPI-A")
    assert [(p["period"], p["value"]) for p in s["points"]] == [
        ("2025-02-24", None), ("2025-03-03", 1.0), ("2025-03-10", 1.0)]
    goals = GoalsConfig(baseline_from="2025-02-01", baseline_to="2025-02-28")
    rep = kpi.report(practice, goals, start=MARCH[0], end=MARCH[1], today=TODAY, payer="P2")
    assert {k["key"]: k["baseline"] for k in rep["kpis"]}["denial_rate"] is None  # C7 is P1's


def test_filter_is_checked(practice: Store) -> None:  # noqa: F811
    with pytest.raises(kpi.KpiError):
        kpi.report(practice, GoalsConfig(), payer="P" * 81)


def test_cli_kpi_filters(tmp_path, keyring_ok: None) -> None:  # type: ignore[no-untyped-def]
    """`chargebridge kpi --provider NPI --payer ID --json` on a real home (the CLI reads the store):
    the dashboard test's seed, where March's denied dollars are 200 for P1 (C2) and 300 for P2 (C3)."""
    import json as _json

    from tests.conftest import run_cli, start_test_engine
    from tests.ui.test_dashboard import seed

    eng = start_test_engine(tmp_path)
    seed(eng.store())
    eng.stop()
    for args, want in ((["--payer", "P1"], 200.0), (["--payer", "P2"], 300.0),
                       (["--provider", "1987654328", "--payer", "P2"], 300.0),
                       (["--provider", "1234567893", "--payer", "P2"], 0.0), ([], 500.0)):
        r = run_cli("kpi", "--from", "2025-03-01", "--to", "2025-03-31", *args, "--json", home=eng.paths.home)
        assert r.returncode == 0, r.stderr
        rep = _json.loads(r.stdout)
        assert next(k["value"] for k in rep["kpis"] if k["key"] == "denied_dollars") == want, args
    r = run_cli("kpi", "--from", "2025-03-01", "--to", "2025-03-31", "--payer", "P2", home=eng.paths.home)
    assert r.returncode == 0 and "payer P2" in r.stdout.splitlines()[0]
