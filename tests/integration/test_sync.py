"""Charge sync against the real FHIR R4 peer (Medplum's FhirRouter + validation, on Node 22)."""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.store import Store
from connectors.rcm.fhir import ID_CLAIM
from core.paths import Paths
from tests.conftest import ROOT, run_cli
from tests.helpers import dft


def make_home(tmp_path: Path, peer, *, n: int = 6, secret: str | None = None, extra: str = "",
              base_url: str | None = None) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "chargebridge.toml").write_text(
        f'[api]\nport = 0\n[rcm]\ntype = "fhir"\nbase_url = "{base_url or peer.base_url}"\n'
        f'token_url = "{peer.token_url}"\nclient_id = "{peer.client_id}"\ntimeout_seconds = 5\n{extra}')
    r = run_cli("rcm", "set-secret", home=home, input=(secret or peer.client_secret) + "\n")
    assert r.returncode == 0, r.stderr
    if n:
        f = tmp_path / "visits.hl7"
        f.write_text("".join(dft(i) for i in range(n)))
        assert json.loads(run_cli("ingest", "--json", str(f), home=home).stdout)["accepted"] == n
    return home


def sync(home: Path) -> tuple[int, dict]:
    r = run_cli("sync", "--json", home=home, timeout=120)
    assert r.stdout.strip(), r.stderr
    return r.returncode, json.loads(r.stdout)


def claims_by_identifier(peer) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in peer.search("Claim", _count=1000):
        for i in c.get("identifier", []):
            if i.get("system") == ID_CLAIM:
                out[i["value"]] = out.get(i["value"], 0) + 1
    return out


def outbox_rows(home: Path, keyring=True) -> list[tuple]:
    s = Store.open(Paths.resolve(home), "keyring", create=False)
    try:
        return s.conn.execute("SELECT state, attempts, next_attempt_at, last_error FROM outbox ORDER BY id").fetchall()
    finally:
        s.close()


def test_sync_delivers_each_encounter_exactly_once(tmp_path: Path, clean_peer, keyring_ok) -> None:
    home = make_home(tmp_path, clean_peer, n=6)
    rc, res = sync(home)
    assert (rc, res["delivered"], res["rejected"], res["remaining"]) == (0, 6, 0, 0)
    claims = claims_by_identifier(clean_peer)
    assert len(claims) == 6 and set(claims.values()) == {1}
    assert clean_peer.count("Patient") == 6 and clean_peer.count("Practitioner") == 4
    # each delivered Claim starts its life as a submitted claim, under the identifier the peer holds
    s = Store.open(Paths.resolve(home), "keyring", create=False)
    try:
        born = dict(s.conn.execute("SELECT claim_id, state FROM claims").fetchall())
    finally:
        s.close()
    assert born == dict.fromkeys(claims, "submitted")
    claim = clean_peer.search("Claim", _count=1)[0]
    item = claim["item"][0]
    assert item["productOrService"]["coding"][0]["system"] == "http://www.ama-assn.org/go/cpt"
    assert item["diagnosisSequence"] == [1] and item["quantity"]["value"] == 1
    assert claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10-cm"
    rc, res = sync(home)  # nothing new
    assert res["delivered"] == 0
    # the same batch re-sent (as after a crash): the peer creates nothing new
    s = Store.open(Paths.resolve(home), "keyring", create=False)
    with s.tx():
        s.conn.execute("UPDATE outbox SET state = 'queued'")
    s.close()
    rc, res = sync(home)
    assert res["delivered"] == 6
    assert claims_by_identifier(clean_peer) == claims
    st = json.loads(run_cli("status", "--json", home=home).stdout)
    assert st["outbox"]["delivered"] == 6 and st["last_sync"]["delivered"] == 6


def test_server_rejection_rejects_only_that_encounter(tmp_path: Path, clean_peer, keyring_ok) -> None:
    home = make_home(tmp_path, clean_peer, n=5)
    s = Store.open(Paths.resolve(home), "keyring", create=False)
    row = s.conn.execute("SELECT id, data FROM encounters ORDER BY id LIMIT 1 OFFSET 2").fetchone()
    data = json.loads(row[1])
    data["lines"][0]["service_date"] = "2026-13-45"  # the RCM's validator refuses this date
    with s.tx():
        s.conn.execute("UPDATE encounters SET data = ? WHERE id = ?", (json.dumps(data), row[0]))
    s.close()
    rc, res = sync(home)
    assert rc == 1 and (res["delivered"], res["rejected"]) == (4, 1)
    reason = res["rejections"][0]["reason"]
    assert reason and "servicedDate" in reason or "date" in reason.lower(), reason
    assert len(claims_by_identifier(clean_peer)) == 4
    states = [r[0] for r in outbox_rows(home)]
    assert states.count("rejected") == 1 and states.count("delivered") == 4
    st = json.loads(run_cli("status", "--json", home=home).stdout)
    assert st["state"] == "attention" and "rejected by the RCM" in st["reason"]


