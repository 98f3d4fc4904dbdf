"""Every KPI for one year of a busy practice: 100,000 visits with 250,000 claim lines (2.5 a visit),
their claims in every lifecycle state, reviews, edits, findings, expected visits and sync runs, in
a real SQLCipher store. Prints the time of the full report (overall, by payer, filtered) and of a
daily series as a ratio against a plain ``SELECT count(*)`` over the claims (and the encounters)
measured in the same run, before (the full-scan code kept as tests/unit/kpi_oracle.py) and after
the per-day aggregates (agent/kpi_agg.py): the one-off aggregation of the whole year (migration
15 on an existing store, or a bulk load), and a day's answers re-summed before the next report.
Target: the full report under 1 s. Never asserts on speed."""

from __future__ import annotations

import json
import random
import secrets
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from agent import kpi, kpi_agg
from agent.kpi_config import GoalsConfig
from agent.store import Store
from core.paths import Paths
from tests.unit import kpi_oracle

VISITS = 100_000
START = date(2025, 1, 1)
STATES = ["paid"] * 60 + ["partially_paid"] * 8 + ["denied"] * 10 + ["rejected"] * 4 + ["accepted"] * 8 + \
    ["submitted"] * 10
CARC = ["16", "50", "97", "197", "27", "18", "29", "109", "11", "96"]


def _build(store: Store) -> tuple[int, int]:
    rng = random.Random(7)
    ts = "2025-01-01T00:00:00.000+00:00"
    lines_total = 0
    enc_rows, claim_rows, ev_rows, rev_rows, find_rows = [], [], [], [], []
    for i in range(1, VISITS + 1):
        dos = START + timedelta(days=rng.randrange(365))
        n_lines = 2 if i % 2 else 3  # 2.5 lines a visit on average
        lines_total += n_lines
        npi, payer = f"NPI{i % 12:02d}", f"PAYER{i % 25:02d}"
        data = {"dos_start": dos.isoformat(), "rendering": {"npi": npi}, "coverages": [{"payer_id": payer}],
                "lines": [{"code": "99213", "units": 1, "unit_charge": "95.00"} for _ in range(n_lines)]}
        enc_rows.append((i, f"k{i}", "charge", "bench", f"V{i}", "ready" if i % 17 else "needs_review", f"M{i}",
                         dos.isoformat(), json.dumps(data), ts, ts))
        ev_rows.append((ts, "encounter.rules", i, "{}"))
        if i % 20 == 0:
            rev_rows.append((i, "approve", ts))
        if i % 33 == 0:
            ev_rows.append((ts, "encounter.edited", i, "{}"))
        state = STATES[i % len(STATES)]
        sub = dos + timedelta(days=rng.randrange(0, 9))
        adj = (sub + timedelta(days=rng.randrange(7, 60))).isoformat() if state in ("paid", "partially_paid",
                                                                                   "denied") else ""
        reasons: list[dict[str, Any]] = []
        if state == "denied":
            reasons = [{"kind": "carc", "code": rng.choice(CARC), "group": "CO", "amount": "95.00"},
                       {"kind": "rarc", "code": "N362"}]
            find_rows.append((f"claim_denied:C{i}:1", "claim_denied", i, dos.isoformat(), ts, ts,
                              "resolved" if i % 3 else "open", "2025-01-02T00:00:00.000+00:00" if i % 3 else ""))
        claim_rows.append((f"C{i}", i, "x12", state, dos.isoformat(), npi, payer, f"{95 * n_lines:.2f}",
                           1 + (i % 9 == 0), json.dumps(reasons), f"{sub.isoformat()}T12:00:00.000+00:00",
                           f"{sub.isoformat()}T12:00:00.000+00:00", adj, ts))
    exp_rows = [(VISITS + j, f"x{j}", "expected", "bench", f"S{j}", "expected", f"M{j * 19}",
                 (START + timedelta(days=j % 365)).isoformat(), "{}", ts, ts) for j in range(1, 5001)]
    with store.tx():
        store.conn.execute("INSERT INTO documents (id, sha256, origin, source, format, size, content, status, "
                           "received_at) VALUES (1, 'b', 'bench', 'cli', 'hl7v2', 1, x'00', 'processed', ?)", (ts,))
        store.conn.executemany("INSERT INTO encounters (id, business_key, kind, source, source_id, document_id, state, "
                               "mrn, dos, data, findings, content_hash, created_at, updated_at) VALUES "
                               "(?,?,?,?,?,1,?,?,?,?,'[]','h',?,?)", enc_rows + exp_rows)
        store.conn.executemany("INSERT INTO events (at, kind, encounter_id, detail) VALUES (?,?,?,?)", ev_rows)
        store.conn.executemany("INSERT INTO reviews (encounter_id, version, content_hash, decision, actor, at) "
                               "VALUES (?, 1, 'h', ?, 'coder', ?)", rev_rows)
        store.conn.executemany("INSERT INTO claims (claim_id, encounter_id, target, state, dos, provider_npi, payer, "
                               "billed, submissions, reasons, first_submitted_at, submitted_at, adjudicated_on, "
                               "updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", claim_rows)
        store.conn.executemany("INSERT INTO findings (fingerprint, kind, encounter_id, dos, first_seen, last_seen, "
                               "status, resolved_at) VALUES (?,?,?,?,?,?,?,?)", find_rows)
        store.conn.executemany(  # a sync run an hour, one in 50 failed
            "INSERT INTO events (at, kind, detail) VALUES (?, 'sync.run', ?)",
            [(f"{START + timedelta(days=h // 24)}T{h % 24:02d}:00:00.000+00:00", json.dumps({"ok": h % 50 != 0}))
             for h in range(365 * 24)])
    store.conn.execute("ANALYZE")
    return lines_total, len(claim_rows)


