"""The clearinghouse drop over SFTP (paramiko), for ``sftp://user@host:port/dir`` URLs.

What a clearinghouse channel needs from SFTP, and how each need is met here:

- **The server is who we think it is.** The host key is checked against what the practice
  configured — an OpenSSH ``known_hosts`` file (``[x12] known_hosts = "path"``, hashed entries
  and ``[host]:port`` included) or one pinned key line (``[x12] host_key = "ssh-ed25519 AAAA…"``)
  — *before* any password or key is offered. No entry for the host, or a different key, is an
  :class:`SftpError` that names the host, the key type and its SHA256 fingerprint (so IT can
  compare it with the clearinghouse's published one) and says what to do. Never auto-accepted.
- **Secrets stay in the keyring.** The password (or the key file's passphrase) is passed in by
  the engine; a URL with a password in it is refused.
- **Nothing hangs.** The TCP connect, SSH banner, key exchange and authentication each have the
  timeout; so does every SFTP request (the channel's timeout).
- **A dropped connection leaves no half file under the real name.** :meth:`SftpTransport.put`
  writes ``.<name>.part`` and then renames it (``posix-rename@openssh.com``, atomic and
  overwriting, falling back to plain rename) to ``<name>``; a clearinghouse only picks up the
  final name. The next attempt re-sends the same bytes over a fresh connection.
- **What comes in is budgeted.** :meth:`list` returns at most ``max_names`` names per call (the
  rest come after those are archived); :meth:`get` refuses a file over ``max_bytes`` by its size
  before reading, and never reads more than that even if the file grows meanwhile.

Errors are :class:`SftpError`, a :class:`~connectors.rcm.base.TargetError` (so the outbox
knows whether a retry may help) carrying a ``title`` and a ``fix``. Their text names hosts,
ports, directories and our own file names — never file contents.
"""

from __future__ import annotations

import base64
import binascii
import io
import posixpath
import re
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paramiko  # type: ignore[import-untyped,unused-ignore]

from connectors.rcm.base import TargetError
from core.states import TargetErrorKind

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_NAMES = 1000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
ARCHIVE_DIR = "processed"
PART_SUFFIX = ".part"

# a name we write or read: one path component, no leading dot (dot files are temp/hidden)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


class SftpError(TargetError):
    """An SFTP failure people can act on: ``title`` (what happened) and ``fix`` (what to do)."""

    def __init__(self, title: str, fix: str, *, kind: TargetErrorKind, retryable: bool | None = None) -> None:
        super().__init__(f"{title}. Fix: {fix}", kind=kind, retryable=retryable)
        self.title = title
        self.fix = fix


@dataclass(frozen=True)
class SftpUrl:
    user: str
    host: str
    port: int
    directory: str  # absolute, or relative to the login's home when the URL says /~/

    @property
    def where(self) -> str:
        """For messages: host and port, never the user or a password."""
        return f"{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH's known_hosts names this server (``[host]:port`` off port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def parse_sftp_url(url: str, *, key: str = "x12.outbound") -> SftpUrl:
    """``sftp://user@host[:port]/dir`` -> :class:`SftpUrl`; a password in the URL is refused."""
    from core.errors import ConfigError

    example = "sftp://user@sftp.clearinghouse.example:22/inbound"
    if not isinstance(url, str) or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url) or not url.isascii():
        raise ConfigError("the SFTP address is empty or contains spaces, control or non-ASCII characters",
                          f"an address like {example}", key=key)
    parts = urlsplit(url)
    if parts.scheme.lower() != "sftp":
        raise ConfigError("the SFTP address does not start with sftp://", f"an address like {example}", key=key)
    if parts.password is not None:
        raise ConfigError("the SFTP address contains a password",
                          "remove it from the address and store it in the keyring "
                          "(chargebridge rcm set-secret)", key=key)
    try:
        port = parts.port or 22
    except ValueError:
        raise ConfigError("the SFTP address has an invalid port", f"an address like {example}", key=key) from None
    if not parts.username or not parts.hostname:
        raise ConfigError("the SFTP address needs a user and a host", f"an address like {example}", key=key)
    path = unquote(parts.path) or "/"
    if path.startswith("/~/") or path == "/~":
        directory = path[3:] or "."
    else:
        directory = path
    if "\\" in directory or any(seg == ".." for seg in directory.split("/")):
        raise ConfigError("the SFTP directory contains '..' or a backslash", "a plain directory path", key=key)
    return SftpUrl(unquote(parts.username), parts.hostname, port, directory.rstrip("/") or "/")


