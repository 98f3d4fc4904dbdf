"""Secrets in the OS keyring, one entry per home, and the names every layer uses for them.

The engine keeps the RCM secret and the store key here; the CLI and the tray keep their API
token here. Only OS-protected vaults are used (no plaintext file backends): a machine without
one gets an error naming the fix.
"""

from __future__ import annotations

import hashlib
import secrets

from core.errors import KeyringUnavailable
from core.paths import Paths

SERVICE = "ChargeBridge"
PASSPHRASE_ENV = "CHARGEBRIDGE_PASSPHRASE"
RCM_SECRET = "rcm-secret"  # the RCM's OAuth2 client secret or static bearer token
API_TOKEN = "api-token"  # this machine's user's token for the engine API (CLI and tray)
OWNER_TOKEN = "owner-token"  # the engine's local owner token (admin), renewed at every engine start (H7)
ALERT_SMTP_PASSWORD = "alerts-smtp-password"  # the [alerts] mail server password (H5)

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
        except Exception:  # noqa: S110 - a probe left behind is harmless; the answer is what counts
            pass
        name = f"{type(b).__module__.rsplit('.', 1)[-1]}"
        return ok, f"{name} keyring is usable" if ok else f"{name} keyring did not return a secret"
    except KeyringUnavailable as exc:
        return False, exc.title
    except Exception as exc:
        return False, f"the OS keyring refused access ({type(exc).__name__})"


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
