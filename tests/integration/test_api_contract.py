"""The engine API's contract, against a real engine (in-process, real SQLCipher store and keyring):
one error shape everywhere, the first-run setup token, PUT/PATCH/validate config, revoking users,
paged lists, bounds, allowed hosts, the long-poll cap, and an OpenAPI spec with real schemas.
"""

from __future__ import annotations

import json
import logging
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import run_cli, start_test_engine, wait_until
from tests.helpers import dft

ERROR_KEYS = {"title", "fix", "key", "request_id"}


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok):
    eng = start_test_engine(tmp_path)
    yield eng
    eng.stop()


def call(eng: Any, method: str, path: str, role: str | None = "admin", token: str | None = None,
         **kw: Any) -> requests.Response:
    tok = token if token is not None else (eng.tokens[role] if role else None)
    headers = {**kw.pop("headers", {}), **({"Authorization": f"Bearer {tok}"} if tok else {})}
    return requests.request(method, eng.url + path, headers=headers, timeout=60, **kw)


def error(r: requests.Response, status: int) -> dict[str, Any]:
    """The response is an ErrorBody with this status, and its request id is the header's."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == ERROR_KEYS, body
    assert body["title"] and isinstance(body["fix"], str)
    assert body["request_id"] and body["request_id"] == r.headers["X-Request-ID"]
    return body


# -- errors --------------------------------------------------------------------------------------
def test_every_error_has_the_same_shape(engine) -> None:
    assert "needs a token" in error(call(engine, "GET", "/status", role=None), 401)["title"]
    error(call(engine, "GET", "/status", token="cb_wrong"), 401)
    assert "manager role" in error(call(engine, "POST", "/pause", role="front_desk"), 403)["title"]
    assert error(call(engine, "GET", "/no-such-thing"), 404)["title"] == "there is no such API path"
    assert "quarantine entry 424242" in error(call(engine, "GET", "/quarantine/424242/document"), 404)["title"]
    assert "DELETE is not allowed" in error(call(engine, "DELETE", "/status"), 405)["title"]
    # FastAPI's own validation errors: the field is named, its location is the key
    body = error(call(engine, "GET", "/encounters", params={"page": "99999999999999999999"}), 422)
    assert body["key"] == "page" and "'page'" in body["title"] and "1000000" in body["title"]
    assert error(call(engine, "GET", "/encounters", params={"page_size": 0}), 422)["key"] == "page_size"
    assert error(call(engine, "GET", "/encounters", params={"state": "lost"}), 422)["key"] == "state"
    body = error(call(engine, "POST", "/users", json={"name": "x", "role": "boss"}), 422)
    assert body["key"] == "body.role" and "front_desk" in body["title"] and "boss" not in r_text(body)
    body = error(call(engine, "POST", "/users", data=b"{not json", headers={"Content-Type": "application/json"}),
                 422)
    assert body["key"] == "body"
    assert error(call(engine, "POST", "/users", json={"name": "x" * 65, "role": "admin"}), 422)["key"] == "body.name"
    # a ChargeBridgeError raised inside the engine keeps its own status, title, fix and key
    body = error(call(engine, "POST", "/users", json={"name": "manager-user", "role": "manager"}), 409)
    assert body["key"] == "name" and "already exists" in body["title"] and body["fix"]


def r_text(body: dict[str, Any]) -> str:
    return json.dumps(body)


def test_a_server_error_is_logged_with_a_request_id_and_never_shows_its_text(engine, caplog) -> None:
    svc = engine.server.config.app.state.service

    def broken(**kw: Any) -> Any:
        raise RuntimeError("Quintana, Maria 1970-01-01")  # text that must not leave the engine

    svc.encounters = broken
    with caplog.at_level(logging.ERROR, logger="chargebridge.api"):
        r = call(engine, "GET", "/encounters")
        body = error(r, 500)
    assert "Quintana" not in r.text and "RuntimeError" not in r.text
    assert body["request_id"] in body["fix"]
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "chargebridge.api"]
    assert len(logged) == 1 and body["request_id"] in logged[0] and "RuntimeError" in logged[0]
    assert "Quintana" not in logged[0]
    assert call(engine, "GET", "/status").status_code == 200  # the engine goes on


def test_host_header_must_name_this_engine(engine) -> None:
    body = error(call(engine, "GET", "/health", headers={"Host": "evil.example"}), 400)
    assert body["key"] == "Host"
    error(call(engine, "GET", "/status", headers={"Host": f"127.0.0.1.evil.example:{engine.port}"}), 400)
    for host in (f"localhost:{engine.port}", f"127.0.0.1:{engine.port}", "localhost"):
        assert call(engine, "GET", "/status", headers={"Host": host}).status_code == 200, host


# -- first-run setup -----------------------------------------------------------------------------
def test_setup_token_life_cycle(tmp_path: Path, keyring_ok) -> None:
    eng = start_test_engine(tmp_path, roles=())
    try:
        path = eng.paths.setup_token
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(eng.paths.home.stat().st_mode) == 0o700
        token = path.read_text().strip()
        assert requests.get(eng.url + "/health", timeout=10).json()["setup_needed"] is True
        # the wizard's steps, with the setup token as an admin
        st = call(eng, "GET", "/status", token=token).json()
        assert st["user"] == {"name": "setup", "role": "admin"}
        r = call(eng, "PATCH", "/config", token=token, json={"sync": {"interval_minutes": 9.0}})
        assert r.status_code == 200 and r.json()["applied"] == ["sync"]
        assert call(eng, "POST", "/rcm/secret", token=token, json={"secret": "wizard-secret"}).status_code == 200
        r = call(eng, "POST", "/users", token=token, json={"name": "it-admin", "role": "admin"})
        assert r.status_code == 200
        first = r.json()["token"]
        # the first user ends setup: the file is gone and the token refused
        assert not path.exists()
        error(call(eng, "GET", "/status", token=token), 401)
        assert requests.get(eng.url + "/health", timeout=10).json()["setup_needed"] is False
        assert call(eng, "GET", "/config", token=first).status_code == 200
        trail = call(eng, "GET", "/audit", token=first, params={"action": "user.add"}).json()["items"]
        assert trail[0]["actor"] == "api:setup"
    finally:
        eng.stop()


def test_setup_token_is_refused_once_users_exist(engine) -> None:
    # the engine wrote one at start (no users then); the test's users ended setup
    assert engine.setup_token and not engine.paths.setup_token.exists()
    error(call(engine, "GET", "/config", token=engine.setup_token), 401)
    health = requests.get(engine.url + "/health", timeout=10).json()
    assert health["ok"] is True and health["setup_needed"] is False and health["version"]


# -- configuration -------------------------------------------------------------------------------
def test_put_config_needs_every_section(engine) -> None:
    before = engine.paths.config.read_text()
    cfg = call(engine, "GET", "/config").json()["config"]
    body = error(call(engine, "PUT", "/config", json={}), 422)
    assert body["key"] in cfg and "PATCH" in body["fix"]
    for section in ("folders", "databases", "rules"):  # an empty list is still a section that must be named
        partial = {k: v for k, v in cfg.items() if k != section}
        assert error(call(engine, "PUT", "/config", json=partial), 422)["key"] == section
    assert engine.paths.config.read_text() == before and len(engine.config.folders) == 1
    assert call(engine, "PUT", "/config", json=cfg).json()["changed"] == []


def test_patch_config_replaces_only_the_sections_given_and_applies_folders_live(engine, tmp_path: Path) -> None:
    cfg = call(engine, "GET", "/config").json()["config"]
    r = call(engine, "PATCH", "/config", json={"sync": {**cfg["sync"], "business_days": "mon-fri"}})
    assert r.status_code == 200 and r.json()["changed"] == ["sync"]
    after = call(engine, "GET", "/config").json()["config"]
    assert after["folders"] == cfg["folders"] and after["sync"]["business_days"] == "mon-fri"
    # every key of a section round-trips (the ingest budgets too); ingest waits for a restart
    r = call(engine, "PATCH", "/config", json={"ingest": {**cfg["ingest"], "max_rows": 5000}})
    assert r.status_code == 200 and r.json()["restart_required"] == ["ingest"], r.text
    assert call(engine, "GET", "/config").json()["config"]["ingest"]["max_rows"] == 5000
    # a bad value or a secret in a patch: 422 naming the key, nothing written
    before = engine.paths.config.read_text()
    assert error(call(engine, "PATCH", "/config", json={"rcm": {"type": "fhir"}}), 422)["key"] == "rcm.base_url"
    body = error(call(engine, "PATCH", "/config", json={"folders": [{"path": str(tmp_path), "password": "pw"}]}),
                 422)
    assert body["key"] == "folders[0].password" and "pw\"" not in json.dumps(body)
    assert engine.paths.config.read_text() == before
    # folders: the whole list is replaced, and the watch service restarts on it at once
    new = tmp_path / "second-export"
    new.mkdir()
    r = call(engine, "PATCH", "/config", json={"folders": [{"path": str(new), "settle_seconds": 0.2}]})
    assert r.status_code == 200 and r.json()["applied"] == ["folders"]
    assert r.json()["restart_required"] == ["ingest"]  # still waiting from above; folders are not
    (new / "visit.hl7").write_text(dft(3))
    assert wait_until(lambda: call(engine, "GET", "/encounters").json()["total"] == 1, 30)
    assert [f["path"] for f in call(engine, "GET", "/config").json()["config"]["folders"]] == [str(new)]


def test_validate_config_full_and_partial(engine) -> None:
    cfg = call(engine, "GET", "/config").json()["config"]
    assert call(engine, "POST", "/config/validate", json={"config": cfg}).json() == {"ok": True}
    body = error(call(engine, "POST", "/config/validate", json={"config": {"folders": cfg["folders"]}}), 422)
    assert body["key"] == "store"  # a full document needs every section
    ok = call(engine, "POST", "/config/validate", json={"config": {"folders": cfg["folders"]}, "partial": True})
    assert ok.status_code == 200 and ok.json() == {"ok": True}
    bad = [{**cfg["folders"][0], "format": "pdf"}]
    body = error(call(engine, "POST", "/config/validate", json={"config": {"folders": bad}, "partial": True}), 422)
    assert body["key"] == "folders[0].format" and "hl7v2" in body["fix"]
    body = error(call(engine, "POST", "/config/validate",
                      json={"config": {"rcm": {"client_secret": "x"}}, "partial": True}), 422)
    assert body["key"] == "rcm.client_secret"
    error(call(engine, "POST", "/config/validate", role="manager", json={"config": cfg}), 403)


def test_rcm_test_never_sends_the_stored_secret_to_a_new_address(engine) -> None:
    body = error(call(engine, "POST", "/rcm/test", json={"base_url": "https://elsewhere.example/fhir"}), 422)
    assert body["key"] == "secret"
    body = error(call(engine, "POST", "/rcm/test", json={"base_url": "https://x.example", "timeout_seconds": 999}),
                 422)
    assert body["key"] == "body.timeout_seconds"


# -- users ---------------------------------------------------------------------------------------
def test_revoke_ends_a_token_at_once_from_the_api_and_the_cli(engine) -> None:
    r = call(engine, "POST", "/users", json={"name": "temp", "role": "front_desk"})
    tok = r.json()["token"]
    assert call(engine, "GET", "/status", token=tok).status_code == 200
    assert call(engine, "DELETE", "/users/temp").json() == {"name": "temp", "revoked": True}
    error(call(engine, "GET", "/status", token=tok), 401)
    assert error(call(engine, "DELETE", "/users/temp"), 404)["key"] == "name"
    assert "temp" not in [u["name"] for u in call(engine, "GET", "/users").json()["items"]]
    error(call(engine, "DELETE", "/users/manager-user", role="manager"), 403)
    # the CLI writes to the same store: the running engine refuses the token on its next request
    assert call(engine, "GET", "/status", role="manager").status_code == 200
    out = run_cli("users", "revoke", "manager-user", home=engine.paths.home)
    assert out.returncode == 0, out.stderr
    error(call(engine, "GET", "/status", role="manager"), 401)
    trail = call(engine, "GET", "/audit", params={"action": "user.revoke"}).json()["items"]
    assert [t["target"] for t in trail] == ["user:manager-user", "user:temp"]


# -- paging and bounds ---------------------------------------------------------------------------
def test_every_list_is_paged_and_bounded(engine) -> None:
    for i in range(3):
        (engine.export / f"bad{i}.hl7").write_bytes(b"\x00garbage" + bytes([i]))
    assert wait_until(lambda: call(engine, "GET", "/quarantine").json()["total"] == 3, 30)
    for path in ("/quarantine", "/mismatches", "/users", "/audit", "/encounters"):
        full = call(engine, "GET", path).json()
        assert {"total", "page", "page_size", "items"} <= set(full) and full["page"] == 1, path
        assert full["page_size"] == 50 and len(full["items"]) == min(full["total"], 50)
        error(call(engine, "GET", path, params={"page": "99999999999999999999"}), 422)
        error(call(engine, "GET", path, params={"page": 0}), 422)
        error(call(engine, "GET", path, params={"page_size": 501}), 422)
    q2 = call(engine, "GET", "/quarantine", params={"page": 2, "page_size": 2}).json()
    q1 = call(engine, "GET", "/quarantine", params={"page": 1, "page_size": 2}).json()
    assert q2["total"] == 3 and len(q2["items"]) == 1 and len(q1["items"]) == 2
    assert {q["id"] for q in q1["items"] + q2["items"]} == {q["id"] for q in call(
        engine, "GET", "/quarantine").json()["items"]}
    users = call(engine, "GET", "/users", params={"page": 2, "page_size": 2}).json()
    assert users["total"] == 3 and [u["name"] for u in users["items"]] == ["admin-user"]
    assert call(engine, "GET", "/quarantine", params={"page": 1_000_000}).json()["items"] == []


def test_long_polls_are_capped_per_token(engine) -> None:
    from agent import notify

    seq = call(engine, "GET", "/status").json()["change_seq"]
    answers: list[int] = []

    def poll() -> None:
        answers.append(call(engine, "GET", "/changes", role="front_desk",
                            params={"after": seq + 10_000, "timeout": 30}).status_code)

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    svc = engine.server.config.app.state.service
    assert wait_until(lambda: sum(svc._polls.values()) == 4, 20)
    body = error(call(engine, "GET", "/changes", role="front_desk", params={"after": seq, "timeout": 1}), 429)
    assert "change-feed" in body["title"]
    # another user is not affected, and neither is /health
    assert call(engine, "GET", "/changes", role="manager", params={"after": 0, "timeout": 0}).status_code == 200
    assert requests.get(engine.url + "/health", timeout=10).status_code == 200
    for _ in range(10_001):
        notify.bump()
    for t in threads:
        t.join(30)
    assert answers == [200] * 4
    assert call(engine, "GET", "/changes", role="front_desk", params={"after": 0, "timeout": 0}).status_code == 200


# -- OpenAPI -------------------------------------------------------------------------------------
def test_openapi_describes_every_operation(engine) -> None:
    spec = requests.get(engine.base + "/openapi.json", timeout=10).json()
    schemas = spec["components"]["schemas"]
    ops = [(p, m, op) for p, item in spec["paths"].items() for m, op in item.items()]
    assert len(ops) >= 24
    for path, method, op in ops:
        assert path.startswith("/api/v1/"), path
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok and ok != {}, (path, method)  # a real response schema, not "any"
        for code, resp in op["responses"].items():
            if code.startswith(("4", "5")):
                assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (
                    path, method, code)
        if path not in ("/api/v1/health", "/api/v1/pair", "/api/v1/pair/ca"):  # no token: health, pairing (H7)
            assert "401" in op["responses"], (path, method)
    assert "HTTPValidationError" not in schemas
    assert set(schemas["EngineState"]["enum"]) >= {"idle", "syncing", "paused", "attention", "error"}
    assert schemas["ErrorBody"]["required"] == ["title"]
    methods = {(p, m) for p, m, _ in ops}
    assert {("/api/v1/config", "put"), ("/api/v1/config", "patch"), ("/api/v1/config/validate", "post"),
            ("/api/v1/users/{name}", "delete")} <= methods


# -- the CLI against a running engine -------------------------------------------------------------
def test_cli_reconcile_without_rcm_against_a_running_engine(engine) -> None:
    from agent import keys
    from core.secrets import API_TOKEN

    keys.set_secret(engine.paths, API_TOKEN, engine.tokens["front_desk"])
    r = run_cli("reconcile", "--json", home=engine.paths.home)
    assert "Traceback" not in r.stderr, r.stderr
    out = json.loads(r.stdout)
    assert r.returncode == 1 and "no RCM is configured" in out["skipped"]
    r = run_cli("reconcile", home=engine.paths.home)
    assert r.returncode == 1 and r.stdout.startswith("reconcile skipped: ") and "Traceback" not in r.stderr