def _key_from_line(line: str) -> tuple[str, paramiko.PKey] | None:
    """``[host] type base64 [comment]`` -> (host pattern or "", key); None when not a key line."""
    fields = line.split()
    if len(fields) >= 2 and fields[0] in _KEY_TYPES:
        host, ktype, data = "", fields[0], fields[1]
    elif len(fields) >= 3 and fields[1] in _KEY_TYPES:
        host, ktype, data = fields[0], fields[1], fields[2]
    else:
        return None
    try:
        return host, paramiko.PKey.from_type_string(ktype, base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError, paramiko.SSHException):
        return None


def looks_like_key_line(value: str) -> bool:
    """True when ``value`` is a pinned key line rather than a path to a known_hosts file."""
    return _key_from_line(value.strip()) is not None


def expected_keys(target: SftpUrl, *, known_hosts: str = "", host_key: str = "") -> list[paramiko.PKey]:
    """The host keys this server may present, from a pinned line and/or a known_hosts file.

    A pinned line with a host field must name this server; one without applies to it.
    Raises :class:`SftpError` (kind config) when the file is unreadable or nothing is configured.
    """
    keys: list[paramiko.PKey] = []
    if host_key.strip():
        parsed = _key_from_line(host_key.strip())
        if parsed is None:
            raise SftpError("the pinned SFTP host key is not a key line",
                            "set [x12] host_key to the server's public key line, e.g. "
                            "\"ssh-ed25519 AAAA...\" (ssh-keyscan -p PORT HOST prints it; compare its "
                            "fingerprint with the one the clearinghouse publishes)", kind=TargetErrorKind.CONFIG)
        host, key = parsed
        if not host or _host_matches(host, target):
            keys.append(key)
    if known_hosts.strip():
        path = Path(known_hosts.strip()).expanduser()
        hk = paramiko.HostKeys()
        try:
            hk.load(str(path))
        except OSError:
            raise SftpError(f"the SFTP known_hosts file cannot be read ({path})",
                            "set [x12] known_hosts to a readable OpenSSH known_hosts file, or pin the key "
                            "with [x12] host_key", kind=TargetErrorKind.CONFIG) from None
        for name in dict.fromkeys((target.known_hosts_name, target.host)):
            if name == target.host and target.port != 22:
                continue  # OpenSSH keys a non-standard port as [host]:port only
            found = hk.lookup(name)
            if found:
                keys.extend(found.values())
    if not host_key.strip() and not known_hosts.strip():
        raise SftpError(f"no host key is configured for the SFTP server {target.where}",
                        "set [x12] known_hosts (an OpenSSH known_hosts file) or [x12] host_key (the server's "
                        "key line); ChargeBridge never accepts an unknown server key",
                        kind=TargetErrorKind.CONFIG)
    return keys


def _host_matches(pattern: str, target: SftpUrl) -> bool:
    names = {p.strip() for p in pattern.split(",")}
    return target.known_hosts_name in names or (target.port == 22 and target.host in names)


def _preferred_host_key_algorithms(keys: list[paramiko.PKey]) -> list[str]:
    algos: list[str] = []
    for k in keys:
        algos += ["rsa-sha2-512", "rsa-sha2-256"] if k.get_name() == "ssh-rsa" else [k.get_name()]
    return list(dict.fromkeys(algos))


