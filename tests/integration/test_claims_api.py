"""GET /claims, /claims/{id}, /claims/unmatched through a real engine's API (real store, real
keyring): paging, the state filter, roles, 404, reasons with their CARC descriptions, and a
denied claim marked as waiting in the mismatch queue."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agent import claims
from agent.engine import Engine
from core.answers import Answer, Reason
from core.states import AnswerKind, ClaimState
from tests.conftest import start_test_engine, wait_until
from tests.helpers import dft


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok: None) -> Iterator[Engine]:
    eng = start_test_engine(tmp_path, roles=("front_desk", "coder", "manager"), folder_format="hl7v2")
    yield eng
    eng.stop()


def _get(eng: Any, role: str, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{eng.url}{path}", params=params, timeout=30,
                        headers={"Authorization": f"Bearer {eng.tokens[role]}"})


def _seed(eng: Any, n: int = 4) -> list[str]:
    for i in range(n):
        (eng.export / f"v{i}.hl7").write_text(dft(i))
    store = eng.store()
    assert wait_until(lambda: store.conn.execute("SELECT count(*) FROM encounters").fetchone()[0] == n)
    ids = []
    with store.tx():
        for i, (eid, version) in enumerate(store.conn.execute("SELECT id, version FROM encounters ORDER BY id")):
            claims.record_delivery(store, encounter_id=eid, version=version, claim_id=f"TESTFAC:V{i:07d}",
                                   target="fhir", remote_ids={"Claim": f"c{i}"})
            ids.append(f"TESTFAC:V{i:07d}")
    claims.apply_answers(store, [
        Answer(AnswerKind.CLAIM_RESPONSE, "cr-0", ClaimState.PAID, claim_ref=ids[0], paid="100.00", adjusted="0.00",
               patient_resp="0.00", answered_on="2026-11-20"),
        Answer(AnswerKind.CLAIM_RESPONSE, "cr-1", ClaimState.DENIED, claim_ref=ids[1], paid="0.00",
               reasons=[Reason("carc", "50", group="CO", amount="120.00")], answered_on="2026-11-21"),
        Answer(AnswerKind.CLAIM_RESPONSE, "cr-x", ClaimState.PAID, claim_ref="NOT:OURS", paid="5.00"),
    ])
    return ids


def test_claims_api_pages_filters_roles_and_reasons(engine: Any) -> None:
    ids = _seed(engine)
    r = _get(engine, "front_desk", "/claims", page_size=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["total"], body["page"], body["page_size"], len(body["items"])) == (4, 1, 3, 3)
    assert _get(engine, "front_desk", "/claims", page=2, page_size=3).json()["items"][0]["claim_id"] == ids[0]

    denied = _get(engine, "front_desk", "/claims", state="denied").json()
    assert denied["total"] == 1
    c = denied["items"][0]
    assert (c["claim_id"], c["in_mismatch_queue"]) == (ids[1], True) and c["finding_id"]
    reason = c["reasons"][0]
    assert (reason["group"], reason["code"], reason["amount"]) == ("CO", "50", "120.00")
    # the description comes from the CARC code list (connectors/rcm/x12/codes.py)
    assert "medically necessary" in reason["text"].lower() or "necessity" in reason["text"].lower(), reason
    assert _get(engine, "front_desk", "/claims", state="nonsense").status_code == 422

    # the history and the unmatched answers: coder and up
    assert _get(engine, "front_desk", f"/claims/{ids[1]}").status_code == 403
    d = _get(engine, "coder", f"/claims/{ids[1]}").json()
    assert [(a["kind"], a["state"]) for a in d["answers"]] == [("ClaimResponse", "denied")]
    assert d["answers"][0]["detail"]["reasons"][0]["text"] == reason["text"]
    paid = _get(engine, "manager", f"/claims/{ids[0]}").json()
    assert (paid["state"], paid["paid"], paid["adjudicated_on"]) == ("paid", "100.00", "2026-11-20")
    assert not paid["in_mismatch_queue"]
    missing = _get(engine, "manager", "/claims/NOPE:1")
    assert missing.status_code == 404 and missing.json()["key"] == "claim_id"
    assert _get(engine, "front_desk", "/claims/unmatched").status_code == 403
    un = _get(engine, "coder", "/claims/unmatched").json()
    assert un["total"] == 1 and un["items"][0]["claim_ref"] == "NOT:OURS"
