"""GET /claims filters (H15): exactly the claims behind a dashboard figure, through a real engine's
API (real SQLCipher store, real keyring) and `chargebridge claims` (through the engine and from the
store). Expected claim ids are worked out by hand next to the seed; each filter is also checked
against the figure the engine's own KPI report gives for the same period and filters, so a drill
from the dashboard lists what the figure counted.

Open claims are submitted N days before today (N in the middle of its A/R bucket: a run across
midnight cannot move a claim to another bucket).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from agent import claims
from agent.engine import Engine
from agent.store import Store
from core import secrets as keys
from core.answers import Answer, Reason
from core.secrets import API_TOKEN
from core.states import AnswerKind, ClaimState
from tests.conftest import run_cli, start_test_engine

A, B = "1234567893", "1987654328"
MARCH = {"from": "2025-03-01", "to": "2025-03-31"}


def _ago(days: int) -> str:
    return (date.today() - timedelta(days=days)).isoformat()


# id: (dos, rendering NPI, payer, billed, delivered on)
CLAIMS: dict[int, tuple[str, str, str, str, str]] = {
    1: ("2025-03-03", A, "P1", "100.00", "2025-03-05"),  # paid; lag 2
    2: ("2025-03-04", A, "P1", "200.00", "2025-03-04"),  # denied CO-16 + RARC N290; lag 0
    3: ("2025-03-10", B, "P2", "300.00", "2025-03-20"),  # denied CO-97; lag 10
    4: ("2025-03-12", B, "P2", "400.00", "2025-03-13"),  # denied PR-16; lag 1
    5: ("2025-03-15", A, "P2", "50.00", _ago(10)),  # open (submitted), A/R 0-30; lag 31+
    6: ("2025-03-20", B, "P1", "60.00", _ago(45)),  # open (accepted), A/R 31-60; lag 31+
    7: ("2025-03-25", A, "P1", "70.00", _ago(200)),  # open (submitted), A/R 90+; lag 31+
    8: ("2025-02-20", A, "P1", "999.00", "2025-02-21"),  # February: denied CO-16
    9: ("2025-03-28", A, "P1", "80.00", "2025-03-29"),  # rejected, a RARC 16 and an STC: no reason 16; lag 1
}


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
    for cid, (*_, at) in CLAIMS.items():
        with store.tx():
            claims.record_delivery(store, encounter_id=9000 + cid, version=1, claim_id=f"C{cid}", target="fhir",
                                   remote_ids={"Claim": f"C{cid}"}, at=_ts(at))
    cr = AnswerKind.CLAIM_RESPONSE
    claims.apply_answers(store, [
        Answer(cr, "a1", ClaimState.PAID, claim_ref="C1", paid="100.00", answered_on="2025-03-20"),
        Answer(cr, "a2", ClaimState.DENIED, claim_ref="C2", paid="0", answered_on="2025-03-25",
               reasons=[Reason("carc", "16", group="CO", amount="200.00"), Reason("rarc", "N290")]),
        Answer(cr, "a3", ClaimState.DENIED, claim_ref="C3", paid="0", answered_on="2025-03-26",
               reasons=[Reason("carc", "97", group="CO", amount="300.00")]),
        Answer(cr, "a4", ClaimState.DENIED, claim_ref="C4", paid="0", answered_on="2025-03-27",
               reasons=[Reason("carc", "16", group="PR", amount="400.00")]),
        Answer(AnswerKind.CA_277, "a6", ClaimState.ACCEPTED, claim_ref="C6", answered_on=_ago(40)),
        Answer(cr, "a8", ClaimState.DENIED, claim_ref="C8", paid="0", answered_on="2025-03-01",
               reasons=[Reason("carc", "16", group="CO", amount="999.00")]),
        Answer(AnswerKind.CA_277, "a9", ClaimState.REJECTED, claim_ref="C9", answered_on="2025-03-30",
               reasons=[Reason("rarc", "16"), Reason("stc", "A7:21")]),
    ])


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    eng = start_test_engine(tmp_path)
    seed(eng.store())
    yield eng
    if not getattr(eng, "stopped_by_test", False):
        eng.stop()


def get(eng: Any, path: str, role: str = "front_desk", **params: Any) -> requests.Response:
    return requests.get(f"{eng.url}{path}", params=params, timeout=30,
                        headers={"Authorization": f"Bearer {eng.tokens[role]}"})


def ids(eng: Any, **params: Any) -> set[str]:
    r = get(eng, "/claims", page_size=500, **params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(body["items"])
    return {c["claim_id"] for c in body["items"]}


def test_each_filter_lists_the_expected_claims(engine: Any) -> None:
    assert ids(engine) == {f"C{i}" for i in CLAIMS}
    # reason: a code on the claim, any group; with the group only that group; RARCs never count
    assert ids(engine, reason="16") == {"C2", "C4", "C8"}
    assert ids(engine, reason="CO-16") == {"C2", "C8"}
    assert ids(engine, reason="PR-16") == {"C4"}
    assert ids(engine, reason="N290") == set()  # a RARC
    assert ids(engine, reason="16", **MARCH) == {"C2", "C4"}
    # dates of service, both ends included
    assert ids(engine, **{"from": "2025-03-04", "to": "2025-03-12"}) == {"C2", "C3", "C4"}
    assert ids(engine, to="2025-02-28") == {"C8"}
    # A/R buckets: open claims only, by days since first submission
    assert ids(engine, age="0-30") == {"C5"}
    assert ids(engine, age="31-60") == {"C6"}
    assert ids(engine, age="61-90") == set()
    assert ids(engine, age="90+") == {"C7"}
    # charge-lag buckets: days from service to delivery
    assert ids(engine, lag="0-1", **MARCH) == {"C2", "C4", "C9"}
    assert ids(engine, lag="2-3") == {"C1"}
    assert ids(engine, lag="8-14") == {"C3"}
    assert ids(engine, lag="31+") == {"C5", "C6", "C7"}
    # provider and payer, alone and together
    assert ids(engine, provider=A, **MARCH) == {"C1", "C2", "C5", "C7", "C9"}
    assert ids(engine, payer="P2") == {"C3", "C4", "C5"}
    assert ids(engine, provider=A, payer="P2") == {"C5"}
    assert ids(engine, provider=A, age="90+") == {"C7"}
    assert ids(engine, payer="P2", age="90+") == set()
    # state, repeatable: any of them
    assert ids(engine, state=["paid", "denied"], **MARCH) == {"C1", "C2", "C3", "C4"}
    assert ids(engine, state="denied", reason="16", payer="P1") == {"C2", "C8"}
    # paging still counts every match
    r = get(engine, "/claims", page_size=1, reason="16")
    assert (r.json()["total"], len(r.json()["items"])) == (3, 1)


def test_bad_filters_are_refused_with_422(engine: Any) -> None:
    for params in ({"age": "91-120"}, {"lag": "5"}, {"reason": "16; drop table"}, {"from": "2025-13-01"},
                   {"state": "lost"}, {"provider": "x" * 81}):
        r = get(engine, "/claims", **params)
        assert r.status_code == 422, (params, r.text)


@pytest.mark.parametrize("who", [{}, {"provider": A}, {"payer": "P1"}, {"provider": B, "payer": "P2"}])
def test_filters_list_exactly_what_the_kpi_figures_counted(engine: Any, who: dict[str, str]) -> None:
    """Every denial-reason bar, A/R bucket and charge-lag bucket of the engine's report for March
    (with the same provider / payer) opens as many claims as the bar says, and the denied claims
    are the denial rate's numerator."""
    r = get(engine, "/kpi", role="manager", **MARCH, **who)
    assert r.status_code == 200, r.text
    report = r.json()
    for reason in report["denial_reasons"]:
        code = f"{reason['group']}-{reason['code']}" if reason["group"] else reason["code"]
        assert len(ids(engine, state="denied", reason=code, **MARCH, **who)) == reason["claims"], code
    for b in report["ar_buckets"]:
        assert len(ids(engine, age=b["label"], **MARCH, **who)) == b["count"], b
    for b in report["charge_lag"]:
        assert len(ids(engine, lag=b["label"], **MARCH, **who)) == b["count"], b
    denial = next(k for k in report["kpis"] if k["key"] == "denial_rate")
    assert len(ids(engine, state="denied", **MARCH, **who)) == (denial["numerator"] or 0)
    assert len(ids(engine, state=["paid", "partially_paid", "denied"], **MARCH, **who)) == (denial["denominator"] or 0)
    if not who:  # by hand: CO-16 (C2), CO-97 (C3), PR-16 (C4); buckets C5 / C6 / - / C7
        assert sorted((x["group"], x["code"], x["claims"]) for x in report["denial_reasons"]) == [
            ("CO", "16", 1), ("CO", "97", 1), ("PR", "16", 1)]
        assert [b["count"] for b in report["ar_buckets"]] == [1, 1, 0, 1]


