"""The coder review queue through the engine's API, with real roles: front desk reads but may not
act, a coder approves / edits lines / rejects, every decision is in an intact audit trail, and a
re-run of the rules never touches an encounter already sent. Real engine, SQLCipher store, keyring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from agent import audit
from agent.pipeline import Pipeline
from core.states import EncounterState, OutboxState
from tests.conftest import start_test_engine


def hl7(visit: str, mrn: str, lines: list[tuple[str, str]], dx: list[str], *, npi: str = "1234567893",
        dos: str = "20260310") -> bytes:
    segs = [f"MSH|^~\\&|EHR|RFM|CB|BILL|{dos}0930||DFT^P03|C{visit}|P|2.5.1",
            f"PID|1||{mrn}^^^RFM^MR||Doe^Pat||19700101|F|||1 Main St^^Springfield^IL^62704",
            f"PV1|1|O|RFM||||{npi}^Doc^Test^^^^^^NPI||||||||||||{visit}|||||||||||||||||||||||||{dos}"]
    for n, (code, mods) in enumerate(lines, start=1):
        segs.append(f"FT1|{n}|T{visit}{n}||{dos}|{dos}|CG|{code}^^C4|||1|50.00||||||||{dx[0]}|{npi}^Doc^Test|||||"
                    f"{code}^^C4|{mods}")
    segs += [f"DG1|{i}|I10|{c}^^I10|||F" for i, c in enumerate(dx, start=1)]
    return ("\r".join(segs) + "\r").encode()


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok):
    eng = start_test_engine(tmp_path, roles=("front_desk", "coder", "manager", "admin"))
    yield eng
    eng.stop()


def call(eng: Any, method: str, path: str, role: str, **kw: Any) -> requests.Response:
    return requests.request(method, eng.url + path, headers={"Authorization": f"Bearer {eng.tokens[role]}"},
                            timeout=60, **kw)


def state(eng: Any, eid: int) -> str:
    return str(eng.store().conn.execute("SELECT state FROM encounters WHERE id = ?", (eid,)).fetchone()[0])


def test_review_workflow_with_roles(engine) -> None:
    store = engine.store()
    pipe = Pipeline.for_config(store, engine.config)
    # 1: office visit + joint injection, no modifier 25 -> held for review (rule)
    pipe.ingest_bytes(hl7("V1", "M1", [("99213", ""), ("20610", "")], ["M17.11"]), origin="a.hl7")
    # 2: the same, correct -> ready at once (auto-capture)
    pipe.ingest_bytes(hl7("V2", "M2", [("99213", "25"), ("20610", "")], ["M17.11"]), origin="b.hl7")
    # 3: a bad NPI (validation error) and a category code -> held, and not approvable as it is
    pipe.ingest_bytes(hl7("V3", "M3", [("99213", "")], ["J02"], npi="1234567890"), origin="c.hl7")
    ids = {r[1]: int(r[0]) for r in store.conn.execute("SELECT id, source_id FROM encounters")}
    assert state(engine, ids["V2"]) == EncounterState.READY
    assert state(engine, ids["V1"]) == EncounterState.NEEDS_REVIEW

    q = call(engine, "GET", "/review", "front_desk")
    assert q.status_code == 200, q.text
    items = {it["source_id"]: it for it in q.json()["items"]}
    assert set(items) == {"V1", "V3"}
    v1 = items["V1"]
    line0 = v1["lines"][0]["findings"]
    assert [f["code"] for f in line0] == ["modifier.25_missing"]  # the finding sits next to its line
    assert line0[0]["rule_version"] and line0[0]["fix"]

    # front desk may look but not act; a coder may
    r = call(engine, "POST", f"/review/{ids['V1']}/approve", "front_desk", json={})
    assert r.status_code == 403 and "coder" in r.json()["title"]
    assert call(engine, "POST", f"/review/{ids['V1']}/reject", "front_desk", json={"reason": "x"}).status_code == 403
    assert call(engine, "PATCH", f"/review/{ids['V1']}/lines/0", "front_desk",
                json={"modifiers": ["25"]}).status_code == 403

    # a coder fixes the line: the rule is satisfied, the encounter is ready, version + 1
    r = call(engine, "PATCH", f"/review/{ids['V1']}/lines/0", "coder", json={"modifiers": ["25"]})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == EncounterState.READY and r.json()["version"] == 2
    assert r.json()["lines"][0]["modifiers"] == ["25"]
    bad = call(engine, "PATCH", f"/review/{ids['V3']}/lines/0", "coder", json={"units": "NaN"})
    assert bad.status_code == 422 and bad.json()["key"] == "units"

    # validation errors are not approvable; the coder rejects with a reason instead
    r = call(engine, "POST", f"/review/{ids['V3']}/approve", "coder", json={})
    assert r.status_code == 409 and "npi" in r.json()["title"]
    assert call(engine, "POST", f"/review/{ids['V3']}/reject", "coder", json={"reason": " "}).status_code == 422
    r = call(engine, "POST", f"/review/{ids['V3']}/reject", "coder", json={"reason": "duplicate of a paper claim"})
    assert r.status_code == 200 and r.json()["state"] == EncounterState.REJECTED
    assert call(engine, "POST", f"/review/{ids['V3']}/approve", "coder", json={}).status_code == 409

    # approve over a rule finding: held by review-severity findings only
    pipe.ingest_bytes(hl7("V4", "M4", [("97530", ""), ("97140", "")], ["M54.50"]), origin="d.hl7")
    v4 = int(store.conn.execute("SELECT id FROM encounters WHERE source_id = 'V4'").fetchone()[0])
    assert state(engine, v4) == EncounterState.NEEDS_REVIEW
    r = call(engine, "POST", f"/review/{v4}/approve", "coder", json={"note": "distinct sessions, documented"})
    assert r.status_code == 200 and r.json()["state"] == EncounterState.READY

    acts = [e["action"] for e in audit.entries(store, limit=50)]
    assert {"review.edit", "review.reject", "review.approve"} <= set(acts)
    edit = next(e for e in audit.entries(store, limit=50) if e["action"] == "review.edit")
    assert edit["before_sha256"] and edit["after_sha256"] and edit["before_sha256"] != edit["after_sha256"]
    assert audit.verify(store) == []
    assert "paper claim" not in str(audit.entries(store, limit=50))  # the reason is kept as a hash


def test_rerun_updates_unsent_encounters_only(engine) -> None:
    store = engine.store()
    pipe = Pipeline.for_config(store, engine.config)
    pipe.ingest_bytes(hl7("V1", "M1", [("17999", "")], ["L98.9"]), origin="a.hl7")  # unlisted: doc.missing
    pipe.ingest_bytes(hl7("V2", "M2", [("17999", "")], ["L98.9"]), origin="b.hl7")
    ids = {r[1]: int(r[0]) for r in store.conn.execute("SELECT id, source_id FROM encounters")}
    assert state(engine, ids["V1"]) == state(engine, ids["V2"]) == EncounterState.NEEDS_REVIEW
    with store.tx():  # V2's current version was already delivered to the RCM
        store.conn.execute("INSERT INTO outbox (encounter_id, version, state, next_attempt_at, created_at, "
                           "updated_at) VALUES (?, 1, ?, '', '', '')", (ids["V2"], OutboxState.DELIVERED))
    engine.config.rules.off = ["doc.missing"]  # the practice switches the rule off, then re-runs
    r = call(engine, "POST", "/rules/rerun", "coder")
    assert r.status_code == 403
    r = call(engine, "POST", "/rules/rerun", "manager")
    assert r.status_code == 200, r.text
    assert r.json()["released"] == 1 and r.json()["skipped_sent"] == 1
    assert state(engine, ids["V1"]) == EncounterState.READY
    assert state(engine, ids["V2"]) == EncounterState.NEEDS_REVIEW  # sent: never changed
    rules = call(engine, "GET", "/rules", "front_desk").json()["items"]
    assert next(x for x in rules if x["id"] == "doc.missing")["enabled"] is False
