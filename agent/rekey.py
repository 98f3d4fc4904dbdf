"""Key rotation: ``chargebridge rekey`` re-encrypts the store under a new random key.

Crash safety comes from never changing the store file in place:

1. with the home lock held (no engine) and the store switched out of WAL, a second connection
   holds the write lock so nothing changes underneath;
2. the new key goes into the keyring as a *pending* entry (``store-key-next:…``), read back;
3. the online backup API copies the store to ``store.db.rekey`` (same key), SQLCipher's
   ``PRAGMA rekey`` re-encrypts that copy, the copy is checked, the rotation is audited in it,
   and it is fsync-ed;
4. ``os.replace`` swaps it in (atomic: the path names the old file or the new one);
5. the pending key becomes the current entry (read back), then the pending entry is removed.

A SIGKILL anywhere leaves ``store.db`` whole under exactly one of the two keys, and both keys
are in the keyring until the current one is known to open it.
:func:`agent.keyrecovery.recover` — run before every keyring key is used
(:func:`agent.keys.store_key`) — tries the current key, then the pending one, promotes whichever
opens the store, and removes the leftovers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
from pathlib import Path
from typing import Any

import sqlcipher3

from agent import audit, keys
from agent.keyrecovery import _delete, _set, pending_entry, recover
from agent.keyrecovery import tmp_path as _tmp
from agent.lock import HomeLock
from agent.store import Store
from core.errors import ChargeBridgeError, ConfigError, LockHeld, StoreKeyError
from core.paths import Paths

CRASH_ENV = "CHARGEBRIDGE_TEST_CRASH_AT"  # tests: SIGKILL this process at a named step
PURPOSE = "chargebridge rekey"


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


# -- rekey ----------------------------------------------------------------------------------------
def rekey(paths: Paths, key_source: str, *, actor: str) -> dict[str, Any]:
    if key_source != "keyring":
        raise ConfigError("rekey rotates a keyring key; this home derives its key from a passphrase",
                          "to change a passphrase store's key, make a backup, restore it into a new home "
                          "(it then uses the keyring), or keep the passphrase")
    if not paths.store.exists():
        raise StoreKeyError(f"there is no store in {paths.home}", "nothing to rekey")
    try:
        lock = HomeLock(paths.lock, PURPOSE).acquire()
    except LockHeld as exc:
        raise LockHeld(exc.title, "stop the engine first (rekey needs the store to itself), then run "
                                  "chargebridge rekey again") from None
    try:
        recover(paths)
        old = keys.store_key(paths, "keyring", create=False)
        return _rekey_locked(paths, old, actor=actor)
    finally:
        lock.release()


def _rekey_locked(paths: Paths, old: bytes, *, actor: str) -> dict[str, Any]:
    from agent.backup import WRAP_SETTING, key_id

    tmp = _tmp(paths)
    tmp.unlink(missing_ok=True)
    size = paths.store.stat().st_size
    wal = paths.store.with_name(paths.store.name + "-wal")
    size += wal.stat().st_size if wal.exists() else 0
    if shutil.disk_usage(paths.home).free < size * 1.2 + 16 * 1024 * 1024:
        raise ChargeBridgeError(f"not enough free disk space next to the store to rekey it ({size // 2**20} MiB "
                                "is copied)", "free some space on that disk, then retry")
    store = Store.open_with_key(paths, old)
    writer: sqlcipher3.Connection | None = None
    try:
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        mode = store.conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0]
        if str(mode).lower() != "delete":
            raise LockHeld("the store is open in another ChargeBridge program",
                           "close the other ChargeBridge windows and commands, then retry")
        writer = sqlcipher3.connect(str(paths.store), isolation_level=None, timeout=30)
        writer.execute("PRAGMA cipher_log_level = NONE")
        writer.execute(f"PRAGMA key = \"x'{old.hex()}'\"")
        writer.execute("BEGIN IMMEDIATE")  # nobody writes from here until the new file is in place
        new = secrets.token_bytes(32)
        _set(pending_entry(paths), new.hex())
        _crash_point("pending-set")
        out = sqlcipher3.connect(str(tmp), isolation_level=None)
        try:
            out.execute("PRAGMA cipher_log_level = NONE")
            out.execute(f"PRAGMA key = \"x'{old.hex()}'\"")
            store.conn.backup(out, pages=-1)
            out.execute("PRAGMA journal_mode = DELETE")
            _crash_point("copied")
            out.execute(f"PRAGMA rekey = \"x'{new.hex()}'\"")
        finally:
            out.close()
        _crash_point("rekeyed")
        _finish_copy(tmp, paths, new, actor=actor, detail={"old_key_id": key_id(old), "new_key_id": key_id(new)},
                     drop=WRAP_SETTING)
        had_wrap = bool(store.setting(WRAP_SETTING))
        if os.name == "posix":  # the write lock is held across the swap; Windows cannot replace an open file
            os.replace(tmp, paths.store)
        else:  # pragma: no cover - exercised on Windows builds
            writer.execute("ROLLBACK")
            writer.close()
            writer = None
            store.close()
            os.replace(tmp, paths.store)
        _fsync_dir(paths.home)
        _crash_point("replaced")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if writer is not None:
            writer.execute("ROLLBACK")
            writer.close()
        store.close()
    keys._keyring_set(paths, new.hex())
    _crash_point("promoted")
    _delete(pending_entry(paths))
    return {"old_key_id": key_id(old), "new_key_id": key_id(new), "backup_passphrase_cleared": had_wrap}


def _finish_copy(tmp: Path, paths: Paths, new: bytes, *, actor: str, detail: dict[str, Any], drop: str) -> None:
    """Check the re-encrypted copy, audit the rotation inside it, and make it durable."""
    conn = sqlcipher3.connect(str(tmp), isolation_level=None)
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{new.hex()}'\"")
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise ChargeBridgeError("the re-encrypted copy did not pass SQLite's check; the store is unchanged",
                                    "run chargebridge doctor, then retry")
        copy = Store(conn, paths)
        with copy.tx():
            conn.execute("DELETE FROM settings WHERE key = ?", (drop,))  # it wraps the old key
            audit.record(copy, actor=actor, action="store.rekey", target="store", detail=detail)
    finally:
        conn.close()
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
