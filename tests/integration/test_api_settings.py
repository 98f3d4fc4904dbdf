"""The API the windows need beyond the engine's own: config (admin), the RCM secret and connection
test, quarantined documents, and searching/sorting encounters in the engine.

Runs a real engine in-process on a temp home with the real keyring and SQLCipher store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from agent import config as configmod
from agent import keys
from agent.engine import Engine
from tests.conftest import start_test_engine, wait_until
from tests.helpers import dft


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok):
    eng = start_test_engine(tmp_path)
    yield eng
    eng.stop()


def call(eng: Engine, method: str, path: str, role: str | None = "admin", **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {eng.tokens[role]}"} if role else {}  # type: ignore[attr-defined]
    return requests.request(method, eng.url + path, headers=headers, timeout=60, **kw)  # type: ignore[attr-defined]


def wait_for(pred, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    if not wait_until(pred, timeout):
        raise AssertionError("condition not met in time")


def keys_in(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return {str(k) for k in obj} | set().union(*(keys_in(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(keys_in(v) for v in obj)) if obj else set()
    return set()


def test_new_endpoints_need_a_token_and_the_right_role(engine) -> None:
    cases = [("GET", "/config", "admin"), ("PUT", "/config", "admin"), ("POST", "/rcm/secret", "admin"),
             ("POST", "/rcm/test", "manager"), ("GET", "/quarantine/1/document", "manager")]
    for method, path, needed in cases:
        assert call(engine, method, path, role=None).status_code == 401, path
        for role in ("front_desk", "manager"):
            r = call(engine, method, path, role=role, json={"secret": "x"} if "secret" in path else None)
            if role == "front_desk" or needed == "admin":
                assert r.status_code == 403, (path, role)
                assert f"needs the {needed} role" in r.json()["title"]
    # a manager may test the configured RCM, but not send unsaved settings (they carry a secret)
    r = call(engine, "POST", "/rcm/test", role="manager", json={"base_url": "https://rcm.example/fhir"})
    assert r.status_code == 403 and "admin" in r.json()["title"]


def test_config_round_trip_without_secrets_and_audited(engine) -> None:
    r = call(engine, "GET", "/config")
    assert r.status_code == 200
    got = r.json()
    cfg = got["config"]
    assert cfg["folders"][0]["path"] == str(engine.export) and cfg["api"]["port"] == 0
    assert got["rcm_secret_set"] is False and got["restart_required"] == [] and got["problem"] == ""
    assert not keys_in(got) & {"secret", "client_secret", "token", "password"}

    # the same config back: saved, nothing changed, still loads
    r = call(engine, "PUT", "/config", json=cfg)
    assert r.status_code == 200 and r.json()["changed"] == [] and r.json()["message"] == "Nothing changed."
    assert call(engine, "GET", "/config").json()["config"] == cfg

    # schedule, RCM and folders apply live (the watch service restarts on the new folders)
    cfg["sync"]["interval_minutes"] = 7.0
    cfg["sync"]["business_hours"] = "07:00-19:00"
    cfg["folders"][0]["format"] = "hl7v2"
    r = call(engine, "PUT", "/config", json=cfg)
    body = r.json()
    assert r.status_code == 200, body
    assert body["applied"] == ["sync", "folders"] and body["restart_required"] == []
    assert body["message"] == "Saved and applied."
    assert engine.config.sync.interval_minutes == 7.0 and engine.config.sync.business_hours == "07:00-19:00"
    assert engine.scheduler.get_job("sync").trigger.interval.total_seconds() == 7 * 60
    assert engine.config.folders[0].format == "hl7v2" and engine.watch.config.folders[0].format == "hl7v2"
    on_disk = configmod.load(engine.paths.config)
    assert on_disk.folders[0].format == "hl7v2" and on_disk.sync.interval_minutes == 7.0
    assert call(engine, "GET", "/config").json()["restart_required"] == []
    # an API change still waits for a restart
    cfg["api"]["port"] = 8799
    body = call(engine, "PUT", "/config", json=cfg).json()
    assert body["restart_required"] == ["api"] and "Restart the engine" in body["message"]

    trail = call(engine, "GET", "/audit", params={"action": "config.change"}).json()["items"]
    assert len(trail) == 2 and all(t["actor"] == "api:admin-user" and t["before_sha256"] for t in trail)
    assert [t["detail"] for t in trail] == [{"sections": ["api"]}, {"sections": ["sync", "folders"]}]


def test_config_refuses_bad_values_and_secrets_naming_the_key(engine) -> None:
    before = engine.paths.config.read_text()
    cfg = call(engine, "GET", "/config").json()["config"]
    bad = json.loads(json.dumps(cfg))
    bad["folders"][0]["after"] = "delete"
    r = call(engine, "PUT", "/config", json=bad)
    assert r.status_code == 422
    assert r.json()["title"] == "'folders[0].after' = 'delete' is not allowed"
    assert r.json()["fix"] == "allowed: archive, move" and r.json()["key"] == "folders[0].after"
    bad = json.loads(json.dumps(cfg))
    bad["rcm"]["client_secret"] = "hunter2"
    r = call(engine, "PUT", "/config", json=bad)
    assert r.status_code == 422 and r.json()["key"] == "rcm.client_secret" and "hunter2" not in r.text
    bad = json.loads(json.dumps(cfg))
    bad["sync"]["business_hours"] = "9 to 5"
    r = call(engine, "PUT", "/config", json=bad)
    assert r.status_code == 422 and r.json()["key"] == "sync.business_hours"
    assert engine.paths.config.read_text() == before  # nothing was written


def test_rcm_secret_goes_to_the_keyring_only(engine) -> None:
    r = call(engine, "POST", "/rcm/secret", json={"secret": "  "})
    assert r.status_code == 422
    r = call(engine, "POST", "/rcm/secret", json={"secret": "s3cret-value"})
    assert r.status_code == 200 and "s3cret-value" not in r.text
    assert keys.get_secret(engine.paths, "rcm-secret") == "s3cret-value"
    assert call(engine, "GET", "/config").json()["rcm_secret_set"] is True
    assert "s3cret-value" not in engine.paths.config.read_text()
    trail = call(engine, "GET", "/audit", params={"action": "rcm.secret"}).json()["items"]
    assert len(trail) == 1 and "s3cret" not in json.dumps(trail)


def test_rcm_test_reports_exactly_what_failed(engine, fhir_peer) -> None:
    r = call(engine, "POST", "/rcm/test", role="manager")
    assert r.json() == {"ok": False, "base_url": "",
                        "detail": "no RCM is configured — add the billing system's address in "
                                  "Settings (or the [rcm] section of chargebridge.toml)"}
    cfg = call(engine, "GET", "/config").json()["config"]
    cfg["rcm"].update(type="fhir", base_url=fhir_peer.base_url, token_url=fhir_peer.token_url,
                      client_id=fhir_peer.client_id)
    assert call(engine, "PUT", "/config", json=cfg).json()["applied"] == ["rcm"]
    # configured, but the secret is not in the keyring yet
    r = call(engine, "POST", "/rcm/test", role="manager").json()
    assert r["ok"] is False and "secret is not in the OS keyring" in r["detail"]
    # wrong secret: the token endpoint refuses it
    call(engine, "POST", "/rcm/secret", json={"secret": "wrong"})
    r = call(engine, "POST", "/rcm/test", role="manager").json()
    assert r["ok"] is False and r["detail"].startswith("RCM credentials rejected by the token endpoint")
    call(engine, "POST", "/rcm/secret", json={"secret": fhir_peer.client_secret})
    r = call(engine, "POST", "/rcm/test", role="manager").json()
    assert r == {"ok": True, "detail": "connected; credentials accepted", "base_url": fhir_peer.base_url}
    # unsaved settings (admin): nothing listening there
    r = call(engine, "POST", "/rcm/test", json={"base_url": "http://127.0.0.1:9/fhir/R4",
                                                 "token_url": "http://127.0.0.1:9/oauth2/token",
                                                 "client_id": "x", "secret": "y", "timeout_seconds": 5})
    assert r.json()["ok"] is False
    assert r.json()["detail"].startswith("the RCM's token endpoint cannot be reached")
    r = call(engine, "POST", "/rcm/test", json={"base_url": "http://rcm.example/fhir", "secret": "y"})
    got = r.json()
    assert got["ok"] is False and got["base_url"] == "http://rcm.example/fhir"
    assert got["detail"].startswith("the RCM base URL must use https")


def test_quarantine_document_raw_text_capped_and_binary_flagged(engine) -> None:
    (engine.export / "garbage.bin").write_bytes(b"\x00\x01\x02binary")
    text_doc = "MSH|^~\\&|EHR|FAC|CB|BILL|20261001||ORU^R01|X1|P|2.5.1\rPID|1||MRN1\r"
    (engine.export / "results.hl7").write_text(text_doc)
    wait_for(lambda: call(engine, "GET", "/quarantine").json()["total"] == 2)
    entries = {Path(q["file"]).name: q for q in call(engine, "GET", "/quarantine").json()["items"]}
    qid = entries["results.hl7"]["id"]
    assert call(engine, "GET", f"/quarantine/{qid}/document", role="front_desk").status_code == 403
    doc = call(engine, "GET", f"/quarantine/{qid}/document", role="manager").json()
    assert doc["text"] == text_doc and doc["truncated"] is False and doc["note"] == ""
    assert doc["reason"] == entries["results.hl7"]["reason"] and doc["size"] == len(text_doc)
    doc = call(engine, "GET", f"/quarantine/{qid}/document", role="manager", params={"max_bytes": 10}).json()
    assert doc["text"] == text_doc[:10] and doc["truncated"] is True
    assert doc["note"] == f"showing the first 10 of {len(text_doc)} bytes"
    assert call(engine, "GET", f"/quarantine/{qid}/document", params={"max_bytes": 2 * 1024 * 1024}
                ).status_code == 422  # never more than the 1 MB cap
    doc = call(engine, "GET", f"/quarantine/{entries['garbage.bin']['id']}/document", role="manager").json()
    assert "binary content" in doc["note"] and doc["stored"] is True
    assert call(engine, "GET", "/quarantine/99999/document").status_code == 404


def test_encounters_search_sort_and_page_in_the_engine(engine) -> None:
    for i in range(12):
        (engine.export / f"v{i}.hl7").write_text(dft(i))
    wait_for(lambda: call(engine, "GET", "/encounters").json()["total"] == 12)

    def get(**params: Any) -> dict[str, Any]:
        r = call(engine, "GET", "/encounters", role="front_desk", params=params)
        assert r.status_code == 200, r.text
        return r.json()

    assert get()["total"] == 12 and [e["id"] for e in get()["items"]] == sorted(e["id"] for e in get()["items"])
    # by family name (case-insensitive substring), by MRN, by visit id, by procedure code prefix
    quintana = get(q="quin")
    assert quintana["total"] == 2 and {e["patient"].split(",")[0] for e in quintana["items"]} == {"Quintana"}
    assert [e["mrn"] for e in get(q="MRN000007")["items"]] == ["MRN000007"]
    assert [e["source_id"] for e in get(q="v0000003")["items"]] == ["V0000003"]
    with_ecg = get(q="9300")  # 93000 is on some visits only
    assert 0 < with_ecg["total"] < 12 and all("93000" in e["codes"] for e in with_ecg["items"])
    assert get(q="quintana 93000")["total"] == len([e for e in quintana["items"] if "93000" in e["codes"]])
    assert get(q="main")["total"] == 0  # an address is not a name: no match on other JSON text
    assert get(q="%")["total"] == 0 and get(q="_")["total"] == 0  # no wildcards
    # sort by date of service, both ways; paging keeps the order
    by_dos = [e["dos"] for e in get(sort="dos", page_size=500)["items"]]
    assert by_dos == sorted(by_dos)
    desc = get(sort="dos", desc=True, page_size=5)
    assert [e["dos"] for e in desc["items"]] == sorted(by_dos, reverse=True)[:5] and desc["total"] == 12
    page3 = get(sort="id", desc=True, page=3, page_size=5)["items"]
    assert [e["id"] for e in page3] == sorted((e["id"] for e in get(page_size=500)["items"]), reverse=True)[10:]
    assert get(state="ready", q="quin")["total"] == 2 and get(state="expected")["total"] == 0
    assert call(engine, "GET", "/encounters", params={"sort": "name"}).status_code == 422
