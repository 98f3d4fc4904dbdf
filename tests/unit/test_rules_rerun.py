"""The rules re-run over a real SQLCipher store: evaluating in worker processes (whole patients per
task) gives the same findings, states and counts as evaluating in-process — including the history
rules, which compare a patient's visits, and encounters already sent, which are history but never
changed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.rules import RuleSet
from agent.rules import apply as rules_apply
from agent.store import Store, now
from core.model import ChargeLine, Coverage, Diagnosis, Encounter, Evidence, Patient, Provider, content_hash

CODES = ["99213", "20610", "97140", "97530", "85025", "G0439", "17999", "99396"]


def visit(i: int) -> Encounter:
    """Patients of three visits each; every third patient has two visits on one day with the same
    code (line.duplicate), some are Medicare (opportunity.awv), some lines have no pointer."""
    day = 10 if i % 9 < 6 else 11 + i % 9
    return Encounter(
        source="hl7v2", source_id=f"V{i}", source_system="EHR",
        patient=Patient(mrn=f"M{i // 3}", family="Doe", given="Pat", dob="1950-02-03", sex="MF"[i % 2]),
        coverages=[Coverage(payer_name="Medicare" if i % 4 == 0 else "Acme", member_id="X",
                            **({"start": "2026-01-01", "end": "2026-12-31"} if i % 5 == 0 else {}))],
        rendering=Provider(npi="1234567893"), dos_start=f"2026-03-{day:02d}", place_of_service="11",
        diagnoses=[Diagnosis("I10"), Diagnosis("E11.9")],
        lines=[ChargeLine(CODES[(i + k) % len(CODES)], dx_pointers=[1] if (i + k) % 5 else []) for k in range(2)],
        evidence=[Evidence("order", "80053", "C4")] if i % 7 == 0 else [])


def fill(store: Store, n: int) -> None:
    with store.tx():
        doc = store.conn.execute("INSERT INTO documents (sha256, origin, source, format, size, content, status, "
                                 "received_at) VALUES ('x', 't', 'cli', 'hl7v2', 0, x'', 'processed', ?)",
                                 (now(),)).lastrowid
        ts = now()
        for i in range(n):
            e = visit(i)
            blob = e.to_json()
            eid = store.conn.execute(
                "INSERT INTO encounters (business_key, kind, source, source_id, document_id, state, mrn, dos, data,"
                " findings, content_hash, version, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,1,?,?)",
                (e.business_key, "charge", e.source, e.source_id, doc, "ready", e.patient.mrn, e.dos_start, blob,
                 "[]", content_hash(blob), ts, ts)).lastrowid
            if i % 10 == 0:  # delivered: history for the others, never changed
                store.conn.execute("INSERT INTO outbox (encounter_id, version, state, attempts, next_attempt_at, "
                                   "created_at, updated_at) VALUES (?, 1, 'delivered', 1, ?, ?, ?)",
                                   (eid, ts, ts, ts))


def snapshot(store: Store) -> dict[str, tuple[str, str]]:
    from agent.repos import RULE_FINDINGS

    return {sid: (state, f, r) for sid, state, f, r in store.conn.execute(
        f"SELECT source_id, state, findings, {RULE_FINDINGS.format(e='encounters')} FROM encounters")}


def test_worker_processes_give_the_same_result(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets

    from core.paths import Paths

    stores = []
    for name in ("here", "workers"):
        p = Paths.resolve(tmp_path / name)
        p.ensure()
        s = Store.open_with_key(p, secrets.token_bytes(32))
        fill(s, 240)
        stores.append(s)
    monkeypatch.setattr(rules_apply, "PARALLEL_MIN", 100)
    chunks = rules_apply._chunks([(i, f"M{i // 3}", "", False) for i in range(240)], 2)
    assert [len(c) for c, _ in chunks] == [120, 120] and not chunks[0][1] & chunks[1][1]  # whole patients
    odd = rules_apply._chunks([(i, f"M{i // 7}", "", False) for i in range(240)], 2)
    assert sum(len(c) for c, _ in odd) == 240 and not odd[0][1] & odd[1][1]
    rules = RuleSet()
    here = rules_apply.rerun(stores[0], rules, actor="t")
    calls: list[int] = []
    real = rules_apply._evaluate_parallel

    def pooled(*a: Any) -> Any:
        out = list(real(*a))  # six tasks (3 per worker), whole patients each
        calls.append(sum(len(r) for r, _ in out))  # only when the workers answered (a failing pool falls back in-process)
        return out

    monkeypatch.setattr(rules_apply, "_evaluate_parallel", pooled)
    there = rules_apply.rerun(stores[1], rules, actor="t", workers=2)
    assert calls == [there.checked]  # the pool did the work
    assert here.to_dict() == there.to_dict()
    assert here.skipped_sent == 24 and here.checked == 216 and here.changed > 0
    a, b = snapshot(stores[0]), snapshot(stores[1])
    assert a == b
    found = {f["code"] for _, _, fj in a.values() for f in json.loads(fj or "[]")}
    assert {"line.duplicate", "opportunity.awv", "dx.unsupported_line", "doc.missing"} <= found
    for s in stores:
        s.close()
