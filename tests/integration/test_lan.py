"""LAN mode: a real engine serving TLS on a non-loopback address of this machine (127.0.0.2
where there is none), pairing with the real CLI, every refusal, revocation, and local owner
access against the real keyring (and a second keyring standing for another OS user)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from agent import config as configmod
from agent import pairing
from agent.engine import Engine
from core import pairing as cp
from core.errors import ConfigError
from core.paths import Paths
from tests.conftest import ROOT, run_cli


def lan_address() -> str:
    """A non-loopback IPv4 address of this network namespace, else 127.0.0.2."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", out):
        if not m.group(1).startswith("127."):
            return m.group(1)
    return "127.0.0.2"


ADDR = lan_address()


def _engine(home: Path, extra: str = "") -> Engine:
    paths = Paths.resolve(home)
    paths.ensure()
    paths.config.write_text(f'[api]\nport = 0\nhost = "{ADDR}"\ntls = "auto"\n{extra}')
    eng = Engine(paths, configmod.load(paths.config))
    eng.start()
    return eng


@pytest.fixture(scope="module")
def lan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    eng = _engine(tmp_path_factory.mktemp("lan") / "server")
    yield eng
    eng.stop()


def _info(eng: Engine) -> dict[str, Any]:
    return dict(json.loads(eng.paths.engine_info.read_text()))