def test_expired_token_is_refreshed_once(tmp_path: Path, clean_peer, keyring_ok) -> None:
    home = make_home(tmp_path, clean_peer, n=2)
    from agent import config as configmod
    from agent.engine import Engine

    eng = Engine(Paths.resolve(home), configmod.load(home / "chargebridge.toml"))
    eng.open_local()
    assert eng.run_sync().delivered == 2
    clean_peer.expire_tokens()  # the cached token is now refused with 401
    with eng.store().tx():
        eng.store().conn.execute("UPDATE outbox SET state = 'queued'")
    before = clean_peer.stats()["token_requests"]
    res = eng.run_sync()
    assert res.delivered == 2 and not res.error
    assert clean_peer.stats()["token_requests"] == before + 1
    eng.store().close()


def test_wrong_secret_is_a_clear_credentials_error(tmp_path: Path, clean_peer, keyring_ok) -> None:
    home = make_home(tmp_path, clean_peer, n=2, secret="wrong-secret")
    rc, res = sync(home)
    assert rc == 1 and res["error_kind"] == "auth" and "RCM credentials rejected" in res["error"]
    assert [r[0] for r in outbox_rows(home)] == ["queued", "queued"]  # kept for after the fix
    st = json.loads(run_cli("status", "--json", home=home).stdout)
    assert st["state"] == "error" and "credentials" in st["reason"]


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_honours_retry_after(tmp_path: Path, clean_peer, keyring_ok, status: int) -> None:
    home = make_home(tmp_path, clean_peer, n=3)
    clean_peer.fault(status, count=1, retry_after=120, path_prefix="/fhir")
    rc, res = sync(home)
    assert rc == 1 and res["failed"] == 3 and res["delivered"] == 0
    rows = outbox_rows(home)
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=100)).isoformat()
    assert all(r[0] == "failed" and r[2] > soon for r in rows)
    rc, res = sync(home)  # even "sync now" waits for the server's Retry-After
    assert "wait until" in res["skipped"]
    assert clean_peer.count("Claim") == 0


def test_server_error_backs_off_and_then_delivers(tmp_path: Path, clean_peer, keyring_ok) -> None:
    home = make_home(tmp_path, clean_peer, n=3)
    clean_peer.fault(500, count=1, path_prefix="/fhir/R4")
    rc, res = sync(home)
    assert res["failed"] == 3 and res["error_kind"] == "server"
    rows = outbox_rows(home)
    assert all(r[0] == "failed" and r[1] == 1 for r in rows)
    rc, res = sync(home)  # a manual sync retries now
    assert res["delivered"] == 3 and len(claims_by_identifier(clean_peer)) == 3


def test_timeout_and_connection_refused(tmp_path: Path, clean_peer, keyring_ok) -> None:
    home = make_home(tmp_path, clean_peer, n=2, extra="")
    cfg = (home / "chargebridge.toml").read_text().replace("timeout_seconds = 5", "timeout_seconds = 1")
    (home / "chargebridge.toml").write_text(cfg)
    clean_peer.fault(None, count=1, delay_ms=3000, path_prefix="/fhir/R4")
    rc, res = sync(home)
    assert res["error_kind"] == "timeout" and res["failed"] == 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    (home / "chargebridge.toml").write_text(cfg.replace(clean_peer.base_url, f"http://127.0.0.1:{closed}/fhir/R4"))
    rc, res = sync(home)
    assert res["error_kind"] == "unreachable" and "cannot be reached" in res["error"]


def test_self_signed_tls_is_refused_and_never_retried_without_verification(tmp_path: Path, clean_peer,
                                                                         keyring_ok) -> None:
    from tests.tls import self_signed_server

    with self_signed_server() as (url, hits):
        home = make_home(tmp_path, clean_peer, n=2, base_url=url)
        rc, res = sync(home)
    assert rc == 1 and res["error_kind"] == "tls" and "not trusted" in res["error"]
    assert hits == []  # no HTTP request ever got through the failed handshake
    assert [r[0] for r in outbox_rows(home)] == ["queued", "queued"]