def test_cli_filters_through_the_engine_and_from_the_store(engine: Any, tmp_path: Path) -> None:
    keys.set_secret(engine.paths, API_TOKEN, engine.tokens["manager"])
    args = ("claims", "--reason", "16", "--from", "2025-03-01", "--to", "2025-03-31", "--json")
    r = run_cli(*args, home=engine.paths.home)
    assert r.returncode == 0, r.stderr
    assert {c["claim_id"] for c in json.loads(r.stdout)["items"]} == {"C2", "C4"}
    r = run_cli("claims", "--age", "90+", "--provider", A, "--payer", "P1", home=engine.paths.home)
    assert r.returncode == 0, r.stderr
    assert "C7 " in r.stdout and "C5 " not in r.stdout
    bad = run_cli("claims", "--age", "91-120", home=engine.paths.home)
    assert bad.returncode == 2 and "--age" in bad.stderr
    engine.stop()
    engine.stopped_by_test = True  # the CLI reads the store itself, with the same conditions
    r = run_cli("claims", "--lag", "0-1", "--from", "2025-03-01", "--to", "2025-03-31", "--json",
                home=engine.paths.home)
    assert r.returncode == 0, r.stderr
    assert {c["claim_id"] for c in json.loads(r.stdout)["items"]} == {"C2", "C4", "C9"}
    r = run_cli("claims", "--reason", "CO-16", "--json", home=engine.paths.home)
    assert {c["claim_id"] for c in json.loads(r.stdout)["items"]} == {"C2", "C8"}