def _code(eng: Engine, role: str = "front_desk", name: str = "") -> tuple[str, str]:
    """(pairing code as printed, the one-time part) made through the real `pair` verb."""
    r = run_cli("pair", "--role", role, *(["--name", name] if name else []), "--json", home=eng.paths.home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["url"] == _info(eng)["lan_url"] and out["fingerprint"] == eng.tls.ca_fingerprint
    return out["code"], cp.split_code(out["code"])[0]


def _pinned(tmp_path: Path, pem: bytes) -> requests.Session:
    (tmp_path / "ca.pem").write_bytes(pem)
    s = requests.Session()
    s.trust_env = False  # no REQUESTS_CA_BUNDLE: the given CA alone
    s.verify = str(tmp_path / "ca.pem")
    return s


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_listener_is_tls_on_the_lan_address_and_plain_only_on_loopback(lan: Engine) -> None:
    info = _info(lan)
    assert info["lan_url"].startswith(f"https://{ADDR}:") and info["url"].startswith("http://127.0.0.1:")
    tls_dir = lan.paths.home / "tls"
    assert (tls_dir.stat().st_mode & 0o777) == 0o700
    for key in ("ca.key", "server.key"):
        assert ((tls_dir / key).stat().st_mode & 0o777) == 0o600
    # plain http to the LAN port: no HTTP answer at all
    port = info["lan_url"].rsplit(":", 1)[1]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{ADDR}:{port}/api/v1/health", timeout=10)
    # TLS 1.1 is refused; 1.2 works
    import socket
    import ssl

    assert lan.lan_server.config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2

    for version, ok in ((ssl.TLSVersion.TLSv1_1, False), (ssl.TLSVersion.TLSv1_2, True)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=lan.tls.ca_pem.decode())
        ctx.minimum_version = ctx.maximum_version = version
        if not ok:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with socket.create_connection((ADDR, int(port)), timeout=10) as sock:
            if ok:
                with ctx.wrap_socket(sock, server_hostname=ADDR) as t:
                    assert t.version() == "TLSv1.2"
            else:
                with pytest.raises(ssl.SSLError):
                    ctx.wrap_socket(sock, server_hostname=ADDR)


def test_clients_without_the_ca_or_with_a_wrong_ca_are_refused(lan: Engine, tmp_path: Path) -> None:
    url = _info(lan)["lan_url"]
    bare = requests.Session()
    bare.trust_env = False  # the system's CAs only
    with pytest.raises(requests.exceptions.SSLError):
        bare.get(f"{url}/api/v1/health", timeout=10)
    from agent import tls

    other = tmp_path / "other"
    other.mkdir()
    wrong = tls.ensure(Paths(other), configmod.ApiConfig(host=ADDR, tls="auto")).ca_pem
    assert wrong != lan.tls.ca_pem
    with pytest.raises(requests.exceptions.SSLError):
        _pinned(tmp_path, wrong).get(f"{url}/api/v1/health", timeout=10)
    assert _pinned(tmp_path, lan.tls.ca_pem).get(f"{url}/api/v1/health", timeout=10).status_code == 200


def test_pairing_with_the_cli_end_to_end_then_revocation(lan: Engine, tmp_path: Path) -> None:
    code, _ = _code(lan, "manager", "desk-1")
    pc = tmp_path / "pc"
    r = run_cli("pair", "--connect", _info(lan)["lan_url"], code, home=pc)
    assert r.returncode == 0, r.stderr
    assert "paired with" in r.stdout and "desk-1 (manager)" in r.stdout
    pcp = Paths.resolve(pc)
    assert pcp.pinned_ca.read_bytes() == lan.tls.ca_pem  # the CA is pinned on the PC
    assert json.loads(pcp.remote_engine.read_text())["fingerprint"] == lan.tls.ca_fingerprint
    # the PC's CLI talks to the practice engine over TLS, as the paired user
    st = run_cli("status", "--json", home=pc)
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["user"] == {"name": "desk-1", "role": "manager"}
    # the server lists the paired token, with where it paired from; the audit trail has it
    ul = run_cli("users", "list", home=lan.paths.home)
    assert re.search(rf"desk-1\s+manager\s+since \S+\s+paired from {re.escape(ADDR)}", ul.stdout), ul.stdout
    from agent import audit

    actions = [e["action"] for e in audit.entries(lan.store(), limit=50)]
    assert "pairing.code" in actions and "pairing.redeem" in actions and "user.add" in actions
    # revocation cuts the PC off at once
    rv = run_cli("users", "revoke", "desk-1", home=lan.paths.home)
    assert rv.returncode == 0, rv.stderr
    st = run_cli("status", home=pc)
    assert st.returncode != 0 and "did not accept" in st.stderr


def test_a_used_code_is_refused(lan: Engine, tmp_path: Path) -> None:
    code, _ = _code(lan)
    url = _info(lan)["lan_url"]
    cp.connect(url, code, home=tmp_path / "a")
    with pytest.raises(cp.PairingError, match="already used"):
        cp.connect(url, code, home=tmp_path / "b")


def test_an_expired_code_is_refused(lan: Engine, tmp_path: Path) -> None:
    code, secret = _code(lan)
    store = lan.store()
    with store.tx():  # ten minutes later
        store.conn.execute("UPDATE pairing_codes SET expires_at = '2000-01-01T00:00:00.000+00:00' "
                           "WHERE code_sha256 = ?", (pairing._hash(secret),))
    r = run_cli("pair", "--connect", _info(lan)["lan_url"], code, home=tmp_path / "pc")
    assert r.returncode != 0 and "has expired" in r.stderr and "chargebridge pair" in r.stderr
    assert not Paths.resolve(tmp_path / "pc").remote_engine.exists()


def test_a_code_whose_pin_is_not_this_servers_ca_is_refused_before_the_code_is_sent(lan: Engine,
                                                                                     tmp_path: Path) -> None:
    _code_text, secret = _code(lan)
    forged = cp.pairing_code(secret, "00" * 32)  # the right secret, another CA's pin
    with pytest.raises(cp.PairingError, match="does not match the pairing code"):
        cp.connect(_info(lan)["lan_url"], forged, home=tmp_path / "pc")
    # the secret never reached the engine: the code is still open and works with the right pin
    paired = cp.connect(_info(lan)["lan_url"], cp.pairing_code(secret, lan.tls.ca_fingerprint), home=tmp_path / "q")
    assert paired.role == "front_desk"


def test_plain_http_and_bad_codes_are_refused_by_the_client(lan: Engine, tmp_path: Path) -> None:
    port = _info(lan)["lan_url"].rsplit(":", 1)[1]
    code, _ = _code(lan)
    with pytest.raises(ConfigError, match="not an https address"):
        cp.connect(f"http://{ADDR}:{port}", code, home=tmp_path)
    with pytest.raises(ConfigError, match="not a pairing code"):
        cp.split_code("ABCD-EFGH")
    # https to the plain loopback port: no TLS there
    with pytest.raises(cp.PairingError, match="does not answer with TLS"):
        cp.connect(f"https://127.0.0.1:{lan.port}", code, home=tmp_path)
    # the plain loopback listener does not pair
    r = requests.post(f"http://127.0.0.1:{lan.port}/api/v1/pair", json={"code": "AAAAAAAA"}, timeout=10)
    assert r.status_code == 409 and r.json()["key"] == "api.tls"


def test_guessing_is_rate_limited(tmp_path: Path) -> None:
    eng = _engine(tmp_path / "server")
    try:
        s = _pinned(tmp_path, eng.tls.ca_pem)
        url = _info(eng)["lan_url"]
        codes = [s.post(f"{url}/api/v1/pair", json={"code": f"AAAAAAA{c}"}, timeout=10).status_code
                 for c in "ABCDEFGHIJK"]
        assert codes[:pairing.TRIES_PER_ADDRESS] == [403] * pairing.TRIES_PER_ADDRESS and codes[-1] == 429
    finally:
        eng.stop()


def test_too_many_wrong_codes_withdraw_every_open_code(fast_store: Any) -> None:
    new = pairing.create_code(fast_store, "front_desk", actor="test")
    lim = pairing.Limiter()
    hits = [lim.failed() for _ in range(pairing.FAILURES_BEFORE_LOCK)]
    assert hits[-1] and not any(hits[:-1])
    assert pairing.withdraw_open(fast_store, actor="engine") == 1
    with pytest.raises(pairing.CodeRefused, match="expired"):
        pairing.redeem(fast_store, new.code, client="x")


def test_non_loopback_without_tls_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        configmod.parse({"api": {"host": "192.168.1.10"}})
    assert exc.value.key == "api.tls" and 'tls = "auto"' in exc.value.fix
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    (home / "chargebridge.toml").write_text('[api]\nhost = "0.0.0.0"\n')
    r = run_cli("engine", home=home, timeout=60)
    assert r.returncode == 2 and "plain http" in r.stderr and not (home / "engine.json").exists()


def test_server_certificate_is_renewed_before_expiry_and_the_ca_kept(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509

    from agent import tls

    paths = Paths(tmp_path)
    api = configmod.ApiConfig(host=ADDR, tls="auto", tls_names=["billing.practice.lan"])
    first = tls.ensure(paths, api)

    def serial() -> int:
        return x509.load_pem_x509_certificates(first.cert.read_bytes())[0].serial_number

    s1 = serial()
    assert tls.ensure(paths, api).ca_pem == first.ca_pem and serial() == s1  # nothing to do
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=tls.SERVER_DAYS) - tls.RENEW_BEFORE + dt.timedelta(days=1)
    renewed = tls.ensure(paths, api, now=later)
    assert serial() != s1 and renewed.ca_pem == first.ca_pem  # new server certificate, same CA
    s2 = serial()
    api.tls_names.append("10.0.0.7")  # a new name: a new certificate that has it
    tls.ensure(paths, api, now=later)
    leaf = x509.load_pem_x509_certificates(first.cert.read_bytes())[0]
    sans = {str(v) for v in leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value}
    assert serial() != s2 and "<IPAddress(value=10.0.0.7)>" in sans


# -- local owner access -------------------------------------------------------------------------------
def test_local_owner_uses_the_cli_without_a_user_and_another_keyring_is_refused(tmp_path: Path) -> None:
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    paths.config.write_text("[api]\nport = 0\n")
    eng = Engine(paths, configmod.load(paths.config))
    eng.start()
    try:
        r = run_cli("status", "--json", home=paths.home)
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["user"] == {"name": "local-owner", "role": "admin"} and "engine" not in st
        # an admin verb through the API works too, and no user was created: setup is still open
        r = run_cli("pause", home=paths.home)
        assert r.returncode == 0, r.stderr
        assert requests.get(f"http://127.0.0.1:{eng.port}/api/v1/health", timeout=10).json()["setup_needed"]
        # another OS user = another keyring (a fresh D-Bus session and gnome-keyring): no owner token
        env = {k: v for k, v in os.environ.items() if k != "CHARGEBRIDGE_IN_KEYRING_SESSION"}
        other = subprocess.run(["bash", str(ROOT / "scripts" / "with-keyring.sh"), sys.executable, "-m",
                                "agent.cli", "--home", str(paths.home), "status"],
                               capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
        assert other.returncode != 0 and "did not accept this machine's API token" in other.stderr, other.stderr
        # a wrong owner token is refused too
        r = requests.get(f"http://127.0.0.1:{eng.port}/api/v1/status", timeout=10,
                         headers={"Authorization": "Bearer cbown_not-the-token"})
        assert r.status_code == 401
    finally:
        eng.stop()
