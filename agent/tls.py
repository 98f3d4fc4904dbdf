"""TLS for LAN mode: the practice CA, the engine's server certificate, and the SSL context.

``[api] tls = "auto"``: on first start the engine creates a practice CA (EC P-256, 10 years) and
a server certificate signed by it (397 days) under ``<home>/tls/`` (folder 0700, keys 0600).
The server certificate names ``[api] tls_names``, the bound address and the loopback names. It
is renewed when less than :data:`RENEW_BEFORE` of it is left, or when the names changed: at
start and daily while the engine runs (the running listener loads the new one for new
connections). The CA is kept: paired PCs pin it, so a renewal never breaks them.

``[api] tls_cert`` / ``tls_key``: certificates IT provides. The CA that paired PCs pin is
``tls_ca`` when given, else the last certificate of the ``tls_cert`` chain file.

Clients verify the CA by its SHA-256 fingerprint (:func:`fingerprint`), which ``chargebridge
pair`` prints and which the pairing code carries (see :mod:`agent.pairing`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigError
from core.pairing import ca_fingerprint as fingerprint  # one definition for engine and clients

if TYPE_CHECKING:
    from agent.config import ApiConfig
    from core.paths import Paths

log = logging.getLogger("chargebridge.tls")

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a server certificate
RENEW_BEFORE = dt.timedelta(days=30)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::")  # noqa: S104 - names of the "all addresses" binds, not a bind

__all__ = ["TlsMaterial", "ensure", "fingerprint", "server_context", "tls_enabled"]


@dataclass(frozen=True)
class TlsMaterial:
    cert: Path  # the server certificate chain (leaf first)
    key: Path
    ca_pem: bytes  # the CA that clients pin

    @property
    def ca_fingerprint(self) -> str:
        return fingerprint(self.ca_pem)


def tls_enabled(api: ApiConfig) -> bool:
    return api.tls == "auto" or bool(api.tls_cert)


def tls_dir(paths: Paths) -> Path:
    return paths.home / "tls"


def server_names(api: ApiConfig) -> list[str]:
    """The names and addresses the server certificate is for, in a stable order."""
    names: list[str] = []
    for n in [*api.tls_names, api.host, *LOOPBACK_NAMES]:
        n = n.strip().lower().strip("[]")
        if n and n not in WILDCARD_HOSTS and n not in names:
            names.append(n)
    return names


def ensure(paths: Paths, api: ApiConfig, *, now: dt.datetime | None = None) -> TlsMaterial:
    """The certificate and key the LAN listener serves, created or renewed as needed."""
    if api.tls_cert:
        return _provided(api)
    now = now or dt.datetime.now(dt.UTC)
    d = tls_dir(paths)
    _private_dir(d)
    ca_cert, ca_key = d / "ca.pem", d / "ca.key"
    if not (ca_cert.exists() and ca_key.exists()):
        _make_ca(ca_cert, ca_key, now)
        log.info("practice CA created under %s", d)
    cert, key = d / "server.pem", d / "server.key"
    names = server_names(api)
    if _needs_renewal(cert, key, names, now):
        _make_server(ca_cert, ca_key, cert, key, names, now)
        log.info("server certificate issued for %d name(s)", len(names))
    return TlsMaterial(cert, key, ca_cert.read_bytes())


def server_context(material: TlsMaterial) -> ssl.SSLContext:
    """TLS 1.2 or newer, the server certificate loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(material.cert), str(material.key))
    return ctx


# -- provided by IT ----------------------------------------------------------------------------------
def _provided(api: ApiConfig) -> TlsMaterial:
    from cryptography import x509

    cert, key = Path(api.tls_cert).expanduser(), Path(api.tls_key).expanduser()
    for p, k in ((cert, "api.tls_cert"), (key, "api.tls_key")):
        if not p.is_file():
            raise ConfigError(f"{k} = {str(p)!r} is not a readable file", "give the PEM file IT provided",
                              key=k)
    try:
        chain = x509.load_pem_x509_certificates(cert.read_bytes())
        if api.tls_ca:
            ca_pem = Path(api.tls_ca).expanduser().read_bytes()
            x509.load_pem_x509_certificate(ca_pem)
        else:
            from cryptography.hazmat.primitives.serialization import Encoding

            ca_pem = chain[-1].public_bytes(Encoding.PEM)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the TLS certificate files cannot be read ({type(exc).__name__})",
                          "give PEM files: tls_cert (server certificate, then its chain), tls_key, and "
                          "optionally tls_ca (the CA front-desk PCs pin)", key="api.tls_cert") from None
    return TlsMaterial(cert, key, ca_pem)


# -- auto ---------------------------------------------------------------------------------------------
def _private_dir(d: Path) -> None:
    d.mkdir(mode=0o700, exist_ok=True)
    if os.name == "posix":
        os.chmod(d, 0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600 from the first byte), replacing it atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _key_pem(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_ca(cert_path: Path, key_path: Path, now: dt.datetime) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ChargeBridge practice"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"ChargeBridge practice CA {now:%Y-%m-%d}")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _san(names: list[str]) -> list[object]:
    from cryptography import x509

    out: list[object] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _needs_renewal(cert: Path, key: Path, names: list[str], now: dt.datetime) -> bool:
    from cryptography import x509

    if not (cert.exists() and key.exists()):
        return True
    try:
        c = x509.load_pem_x509_certificates(cert.read_bytes())[0]
        have = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return True
    if c.not_valid_after_utc - now < RENEW_BEFORE:
        return True
    return set(map(str, have)) != set(map(str, _san(names)))


def _make_server(ca_cert: Path, ca_key: Path, cert_path: Path, key_path: Path, names: list[str],
                 now: dt.datetime) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    ca_private = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(ca_private, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)  # type: ignore[arg-type]
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_private.public_key()), critical=False)
            .sign(ca_private, hashes.SHA256()))
    # key first, then the chain: a listener reloading between the two sees a matching pair or
    # fails one handshake, never serves a key for another certificate for long
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM) + ca_cert.read_bytes())
