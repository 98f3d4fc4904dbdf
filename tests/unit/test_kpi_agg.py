"""KPI pre-aggregation (agent/kpi_agg.py, store migration 15) in a real SQLCipher store.

* property-style: random claims, answers, reviews, edits, voids, date moves and retention-style
  deletes, in rounds; after each round the aggregate-based report (every scope, every ``by``) and
  series (every grain) equal the full-scan computation kept in tests/unit/kpi_oracle.py;
* the triggers mark exactly the days a write touches, a report re-sums only those and leaves
  nothing dirty, and a report really reads the aggregates (a tampered aggregate shows);
* the hand-worked practice of test_kpi.py gives the oracle's figures through the real write paths.

Amounts are multiples of 0.25 so float sums are exact in any order.
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from typing import Any

import pytest

from agent import claims, kpi, kpi_agg
from agent.kpi_config import GoalsConfig
from agent.store import Store
from core.answers import Answer, Reason
from core.states import AnswerKind, ClaimState
from tests.unit import kpi_oracle
from tests.unit.test_kpi import MARCH, TODAY, practice  # noqa: F401  (the fixture)

START = date(2025, 2, 20)  # the data spans February's end, all of March and April's start
DAYS = 45
NPIS = ["NPI-A", "NPI-B", "NPI-C", ""]
PAYERS = ["P1", "P2", "P3"]
STATES = ["submitted", "accepted", "rejected", "paid", "partially_paid", "denied"]
CARC = ["16", "50", "97", "197"]
GOALS = GoalsConfig(baseline_from="2025-03-01", baseline_to="2025-03-31", missed_charge_days=3)
SCOPES = [("", ""), ("NPI-A", ""), ("", "P2"), ("NPI-B", "P1"), ("", "NOPE"), ("", "")]


def _day(rng: random.Random) -> date:
    return START + timedelta(days=rng.randrange(DAYS))


def _dos(rng: random.Random) -> str:
    d = _day(rng).isoformat()
    return d + "T09:30:00" if rng.random() < 0.2 else d  # a DOS with a time part stays in its day


def _ts(d: date) -> str:
    return f"{d.isoformat()}T12:00:00.000+00:00"


def _money(rng: random.Random) -> str:
    return f"{rng.randrange(1, 2000) * 0.25:.2f}"


def _reasons(rng: random.Random, billed: str) -> str:
    out: list[dict[str, Any]] = []
    for _ in range(rng.randrange(0, 3)):
        r: dict[str, Any] = {"kind": "carc", "code": rng.choice(CARC), "group": rng.choice(["CO", "PR"])}
        if rng.random() < 0.6:
            r["amount"] = _money(rng)
        out.append(r)
    if rng.random() < 0.5:
        out.append({"kind": "rarc", "code": "N362"})
    return json.dumps(out)


class _Practice:
    def __init__(self, store: Store, seed: int) -> None:
        self.s, self.rng, self.next_id = store, random.Random(seed), 1
        with store.tx():
            store.conn.execute("INSERT INTO documents (id, sha256, origin, source, format, size, content, status, "
                               "received_at) VALUES (1, 'x', 'rnd', 'cli', 'hl7v2', 1, x'00', 'processed', ?)",
                               (_ts(START),))

    def encounter(self, kind: str = "charge") -> int:
        rng, eid = self.rng, self.next_id
        self.next_id += 1
        dos = _dos(rng)
        data = {"dos_start": dos[:10], "rendering": {"npi": rng.choice(NPIS)},
                "coverages": [{"payer_id": rng.choice(PAYERS)}] if rng.random() < 0.9 else []}
        state = rng.choice(["ready", "needs_review", "voided"]) if kind == "charge" else "expected"
        mrn = f"M{rng.randrange(15)}"
        self.s.conn.execute(
            "INSERT INTO encounters (id, business_key, kind, source, source_id, document_id, state, mrn, dos, data, "
            "findings, content_hash, created_at, updated_at) VALUES (?,?,?,?,?,1,?,?,?,?,'[]','h',?,?)",
            (eid, f"k{eid}", kind, "t", f"V{eid}", state, mrn, dos, json.dumps(data), _ts(START), _ts(START)))
        return eid

    def claim(self, eid: int | None) -> None:
        rng = self.rng
        dos = _dos(rng)
        state = rng.choice(STATES)
        billed = _money(rng)
        sub = date.fromisoformat(dos[:10]) + timedelta(days=rng.randrange(-1, 40))
        first = _ts(sub) if rng.random() < 0.95 else ""
        adj = (sub + timedelta(days=rng.randrange(0, 80))).isoformat() \
            if state in ("paid", "partially_paid", "denied") and rng.random() < 0.8 else ""
        answered = _ts(sub + timedelta(days=3)) if state != "submitted" and rng.random() < 0.7 else ""
        self.s.conn.execute(
            "INSERT INTO claims (claim_id, encounter_id, target, state, dos, provider_npi, payer, billed, submissions, "
            "reasons, first_submitted_at, submitted_at, adjudicated_on, answered_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (f"C{self.rng.randrange(10**9)}", eid, "x12", state, dos, rng.choice(NPIS), rng.choice(PAYERS), billed,
             rng.choice([1, 1, 1, 2]), _reasons(rng, billed) if state == "denied" else "[]", first, first, adj,
             answered, _ts(START)))

    def grow(self, n: int) -> None:
        rng, conn = self.rng, self.s.conn
        with self.s.tx():
            for _ in range(n):
                eid = self.encounter("charge" if rng.random() < 0.8 else "expected")
                for _ in range(rng.choice([0, 1, 1, 2])):
                    self.claim(eid if rng.random() < 0.9 else None)
                if rng.random() < 0.15:
                    conn.execute("INSERT INTO reviews (encounter_id, version, content_hash, decision, actor, at) "
                                 "VALUES (?, 1, 'h', 'approve', 'coder', ?)", (eid, _ts(START)))
                if rng.random() < 0.1:
                    self.s.event(rng.choice(["encounter.edited", "encounter.accepted_rcm", "encounter.rules"]),
                                 encounter_id=eid)
            encs = [r[0] for r in conn.execute("SELECT id FROM encounters")]
            for i in range(rng.randrange(1, 6)):  # findings and sync runs (read directly)
                d = _day(rng)
                conn.execute("INSERT INTO findings (fingerprint, kind, encounter_id, dos, first_seen, last_seen, "
                             "status, resolved_at) VALUES (?,?,?,?,?,?,?,?)",
                             (f"f{rng.randrange(10**9)}", "claim_denied", rng.choice(encs),
                              d.isoformat(), _ts(d), _ts(d), rng.choice(["open", "resolved", "ignored"]),
                              _ts(d + timedelta(days=i))))
                conn.execute("INSERT INTO events (at, kind, detail) VALUES (?, 'sync.run', ?)",
                             (_ts(d), json.dumps({"ok": rng.random() < 0.8})))

    def churn(self, n: int) -> None:
        """Edits through every kind of write the aggregates depend on."""
        rng, conn = self.rng, self.s.conn
        with self.s.tx():
            ids = [r[0] for r in conn.execute("SELECT id FROM claims")]
            encs = [r[0] for r in conn.execute("SELECT id FROM encounters")]
            for _ in range(n):
                op = rng.randrange(9)
                if op == 0 and ids:  # an answer moves a claim
                    st = rng.choice(STATES)
                    conn.execute("UPDATE claims SET state = ?, adjudicated_on = ?, reasons = ? WHERE id = ?",
                                 (st, _day(rng).isoformat() if st in ("paid", "denied") else "",
                                  _reasons(rng, "1.00") if st == "denied" else "[]", rng.choice(ids)))
                elif op == 1 and ids:  # a resubmission
                    conn.execute("UPDATE claims SET submissions = submissions + 1 WHERE id = ?", (rng.choice(ids),))
                elif op == 2 and encs:  # a review, or its removal
                    eid = rng.choice(encs)
                    if rng.random() < 0.6:
                        conn.execute("INSERT INTO reviews (encounter_id, version, content_hash, decision, actor, at) "
                                     "VALUES (?, 1, 'h', 'approve', 'coder', ?)", (eid, _ts(START)))
                    else:
                        conn.execute("DELETE FROM reviews WHERE encounter_id = ?", (eid,))
                elif op == 3 and encs:  # an edit (a touch) or its event pruned
                    eid = rng.choice(encs)
                    if rng.random() < 0.7:
                        self.s.event("encounter.edited", encounter_id=eid)
                    else:
                        conn.execute("DELETE FROM events WHERE encounter_id = ? AND kind = 'encounter.edited'", (eid,))
                elif op == 4 and encs:  # an encounter changes state (voided, ready, back to review)
                    conn.execute("UPDATE encounters SET state = ? WHERE id = ? AND kind = 'charge'",
                                 (rng.choice(["ready", "needs_review", "voided"]), rng.choice(encs)))
                elif op == 5 and encs:  # a corrected date of service moves an encounter to another day
                    conn.execute("UPDATE encounters SET dos = ? WHERE id = ?", (_dos(rng), rng.choice(encs)))
                elif op == 6 and encs:  # retention: the encounter goes, its claims stay (encounter_id NULL)
                    eid = rng.choice(encs)
                    conn.execute("DELETE FROM events WHERE encounter_id = ?", (eid,))
                    conn.execute("DELETE FROM findings WHERE encounter_id = ?", (eid,))
                    conn.execute("DELETE FROM encounters WHERE id = ?", (eid,))
                    encs.remove(eid)
                elif op == 7 and ids:  # a claim's payer / provider / billed corrected
                    conn.execute("UPDATE claims SET payer = ?, provider_npi = ?, billed = ? WHERE id = ?",
                                 (rng.choice(PAYERS), rng.choice(NPIS), _money(rng), rng.choice(ids)))
                elif op == 8:
                    self.encounter("expected" if rng.random() < 0.5 else "charge")


def _norm(x: Any) -> Any:
    if isinstance(x, dict):
        out = {k: _norm(v) for k, v in x.items() if k != "computed_at"}
        if "denial_reasons" in out:  # reasons tied on claims and amount: the full scan left their order open
            out["denial_reasons"].sort(key=lambda r: (-r["claims"], -float(r["amount"]), r["code"], r["kind"],
                                                      r["group"]))
        return out
    if isinstance(x, list):
        return [_norm(v) for v in x]
    if isinstance(x, float):
        return round(x, 6)
    return x


def _same_as_oracle(store: Store, today: date) -> int:
    """Every report and series the API can ask, aggregate-based vs full scan. Returns how many."""
    checked = 0
    lo, hi = START, START + timedelta(days=DAYS)
    windows = ((lo, hi), (date(2025, 3, 1), date(2025, 3, 31)), (date(2025, 2, 27), date(2025, 4, 1)),
               (lo + timedelta(days=5), lo + timedelta(days=12)), (hi, hi))  # whole months read month rows
    for start, end in windows:
        for prov, pay in SCOPES:
            for by in (None, "provider", "payer"):
                args: dict[str, Any] = {"start": start, "end": end, "by": by, "today": today, "provider": prov,
                                        "payer": pay}
                got = _norm(kpi.report(store, GOALS, **args))
                want = _norm(kpi_oracle.report(store, GOALS, **args))
                assert got == want, (start, end, prov, pay, by)
                checked += 1
    for name in ("clean_claim_rate", "days_in_ar", "charge_lag_days", "denied_dollars", "auto_capture_rate",
                 "missed_charge_rate"):
        for grain in ("day", "week", "month"):
            for prov, pay in SCOPES[:4]:
                args = {"start": lo, "end": hi, "grain": grain, "today": today, "provider": prov, "payer": pay}
                assert _norm(kpi.series(store, GOALS, name, **args)) == \
                    _norm(kpi_oracle.series(store, GOALS, name, **args)), (name, grain, prov, pay)
                checked += 1
    return checked


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_practice_equals_full_scan(fast_store: Store, seed: int) -> None:
    p = _Practice(fast_store, seed)
    p.grow(60)
    today = START + timedelta(days=DAYS + 10)
    rounds = 0
    for _ in range(4):
        assert _same_as_oracle(fast_store, today) > 0
        p.churn(25)
        p.grow(10)
        rounds += 1
        assert fast_store.conn.execute("SELECT count(*) FROM kpi_dirty").fetchone()[0] > 0  # the churn marked days
    assert _same_as_oracle(fast_store, today + timedelta(days=40)) > 0  # A/R ages move with today
    # the data the comparisons ran on is non-trivial
    states = {r[0] for r in fast_store.conn.execute("SELECT DISTINCT state FROM claims")}
    assert len(states) == len(STATES) and rounds == 4


def test_triggers_mark_the_days_a_write_touches(fast_store: Store) -> None:
    p = _Practice(fast_store, 9)
    p.grow(20)
    kpi.report(fast_store, GOALS, start=START, end=START + timedelta(days=DAYS), today=START)
    conn = fast_store.conn
    assert conn.execute("SELECT count(*) FROM kpi_dirty").fetchone()[0] == 0
    assert {r[0] for r in conn.execute("SELECT DISTINCT lvl FROM kpi_daily")} == {0, 1, 2, 3, 10, 11, 12}
    cid, eid, dos = conn.execute("SELECT id, encounter_id, dos FROM claims WHERE encounter_id IS NOT NULL "
                                 "LIMIT 1").fetchone()
    edos = conn.execute("SELECT dos FROM encounters WHERE id = ?", (eid,)).fetchone()[0]
    with fast_store.tx():
        conn.execute("UPDATE claims SET state = 'paid' WHERE id = ?", (cid,))
    assert [r[0] for r in conn.execute("SELECT day FROM kpi_dirty")] == [dos[:10]]
    assert kpi_agg.refresh(fast_store) == 1
    with fast_store.tx():
        conn.execute("INSERT INTO reviews (encounter_id, version, content_hash, decision, actor, at) "
                     "VALUES (?, 1, 'h', 'approve', 'coder', ?)", (eid, _ts(START)))
    its_claims = {r[0][:10] for r in conn.execute("SELECT dos FROM claims WHERE encounter_id = ?", (eid,))}
    assert {r[0] for r in conn.execute("SELECT day FROM kpi_dirty")} == {edos[:10], dos[:10], *its_claims}
    assert kpi_agg.refresh(fast_store) >= 1
    with fast_store.tx():
        fast_store.event("encounter.rules", encounter_id=eid)  # automatic: not a touch, nothing dirty
    assert conn.execute("SELECT count(*) FROM kpi_dirty").fetchone()[0] == 0
    assert kpi_agg.refresh(fast_store) == 0


def test_the_report_reads_the_aggregates(fast_store: Store) -> None:
    p = _Practice(fast_store, 4)
    p.grow(30)
    w: dict[str, Any] = {"start": START, "end": START + timedelta(days=DAYS), "today": START + timedelta(days=DAYS)}
    before = {k["key"]: k for k in kpi.report(fast_store, GOALS, **w)["kpis"]}
    n = before["denial_rate"]["denominator"]
    assert n and n > 0
    # a level-0 (day or month) aggregate changed behind the triggers' back shows in the report: it is what is read
    fast_store.conn.execute("UPDATE kpi_daily SET n = n + 1000 WHERE lvl IN (0, 10) AND kind = 'c' AND k1 = 'paid'")
    after = {k["key"]: k for k in kpi.report(fast_store, GOALS, **w)["kpis"]}
    assert after["denial_rate"]["denominator"] > n + 999
    # marking every day dirty re-sums them from the claims: back to the truth
    fast_store.conn.execute("INSERT OR IGNORE INTO kpi_dirty SELECT substr(dos, 1, 10) FROM claims")
    again = {k["key"]: k for k in kpi.report(fast_store, GOALS, **w)["kpis"]}
    assert again["denial_rate"]["denominator"] == n


def test_hand_worked_practice_equals_full_scan(practice: Store) -> None:  # noqa: F811
    assert _same_practice(practice)
    # one more answer through the real write path: the aggregates follow
    claims.apply_answers(practice, [Answer(AnswerKind.RA_835, "x5", ClaimState.DENIED, claim_ref="C5", paid="0",
                                           reasons=[Reason("carc", "50", group="CO", amount="50.00")],
                                           answered_on="2025-03-28")])
    assert _same_practice(practice)
    reasons = kpi.report(practice, GoalsConfig(), start=MARCH[0], end=MARCH[1], today=TODAY)["denial_reasons"]
    assert {r["code"] for r in reasons} == {"16", "50"}


def _same_practice(store: Store) -> bool:
    for prov, pay in (("", ""), ("NPI-A", ""), ("", "P2"), ("NPI-B", "P1")):
        for by in (None, "provider", "payer"):
            args: dict[str, Any] = {"start": MARCH[0], "end": MARCH[1], "by": by, "today": TODAY,
                                    "provider": prov, "payer": pay}
            assert _norm(kpi.report(store, GoalsConfig(), **args)) == \
                _norm(kpi_oracle.report(store, GoalsConfig(), **args)), (prov, pay, by)
    return True


def test_the_engine_job_refreshes_in_the_background(fast_store: Store) -> None:
    """kpi_agg.schedule adds a job to the engine's scheduler that re-sums the dirty days on the
    engine's own store: run here as the scheduler would run it."""
    jobs: dict[str, Any] = {}

    class Sched:
        def add_job(self, fn: Any, trigger: str, **kw: Any) -> None:
            jobs[kw["id"]] = (fn, trigger, kw)

    class Engine:
        def store(self) -> Store:
            return fast_store

    _Practice(fast_store, 5).grow(15)
    assert fast_store.conn.execute("SELECT count(*) FROM kpi_dirty").fetchone()[0] > 0
    kpi_agg.schedule(Engine(), Sched())
    fn, trigger, kw = jobs["kpi-aggregates"]
    assert trigger == "interval" and kw["seconds"] == kpi_agg.REFRESH_SECONDS
    fn()
    assert fast_store.conn.execute("SELECT count(*) FROM kpi_dirty").fetchone()[0] == 0
    assert fast_store.conn.execute("SELECT count(*) FROM kpi_daily WHERE lvl = 0").fetchone()[0] > 0
