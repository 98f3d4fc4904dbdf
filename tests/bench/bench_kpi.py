"""Every KPI for one year of a busy practice: 100,000 visits with 250,000 claim lines (2.5 a visit),
their claims in every lifecycle state, reviews, edits, findings, expected visits and sync runs, in
a real SQLCipher store. Prints the time of the full report (overall, by payer) and of a daily
series as a ratio against a plain ``SELECT count(*)`` over the claims (and the encounters)
measured in the same run. Target: the full report under 1 s. Never asserts on speed."""

from __future__ import annotations

import json
import random
import secrets
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from agent import kpi
from agent.kpi_config import GoalsConfig
from agent.store import Store
from core.paths import Paths

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

        def full() -> None:
            rep.update(kpi.report(store, goals, start=year[0], end=year[1], today=date(2026, 1, 15)))

        full_s = _best(full)
        by_s = _best(lambda: kpi.report(store, goals, start=year[0], end=year[1], by="payer", today=date(2026, 1, 15)),
                     runs=1)
        series_s = _best(lambda: kpi.series(store, goals, "denial_rate", start=year[0], end=year[1], grain="day"),
                         runs=1)
        values = {k["key"]: k["value"] for k in rep["kpis"]}
        assert values["denial_rate"] is not None and rep["denial_reasons"]
        print(f"\n[bench] KPIs over {lines:,} claim lines ({n_claims:,} claims, {VISITS:,} visits; built in "
              f"{build_s:.1f} s): full report with baseline {full_s:.3f} s (target < 1 s), by payer {by_s:.3f} s, "
              f"daily series {series_s:.3f} s; count(*) claims {count_claims * 1000:.1f} ms -> ratio "
              f"{full_s / count_claims:.0f}x; count(*) encounters {count_enc * 1000:.1f} ms -> ratio "
              f"{full_s / count_enc:.0f}x; one full scan of the claims {scan * 1000:.0f} ms -> ratio "
              f"{full_s / scan:.0f}x")
    finally:
        store.close()