def test_circuit_breaker_pauses_scheduled_sync(tmp_path: Path, clean_peer, keyring_ok) -> None:
    home = make_home(tmp_path, clean_peer, n=1, extra="[sync]\nmax_failures = 2\nbreaker_minutes = 30\n")
    from agent import config as configmod
    from agent.engine import Engine

    eng = Engine(Paths.resolve(home), configmod.load(home / "chargebridge.toml"))
    eng.open_local()
    clean_peer.fault(500, count=10, path_prefix="/fhir/R4")
    eng.run_sync()
    eng.run_sync()
    st = eng.status()
    assert st["state"] == "error" and "repeated failures" in st["reason"] and st["breaker_until"]
    assert eng.run_sync(force=False).skipped == "circuit breaker open"
    clean_peer.reset()
    res = eng.run_sync(force=True)  # "Sync now" tries anyway; success closes the breaker
    assert res.delivered == 1 and eng.status()["state"] in ("idle", "attention")
    eng.store().close()


@pytest.mark.slow
def test_sigkill_mid_batch_then_restart_delivers_each_once(tmp_path: Path, clean_peer, keyring_ok) -> None:
    n = 60
    home = make_home(tmp_path, clean_peer, n=n, extra="[sync]\ninterval_minutes = 0.05\n")
    cfg = (home / "chargebridge.toml").read_text().replace('type = "fhir"', 'type = "fhir"\nbatch_size = 10')
    (home / "chargebridge.toml").write_text(cfg)
    clean_peer.fault(None, count=4, delay_ms=700, path_prefix="/fhir/R4")  # slow batches: a kill lands mid-batch
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home), "engine"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    end = time.monotonic() + 60
    while time.monotonic() < end and not clean_peer.requests_log():
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    sending = [r for r in outbox_rows(home) if r[0] in ("sending", "delivered")]
    assert sending, "the kill should land while a batch is in flight or after one"
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home), "engine"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end and sum(r[0] == "delivered" for r in outbox_rows(home)) < n:
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    claims = claims_by_identifier(clean_peer)
    assert len(claims) == n and set(claims.values()) == {1}, claims
    assert clean_peer.count("Patient") == n


def test_transaction_mode_splits_what_the_server_refuses(tmp_path: Path, clean_peer, keyring_ok) -> None:
    # Medplum allows at most 8 entries in a conditional transaction: 3 encounters (15 entries) are
    # refused whole, so the client splits the batch until each part is accepted.
    home = make_home(tmp_path, clean_peer, n=3)
    cfg = (home / "chargebridge.toml").read_text().replace('type = "fhir"', 'type = "fhir"\nbundle = "transaction"')
    (home / "chargebridge.toml").write_text(cfg)
    rc, res = sync(home)
    assert (rc, res["delivered"], res["rejected"]) == (0, 3, 0)
    log = clean_peer.requests_log()
    assert any(e.get("status") == 400 for e in log)  # the refused whole-batch transaction
    claims = claims_by_identifier(clean_peer)
    assert len(claims) == 3 and set(claims.values()) == {1}


