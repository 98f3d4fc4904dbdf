"""KPIs (agent/kpi.py) on a hand-built fixture in a real SQLCipher store: claims born through
agent.claims.record_delivery and moved by apply_answers, with known dates, amounts, outcomes and
reasons. Every expected figure is worked out by hand in the comments next to it."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from agent import claims, kpi
from agent.kpi_config import GoalsConfig
from agent.store import Store
from core.answers import Answer, Reason
from core.states import AnswerKind, ClaimState

TODAY = date(2025, 3, 31)
MARCH = (date(2025, 3, 1), date(2025, 3, 31))

# id: (dos, npi, payer, billed, state)            all charge encounters; E7 is outside March
ENCOUNTERS = {
    1: ("2025-03-03", "NPI-A", "P1", "100.00", "ready"),
    2: ("2025-03-04", "NPI-A", "P1", "200.00", "ready"),
    3: ("2025-03-10", "NPI-B", "P2", "300.00", "ready"),
    4: ("2025-03-12", "NPI-B", "P2", "400.00", "ready"),
    5: ("2025-03-15", "NPI-A", "P2", "50.00", "ready"),
    6: ("2025-03-02", "NPI-B", "P1", "150.00", "ready"),
    7: ("2025-02-20", "NPI-A", "P1", "999.00", "ready"),
    8: ("2025-03-20", "NPI-A", "P1", "10.00", "needs_review"),  # never delivered, never touched
    9: ("2025-03-21", "NPI-B", "P2", "20.00", "ready"),  # edited by a person, not delivered
}
EXPECTED = {  # scheduled visits: (dos, mrn)
    101: ("2025-03-10", "MRN3"),  # E3's patient and date: it has its charge
    102: ("2025-03-20", "MRN-X2"),  # no charge 11 days later: missed
    103: ("2025-03-30", "MRN-X3"),  # 1 day old: not yet counted
}


def _ts(day: str) -> str:
    return f"{day}T12:00:00.000+00:00"


def _encounter(conn: Any, eid: int, *, kind: str, state: str, dos: str, mrn: str, data: dict[str, Any]) -> None:
    conn.execute("INSERT INTO encounters (id, business_key, kind, source, source_id, document_id, state, mrn, dos, "
                 "data, findings, content_hash, created_at, updated_at) VALUES (?,?,?,?,?,1,?,?,?,?,'[]','h',?,?)",
                 (eid, f"k{eid}", kind, "test", f"V{eid}", state, mrn, dos, json.dumps(data), _ts(dos), _ts(dos)))


def _deliver(store: Store, eid: int, at: str, *, version: int = 1, resubmit: bool = False) -> None:
    with store.tx():
        claims.record_delivery(store, encounter_id=eid, version=version, claim_id=f"C{eid}", target="x12",
                               remote_ids={"Claim": f"C{eid}"}, at=_ts(at), resubmit=resubmit)


def _answer(store: Store, *answers: Answer) -> None:
    claims.apply_answers(store, answers)


@pytest.fixture()
def practice(fast_store: Store) -> Store:
    s = fast_store
    with s.tx():
        s.conn.execute("INSERT INTO documents (id, sha256, origin, source, format, size, content, status, "
                       "received_at) VALUES (1, 'x', 'fixture', 'cli', 'hl7v2', 1, x'00', 'processed', ?)",
                       (_ts("2025-03-01"),))
        for eid, (dos, npi, payer, billed, state) in ENCOUNTERS.items():
            data = {"dos_start": dos, "rendering": {"npi": npi}, "coverages": [{"payer_id": payer}],
                    "lines": [{"code": "99213", "units": 1, "unit_charge": billed}]}
            _encounter(s.conn, eid, kind="charge", state=state, dos=dos, mrn=f"MRN{eid}", data=data)
        for eid, (dos, mrn) in EXPECTED.items():
            _encounter(s.conn, eid, kind="expected", state="expected", dos=dos, mrn=mrn, data={"dos_start": dos})
        # a coder approved E5 before it was sent; a person edited E9
        s.conn.execute("INSERT INTO reviews (encounter_id, version, content_hash, decision, actor, at) "
                       "VALUES (5, 1, 'h', 'approve', 'coder', ?)", (_ts("2025-03-15"),))
        s.event("encounter.edited", encounter_id=9, detail={"line": 0})
        s.event("encounter.rules", encounter_id=1)  # automatic: not a touch
        # three sync runs in March, one failed; one in February (outside)
        for day, ok in (("2025-03-05", 1), ("2025-03-06", 0), ("2025-03-20", 1), ("2025-02-10", 0)):
            s.conn.execute("INSERT INTO events (at, kind, detail) VALUES (?, 'sync.run', ?)",
                           (_ts(day), json.dumps({"ok": bool(ok)})))
    # deliveries: (encounter, delivered on)  -> charge lag = delivered - dos
    for eid, at in ((1, "2025-03-05"), (2, "2025-03-04"), (3, "2025-03-20"), (4, "2025-03-13"), (5, "2025-03-16"),
                    (6, "2025-03-03"), (7, "2025-02-21")):
        _deliver(s, eid, at)
    _answer(s,
            Answer(AnswerKind.RA_835, "a1", ClaimState.PAID, claim_ref="C1", paid="100.00", answered_on="2025-03-20"),
            Answer(AnswerKind.RA_835, "a2", ClaimState.DENIED, claim_ref="C2", paid="0",
                   reasons=[Reason("carc", "16", group="CO", amount="200.00"), Reason("rarc", "N362")],
                   answered_on="2025-03-25"),
            Answer(AnswerKind.CA_277, "a3", ClaimState.REJECTED, claim_ref="C3", reasons=[Reason("stc", "A7")],
                   answered_on="2025-03-21"),
            Answer(AnswerKind.CA_277, "a5", ClaimState.ACCEPTED, claim_ref="C5", answered_on="2025-03-17"),
            Answer(AnswerKind.CA_277, "a6", ClaimState.REJECTED, claim_ref="C6", answered_on="2025-03-04"),
            Answer(AnswerKind.RA_835, "a7", ClaimState.DENIED, claim_ref="C7", paid="0",
                   reasons=[Reason("carc", "97", group="CO", amount="999.00")], answered_on="2025-02-28"))
    _deliver(s, 6, "2025-03-06", version=2, resubmit=True)  # corrected and sent again
    _answer(s, Answer(AnswerKind.RA_835, "a6b", ClaimState.PAID, claim_ref="C6", paid="150.00",
                      answered_on="2025-03-16"))
    with s.tx():  # E6's first rejection was worked in 6 hours
        s.conn.execute("UPDATE findings SET status = 'resolved', first_seen = ?, resolved_at = ? "
                       "WHERE fingerprint = 'claim_rejected:C6:1'",
                       ("2025-03-04T10:00:00.000+00:00", "2025-03-04T16:00:00.000+00:00"))
    return s


def _by_key(kpis: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k["key"]: k for k in kpis}


def test_every_kpi_matches_the_hand_computed_value(practice: Store) -> None:
    rep = kpi.report(practice, GoalsConfig(), start=MARCH[0], end=MARCH[1], today=TODAY)
    v = {k: x["value"] for k, x in _by_key(rep["kpis"]).items()}
    # claims in March: C1..C6. Answered (not submitted): C1 paid, C2 denied, C3 rejected, C5 accepted, C6 paid = 5
    # clean: once, accepted/paid, untouched -> C1 only (C5 was reviewed, C6 was sent twice) = 1/5
    assert v["clean_claim_rate"] == 20.0
    # first pass: once and not rejected -> C1, C2, C5 = 3/5
    assert v["first_pass_acceptance"] == 60.0
    # adjudicated: C1, C2, C6 = 3; denied: C2 = 1
    assert v["denial_rate"] == 33.33
    # dollars: 200 / (100 + 200 + 150)
    assert v["denial_dollar_rate"] == 44.44
    assert v["denied_dollars"] == 200.0
    # A/R (rejected C3 left out): C1 15 (03-05 -> 03-20), C2 21 (03-04 -> 03-25), C4 18 (03-13 -> today),
    # C5 15 (03-16 -> today), C6 13 (first sent 03-03 -> paid 03-16): 82 / 5
    assert v["days_in_ar"] == 16.4
    # lag: C1 2, C2 0, C3 10, C4 1, C5 1, C6 1 (first delivery) = 15 / 6
    assert v["charge_lag_days"] == 2.5
    # charge encounters in March: E1-E6, E8, E9 = 8; touched: E5 (review), E9 (edit) = 2
    assert v["touch_rate"] == 25.0
    # auto: ready and untouched: E1, E2, E3, E4, E6 = 5 / 8 (E8 waits for review: neither)
    assert v["auto_capture_rate"] == 62.5
    # expected visits at least 3 days old: X101 (charged), X102 (missed) -> 1/2; X103 too young
    assert v["missed_charge_rate"] == 50.0
    # findings in March: C2 denied, C3 rejected (open), C6's rejection resolved in 6 h
    assert v["mismatch_resolution_hours"] == 6.0
    assert v["open_mismatches"] == 2.0
    # sync runs in March: 3, one failed
    assert v["sync_uptime"] == 66.67 and v["sync_failures"] == 1.0
    assert {k["status"] for k in rep["kpis"]} == {"no_target"}


def test_denial_reasons_and_buckets(practice: Store) -> None:
    rep = kpi.report(practice, GoalsConfig(), start=MARCH[0], end=MARCH[1], today=TODAY)
    # only C2 is denied in March (C7's CO-97 is February's); the RARC is not a denial reason
    assert [(r["group"], r["code"], r["claims"], r["amount"]) for r in rep["denial_reasons"]] == [
        ("CO", "16", 1, "200.00")]
    # open claims: C4 (18 days, $400) and C5 (15 days, $50)
    assert [(b["label"], b["count"], b["amount"]) for b in rep["ar_buckets"]] == [
        ("0-30", 2, "450.00"), ("31-60", 0, "0.00"), ("61-90", 0, "0.00"), ("90+", 0, "0.00")]
    # lag days: C2 0, C4 1, C5 1, C6 1 -> 0-1: 4 ($800); C1 2 -> 2-3: 1 ($100); C3 10 -> 8-14: 1 ($300)
    assert [(b["label"], b["count"], b["amount"]) for b in rep["charge_lag"]] == [
        ("0-1", 4, "800.00"), ("2-3", 1, "100.00"), ("4-7", 0, "0.00"), ("8-14", 1, "300.00"),
        ("15-30", 0, "0.00"), ("31+", 0, "0.00")]


def test_by_payer_and_provider(practice: Store) -> None:
    rep = kpi.report(practice, GoalsConfig(), start=MARCH[0], end=MARCH[1], by="payer", today=TODAY)
    groups = {g["key"]: _by_key(g["kpis"]) for g in rep["groups"]}
    # the fixture's expected visits name no payer: they form the '' group (missed charges only)
    assert set(groups) == {"P1", "P2", ""}
    assert groups[""]["missed_charge_rate"]["value"] == 50.0 and groups[""]["denial_rate"]["value"] is None
    # P1: C1 paid, C2 denied, C6 paid (sent twice): clean 1/3, denial 1/3
    assert groups["P1"]["clean_claim_rate"]["value"] == 33.33
    assert groups["P1"]["denial_rate"]["value"] == 33.33
    # P2: C3 rejected, C4 open, C5 accepted (reviewed): clean 0/2; nothing adjudicated
    assert groups["P2"]["clean_claim_rate"]["value"] == 0.0
    assert groups["P2"]["denial_rate"]["value"] is None and groups["P2"]["denial_rate"]["status"] == "no_target"
    # encounters of P2 in March: E3, E4, E5, E9; touched E5, E9
    assert groups["P2"]["touch_rate"]["value"] == 50.0
    assert "sync_uptime" not in groups["P2"]  # sync runs belong to the practice
    rep = kpi.report(practice, GoalsConfig(), start=MARCH[0], end=MARCH[1], by="provider", today=TODAY)
    groups = {g["key"]: _by_key(g["kpis"]) for g in rep["groups"]}
    # NPI-A: C1 (2), C2 (0), C5 (1) -> lag 1.0; NPI-B: C3 (10), C4 (1), C6 (1) -> 4.0
    assert groups["NPI-A"]["charge_lag_days"]["value"] == 1.0
    assert groups["NPI-B"]["charge_lag_days"]["value"] == 4.0


def test_goals_baseline_and_status(practice: Store) -> None:
    goals = GoalsConfig(baseline_from="2025-02-01", baseline_to="2025-02-28", targets={
        "denial_rate": {"target": 40.0},  # lower is better: 33.33 <= 40 -> met
        "clean_claim_rate": {"target": 50.0},  # 20 < 50 -> not met
        "auto_capture_rate": {"target": 60.0, "direction": "higher"},  # 62.5 -> met
        "charge_lag_days": {"target": 2.0, "direction": "lower"},  # 2.5 > 2 -> not met
        "mismatch_resolution_hours": {"target": 1.0}})
    rep = kpi.report(practice, goals, start=MARCH[0], end=MARCH[1], today=TODAY)
    k = _by_key(rep["kpis"])
    assert k["denial_rate"]["status"] == "met" and k["denial_rate"]["target"] == 40.0
    assert k["clean_claim_rate"]["status"] == "not_met"
    assert k["auto_capture_rate"]["status"] == "met"
    assert k["charge_lag_days"]["status"] == "not_met"
    assert k["days_in_ar"]["status"] == "no_target"
    # February (baseline): C7 only, denied -> 100 %; February has no sync run... but one failed run (02-10)
    assert k["denial_rate"]["baseline"] == 100.0
    assert k["sync_uptime"]["baseline"] == 0.0
    # no finding in February: no data for the resolution time, against a target
    empty = kpi.report(practice, goals, start=date(2025, 1, 1), end=date(2025, 1, 31), today=TODAY)
    assert _by_key(empty["kpis"])["mismatch_resolution_hours"]["status"] == "no_data"


def test_series_per_month_and_week(practice: Store) -> None:
    s = kpi.series(practice, GoalsConfig(), "denial_rate", start=date(2025, 2, 1), end=date(2025, 3, 31),
                   grain="month", today=TODAY)
    assert [(p["period"], p["value"]) for p in s["points"]] == [("2025-02", 100.0), ("2025-03", 33.33)]
    s = kpi.series(practice, GoalsConfig(), "charge_lag_days", start=MARCH[0], end=date(2025, 3, 16),
                   grain="week", today=TODAY)
    # weeks by Monday: 02-24 holds 03-02 (C6: 1); 03-03 holds C1 (2), C2 (0); 03-10 holds C3 (10), C4 (1),
    # C5 on 03-15 (1)
    assert [(p["period"], p["value"]) for p in s["points"]] == [
        ("2025-02-24", 1.0), ("2025-03-03", 1.0), ("2025-03-10", 4.0)]


def test_window_is_checked(practice: Store) -> None:
    with pytest.raises(kpi.KpiError):
        kpi.report(practice, GoalsConfig(), start=date(2025, 3, 2), end=date(2025, 3, 1))
    with pytest.raises(kpi.KpiError):
        kpi.report(practice, GoalsConfig(), start=date(2000, 1, 1), end=date(2025, 3, 1))
    with pytest.raises(kpi.KpiError):
        kpi.series(practice, GoalsConfig(), "no_such_kpi")
