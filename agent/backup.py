"""Backups: a consistent, still-encrypted copy of the store plus the config, and restore into a
new home.

A backup file is an uncompressed tar (the store is ciphertext; compressing it gains nothing)
with three or four members:

* ``manifest.json`` — format version, when, schema version, the store copy's size and SHA-256,
  and (normally) the store key *wrapped* under a passphrase a person chose: scrypt derives a
  key-encryption key from the passphrase and a random salt, AES-256-GCM seals the 32-byte store
  key with it. The keyring does not travel to a new machine; the passphrase does, in a head.
* ``store.db`` — SQLite's online backup API run on a live connection (one step, so one read
  snapshot: the engine keeps ingesting while it runs and the copy is still consistent). The
  copy is keyed with the same key, so it stays encrypted page by page; it is then switched to
  a rollback journal so the one file is complete.
* ``chargebridge.toml`` (when the home has one) and ``store.salt`` (passphrase key source).

Nightly backups (``[backup] dir, keep, at``) cannot ask anybody for a passphrase, so
``chargebridge backup --set-passphrase`` wraps the key once and keeps that *wrapped* blob in
the store's settings; every scheduled backup carries it. A rekey drops it (it wraps the old
key) and says so.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import io
import json
import logging
import os
import secrets
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlcipher3

from agent import audit, keys
from agent.store import Store, now
from core.errors import ChargeBridgeError, ConfigError, StoreKeyError
from core.paths import Paths

log = logging.getLogger("chargebridge.backup")

FORMAT = "chargebridge-backup"
VERSION = 1
WRAP_SETTING = "backup.key_wrap"
LAST_SETTING = "backup.last"
SUFFIX = ".cbbackup"
_AAD = b"chargebridge store key v1"
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MIN_PASSPHRASE = 12
# budgets for what a backup file may hold (checked before anything is written)
_MAX_MANIFEST = 64 * 1024
_MAX_CONFIG = 1024 * 1024
_MAX_SALT = 1024
_MAX_STORE = 1 << 40  # 1 TiB: far above any practice; a hostile header cannot promise more
_MEMBERS = {"manifest.json", "store.db", "chargebridge.toml", "store.salt"}


# -- key wrapping ---------------------------------------------------------------------------------
def key_id(key: bytes) -> str:
    """A short fingerprint of a store key (a hash of 32 random bytes says nothing about them)."""
    return hashlib.sha256(b"chargebridge key id" + key).hexdigest()[:16]


def _kek(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(passphrase.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=128 * 1024 * 1024,
                          dklen=32)


def wrap_key(key: bytes, passphrase: str) -> dict[str, Any]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    check_passphrase(passphrase)
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    sealed = AESGCM(_kek(passphrase, salt, **_SCRYPT)).encrypt(nonce, key, _AAD)
    b64 = base64.b64encode
    return {"kdf": "scrypt", **_SCRYPT, "salt": b64(salt).decode(), "cipher": "aes-256-gcm",
            "nonce": b64(nonce).decode(), "sealed": b64(sealed).decode(), "key_id": key_id(key)}


def unwrap_key(wrap: dict[str, Any], passphrase: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        n, r, p = int(wrap["n"]), int(wrap["r"]), int(wrap["p"])
        if wrap.get("kdf") != "scrypt" or wrap.get("cipher") != "aes-256-gcm":
            raise ValueError
        if not (2**10 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):  # bounded work for a hostile file
            raise ValueError
        salt, nonce, sealed = (base64.b64decode(wrap[k], validate=True) for k in ("salt", "nonce", "sealed"))
    except (KeyError, TypeError, ValueError):
        raise ChargeBridgeError("the backup's wrapped key is damaged or of an unknown kind",
                                "use another backup file") from None
    try:
        key = AESGCM(_kek(passphrase, salt, n, r, p)).decrypt(nonce, sealed, _AAD)
    except (InvalidTag, ValueError):
        raise ChargeBridgeError("the passphrase does not open this backup's key",
                                "type the passphrase that was set when the backup was made "
                                "(chargebridge backup --set-passphrase, or the one typed for this backup)") from None
    if len(key) != 32:
        raise ChargeBridgeError("the backup's wrapped key is not a store key", "use another backup file")
    return key


def check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise ConfigError(f"the backup passphrase is shorter than {MIN_PASSPHRASE} characters",
                          "choose a longer passphrase (a few words work well) and keep it apart from the backups")


def read_passphrase(*, from_stdin: bool, confirm: bool, prompt: str = "Backup passphrase: ") -> str:
    """A passphrase from one line of stdin (scripts, tests) or typed twice at a terminal."""
    if from_stdin:
        line = sys.stdin.readline()
        phrase = line.rstrip("\r\n")
    else:
        if not sys.stdin or not sys.stdin.isatty():
            raise ConfigError("a backup passphrase is needed and there is no terminal to ask",
                              "pass --passphrase-stdin and give it on standard input")
        phrase = getpass.getpass(prompt)
        if confirm and getpass.getpass("Again: ") != phrase:
            raise ConfigError("the two passphrases differ", "type the same passphrase twice")
    check_passphrase(phrase)
    return phrase


def save_wrap(store: Store, key: bytes, passphrase: str, *, actor: str) -> dict[str, Any]:
    """Keep the key wrapped under ``passphrase`` in the store, for backups nobody is there to type for."""
    wrap = wrap_key(key, passphrase)
    with store.tx():
        store.set_setting(WRAP_SETTING, json.dumps(wrap))
        audit.record(store, actor=actor, action="backup.passphrase", target="store",
                     detail={"key_id": wrap["key_id"]})
    return wrap


def saved_wrap(store: Store, key: bytes) -> dict[str, Any] | None:
    """The saved wrapped key, if there is one and it wraps ``key`` (a rekey makes it stale)."""
    raw = store.setting(WRAP_SETTING)
    if not raw:
        return None
    try:
        wrap = json.loads(raw)
    except ValueError:
        return None
    return wrap if isinstance(wrap, dict) and wrap.get("key_id") == key_id(key) else None


# -- making a backup ------------------------------------------------------------------------------
@dataclass
class BackupResult:
    file: Path
    size: int
    store_size: int
    schema_version: int
    with_key: bool

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.file), "size": self.size, "store_size": self.store_size,
                "schema_version": self.schema_version, "with_key": self.with_key}


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_store(store: Store, key: bytes, dest: Path) -> None:
    """The online backup of ``store`` into ``dest`` (a new file), same key, rollback journal, checked."""
    out = sqlcipher3.connect(str(dest), isolation_level=None)
    try:
        out.execute("PRAGMA cipher_log_level = NONE")
        out.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        store.conn.backup(out, pages=-1)  # one step: one read snapshot, writers keep going (WAL)
        out.execute("PRAGMA journal_mode = DELETE")  # the copy is one self-contained file
        ok = out.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        out.close()
    if ok != "ok":
        raise ChargeBridgeError("the store copy did not pass SQLite's check", "run chargebridge doctor, then retry")
    with open(dest, "rb+") as fh:
        os.fsync(fh.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def create(store: Store, key: bytes, dest: Path, *, wrap: dict[str, Any] | None, actor: str,
           key_source: str = "keyring") -> BackupResult:
    """Write a backup of ``store`` (open with ``key``) to ``dest`` atomically (mode 0600)."""
    paths = store.paths
    dest = dest.expanduser().absolute()
    if dest.exists() and dest.is_dir():
        raise ConfigError(f"{dest} is a folder", "give a file name, e.g. practice-2025-01-31.cbbackup")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".cb-backup-", dir=dest.parent) as tmpdir:
        os.chmod(tmpdir, 0o700)
        copy = Path(tmpdir) / "store.db"
        copy_store(store, key, copy)
        copy_size, schema = copy.stat().st_size, store.schema_version
        manifest = {"format": FORMAT, "version": VERSION, "created_at": now(), "schema_version": schema,
                    "key_source": key_source, "store_size": copy_size, "store_sha256": _sha256(copy), "key": wrap}
        part = Path(tmpdir) / "backup.tar"
        with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
            tar.add(copy, arcname="store.db", filter=_plain_member)
            if paths.config.is_file():
                _add_bytes(tar, "chargebridge.toml", paths.config.read_bytes())
            if key_source == "passphrase" and paths.salt.is_file():
                _add_bytes(tar, "store.salt", paths.salt.read_bytes())
        os.chmod(part, 0o600)
        with open(part, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(part, dest)
    _fsync_dir(dest.parent)
    res = BackupResult(dest, dest.stat().st_size, copy_size, schema, wrap is not None)
    with store.tx():
        store.set_setting(LAST_SETTING, json.dumps({"at": now(), "ok": True, "size": res.size,
                                                    "with_key": res.with_key, "file": dest.name}))
        audit.record(store, actor=actor, action="backup.create", target="store",
                     detail={"file": dest.name, "size": res.size, "with_key": res.with_key})
    log.info("backup written (%d bytes, key %s)", res.size, "included" if res.with_key else "not included")
    return res


def _plain_member(ti: tarfile.TarInfo) -> tarfile.TarInfo:
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.mode = 0o600
    return ti


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = _plain_member(tarfile.TarInfo(name))
    ti.size = len(data)
    ti.mtime = int(time.time())
    tar.addfile(ti, io.BytesIO(data))


# -- reading and restoring ------------------------------------------------------------------------
def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    out: dict[str, tarfile.TarInfo] = {}
    for ti in tar.getmembers():
        if ti.name not in _MEMBERS or not ti.isfile() or ti.name in out:
            raise ChargeBridgeError(f"the backup holds an unexpected entry ({ti.name[:60]!r})",
                                    "use a file written by chargebridge backup")
        limit = {"manifest.json": _MAX_MANIFEST, "chargebridge.toml": _MAX_CONFIG, "store.salt": _MAX_SALT,
                 "store.db": _MAX_STORE}[ti.name]
        if ti.size > limit:
            raise ChargeBridgeError(f"the backup's {ti.name} is larger than allowed", "use another backup file")
        out[ti.name] = ti
    if "manifest.json" not in out or "store.db" not in out:
        raise ChargeBridgeError("the file is not a ChargeBridge backup (no manifest or store)",
                                "use a file written by chargebridge backup")
    return out


def read_manifest(file: Path) -> dict[str, Any]:
    try:
        with tarfile.open(file, "r:") as tar:
            members = _members(tar)
            fh = tar.extractfile(members["manifest.json"])
            assert fh is not None
            manifest = json.loads(fh.read(_MAX_MANIFEST))
    except (tarfile.TarError, OSError, ValueError, UnicodeDecodeError):
        raise ChargeBridgeError(f"{file.name} is not a readable ChargeBridge backup",
                                "check the file name; a backup ends in .cbbackup") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ChargeBridgeError(f"{file.name} is not a ChargeBridge backup",
                                "use a file written by chargebridge backup")
    if manifest.get("version") != VERSION:
        raise ChargeBridgeError(f"{file.name} is a backup format this version does not read",
                                "restore it with the ChargeBridge version that wrote it")
    return manifest


def restore(file: Path, paths: Paths, *, passphrase: str | None, actor: str) -> dict[str, Any]:
    """Restore ``file`` into the home ``paths``, which must not hold a store yet. The key is
    unwrapped with ``passphrase`` and put into this machine's keyring for the new home."""
    file = file.expanduser().absolute()
    manifest = read_manifest(file)
    if paths.store.exists():
        raise ConfigError(f"{paths.home} already holds a store", "restore into a new, empty home (--home NEW)")
    key_source = str(manifest.get("key_source") or "keyring")
    wrap = manifest.get("key")
    key: bytes | None = None
    if isinstance(wrap, dict):
        if passphrase is None:
            raise ConfigError("the backup's key is wrapped under a passphrase",
                              "give it (--passphrase-stdin or the prompt)")
        key = unwrap_key(wrap, passphrase)
    elif key_source == "keyring":
        raise ChargeBridgeError("this backup carries no key, and the keyring does not travel between homes",
                                "restore a backup made after chargebridge backup --set-passphrase, or one "
                                "made with chargebridge backup FILE (which asks for a passphrase)")
    paths.ensure()
    with tarfile.open(file, "r:") as tar:
        members = _members(tar)
        tmp = paths.home / "store.db.restoring"
        _extract(tar, members["store.db"], tmp)
        config_bytes = _read(tar, members.get("chargebridge.toml"))
        salt_bytes = _read(tar, members.get("store.salt"))
    try:
        if _sha256(tmp) != manifest.get("store_sha256"):
            raise ChargeBridgeError("the backup's store does not match its checksum: the file is damaged",
                                    "use another backup file")
        if key is None:  # a passphrase-source store without a wrapped key: its salt + the passphrase
            if salt_bytes is None:
                raise ChargeBridgeError("this backup carries neither a key nor the passphrase salt",
                                        "use another backup file")
            paths.salt.write_bytes(salt_bytes)
            os.chmod(paths.salt, 0o600)
            key = keys.store_key(paths, "passphrase", create=False)
            key_source_now = "passphrase"
        else:  # the unwrapped key goes into this machine's keyring, under the new home's entry
            key_source_now = "keyring"
        _check_opens(tmp, key)
        if key_source_now == "keyring":
            keys._keyring_set(paths, key.hex())
        os.replace(tmp, paths.store)
        _fsync_dir(paths.home)
    finally:
        tmp.unlink(missing_ok=True)
    config_note = ""
    if config_bytes is not None:
        text = config_bytes.decode("utf-8", "replace")
        if key_source_now != key_source:
            text = text.replace('key_source = "passphrase"', 'key_source = "keyring"')
        paths.config.write_text(text, encoding="utf-8")
        os.chmod(paths.config, 0o600)
        try:
            from agent import config as configmod

            configmod.load(paths.config)
        except ConfigError as exc:
            config_note = f"the restored config needs a fix before the engine starts: {exc.title}"
    store = Store.open_with_key(paths, key)
    try:
        audit.record(store, actor=actor, action="backup.restore", target="store",
                     detail={"file": file.name, "backup_at": str(manifest.get("created_at", "")),
                             "schema_version": int(manifest.get("schema_version") or 0)})
        counts = store.counts()
        schema = store.schema_version
    finally:
        store.close()
    return {"home": str(paths.home), "backup_at": manifest.get("created_at", ""), "schema_version": schema,
            "counts": counts, "config": config_bytes is not None, "config_problem": config_note,
            "key_source": key_source_now}


