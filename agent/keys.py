"""The store key: 32 random bytes in the OS keyring, or an explicit passphrase-derived key.

There is deliberately no fallback: a machine with no usable keyring gets an error naming the
fix, never a plaintext store or a key file next to the database.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import secrets
import sys
from pathlib import Path

from agent import keyrecovery
from core.errors import KeyringUnavailable, StoreKeyError
from core.paths import Paths
from core.secrets import (  # noqa: F401 - re-exported for the engine's callers
    KEYRING_FIX,
    PASSPHRASE_ENV,
    SERVICE,
    _backend,
    get_secret,
    keyring_status,
    set_secret,
)


def keyring_entry(paths: Paths) -> str:
    """One keyring entry per home, so two practices on one server never share a key."""
    digest = hashlib.sha256(str(paths.home).encode()).hexdigest()[:16]
    return f"store-key:{digest}"


def _keyring_get(paths: Paths) -> str | None:
    b = _backend()
    try:
        return b.get_password(SERVICE, keyring_entry(paths))
    except Exception as exc:
        raise KeyringUnavailable(
            f"the OS keyring refused access ({type(exc).__name__}: it may be locked)", KEYRING_FIX
        ) from exc


def _keyring_set(paths: Paths, value: str) -> None:
    b = _backend()
    try:
        b.set_password(SERVICE, keyring_entry(paths), value)
    except Exception as exc:
        raise KeyringUnavailable(
            f"the OS keyring refused to store the key ({type(exc).__name__})", KEYRING_FIX
        ) from exc
    if _keyring_get(paths) != value:
        raise KeyringUnavailable("the OS keyring did not keep the key", KEYRING_FIX)


def store_key(paths: Paths, key_source: str, *, create: bool) -> bytes:
    """The 32-byte key for ``paths.store``; creates one when the store is new and ``create``."""
    if key_source == "passphrase":
        return _passphrase_key(paths, create=create)
    keyrecovery.recover(paths)  # a rekey a crash interrupted is finished (or undone) before the key is used
    exists = paths.store.exists()
    value = _keyring_get(paths)
    if value is None:
        if exists:
            raise StoreKeyError(
                f"the store in {paths.home} exists but the OS keyring holds no key for it "
                f"(service '{SERVICE}', entry '{keyring_entry(paths)}')",
                "restore the keyring from backup or run as the user who created the store; "
                "without its key the store cannot be opened",
            )
        if not create:
            raise StoreKeyError(f"there is no store in {paths.home} yet", "run chargebridge ingest or watch first")
        value = secrets.token_hex(32)
        _keyring_set(paths, value)
    try:
        key = bytes.fromhex(value)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise StoreKeyError(
            f"the keyring entry '{keyring_entry(paths)}' does not hold a 32-byte key",
            "restore the entry from backup; do not edit it by hand",
        )
    return key


def _passphrase_key(paths: Paths, *, create: bool) -> bytes:
    phrase = os.environ.get(PASSPHRASE_ENV)
    if phrase is None:
        if not sys.stdin or not sys.stdin.isatty():
            raise KeyringUnavailable(
                f"passphrase mode is configured but {PASSPHRASE_ENV} is not set and there is no terminal to ask",
                f"set {PASSPHRASE_ENV} in the service's environment",
            )
        phrase = getpass.getpass("ChargeBridge store passphrase: ")
    if len(phrase) < 12:
        raise KeyringUnavailable("the store passphrase is shorter than 12 characters", "use a longer passphrase")
    salt = _salt(paths.salt, create=create and not paths.store.exists())
    return hashlib.scrypt(phrase.encode(), salt=salt, n=2**15, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)


def _salt(path: Path, *, create: bool) -> bytes:
    if path.exists():
        return path.read_bytes()
    if not create:
        raise StoreKeyError(f"the passphrase salt file {path.name} is missing", "restore it from backup")
    salt = secrets.token_bytes(16)
    path.write_bytes(salt)
    return salt


