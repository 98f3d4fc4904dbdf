"""Finishing (or undoing) a key rotation that a crash interrupted — see :mod:`agent.rekey`.

Its own module because :func:`agent.keys.store_key` runs :func:`recover` before every use of a
keyring key, and :mod:`agent.rekey` itself needs :mod:`agent.keys`: this one imports neither.
The keyring entries are named with :func:`core.secrets._entry`, the same rule as every other
per-home entry (``store-key:<hash of the home>``, and ``store-key-next:…`` for the pending one).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import sqlcipher3

from agent.lock import HomeLock
from core.errors import KeyringUnavailable, LockHeld
from core.paths import Paths, lock_holder
from core.secrets import KEYRING_FIX, SERVICE, _backend, _entry


def current_entry(paths: Paths) -> str:
    return _entry(paths, "store-key")


def pending_entry(paths: Paths) -> str:
    return _entry(paths, "store-key-next")


def tmp_path(paths: Paths) -> Path:
    """Where :mod:`agent.rekey` builds the re-encrypted copy."""
    return paths.home / "store.db.rekey"


# -- keyring entries ------------------------------------------------------------------------------
def _get(entry: str) -> str | None:
    try:
        return _backend().get_password(SERVICE, entry)
    except KeyringUnavailable:
        raise
    except Exception as exc:
        raise KeyringUnavailable(f"the OS keyring refused access ({type(exc).__name__})", KEYRING_FIX) from exc


def _set(entry: str, value: str) -> None:
    try:
        _backend().set_password(SERVICE, entry, value)
    except Exception as exc:
        raise KeyringUnavailable(f"the OS keyring refused to store a key ({type(exc).__name__})",
                                 KEYRING_FIX) from exc
    if _get(entry) != value:
        raise KeyringUnavailable("the OS keyring did not keep the key", KEYRING_FIX)


def _delete(entry: str) -> None:
    try:
        _backend().delete_password(SERVICE, entry)
    except Exception:  # noqa: S110 - already gone is fine; a stale pending entry is retried next open
        pass


def _key(value: str | None) -> bytes | None:
    try:
        k = bytes.fromhex(value or "")
    except ValueError:
        return None
    return k if len(k) == 32 else None


def opens(db: Path, key: bytes) -> bool:
    """Does ``db`` decrypt with ``key``? (reads the schema only; writes nothing)"""
    conn = sqlcipher3.connect(str(db), isolation_level=None)
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return True
    except sqlcipher3.DatabaseError:
        return False
    finally:
        conn.close()


# -- recovery -------------------------------------------------------------------------------------
def _recovery_lock(paths: Paths) -> Any:
    """The home lock for recovery; ``None`` when a rekey (or another writer) is at work now.

    A process that already holds the lock (the engine opening its store) recovers under it."""
    holder = lock_holder(paths)
    if holder.get("pid") == os.getpid():
        return nullcontext()
    try:
        return HomeLock(paths.lock, "chargebridge store-key recovery").acquire()
    except LockHeld:
        return None


def recover(paths: Paths) -> str:
    """Finish or undo a rekey a crash interrupted; returns what it did ("" when nothing)."""
    entry = pending_entry(paths)
    if _get(entry) is None:
        return ""
    lock = _recovery_lock(paths)
    if lock is None:  # a rekey holds the home: it is not ours to touch
        return ""
    try:
        pending = _key(_get(entry))
        if pending is None:
            _delete(entry)
            return "removed an unreadable pending key"
        current = _key(_get(current_entry(paths)))
        did = ""
        if paths.store.exists():
            if current is not None and opens(paths.store, current):
                did = "the interrupted rekey had not replaced the store; the current key stays"
            elif opens(paths.store, pending):
                _set(current_entry(paths), pending.hex())
                did = "the interrupted rekey had replaced the store; its new key is now the current one"
            else:
                return ""  # neither opens: leave both for a person (store_key names the problem)
        _delete(entry)
        tmp_path(paths).unlink(missing_ok=True)
        return did
    finally:
        if isinstance(lock, HomeLock):
            lock.release()