def _best(fn: Any, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def test_all_kpis_for_a_busy_year(tmp_path: Path) -> None:
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    store = Store.open_with_key(paths, secrets.token_bytes(32))
    try:
        t = time.perf_counter()
        lines, n_claims = _build(store)
        build_s = time.perf_counter() - t
        goals = GoalsConfig(baseline_from="2025-01-01", baseline_to="2025-03-31",
                            targets={"denial_rate": {"target": 8.0}})
        year = (date(2025, 1, 1), date(2025, 12, 31))
        count_claims = _best(lambda: store.conn.execute("SELECT count(*) FROM claims").fetchone())
        count_enc = _best(lambda: store.conn.execute("SELECT count(*) FROM encounters").fetchone())
        # count(*) reads SQLite's smallest index; a sum over a column reads every claim row
        scan = _best(lambda: store.conn.execute("SELECT sum(CAST(billed AS REAL)) FROM claims").fetchone())
        rep: dict[str, Any] = {}
        today = date(2026, 1, 15)

        # before: the full scan on every request (same data, same run)
        old_full = _best(lambda: kpi_oracle.report(store, goals, start=year[0], end=year[1], today=today), runs=1)
        old_by = _best(lambda: kpi_oracle.report(store, goals, start=year[0], end=year[1], by="payer", today=today),
                       runs=1)
        old_series = _best(lambda: kpi_oracle.series(store, goals, "denial_rate", start=year[0], end=year[1],
                                                     grain="day"), runs=1)
        # the one-off aggregation of the whole year (every day dirty after the bulk load)
        dirty = store.conn.execute("SELECT count(*) FROM kpi_dirty").fetchone()[0]
        t = time.perf_counter()
        kpi_agg.refresh(store)
        agg_s = time.perf_counter() - t
        agg_rows = store.conn.execute("SELECT count(*) FROM kpi_daily").fetchone()[0]

        def full() -> None:
            rep.update(kpi.report(store, goals, start=year[0], end=year[1], today=today))

        full_s = _best(full)
        by_s = _best(lambda: kpi.report(store, goals, start=year[0], end=year[1], by="payer", today=today))
        filt_s = _best(lambda: kpi.report(store, goals, start=year[0], end=year[1], today=today, provider="NPI03",
                                          payer="PAYER03"))
        series_s = _best(lambda: kpi.series(store, goals, "denial_rate", start=year[0], end=year[1], grain="day"))
        # a day's answers arrive (every claim of one date of service paid): the next report re-sums that day
        with store.tx():
            n_day = store.conn.execute("UPDATE claims SET state = 'paid', adjudicated_on = '2025-07-01' "
                                       "WHERE dos = '2025-06-02'").rowcount
        t = time.perf_counter()
        kpi.report(store, goals, start=year[0], end=year[1], today=today)
        incr_s = time.perf_counter() - t
        values = {k["key"]: k["value"] for k in rep["kpis"]}
        assert values["denial_rate"] is not None and rep["denial_reasons"]
        print(f"\n[bench] KPIs over {lines:,} claim lines ({n_claims:,} claims, {VISITS:,} visits; built in "
              f"{build_s:.1f} s); count(*) claims {count_claims * 1000:.1f} ms, count(*) encounters "
              f"{count_enc * 1000:.1f} ms, one full scan of the claims (sum billed) {scan * 1000:.0f} ms")
        print(f"  before (full scan): report {old_full:.3f} s ({old_full / count_claims:.0f}x count(*)), by payer "
              f"{old_by:.3f} s, daily series {old_series:.3f} s")
        print(f"  one-off aggregation of {dirty} dirty days -> {agg_rows:,} aggregate rows: {agg_s:.3f} s")
        print(f"  after (aggregates): report with baseline {full_s * 1000:.1f} ms (target < 1 s; "
              f"{full_s / count_claims:.1f}x count(*) claims, {full_s / count_enc:.1f}x count(*) encounters, "
              f"{full_s / scan:.2f}x a claims scan, {old_full / full_s:.0f}x faster), by payer {by_s * 1000:.1f} ms "
              f"({old_by / by_s:.0f}x faster), provider+payer filter {filt_s * 1000:.1f} ms, daily series "
              f"{series_s * 1000:.1f} ms ({old_series / series_s:.0f}x faster)")
        print(f"  a day's answers ({n_day} claims of one date of service) then the report: {incr_s * 1000:.1f} ms "
              f"(re-sums that day first)")
    finally:
        store.close()
