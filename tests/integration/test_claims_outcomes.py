"""FHIR ClaimResponse outcomes on the real Medplum peer: claims delivered by sync, adjudicated by
ClaimResponses written to the peer, read back by the engine after each sync and each
reconciliation run into the claim lifecycle — states, amounts, CARC reasons, the mismatch queue
for rejected / denied claims, idempotence (the same ClaimResponse version twice changes nothing),
a new version applied once, and a denied claim corrected and resent as a new version of its Claim.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from agent.store import Store
from connectors.rcm.fhir_outcomes import CARC
from core.paths import Paths
from tests.conftest import run_cli
from tests.helpers import dft

ADJ = "http://terminology.hl7.org/CodeSystem/adjudication"


def _home(tmp_path: Path, peer: Any, n: int) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "chargebridge.toml").write_text(
        f'[api]\nport = 0\n[rcm]\ntype = "fhir"\nbase_url = "{peer.base_url}"\ntoken_url = "{peer.token_url}"\n'
        f'client_id = "{peer.client_id}"\ntimeout_seconds = 10\n')
    assert run_cli("rcm", "set-secret", home=home, input=peer.client_secret + "\n").returncode == 0
    f = tmp_path / "visits.hl7"
    f.write_text("".join(dft(i) for i in range(n)))
    assert json.loads(run_cli("ingest", "--json", str(f), home=home).stdout)["accepted"] == n
    return home


def _cli_json(home: Path, *args: str) -> Any:
    r = run_cli(*args, "--json", home=home, timeout=180)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _claims(home: Path) -> dict[str, dict[str, Any]]:
    return {c["claim_id"]: c for c in _cli_json(home, "claims")["items"]}


def _answers(home: Path) -> int:
    s = Store.open(Paths.resolve(home), "keyring", create=False)
    try:
        return int(s.conn.execute("SELECT count(*) FROM claim_answers").fetchone()[0])
    finally:
        s.close()


def _amount(cat: str, value: Decimal, reason: tuple[str, str] | None = None) -> dict[str, Any]:
    adj: dict[str, Any] = {"category": {"coding": [{"system": ADJ, "code": cat}]},
                           "amount": {"value": float(value), "currency": "USD"}}
    if reason:
        adj["reason"] = {"coding": [{"system": reason[0], "code": reason[1]}]}
    return adj


def _response(claim: dict[str, Any], outcome: str, *, items: list[dict[str, Any]] | None = None,
              totals: list[dict[str, Any]] | None = None, paid_on: str = "", errors: tuple[str, ...] = ()) -> dict[str, Any]:
    cr: dict[str, Any] = {
        "resourceType": "ClaimResponse", "status": "active", "use": "claim", "created": "2026-11-20",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "patient": claim["patient"], "insurer": {"display": "Test Payer"},
        "request": {"reference": f"Claim/{claim['id']}"}, "outcome": outcome,
    }
    if items:
        cr["item"] = [{"itemSequence": 1, "adjudication": items}]
    if totals:
        cr["total"] = totals
    if paid_on:
        cr["payment"] = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-paymenttype",
                                              "code": "complete"}]}, "date": paid_on,
                         "amount": {"value": 0, "currency": "USD"}}
    if errors:
        cr["error"] = [{"code": {"coding": [{"system": "https://rcm.example/errors", "code": e,
                                             "display": "Subscriber not found"}]}} for e in errors]
    return cr


def _post(peer: Any, cr: dict[str, Any]) -> dict[str, Any]:
    r = peer.fhir("POST", "ClaimResponse", json=cr)
    assert r.status_code == 201, r.text
    return r.json()


def test_claim_responses_move_claims_once_and_open_the_mismatch_queue(tmp_path: Path, clean_peer: Any,
                                                                     keyring_ok: None) -> None:
    peer = clean_peer
    home = _home(tmp_path, peer, 6)
    res = _cli_json(home, "sync")
    assert res["delivered"] == 6
    claims = _claims(home)
    assert len(claims) == 6 and {c["state"] for c in claims.values()} == {"submitted"}
    assert _answers(home) == 0  # the sync read outcomes too: none yet
    ids = sorted(claims)
    remote = {cid: peer.fhir("GET", f"Claim/{claims[cid]['control']['Claim']}").json() for cid in ids}
    billed = {cid: Decimal(claims[cid]["billed"]) for cid in ids}
    paid, partial, denied, rejected, queued, silent = ids

    _post(peer, _response(remote[paid], "complete", paid_on="2026-11-21",
                          items=[_amount("submitted", billed[paid]), _amount("eligible", billed[paid]),
                                 _amount("benefit", billed[paid])]))
    # partly paid: CO-45 (fee schedule) 10.00 written off, PR-3 (copay) 20.00 for the patient
    p = billed[partial]
    _post(peer, _response(remote[partial], "complete", paid_on="2026-11-22",
                          items=[_amount("submitted", p), _amount("eligible", p - 10, (CARC, "CO-45")),
                                 _amount("copay", Decimal(20), (CARC, "PR-3")), _amount("benefit", p - 30)],
                          totals=[_amount("submitted", p), _amount("eligible", p - 10), _amount("copay", Decimal(20)),
                                  _amount("benefit", p - 30)]))
    _post(peer, _response(remote[denied], "complete", paid_on="2026-11-23",
                          items=[_amount("submitted", billed[denied]),
                                 _amount("benefit", Decimal(0), (CARC, "CO-50"))]))
    _post(peer, _response(remote[rejected], "error", errors=("A7-562",)))
    queued_cr = _post(peer, _response(remote[queued], "queued"))
    _post(peer, _response({"id": "not-ours", "patient": remote[paid]["patient"]}, "complete"))  # another claim

    res = _cli_json(home, "sync")  # nothing to deliver; reads the outcomes of the open claims
    assert res["delivered"] == 0
    claims = _claims(home)
    assert {cid: c["state"] for cid, c in claims.items()} == {
        paid: "paid", partial: "partially_paid", denied: "denied", rejected: "rejected", queued: "accepted",
        silent: "submitted"}
    c = claims[paid]
    assert (Decimal(c["paid"]), Decimal(c["adjusted"]), c["adjudicated_on"]) == (billed[paid], 0, "2026-11-21")
    assert c["payer_claim_id"] == remote[paid]["id"]  # the RCM's Claim id: what a correction replaces
    c = claims[partial]
    assert (Decimal(c["paid"]), Decimal(c["adjusted"]), Decimal(c["patient_resp"])) == (p - 30, 10, 20)
    assert {(r["group"], r["code"], r["amount"]) for r in c["reasons"]} == {("CO", "45", "10.00"),
                                                                            ("PR", "3", "20.00")}
    assert [(r["kind"], r["group"], r["code"]) for r in claims[denied]["reasons"]] == [("carc", "CO", "50")]
    assert Decimal(claims[denied]["paid"]) == 0
    assert [(r["kind"], r["code"]) for r in claims[rejected]["reasons"]] == [("fhir", "A7-562")]
    assert claims[denied]["in_mismatch_queue"] and claims[rejected]["in_mismatch_queue"]
    assert not claims[partial]["in_mismatch_queue"]
    answers = _answers(home)
    assert answers == 5  # one per ClaimResponse about our claims; the one about another Claim is never asked for

    # the mismatch queue holds the rejected and the denied claim with their reasons
    queue = {m["kind"]: m for m in _cli_json(home, "mismatches")}
    assert set(queue) == {"claim_rejected", "claim_denied"}
    assert [(d["group"], d["code"]) for d in queue["claim_denied"]["diff"]] == [("CO", "50")]
    assert set(queue["claim_denied"]["actions"]) == {"resend", "ignore"}
    text = run_cli("mismatches", home=home)
    assert text.returncode == 0, text.stderr
    assert "reason CO-50" in text.stdout and "reason FHIR A7-562 Subscriber not found" in text.stdout

    # the same ClaimResponse versions again (a reconciliation run reads them too): nothing changes
    before = _claims(home)
    run_cli("reconcile", "--json", home=home, timeout=180)
    assert _answers(home) == answers
    after = _claims(home)
    assert {k: (v["state"], v["updated_at"]) for k, v in after.items()} == \
        {k: (v["state"], v["updated_at"]) for k, v in before.items()}

    # the payer adjudicates the queued claim: a new version of its ClaimResponse -> one new answer
    upd = {**queued_cr, "outcome": "complete", "item": [{"itemSequence": 1, "adjudication": [
        _amount("submitted", billed[queued]), _amount("benefit", billed[queued])]}]}
    r = peer.fhir("PUT", f"ClaimResponse/{queued_cr['id']}", json=upd)
    assert r.status_code == 200, r.text
    run_cli("reconcile", "--json", home=home, timeout=180)
    assert _claims(home)[queued]["state"] == "paid" and _answers(home) == answers + 1
    run_cli("reconcile", "--json", home=home, timeout=180)
    assert _answers(home) == answers + 1

    # claims show: every answer of the claim, oldest first
    shown = _cli_json(home, "claims", "show", queued)
    assert [a["state"] for a in shown["answers"]] == ["accepted", "paid"]
    assert all(a["kind"] == "ClaimResponse" for a in shown["answers"])
    assert _cli_json(home, "claims", "--state", "paid")["total"] == 2

    # a denied claim corrected and resent: a new version of the same Claim at the RCM, a new submission
    fid = queue["claim_denied"]["id"]
    r = run_cli("resolve", str(fid), "--action", "resend", home=home, timeout=180)
    assert r.returncode == 0, r.stderr
    claim_after = peer.fhir("GET", f"Claim/{remote[denied]['id']}").json()
    assert claim_after["meta"]["versionId"] != remote[denied]["meta"]["versionId"]
    assert peer.count("Claim") == 6  # a new version, not a second claim
    c = _claims(home)[denied]
    assert (c["state"], c["submissions"], c["in_mismatch_queue"]) == ("submitted", 2, False)
    run_cli("reconcile", "--json", home=home, timeout=180)  # the old denial is not applied again
    assert _claims(home)[denied]["state"] == "submitted"