class SftpTransport:
    """One clearinghouse directory over SFTP (the :class:`Transport` the X12 target uses).

    Connects on first use and again after a dropped connection. Not thread-safe: one per job.
    ``on_progress(sent, total)`` is called while :meth:`put` uploads (tests drop the
    connection from it).
    """

    def __init__(self, url: str | SftpUrl, *, secret: str = "", known_hosts: str = "", host_key: str = "",
                 key_file: str = "", timeout: float = DEFAULT_TIMEOUT, max_names: int = DEFAULT_MAX_NAMES,
                 max_bytes: int = DEFAULT_MAX_BYTES,
                 on_progress: Callable[[int, int], None] | None = None) -> None:
        self.target = url if isinstance(url, SftpUrl) else parse_sftp_url(url)
        if looks_like_key_line(known_hosts) and not host_key:  # one setting may carry either
            known_hosts, host_key = "", known_hosts
        self._keys = expected_keys(self.target, known_hosts=known_hosts, host_key=host_key)
        self._secret = secret
        self._key_file = key_file
        self.timeout = float(timeout)
        self.max_names = int(max_names)
        self.max_bytes = int(max_bytes)
        self.on_progress = on_progress
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection --------------------------------------------------------------------------
    def connect(self) -> paramiko.SFTPClient:
        """The open SFTP session, connecting (and verifying the host key) when there is none."""
        if self._sftp is not None and self._transport is not None and self._transport.is_active():
            return self._sftp
        self.close()
        t = self.target
        try:
            sock = socket.create_connection((t.host, t.port), timeout=self.timeout)
        except TimeoutError:
            raise SftpError(f"the SFTP server {t.where} did not answer within {self.timeout:g} s",
                            "check the address and that the network allows outbound SSH to it",
                            kind=TargetErrorKind.TIMEOUT) from None
        except OSError as e:
            raise SftpError(f"cannot reach the SFTP server {t.where} ({type(e).__name__})",
                            "check the host and port in [x12] outbound/inbound and the network",
                            kind=TargetErrorKind.UNREACHABLE) from None
        transport = paramiko.Transport(sock)
        transport.banner_timeout = self.timeout
        transport.handshake_timeout = self.timeout
        transport.auth_timeout = self.timeout
        self._transport = transport
        try:
            if not self._keys:
                raise SftpError(f"the SFTP server {t.where} is not in the configured known hosts",
                                f"add its key (entry {t.known_hosts_name}) to the [x12] known_hosts file or set "
                                "[x12] host_key, after comparing its fingerprint with the one the "
                                "clearinghouse publishes", kind=TargetErrorKind.CONFIG)
            algos = [a for a in _preferred_host_key_algorithms(self._keys)
                     if a in transport.get_security_options().key_types]
            if algos:
                transport.get_security_options().key_types = algos
            try:
                transport.start_client(timeout=self.timeout)
            except paramiko.SSHException as e:
                raise self._negotiation_error(e) from None
            except (OSError, EOFError) as e:
                raise SftpError(f"the SFTP server {t.where} closed the connection during the handshake "
                                f"({type(e).__name__})", "try again later; if it persists, check the address",
                                kind=TargetErrorKind.UNREACHABLE) from None
            presented = transport.get_remote_server_key()
            if not any(k.get_name() == presented.get_name() and k.asbytes() == presented.asbytes()
                       for k in self._keys):
                raise SftpError(f"the SFTP server {t.where} presented a host key that does not match the "
                                f"configured one ({presented.get_name()} {presented.fingerprint}); nothing was sent",
                                "if the clearinghouse announced a new key and its fingerprint matches, update "
                                "[x12] known_hosts or host_key; otherwise do not connect (someone may be "
                                "intercepting the connection) and call the clearinghouse",
                                kind=TargetErrorKind.TLS)
            self._authenticate(transport)
            try:
                sftp = paramiko.SFTPClient.from_transport(transport)
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise SftpError(f"the SFTP server {t.where} did not start the SFTP service ({type(e).__name__})",
                                "ask the clearinghouse whether this login may use SFTP",
                                kind=TargetErrorKind.SERVER) from None
            if sftp is None:
                raise SftpError(f"the SFTP server {t.where} did not start the SFTP service",
                                "ask the clearinghouse whether this login may use SFTP",
                                kind=TargetErrorKind.SERVER)
            sftp.get_channel().settimeout(self.timeout)
            self._sftp = sftp
            return sftp
        except BaseException:
            self.close()
            raise

    def _negotiation_error(self, e: paramiko.SSHException) -> SftpError:
        t = self.target
        text = str(e).lower()
        if "incompatible" in text or "no acceptable host key" in text or "no match" in text:
            return SftpError(f"the SFTP server {t.where} offers no host key of the configured type",
                             "compare the key types in [x12] known_hosts / host_key with `ssh-keyscan -p "
                             f"{t.port} {t.host}` and the fingerprint the clearinghouse publishes",
                             kind=TargetErrorKind.TLS)
        if "timeout" in text or "timed out" in text:
            return SftpError(f"the SFTP server {t.where} did not finish the SSH handshake within "
                             f"{self.timeout:g} s", "try again later; if it persists, check the address",
                             kind=TargetErrorKind.TIMEOUT)
        return SftpError(f"the SSH handshake with {t.where} failed ({type(e).__name__})",
                         "check that the address is the clearinghouse's SFTP server",
                         kind=TargetErrorKind.UNREACHABLE)

    def _authenticate(self, transport: paramiko.Transport) -> None:
        t = self.target
        try:
            if self._key_file:
                try:
                    passphrase = self._secret.encode() if self._secret else None
                    pkey = paramiko.PKey.from_path(self._key_file, password=passphrase)
                except FileNotFoundError:
                    raise SftpError("the SFTP key file does not exist",
                                    "set [x12] key_file to the private key the clearinghouse registered",
                                    kind=TargetErrorKind.CONFIG) from None
                except (paramiko.PasswordRequiredException, ValueError, TypeError, paramiko.SSHException):
                    raise SftpError("the SFTP key file cannot be opened (wrong passphrase or not a private key)",
                                    "store the key's passphrase in the keyring (chargebridge rcm set-secret) "
                                    "or point [x12] key_file at the right key", kind=TargetErrorKind.AUTH) from None
                transport.auth_publickey(t.user, pkey)
            else:
                if not self._secret:
                    raise SftpError(f"no SFTP password is stored for {t.where}",
                                    "store it in the keyring: chargebridge rcm set-secret",
                                    kind=TargetErrorKind.AUTH)
                transport.auth_password(t.user, self._secret)
        except paramiko.AuthenticationException:
            raise SftpError(f"the SFTP server {t.where} refused the login (user name, password or key)",
                            "check the user in the address and the secret in the keyring "
                            "(chargebridge rcm set-secret); ask the clearinghouse whether the account is "
                            "locked", kind=TargetErrorKind.AUTH) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise SftpError(f"the SFTP server {t.where} dropped the connection during login ({type(e).__name__})",
                            "try again later", kind=TargetErrorKind.UNREACHABLE) from None
        if not transport.is_authenticated():
            raise SftpError(f"the SFTP server {t.where} asks for more than one login step",
                            "ask the clearinghouse for a password-only or key-only account",
                            kind=TargetErrorKind.AUTH)

    def close(self) -> None:
        sftp, transport = self._sftp, self._transport
        self._sftp = self._transport = None
        for thing in (sftp, transport):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: S110 - closing a broken connection must not mask the cause
                    pass

    def __enter__(self) -> SftpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations ----------------------------------------------------------------------------
    def _path(self, *parts: str) -> str:
        return posixpath.join(self.target.directory, *parts)

    def _check_name(self, name: str) -> str:
        if not isinstance(name, str) or not _NAME.match(name):
            raise SftpError("a clearinghouse file name is not a plain file name",
                            "this is a ChargeBridge bug: report it", kind=TargetErrorKind.CONNECTOR)
        return name

    def _op_error(self, what: str, e: BaseException) -> SftpError:
        """An SFTP request failed: a dropped connection (retry) or the server refusing (config)."""
        t = self.target
        self.close()
        if isinstance(e, TimeoutError | socket.timeout):
            return SftpError(f"the SFTP server {t.where} did not answer within {self.timeout:g} s while {what}",
                             "try again later", kind=TargetErrorKind.TIMEOUT)
        if isinstance(e, IOError) and getattr(e, "errno", None) in (2, 13):
            reason = "no such directory" if e.errno == 2 else "permission denied"
            return SftpError(f"the SFTP server {t.where} refused {what} in {t.directory} ({reason})",
                             "check the directory in [x12] outbound/inbound and the account's rights there",
                             kind=TargetErrorKind.CONFIG)
        return SftpError(f"the connection to the SFTP server {t.where} broke while {what} ({type(e).__name__})",
                         "nothing is lost: the file is sent again on the next attempt",
                         kind=TargetErrorKind.UNREACHABLE)

    def put(self, name: str, data: bytes) -> None:
        """Upload ``data`` as ``name``: to ``.name.part`` first, then renamed. Same name again
        replaces the file (a re-send carries the same bytes)."""
        self._check_name(name)
        sftp = self.connect()
        tmp, final = self._path(f".{name}{PART_SUFFIX}"), self._path(name)
        total = len(data)

        def progress(sent: int, _size: int) -> None:
            if self.on_progress is not None:
                self.on_progress(sent, total)

        try:
            sftp.putfo(io.BytesIO(data), tmp, file_size=total, callback=progress, confirm=True)
            try:
                sftp.posix_rename(tmp, final)
            except OSError as e:
                if getattr(e, "errno", None) in (2, 13):
                    raise
                # no posix-rename extension: plain SFTP rename refuses an existing target
                try:
                    sftp.remove(final)
                except FileNotFoundError:
                    pass
                sftp.rename(tmp, final)
        except SftpError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._op_error("uploading a file", e) from None

    def list(self) -> list[str]:
        """Names of the regular files waiting in the directory (no dot files, no folders), sorted,
        at most ``max_names`` of them."""
        sftp = self.connect()
        names: list[str] = []
        try:
            for attr in sftp.listdir_iter(self.target.directory):
                if attr.st_mode is not None and not stat.S_ISREG(attr.st_mode):
                    continue
                if _NAME.match(attr.filename):
                    names.append(attr.filename)
                    if len(names) >= self.max_names:
                        break
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._op_error("listing files", e) from None
        return sorted(names)

    def get(self, name: str) -> bytes:
        """The bytes of ``name``; refused (kind protocol, not retried) when over ``max_bytes``."""
        self._check_name(name)
        sftp = self.connect()
        path = self._path(name)
        try:
            size = sftp.stat(path).st_size or 0
            if size > self.max_bytes:
                raise self._too_big(name)
            with sftp.open(path, "rb") as fh:
                fh.prefetch(size)
                data = fh.read(self.max_bytes + 1)
        except SftpError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._op_error("reading a file", e) from None
        if len(data) > self.max_bytes:
            raise self._too_big(name)
        return bytes(data)

    def _too_big(self, name: str) -> SftpError:
        return SftpError(f"the clearinghouse file {name} is larger than {self.max_bytes // (1024 * 1024)} MiB",
                         "ask the clearinghouse to split it, or raise [x12] max_file_mb",
                         kind=TargetErrorKind.PROTOCOL)

    def archive(self, name: str) -> str:
        """Move ``name`` into ``processed/`` (created when missing), so it is not read again.
        An archived file of the same name is kept: the new one gets a time suffix. Returns the
        name it got there."""
        self._check_name(name)
        sftp = self.connect()
        folder = self._path(ARCHIVE_DIR)
        try:
            try:
                sftp.stat(folder)
            except FileNotFoundError:
                sftp.mkdir(folder)
            dest = name
            try:
                sftp.stat(posixpath.join(folder, dest))
                dest = f"{name}.{time.strftime('%Y%m%dT%H%M%S')}.{time.monotonic_ns() % 1_000_000:06d}"
            except FileNotFoundError:
                pass
            sftp.rename(self._path(name), posixpath.join(folder, dest))
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise self._op_error("archiving a file", e) from None
        return dest

    def describe(self) -> dict[str, Any]:
        """For status/doctor output: where, never who or with what."""
        return {"scheme": "sftp", "host": self.target.host, "port": self.target.port,
                "directory": self.target.directory}
