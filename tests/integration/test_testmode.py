"""Test mode end to end against the real FHIR peer: a dry run sends nothing yet records exactly
the Bundles a live push sends; reconciliation and the claim lifecycle run on it; go-live is
refused while items are missing, forced with a reason (audited), and the live sync then sends
what the dry run recorded. Also: the sandbox route, and the engine's API (banner field, pages,
export, the settings door that cannot switch test mode off)."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import requests

from agent.store import Store
from connectors.rcm.fhir import ID_CLAIM
from core.paths import Paths
from tests.conftest import run_cli, start_test_engine, wait_until
from tests.helpers import dft


def _home(tmp_path: Path, peer, *, n: int, mode: str, base_url: str | None = None) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "chargebridge.toml").write_text(
        f'[api]\nport = 0\n[rcm]\ntype = "fhir"\nbase_url = "{base_url or peer.base_url}"\n'
        f'token_url = "{peer.token_url}"\nclient_id = "{peer.client_id}"\ntimeout_seconds = 5\n[mode]\n{mode}\n')
    assert run_cli("rcm", "set-secret", home=home, input=peer.client_secret + "\n").returncode == 0
    f = tmp_path / "visits.hl7"
    f.write_text("".join(dft(i) for i in range(n)))
    assert json.loads(run_cli("ingest", "--json", str(f), home=home).stdout)["accepted"] == n
    return home


def _claims(peer) -> dict[str, dict]:
    out = {}
    for c in peer.search("Claim", _count=1000):
        for i in c.get("identifier", []):
            if i.get("system") == ID_CLAIM:
                out[i["value"]] = c
    return out


def _codes(claim: dict) -> list[str]:
    return [it["productOrService"]["coding"][0]["code"] for it in claim["item"]]


def _store(home: Path) -> Store:
    return Store.open(Paths.resolve(home), "keyring", create=False)


def test_dry_run_records_what_go_live_then_sends(tmp_path, clean_peer):
    peer = clean_peer
    home = _home(tmp_path, peer, n=3, mode="test = true")
    r = run_cli("sync", "--json", home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["delivered"] == 3
    # nothing reached the RCM: no write request, no Claim
    assert not [q for q in peer.requests_log() if q["method"] != "GET"]
    assert peer.count("Claim") == 0

    listing = json.loads(run_cli("testmode", "list", "--json", home=home).stdout)
    assert listing["total"] == 1
    send = listing["items"][0]
    assert (send["route"], send["encounters"], send["delivered"], send["files"]) == ("dry-run", 3, 3, 3)
    out = tmp_path / "send.zip"
    r = run_cli("testmode", "export", str(send["id"]), "--out", str(out), home=home)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert [n.split("-", 1)[1] for n in names] == [
            "bundle-1-patients-practitioners.json", "bundle-2-coverages-encounters.json", "bundle-3-claims.json"]
        claims_bundle = json.loads(zf.read(names[2]))
    recorded = {e["resource"]["identifier"][0]["value"]: e["resource"] for e in claims_bundle["entry"]}
    assert len(recorded) == 3 and all(e["request"]["method"] == "POST" for e in claims_bundle["entry"])
    # a second export to the same file is refused (never overwrites), and exports are audited
    assert run_cli("testmode", "export", str(send["id"]), "--out", str(out), home=home).returncode != 0

    # the claim lifecycle and reconciliation run on the dry run: the dry-run RCM holds what was sent
    rec = json.loads(run_cli("reconcile", "--json", home=home).stdout)
    assert rec.get("matched") == 3, rec
    s = _store(home)
    try:
        states = [r[0] for r in s.conn.execute("SELECT state FROM claims")]
        assert states == ["submitted"] * 3
        assert s.conn.execute("SELECT count(*) FROM audit WHERE action = 'testmode.export'").fetchone()[0] == 1
    finally:
        s.close()

    # go-live is refused while items are missing (no folder seen, no manager, no backup)
    r = run_cli("golive", "--check", "--json", home=home)
    assert r.returncode == 1
    check = json.loads(r.stdout)
    assert set(check["missing"]) == {"folders", "manager", "backup"}, check  # the RCM test passes
    assert any(i["key"] == "test_deliveries" and not i["ok"] and "3 encounter" in i["title"] for i in check["items"])
    r = run_cli("golive", home=home)
    assert r.returncode != 0 and "not ready to go live" in r.stderr
    assert run_cli("golive", "--force", "--reason", "short", home=home).returncode != 0  # a reason is a sentence
    assert "test = true" in (home / "chargebridge.toml").read_text()

    r = run_cli("golive", "--force", "--reason", "pilot practice: backups run by the hosting company",
                "--resend-test", "--json", home=home)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["live"] and res["forced"] and res["requeued"] == 3
    assert "test = false" in (home / "chargebridge.toml").read_text()
    s = _store(home)
    try:
        row = s.conn.execute("SELECT actor, detail FROM audit WHERE action = 'golive'").fetchone()
    finally:
        s.close()
    assert row is not None and json.loads(row[1])["forced"] is True and "pilot practice" in json.loads(row[1])["reason"]

    # live: the sync sends what the dry run recorded (same claims, same lines)
    r = run_cli("sync", "--json", home=home)
    assert json.loads(r.stdout)["delivered"] == 3, r.stdout
    live = _claims(peer)
    assert set(live) == set(recorded)
    for ident, claim in live.items():
        assert _codes(claim) == _codes(recorded[ident])
        assert claim["diagnosis"] == recorded[ident]["diagnosis"]
    assert json.loads(run_cli("testmode", "list", "--json", home=home).stdout)["total"] == 1  # nothing new recorded
    assert run_cli("golive", home=home).returncode != 0  # already live


def test_sandbox_route_sends_to_the_sandbox_only(tmp_path, clean_peer):
    peer = clean_peer
    # production points at a closed port: only the sandbox (the peer) may be reached
    home = _home(tmp_path, peer, n=2, base_url="https://127.0.0.1:9/fhir",
                 mode=f'test = true\nsandbox_url = "{peer.base_url}"\nsandbox_token_url = "{peer.token_url}"')
    r = run_cli("sync", "--json", home=home)
    assert json.loads(r.stdout)["delivered"] == 0  # no sandbox secret yet: nothing goes anywhere
    assert peer.count("Claim") == 0
    assert run_cli("testmode", "set-secret", home=home, input=peer.client_secret + "\n").returncode == 0
    r = run_cli("sync", "--json", home=home)
    assert json.loads(r.stdout)["delivered"] == 2, r.stdout + r.stderr
    assert len(_claims(peer)) == 2
    items = json.loads(run_cli("testmode", "list", "--json", home=home).stdout)["items"]
    assert [(i["route"], i["delivered"]) for i in items] == [("sandbox", 2)]
    rec = json.loads(run_cli("reconcile", "--json", home=home).stdout)
    assert rec.get("matched") == 2, rec


def _restart(eng):  # type: ignore[no-untyped-def]
    from agent import config as configmod
    from agent.engine import Engine

    eng.stop()
    new = Engine(eng.paths, configmod.load(eng.paths.config))
    new.start()
    new.tokens, new.export = eng.tokens, eng.export
    new.url = f"http://127.0.0.1:{new.port}/api/v1"
    return new


def test_engine_api_banner_pages_and_the_go_live_door(tmp_path, clean_peer):
    peer = clean_peer
    eng = start_test_engine(tmp_path)
    try:
        h = {r: {"Authorization": f"Bearer {t}"} for r, t in eng.tokens.items()}
        assert requests.get(f"{eng.url}/health", timeout=10).json()["test_mode"] is False
        from agent import keys
        from core.secrets import RCM_SECRET

        keys.set_secret(eng.paths, RCM_SECRET, peer.client_secret)
        doc = requests.get(f"{eng.url}/config", headers=h["admin"], timeout=10).json()["config"]
        doc["rcm"].update(type="fhir", base_url=peer.base_url, token_url=peer.token_url, client_id=peer.client_id)
        doc["mode"]["test"] = True
        r = requests.put(f"{eng.url}/config", headers=h["admin"], json=doc, timeout=30)
        assert r.status_code == 200, r.text
        assert "mode" in r.json()["applied"]
        assert requests.get(f"{eng.url}/health", timeout=10).json()["test_mode"] is True
        assert requests.get(f"{eng.url}/status", headers=h["front_desk"], timeout=10).json()["test_mode"] is True

        (eng.export / "v.hl7").write_text(dft(1) + dft(2))
        assert wait_until(lambda: eng.store().counts().get("ready", 0) == 2)
        r = requests.post(f"{eng.url}/sync", params={"wait": "true"}, headers=h["manager"], timeout=120)
        assert r.status_code == 200 and r.json()["delivered"] == 2, r.text
        assert peer.count("Claim") == 0

        assert requests.get(f"{eng.url}/testmode/sends", headers=h["front_desk"], timeout=10).status_code == 403
        page = requests.get(f"{eng.url}/testmode/sends", headers=h["manager"], timeout=10).json()
        assert page["total"] == 1 and page["items"][0]["encounters"] == 2
        sid = page["items"][0]["id"]
        detail = requests.get(f"{eng.url}/testmode/sends/{sid}", headers=h["manager"], timeout=10).json()
        assert [f["name"] for f in detail["file_list"]][-1] == "bundle-3-claims.json"
        exp = requests.get(f"{eng.url}/testmode/sends/{sid}/export", headers=h["manager"], timeout=10).json()
        with zipfile.ZipFile(io.BytesIO(base64.b64decode(exp["content_base64"]))) as zf:
            assert len(zf.namelist()) == 3
        assert requests.get(f"{eng.url}/testmode/sends/999", headers=h["manager"], timeout=10).status_code == 404

        # a settings save cannot end test mode: go-live is the one door
        doc["mode"]["test"] = False
        r = requests.put(f"{eng.url}/config", headers=h["admin"], json=doc, timeout=30)
        assert r.status_code == 409 and r.json()["key"] == "mode.test"
        no_mode = {k: v for k, v in doc.items() if k != "mode"}
        assert requests.put(f"{eng.url}/config", headers=h["admin"], json=no_mode, timeout=30).status_code == 200
        assert requests.get(f"{eng.url}/health", timeout=10).json()["test_mode"] is True

        # everything in place: the folder has seen a file, the RCM answers, a manager exists;
        # backups configured with a key passphrase
        checks = requests.get(f"{eng.url}/golive", headers=h["manager"], timeout=60).json()
        assert checks["missing"] == ["backup"], checks
        from agent.backup import save_wrap

        save_wrap(eng.store(), eng._key, "a long backup passphrase", actor="test")
        doc["mode"]["test"] = True
        doc["backup"]["dir"] = str(tmp_path / "backups")
        r = requests.put(f"{eng.url}/config", headers=h["admin"], json=doc, timeout=30)
        assert r.json()["restart_required"] == ["backup"]
        eng = _restart(eng)  # [backup] applies at start: go-live checks what the engine runs with
        checks = requests.get(f"{eng.url}/golive", headers=h["manager"], timeout=60).json()
        assert checks["ready"] and checks["missing"] == [], checks
        assert requests.post(f"{eng.url}/golive", headers=h["manager"], json={}, timeout=60).status_code == 403
        r = requests.post(f"{eng.url}/golive", headers=h["admin"], json={}, timeout=60)
        assert r.status_code == 200 and r.json() == {**r.json(), "live": True, "forced": False, "requeued": 0}
        assert requests.get(f"{eng.url}/health", timeout=10).json()["test_mode"] is False
        assert eng.target is not None and type(eng.target).__name__ == "FhirTarget"
        assert requests.post(f"{eng.url}/golive", headers=h["admin"], json={}, timeout=60).status_code == 409
    finally:
        eng.stop()
