"""The store key against the real OS keyring (gnome-keyring Secret Service)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from agent import keys
from agent.store import MIGRATIONS, Store
from core.errors import KeyringUnavailable, StoreKeyError
from tests.conftest import ROOT


def test_key_is_created_in_the_keyring_and_reused(paths, keyring_ok) -> None:
    import keyring

    s = Store.open(paths, "keyring")
    s.conn.execute("CREATE TABLE t (x)")
    s.close()
    stored = keyring.get_password(keys.SERVICE, keys.keyring_entry(paths))
    assert stored is not None and len(bytes.fromhex(stored)) == 32
    s2 = Store.open(paths, "keyring", create=False)
    assert s2.schema_version == max(v for v, _ in MIGRATIONS)
    s2.close()
    assert not any(p.name.endswith((".key", ".txt")) for p in paths.home.iterdir())


def test_each_home_gets_its_own_entry(tmp_path) -> None:
    from core.paths import Paths

    assert keys.keyring_entry(Paths.resolve(tmp_path / "a")) != keys.keyring_entry(Paths.resolve(tmp_path / "b"))


def test_wrong_key_gives_a_clear_error(paths, keyring_ok) -> None:
    import keyring

    Store.open(paths, "keyring").close()
    keyring.set_password(keys.SERVICE, keys.keyring_entry(paths), secrets.token_hex(32))
    with pytest.raises(StoreKeyError) as ei:
        Store.open(paths, "keyring")
    msg = str(ei.value)
    assert "cannot be opened with its key" in msg and "not a database" not in msg
    assert "Fix:" in msg


def test_missing_keyring_entry_for_existing_store(paths, keyring_ok) -> None:
    import keyring

    Store.open(paths, "keyring").close()
    keyring.delete_password(keys.SERVICE, keys.keyring_entry(paths))
    with pytest.raises(StoreKeyError) as ei:
        Store.open(paths, "keyring")
    assert "holds no key" in str(ei.value)
    # and it did not silently make a new key that would orphan the data
    assert keyring.get_password(keys.SERVICE, keys.keyring_entry(paths)) is None


def test_plaintext_sqlite_is_refused(paths) -> None:
    import sqlite3

    sqlite3.connect(paths.store).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreKeyError) as ei:
        Store.open_with_key(paths, secrets.token_bytes(32))
    assert "unencrypted" in str(ei.value)


def _env_without_keyring(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DBUS_SESSION_BUS_ADDRESS", "GNOME_KEYRING_CONTROL", keys.PASSPHRASE_ENV)}
    env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={tmp_path}/no-bus"
    return env


def test_no_keyring_refuses_to_start_and_names_the_fix(tmp_path) -> None:
    home = tmp_path / "home"
    f = tmp_path / "a.hl7"
    f.write_bytes(b"MSH|^~\\&|A|B|C|D|20240101||ADT^A04|1|P|2.5\r")
    r = subprocess.run([sys.executable, "-m", "agent.cli", "--home", str(home), "ingest", str(f)],
                       capture_output=True, text=True, env=_env_without_keyring(tmp_path), cwd=ROOT, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "keyring" in r.stderr and "passphrase" in r.stderr and "Fix:" in r.stderr
    assert not (home / "store.db").exists()  # never a plaintext fallback


def test_passphrase_mode_works_without_a_keyring(tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "chargebridge.toml").write_text('[store]\nkey_source = "passphrase"\n')
    f = tmp_path / "a.hl7"
    f.write_bytes(b"not hl7 at all")
    env = _env_without_keyring(tmp_path)
    env[keys.PASSPHRASE_ENV] = "correct horse battery staple"
    base = [sys.executable, "-m", "agent.cli", "--home", str(home)]
    r = subprocess.run(base + ["ingest", "--json", str(f)], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=60)
    assert r.returncode == 1 and '"quarantined": 1' in r.stdout, r.stderr
    r = subprocess.run(base + ["quarantine", "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "a.hl7" in r.stdout
    env[keys.PASSPHRASE_ENV] = "a different passphrase!"
    r = subprocess.run(base + ["quarantine"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "cannot be opened with its key" in r.stderr
    del env[keys.PASSPHRASE_ENV]
    r = subprocess.run(base + ["quarantine"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and keys.PASSPHRASE_ENV in r.stderr


def test_untrusted_backend_is_not_accepted(monkeypatch) -> None:
    import keyring
    from keyring.backends import fail

    monkeypatch.setattr(keyring, "get_keyring", lambda: fail.Keyring())
    with pytest.raises(KeyringUnavailable) as ei:
        keys._backend()
    assert "no usable OS keyring" in str(ei.value)
