"""Pairing a front-desk PC with the practice's engine: the code format and the client side.

``chargebridge pair`` on the engine's machine prints a **pairing code** of 24 characters in
groups of four, e.g. ``K7QM-2XJD-MZ4A-QH6T-P3LN-B2WE``:

* the first 8 characters are a one-time secret (base32, 40 bits; valid 10 minutes, once; the
  engine keeps only its SHA-256);
* the last 16 characters pin the practice CA: the first 80 bits of the SHA-256 of its
  certificate (DER), in base32.

The PC is told the engine's address and this code. Before it trusts anything, it asks the
engine for its CA certificate (``GET /api/v1/pair/ca``). That one request carries no secret and
its answer is accepted only if the certificate's fingerprint matches the pin in the code — the
way an SSH host key is checked against a fingerprint read out by a person. From then on every
request is verified against that CA alone (it is the only trust anchor for the engine): the
one-time part of the code is sent over TLS verified that way, and the engine answers with a
token for the role chosen at ``pair`` time. The PC keeps the CA in its home
(``tls/engine-ca.pem``), the address in ``remote-engine.json`` and the token in the keyring.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.errors import ChargeBridgeError, ConfigError
from core.paths import Paths

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648 base32
CODE_LEN = 8
PIN_LEN = 16
CA_PATH = "/api/v1/pair/ca"
PAIR_PATH = "/api/v1/pair"
MAX_CA_ANSWER = 64 * 1024
_CONFUSABLE = str.maketrans({"0": "O", "1": "I", "8": "B", "9": "G"})


class PairingError(ChargeBridgeError):
    exit_code = 1


def ca_fingerprint(ca_pem: bytes) -> str:
    """SHA-256 of the certificate's DER, hex (what ``chargebridge pair`` prints)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = x509.load_pem_x509_certificate(ca_pem).public_bytes(Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def pin_of(fingerprint_hex: str) -> str:
    return base64.b32encode(bytes.fromhex(fingerprint_hex)[:10]).decode()[:PIN_LEN]


def pairing_code(code: str, fingerprint_hex: str) -> str:
    """The code a person reads out: one-time secret + CA pin, in groups of four."""
    text = code + pin_of(fingerprint_hex)
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def split_code(text: str) -> tuple[str, str]:
    """(one-time secret, CA pin) from what a person typed: case, spaces and dashes do not
    matter, and 0/1/8/9 read as O/I/B/G."""
    norm = "".join(ch for ch in text.upper() if ch not in " -\t").translate(_CONFUSABLE)
    if len(norm) != CODE_LEN + PIN_LEN or any(ch not in ALPHABET for ch in norm):
        raise ConfigError("that is not a pairing code",
                          f"type the {CODE_LEN + PIN_LEN}-character code `chargebridge pair` printed on the "
                          "practice server (letters A-Z and digits 2-7, in groups of four)", key="code")
    return norm[:CODE_LEN], norm[CODE_LEN:]


def normalize_secret(text: str) -> str:
    """The one-time part of a code as the engine stores it (its first 8 characters)."""
    norm = "".join(ch for ch in text.upper() if ch not in " -\t").translate(_CONFUSABLE)
    return norm[:CODE_LEN]