def _extract(tar: tarfile.TarFile, ti: tarfile.TarInfo, dest: Path) -> None:
    src = tar.extractfile(ti)
    assert src is not None
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        left = ti.size
        while left > 0:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                raise ChargeBridgeError("the backup file is truncated", "use another backup file")
            out.write(chunk)
            left -= len(chunk)
        out.flush()
        os.fsync(out.fileno())


def _read(tar: tarfile.TarFile, ti: tarfile.TarInfo | None) -> bytes | None:
    if ti is None:
        return None
    fh = tar.extractfile(ti)
    return fh.read(ti.size) if fh is not None else None


def _check_opens(db: Path, key: bytes) -> None:
    conn = sqlcipher3.connect(str(db), isolation_level=None)
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        ok = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlcipher3.DatabaseError:
        ok = "cannot be opened"
    finally:
        conn.close()
    if ok != "ok":
        raise StoreKeyError("the backup's store does not open with its key", "use another backup file")


# -- scheduled backups ----------------------------------------------------------------------------
def backup_name(at: datetime | None = None) -> str:
    return f"chargebridge-{(at or datetime.now().astimezone()).strftime('%Y%m%d-%H%M%S')}{SUFFIX}"


def rotate(folder: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` ChargeBridge backups in ``folder`` (other files are left)."""
    ours = sorted(p for p in folder.glob(f"chargebridge-*{SUFFIX}") if p.is_file())
    gone = ours[:-keep] if keep > 0 else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def scheduled(store: Store, key: bytes, folder: Path, keep: int, *, key_source: str = "keyring") -> BackupResult:
    """One nightly backup into ``folder`` (0700 when created), then keep the newest ``keep``."""
    folder = folder.expanduser()
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
    wrap = saved_wrap(store, key)
    if wrap is None:
        log.warning("scheduled backup carries no key: run chargebridge backup --set-passphrase")
    res = create(store, key, folder / backup_name(), wrap=wrap, actor="engine", key_source=key_source)
    rotate(folder, keep)
    return res


def record_failure(store: Store, exc: BaseException) -> None:
    what = exc.title if isinstance(exc, ChargeBridgeError) else type(exc).__name__
    with store.tx():
        store.set_setting(LAST_SETTING, json.dumps({"at": now(), "ok": False, "error": what}))
