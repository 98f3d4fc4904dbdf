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

from agent.errors import KeyringUnavailable, StoreKeyError
from agent.paths import Paths

SERVICE = "ChargeBridge"
PASSPHRASE_ENV = "CHARGEBRIDGE_PASSPHRASE"

# Backends that keep secrets in an OS-protected vault. Anything else (keyrings.alt's plaintext
# and "encrypted" file backends, the null/fail backends) would be a silent downgrade.
_TRUSTED_BACKENDS = (
    "keyring.backends.SecretService",
    "keyring.backends.libsecret",
    "keyring.backends.kwallet",
    "keyring.backends.macOS",
    "keyring.backends.Windows",
)

KEYRING_FIX = (
    "start and unlock the OS keyring (Linux: gnome-keyring-daemon --unlock inside a D-Bus "
    "session, or log in to a desktop session; Windows/macOS: sign in as the service user), "
    "or opt in to a passphrase key: set key_source = \"passphrase\" under [store] in "
    f"chargebridge.toml and provide {PASSPHRASE_ENV} for services"
)


def keyring_entry(paths: Paths) -> str:
    """One keyring entry per home, so two practices on one server never share a key."""
    digest = hashlib.sha256(str(paths.home).encode()).hexdigest()[:16]
    return f"store-key:{digest}"


def _backend():  # type: ignore[no-untyped-def]
    try:
        import keyring
        from keyring.backends import chainer
    except Exception as exc:  # pragma: no cover - keyring is a dependency
        raise KeyringUnavailable("the keyring library cannot be loaded", KEYRING_FIX) from exc
    kr = keyring.get_keyring()
    candidates = list(kr.backends) if isinstance(kr, chainer.ChainerBackend) else [kr]
    for b in candidates:
        if type(b).__module__ in _TRUSTED_BACKENDS:
            return b
    names = ", ".join(f"{type(b).__module__}.{type(b).__name__}" for b in candidates) or "none"
    raise KeyringUnavailable(f"no usable OS keyring was found (backends seen: {names})", KEYRING_FIX)


def keyring_status() -> tuple[bool, str]:
    """(ok, description) for ``doctor``: can we write and read back a secret right now?"""
    try:
        b = _backend()
        probe = "probe:" + secrets.token_hex(4)
        b.set_password(SERVICE, probe, "ok")
        ok = b.get_password(SERVICE, probe) == "ok"
        try:
            b.delete_password(SERVICE, probe)
        except Exception:
            pass
        name = f"{type(b).__module__.rsplit('.', 1)[-1]}"
        return ok, f"{name} keyring is usable" if ok else f"{name} keyring did not return a secret"
    except KeyringUnavailable as exc:
        return False, exc.title
    except Exception as exc:
        return False, f"the OS keyring refused access ({type(exc).__name__})"


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


def _entry(paths: Paths, name: str) -> str:
    return f"{name}:{hashlib.sha256(str(paths.home).encode()).hexdigest()[:16]}"


def get_secret(paths: Paths, name: str) -> str | None:
    """A secret kept in the OS keyring for this home (RCM secret, the CLI's API token)."""
    b = _backend()
    try:
        return b.get_password(SERVICE, _entry(paths, name))
    except Exception as exc:
        raise KeyringUnavailable(f"the OS keyring refused access ({type(exc).__name__})", KEYRING_FIX) from exc


def set_secret(paths: Paths, name: str, value: str) -> None:
    b = _backend()
    try:
        b.set_password(SERVICE, _entry(paths, name), value)
    except Exception as exc:
        raise KeyringUnavailable(f"the OS keyring refused to store a secret ({type(exc).__name__})",
                                 KEYRING_FIX) from exc
