"""Reconciliation against the real FHIR peer: each kind of difference, each action, re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.rcm.fhir import ID_CLAIM
from core.paths import Paths
from tests.conftest import run_cli
from tests.integration.test_sync import make_home, sync

WINDOW = ("--from", "2026-10-01", "--to", "2026-10-31")


def claim_for(peer, visit: str) -> dict:
    found = [c for c in peer.search("Claim", _count=1000)
             if any(i.get("system") == ID_CLAIM and i.get("value", "").endswith(":" + visit) for i in c.get("identifier", []))]
    assert len(found) == 1, visit
    return found[0]


def put(peer, resource: dict) -> None:
    r = peer.fhir("PUT", f"{resource['resourceType']}/{resource['id']}", json=resource)
    assert r.status_code in (200, 201), r.text[:500]


def reconcile(home: Path) -> dict:
    r = run_cli("reconcile", *WINDOW, "--json", home=home, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def mismatches(home: Path, *extra: str) -> list[dict]:
    r = run_cli("mismatches", "--json", *extra, home=home)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def by_visit(items: list[dict]) -> dict[str, dict]:
    out = {}
    for m in items:
        side = m["local"] or {}
        ident = side.get("identifier", "")
        out[ident.split(":")[-1] if ident else m["remote_id"]] = m
    return out


@pytest.fixture()
def seeded(tmp_path: Path, clean_peer, keyring_ok):
    """8 documented visits synced to the RCM, then changed at the RCM in different ways."""
    home = make_home(tmp_path, clean_peer, n=8)
    rc, res = sync(home)
    assert res["delivered"] == 8
    peer = clean_peer
    c = claim_for(peer, "V0000000")  # units changed at the RCM
    c["item"][0]["quantity"]["value"] = 3
    put(peer, c)
    c = claim_for(peer, "V0000001")  # a different code billed
    c["item"][0]["productOrService"]["coding"][0]["code"] = "99215"
    put(peer, c)
    c = claim_for(peer, "V0000002")  # a modifier added, a price changed
    c["item"][0]["modifier"] = [{"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "25"}]}]
    c["item"][1]["unitPrice"]["value"] = 999
    put(peer, c)
    c = claim_for(peer, "V0000003")  # diagnosis recoded
    c["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["code"] = "I11.9"
    put(peer, c)
    c = claim_for(peer, "V0000004")  # never billed: the RCM lost it
    assert peer.fhir("DELETE", f"Claim/{c['id']}").status_code in (200, 204)
    # an RCM-only claim for someone the EHR never documented
    orphan = claim_for(peer, "V0000005")
    orphan = {k: v for k, v in orphan.items() if k not in ("id", "meta", "identifier")}
    orphan["identifier"] = [{"system": "urn:rcm:claim", "value": "RCM-777"}]
    orphan["billablePeriod"] = {"start": "2026-10-20", "end": "2026-10-20"}
    for it in orphan["item"]:
        it["servicedDate"] = "2026-10-20"
    pat = {"resourceType": "Patient", "name": [{"family": "Zabrowski", "given": ["Ottilie"]}], "birthDate": "1971-02-03"}
    r = peer.fhir("POST", "Patient", json=pat)
    orphan["patient"] = {"reference": f"Patient/{r.json()['id']}"}
    assert peer.fhir("POST", "Claim", json=orphan).status_code == 201
    # a scheduled visit (SIU) 10 days ago that never produced a charge
    siu = ("MSH|^~\\&|EHR|TESTFAC|CB|BILL|202610010800||SIU^S12|S1|P|2.5.1\rSCH|APT9|APT9|||||Visit||15|min|"
           "^^15^20261015090000^20261015091500\rPID|1||MRN900001^^^TESTFAC^MR||Quist^Anna||19800101|F\r")
    (home.parent / "siu.hl7").write_text(siu)
    run_cli("ingest", str(home.parent / "siu.hl7"), home=home)
    return home, peer


def test_each_classification_and_rerun_is_stable(seeded) -> None:
    home, peer = seeded
    out = reconcile(home)
    assert (out["matched"], out["field_mismatch"], out["missing_in_rcm"], out["orphan_in_rcm"],
            out["missing_charge"]) == (3, 4, 1, 1, 1), out
    items = mismatches(home)
    v = by_visit(items)
    assert v["V0000000"]["diff"] == [{"field": "line 99213.units", "ehr": "1", "rcm": "3"}]
    assert {d["field"] for d in v["V0000001"]["diff"]} == {"line 99214", "line 99215"}
    assert {d["field"] for d in v["V0000002"]["diff"]} == {"line 93000.modifiers", "line 85025.unit_charge"}
    assert any(d["field"] == "diagnoses" for d in v["V0000003"]["diff"])
    assert v["V0000004"]["kind"] == "missing_in_rcm"
    kinds = sorted(m["kind"] for m in items)
    assert kinds.count("orphan_in_rcm") == 1 and kinds.count("missing_charge") == 1
    again = reconcile(home)
    assert again["opened"] == 0 and again["reopened"] == 0
    assert len(mismatches(home, "--all")) == len(items)  # same findings, not doubled


def test_actions_change_both_sides(seeded) -> None:
    home, peer = seeded
    reconcile(home)
    v = by_visit(mismatches(home))
    # resend: the EHR version goes to the RCM as a new version of the same Claim
    r = run_cli("resolve", str(v["V0000000"]["id"]), "--action", "resend", home=home)
    assert r.returncode == 0, r.stderr
    c = claim_for(peer, "V0000000")
    assert c["item"][0]["quantity"]["value"] == 1 and c["meta"]["versionId"]
    hist = peer.fhir("GET", f"Claim/{c['id']}/_history").json()
    assert len(hist.get("entry", [])) >= 3  # created, changed at the RCM, corrected by us
    # resend of a claim the RCM lost: created again, exactly once
    assert run_cli("resolve", str(v["V0000004"]["id"]), "--action", "resend", home=home).returncode == 0
    assert claim_for(peer, "V0000004")
    # accept-rcm: the RCM's code becomes the local truth
    assert run_cli("resolve", str(v["V0000001"]["id"]), "--action", "accept-rcm", home=home).returncode == 0
    encs = {e["source_id"]: e for e in json.loads(run_cli("encounters", "--json", home=home).stdout)}
    assert encs["V0000001"]["lines"][0]["code"] == "99215" and encs["V0000001"]["version"] == 2
    # ignore needs a reason
    r = run_cli("resolve", str(v["V0000003"]["id"]), "--action", "ignore", home=home)
    assert r.returncode == 1 and "reason" in r.stderr
    assert run_cli("resolve", str(v["V0000003"]["id"]), "--action", "ignore", "--reason", "payer recoded; agreed",
                   home=home).returncode == 0
    # a wrong action for the kind says which ones apply
    orphan = next(m for m in mismatches(home) if m["kind"] == "orphan_in_rcm")
    r = run_cli("resolve", str(orphan["id"]), "--action", "resend", home=home)
    assert r.returncode == 1 and "accept-rcm" in r.stderr
    out = reconcile(home)
    assert out["field_mismatch"] == 2 and out["missing_in_rcm"] == 0  # V2 still open; V3 ignored but present
    left = {m["kind"] for m in mismatches(home)}
    assert "missing_in_rcm" not in left
    nothing_resent = sync(home)[1]
    assert nothing_resent["delivered"] == 0  # accepted/resent versions are not sent again by sync
    # the RCM changes the resent claim again: the finding reopens instead of a new one
    c = claim_for(peer, "V0000000")
    c["item"][0]["quantity"]["value"] = 5
    put(peer, c)
    out = reconcile(home)
    assert out["reopened"] == 1 and out["opened"] == 0
    reopened = by_visit(mismatches(home))["V0000000"]
    assert reopened["reopened"] == 1 and reopened["id"] == v["V0000000"]["id"]
    audit = run_cli("audit", "verify", home=home)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_finding_fixed_at_the_rcm_closes(seeded) -> None:
    home, peer = seeded
    reconcile(home)
    c = claim_for(peer, "V0000000")
    c["item"][0]["quantity"]["value"] = 1  # the biller fixed it in the RCM
    put(peer, c)
    out = reconcile(home)
    assert out["closed"] == 1
    assert "V0000000" not in by_visit(mismatches(home))


def test_api_mismatch_queue_and_roles(seeded) -> None:
    import requests

    from agent import config as configmod
    from agent.engine import Engine
    from agent.users import add_user

    home, peer = seeded
    eng = Engine(Paths.resolve(home), configmod.load(home / "chargebridge.toml"))
    eng.start()
    try:
        url = f"http://127.0.0.1:{eng.port}/api/v1"
        tok = {r: add_user(eng.store(), f"{r}-x", r) for r in ("front_desk", "manager")}
        h = {r: {"Authorization": f"Bearer {t}"} for r, t in tok.items()}
        out = requests.post(f"{url}/reconcile", params={"start": "2026-10-01", "end": "2026-10-31"},
                            headers=h["front_desk"], timeout=120).json()
        assert out["field_mismatch"] == 4
        items = requests.get(f"{url}/mismatches", headers=h["front_desk"], timeout=30).json()["items"]
        fm = next(m for m in items if m["kind"] == "field_mismatch")
        assert fm["actions"] == ["resend", "accept-rcm", "ignore"] and fm["diff"]
        body = {"action": "ignore", "reason": "payer contract"}
        r = requests.post(f"{url}/mismatches/{fm['id']}/resolve", json=body, headers=h["front_desk"], timeout=30)
        assert r.status_code == 403
        r = requests.post(f"{url}/mismatches/{fm['id']}/comment", json={"text": "looking", "assignee": "manager-x"},
                          headers=h["manager"], timeout=30)
        assert r.status_code == 200
        r = requests.post(f"{url}/mismatches/{fm['id']}/resolve", json=body, headers=h["manager"], timeout=30)
        assert r.status_code == 200 and r.json()["status"] == "ignored"
        r = requests.post(f"{url}/mismatches/{fm['id']}/resolve", json=body, headers=h["manager"], timeout=30)
        assert r.status_code == 409  # already resolved
        audit = requests.get(f"{url}/audit", headers=h["manager"], timeout=30).json()
        actions = [e["action"] for e in audit["items"]]
        assert "mismatch.ignore" in actions and "mismatch.comment" in actions
    finally:
        eng.stop()