def engine_base(url: str) -> tuple[str, str, int]:
    """(base URL, host, port) of an engine address; https only (pairing is LAN mode)."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"the engine address {url.strip()!r} is not an https address",
                          "give the address `chargebridge pair` printed, e.g. https://192.168.1.10:8765", key="url")
    try:
        port = parts.port or 443
    except ValueError:
        raise ConfigError("the engine address has a bad port", "e.g. https://192.168.1.10:8765", key="url") from None
    path = parts.path.rstrip("/")
    if path.endswith("/api/v1"):
        path = path[: -len("/api/v1")]
    return f"https://{parts.netloc}{path}", parts.hostname, port


@dataclass(frozen=True)
class Paired:
    url: str
    name: str
    role: str
    token: str
    ca_pem: bytes
    fingerprint: str


def fetch_ca(url: str, pin: str, *, timeout: float = 15.0) -> bytes:
    """The engine's CA certificate, accepted only when its fingerprint matches ``pin``.

    The TLS handshake of this one request cannot be checked against a CA we do not have yet;
    what is checked is the answer: a certificate whose SHA-256 matches the pin the person
    typed. No secret is sent on it."""
    base, host, port = engine_base(url)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the answer is verified by its pinned fingerprint below
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", urlsplit(base).path + CA_PATH, headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read(MAX_CA_ANSWER + 1)
        status = resp.status
    except ssl.SSLError:
        raise PairingError(f"{base} does not answer with TLS",
                           "check the address and port `chargebridge pair` printed (https, the LAN port)") from None
    except (OSError, http.client.HTTPException) as exc:
        raise PairingError(f"the practice server at {base} cannot be reached ({type(exc).__name__})",
                           "check the address, that the engine runs there, and that the firewall lets this "
                           "PC reach its port") from None
    finally:
        conn.close()
    if status != 200 or len(body) > MAX_CA_ANSWER:
        title, fix = _error_text(body)
        raise PairingError(title or f"the practice server answered HTTP {status} instead of its CA certificate",
                           fix or "check that the address is the ChargeBridge engine's LAN address")
    try:
        ca_pem = str(json.loads(body)["ca_pem"]).encode()
        got = ca_fingerprint(ca_pem)
    except (ValueError, KeyError, TypeError):
        raise PairingError("the practice server's answer is not a CA certificate",
                           "check that the address is the ChargeBridge engine's LAN address") from None
    if pin_of(got) != pin:
        raise PairingError("the server's certificate does not match the pairing code",
                           "check the address and the code; if both are right, something between this PC and "
                           "the practice server is answering in its place — tell IT and do not continue")
    return ca_pem


def connect(url: str, code_text: str, *, home: Path, timeout: float = 30.0) -> Paired:
    """Pair with the engine at ``url``: pin its CA, redeem the code, return the new token."""
    import requests

    secret, pin = split_code(code_text)
    base, _host, _port = engine_base(url)
    ca_pem = fetch_ca(base, pin, timeout=timeout)
    home.mkdir(parents=True, exist_ok=True)
    ca_file = home / f".pair-ca-{os.getpid()}.pem"
    ca_file.write_bytes(ca_pem)
    try:
        with requests.Session() as s:
            s.verify = str(ca_file)  # the pinned CA is the only trust anchor:
            s.trust_env = False  # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE would override it, proxies must not see it
            r = s.post(f"{base}{PAIR_PATH}", json={"code": secret}, timeout=timeout)
    except requests.exceptions.SSLError:
        raise PairingError("the practice server's certificate is not valid for this address",
                           "use the address `chargebridge pair` printed (a name or IP in [api] tls_names)") from None
    except requests.RequestException as exc:
        raise PairingError(f"the practice server at {base} cannot be reached ({type(exc).__name__})",
                           "check the address and try again") from None
    finally:
        ca_file.unlink(missing_ok=True)
    if r.status_code != 200:
        title, fix = _error_text(r.content)
        raise PairingError(title or f"the practice server refused pairing (HTTP {r.status_code})",
                           fix or "ask for a new code: chargebridge pair")
    try:
        body: dict[str, Any] = r.json()
        paired = Paired(base, str(body["name"]), str(body["role"]), str(body["token"]), ca_pem,
                        ca_fingerprint(ca_pem))
    except (ValueError, KeyError, TypeError):
        raise PairingError("the practice server's answer could not be read",
                           "update ChargeBridge so this PC and the server are the same version") from None
    return paired


def _error_text(body: bytes) -> tuple[str, str]:
    try:
        data = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    title, fix = data.get("title"), data.get("fix")
    return (title if isinstance(title, str) else ""), (fix if isinstance(fix, str) else "")


# -- what the PC keeps ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RemoteEngine:
    url: str
    ca_file: Path
    fingerprint: str
    name: str
    role: str


def save(paths: Paths, paired: Paired) -> RemoteEngine:
    """Keep the pairing on this PC: the pinned CA (home ``tls/engine-ca.pem``), the address
    (``remote-engine.json``) and the token (keyring entry ``api-token``)."""
    from core.secrets import API_TOKEN, set_secret

    paths.ensure()
    paths.pinned_ca.parent.mkdir(mode=0o700, exist_ok=True)
    paths.pinned_ca.write_bytes(paired.ca_pem)
    set_secret(paths, API_TOKEN, paired.token)
    info = {"url": paired.url, "ca_file": str(paths.pinned_ca), "fingerprint": paired.fingerprint,
            "name": paired.name, "role": paired.role}
    tmp = paths.remote_engine.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, paths.remote_engine)
    return load_remote(paths) or RemoteEngine(paired.url, paths.pinned_ca, paired.fingerprint, paired.name,
                                              paired.role)


def load_remote(paths: Paths) -> RemoteEngine | None:
    """The engine this PC paired with, or None. The CA file must still match the fingerprint
    recorded at pairing (a swapped file is not trusted)."""
    try:
        info = json.loads(paths.remote_engine.read_text())
        ca_file = Path(str(info["ca_file"]))
        if ca_fingerprint(ca_file.read_bytes()) != str(info["fingerprint"]):
            return None
        return RemoteEngine(str(info["url"]), ca_file, str(info["fingerprint"]), str(info.get("name", "")),
                            str(info.get("role", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