# -- where secrets and charges may go: TLS trust, redirects, paging links --------------------------------
class _Recorder:
    """A loopback HTTP(S) server that answers with ``respond(method, path)`` and records what came."""

    def __init__(self, respond, *, cert_dir: Path | None = None) -> None:  # type: ignore[no-untyped-def]
        import ssl
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.hits: list[dict] = []
        hits = self.hits

        class H(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hits.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
                status, headers, out = respond(self.command, self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *a: object) -> None:
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.cert = None
        scheme = "http"
        if cert_dir is not None:
            from tests.tls import _self_signed

            self.cert, key = _self_signed(cert_dir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert, key)
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
            scheme = "https"
        self.port = self.srv.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture()
def servers():  # type: ignore[no-untyped-def]
    made: list[_Recorder] = []

    def make(respond, **kw) -> _Recorder:  # type: ignore[no-untyped-def]
        made.append(_Recorder(respond, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _ok(method: str, path: str) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/fhir+json"}, b'{"resourceType":"CapabilityStatement"}'


def _redirect_to(base: str, status: int = 307):  # type: ignore[no-untyped-def]
    return lambda method, path: (status, {"Location": base + path}, b"")


def test_ca_bundle_wins_over_ca_variables_in_the_environment(tmp_path: Path, servers, monkeypatch) -> None:
    from connectors.rcm.fhir import FhirTarget
    from tests.tls import _self_signed

    (tmp_path / "rcm").mkdir()
    (tmp_path / "other").mkdir()
    rcm = servers(_ok, cert_dir=tmp_path / "rcm")
    wrong, _ = _self_signed(tmp_path / "other")  # a bundle that does not hold the RCM's CA
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(wrong))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(wrong))
    url = f"{rcm.url}/fhir/R4"
    ok, detail = FhirTarget(url, auth="bearer", secret="tok", ca_bundle=str(rcm.cert)).check()
    assert (ok, detail) == (True, "connected; credentials accepted")
    assert [h["path"] for h in rcm.hits] == ["/fhir/R4/metadata"]
    # the environment's bundle is still what an unconfigured target trusts: it is really in effect
    ok, detail = FhirTarget(url, auth="bearer", secret="tok").check()
    assert not ok and "not trusted" in detail and len(rcm.hits) == 1


def test_a_redirect_to_another_host_carries_neither_claims_nor_token(tmp_path: Path, clean_peer, keyring_ok,
                                                                      servers) -> None:
    elsewhere = servers(_ok)
    rcm = servers(_redirect_to(f"http://localhost:{elsewhere.port}"))  # another host name, same machine
    home = make_home(tmp_path, clean_peer, n=2, base_url=f"{rcm.url}/fhir/R4")
    rc, res = sync(home)
    assert rc == 1 and res["error_kind"] == "config" and "redirected the request to localhost" in res["error"]
    assert [h["method"] for h in rcm.hits] == ["POST"] and rcm.hits[0]["headers"]["Authorization"]
    assert elsewhere.hits == []  # neither the Bundle of claims nor the bearer token left
    assert [r[0] for r in outbox_rows(home)] == ["queued", "queued"]  # kept for after the fix
    assert clean_peer.count("Claim") == 0


def test_a_token_endpoint_redirect_never_takes_the_client_secret_along(clean_peer, servers) -> None:
    from connectors.rcm.fhir import FhirTarget

    elsewhere = servers(_ok)
    token = servers(_redirect_to(f"http://localhost:{elsewhere.port}"))
    t = FhirTarget(clean_peer.base_url, token_url=f"{token.url}/oauth2/token", client_id=clean_peer.client_id,
                   secret=clean_peer.client_secret, timeout=5)
    ok, detail = t.check()
    assert not ok and "token endpoint redirected the request to localhost" in detail
    assert len(token.hits) == 1 and token.hits[0]["headers"]["Authorization"].startswith("Basic ")
    assert elsewhere.hits == []


def test_https_is_never_downgraded_by_a_redirect(tmp_path: Path, servers) -> None:
    from connectors.rcm.fhir import FhirTarget

    plain = servers(_ok)
    rcm = servers(_redirect_to(plain.url, 302), cert_dir=tmp_path)
    ok, detail = FhirTarget(f"{rcm.url}/fhir/R4", auth="bearer", secret="tok", ca_bundle=str(rcm.cert)).check()
    assert not ok and "redirected the request to 127.0.0.1" in detail
    assert len(rcm.hits) == 1 and plain.hits == []


def test_a_redirect_within_the_rcm_is_followed(servers) -> None:
    from connectors.rcm.fhir import FhirTarget

    def respond(method: str, path: str) -> tuple[int, dict, bytes]:
        if path == "/fhir/R4/metadata":
            return 301, {"Location": "/fhir/R4/metadata/"}, b""
        return _ok(method, path)

    rcm = servers(respond)
    ok, _ = FhirTarget(f"{rcm.url}/fhir/R4", auth="bearer", secret="tok").check()
    assert ok and [h["path"] for h in rcm.hits] == ["/fhir/R4/metadata", "/fhir/R4/metadata/"]
    assert rcm.hits[1]["headers"]["Authorization"] == "Bearer tok"


def test_a_next_page_link_to_another_host_is_not_followed(servers) -> None:
    from connectors.rcm.base import TargetError
    from connectors.rcm.fhir import FhirTarget

    elsewhere = servers(_ok)
    page = json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": [], "link": [
        {"relation": "next", "url": f"http://localhost:{elsewhere.port}/fhir/R4/Claim?page=2"}]}).encode()
    rcm = servers(lambda method, path: (200, {"Content-Type": "application/fhir+json"}, page))
    with pytest.raises(TargetError) as ei:
        FhirTarget(f"{rcm.url}/fhir/R4", auth="bearer", secret="tok").fetch_charges(dt.date(2024, 1, 1),
                                                                                     dt.date(2024, 12, 31))
    assert "next-page link points to another address" in str(ei.value) and elsewhere.hits == []


@pytest.mark.parametrize("base,token,key", [
    ("http://localhost.attacker.example/fhir", "http://127.0.0.1:9/token", "rcm.base_url"),
    ("http://127.0.0.1:9/fhir", "http://127.0.0.1@attacker.example/token", "rcm.token_url"),
])
def test_the_target_applies_the_url_rule_to_candidate_settings(base: str, token: str, key: str) -> None:
    from agent.config import RcmConfig
    from agent.rcm import build_target
    from core.errors import ConfigError

    with pytest.raises(ConfigError) as ei:  # e.g. settings typed into the wizard, not yet saved
        build_target(RcmConfig(type="fhir", base_url=base, token_url=token, client_id="c"), "secret")
    assert ei.value.key == key
