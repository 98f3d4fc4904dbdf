"""Issue 13 §5-8 (data care): backup while the engine ingests and restore into a new home, rekey
with SIGKILL at random points, retention pruning with the file shrinking, config export/import.

All against the real SQLCipher store and the real OS keyring (the suite runs inside
scripts/with-keyring.sh).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, start_test_engine, wait_until
from tests.helpers import dft

PHRASE = "correct horse battery staple\n"


# -- helpers --------------------------------------------------------------------------------------
def _open(home: Path):  # type: ignore[no-untyped-def]
    """The store of ``home`` opened the way the engine does (keyring key, crash recovery first)."""
    from agent import keys
    from agent.store import Store
    from core.paths import Paths

    paths = Paths.resolve(home)
    return Store.open_with_key(paths, keys.store_key(paths, "keyring", create=False))


def _rows(store, sql: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    return [tuple(r) for r in store.conn.execute(sql)]


def seed_old_encounters(store, n: int, *, days_old: int = 800, blob: int = 2048, held: int = 0,  # type: ignore[no-untyped-def]
                        chunk: int = 5000, tag: str = "V") -> None:
    """``n`` delivered, reconciled encounters with a date of service ``days_old`` days ago, each
    with its raw document (``blob`` random bytes), an outbox row and events; then ``held`` old
    ones that must stay (needs review, never delivered). Written with SQL for speed — the rows
    have the shapes the pipeline and the outbox write."""
    old = datetime.now(UTC) - timedelta(days=days_old)
    ts = old.isoformat(timespec="milliseconds")
    dos = old.date().isoformat()
    for start in range(0, n + held, chunk):
        with store.tx():
            for i in range(start, min(n + held, start + chunk)):
                cur = store.conn.execute(
                    "INSERT INTO documents (sha256, origin, source, format, size, content, status, received_at, "
                    "processed_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (secrets.token_hex(32), f"/export/v{i}.hl7", "test", "hl7v2", blob, secrets.token_bytes(blob),
                     "processed", ts, ts))
                doc = cur.lastrowid
                data = {"patient": {"mrn": f"MRN{i:07d}", "family": f"Fam{i}", "given": "Pat"},
                        "dos_start": dos, "lines": [{"code": "99213", "units": "1", "unit_charge": "100.00"},
                                                    {"code": "83036", "units": "2", "unit_charge": "12.50"}]}
                state = "ready" if i < n else "needs_review"
                cur = store.conn.execute(
                    "INSERT INTO encounters (business_key, kind, source, source_id, document_id, state, mrn, dos, "
                    "data, findings, content_hash, version, created_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,1,?,?)",
                    (f"test|{tag}{i}", "charge", "test", f"{tag}{i}", doc, state, f"MRN{i:07d}", dos, json.dumps(data),
                     "[]", secrets.token_hex(8), ts, ts))
                enc = cur.lastrowid
                if i < n:
                    store.conn.execute(
                        "INSERT INTO outbox (encounter_id, version, state, attempts, next_attempt_at, remote_ids, "
                        "created_at, updated_at) VALUES (?,1,'delivered',1,?,'{}',?,?)", (enc, ts, ts, ts))
                    store.conn.execute("INSERT INTO events (at, kind, encounter_id, detail) VALUES (?,?,?,'{}')",
                                       (ts, "outbox.delivered", enc))
    with store.tx():
        store.event("reconcile.run", detail={"matched": n})


# -- §6 backup / restore --------------------------------------------------------------------------
def test_backup_while_engine_ingests_then_restore_into_new_home(tmp_path: Path, keyring_ok) -> None:
    eng = start_test_engine(tmp_path)
    stop = threading.Event()
    written: list[int] = []

    def feed() -> None:  # an EHR exporting while the backup runs
        i = 0
        while not stop.is_set() and i < 400:
            (eng.export / f"v{i:04d}.hl7").write_text(dft(i))
            written.append(i)
            i += 1
            stop.wait(0.005)

    try:
        t = threading.Thread(target=feed)
        t.start()
        assert wait_until(lambda: eng.store().counts().get("ready", 0) + eng.store().counts().get(
            "needs_review", 0) >= 20, 60)
        home = eng.paths.home
        r = run_cli("backup", str(tmp_path / "b.cbbackup"), "--passphrase-stdin", "--json", home=home, input=PHRASE)
        assert r.returncode == 0, r.stderr
        during = sum(v for k, v in eng.store().counts().items() if k != "quarantined")
        stop.set()
        t.join()
        live = dict(_rows(eng.store(), "SELECT business_key, content_hash FROM encounters"))
        from agent import audit

        assert [e["detail"]["file"] for e in audit.entries(eng.store(), action="backup.create")] == ["b.cbbackup"]
    finally:
        stop.set()
        eng.stop()
    out = json.loads(r.stdout)
    assert out["with_key"] is True and out["schema_version"] >= 8
    raw = (tmp_path / "b.cbbackup").read_bytes()
    assert b"MRN000001" not in raw and b"SQLite format 3" not in raw  # still encrypted, no plaintext copy

    new = tmp_path / "restored"
    r = run_cli("restore", str(tmp_path / "b.cbbackup"), "--home", str(new), "--passphrase-stdin", "--json",
                home=tmp_path / "unused", input=PHRASE)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["home"] == str(new)
    s = _open(new)  # the key is in this machine's keyring under the NEW home's entry
    try:
        restored = dict(_rows(s, "SELECT business_key, content_hash FROM encounters"))
        # a consistent snapshot: a real, non-empty prefix of what the engine had, every row identical
        assert 20 <= len(restored) <= during
        assert all(live.get(bk) == h for bk, h in restored.items())
        # every encounter's raw document came along, and the audit chain is intact
        assert s.conn.execute("SELECT count(*) FROM encounters e LEFT JOIN documents d ON d.id = e.document_id "
                              "WHERE d.id IS NULL").fetchone()[0] == 0
        assert audit.verify(s) == []
        assert [e["action"] for e in audit.entries(s, limit=1)] == ["backup.restore"]
    finally:
        s.close()
    assert (new / "chargebridge.toml").read_text() == (eng.paths.config).read_text()


def test_restore_refuses_wrong_passphrase_and_an_occupied_home(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    assert run_cli("ingest", str(ROOT / "agent" / "demo_data"), home=home).returncode in (0, 1)
    assert run_cli("backup", str(tmp_path / "b.cbbackup"), "--passphrase-stdin", home=home,
                   input=PHRASE).returncode == 0
    r = run_cli("restore", str(tmp_path / "b.cbbackup"), "--passphrase-stdin", home=tmp_path / "new",
                input="not the right passphrase\n")
    assert r.returncode != 0 and "passphrase does not open" in r.stderr
    assert not (tmp_path / "new" / "store.db").exists()
    r = run_cli("restore", str(tmp_path / "b.cbbackup"), "--passphrase-stdin", home=home, input=PHRASE)
    assert r.returncode == 2 and "already holds a store" in r.stderr
    damaged = bytearray((tmp_path / "b.cbbackup").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / "d.cbbackup").write_bytes(bytes(damaged))
    r = run_cli("restore", str(tmp_path / "d.cbbackup"), "--passphrase-stdin", home=tmp_path / "new2", input=PHRASE)
    assert r.returncode != 0 and "damaged" in r.stderr


def test_nightly_backups_carry_the_saved_wrap_and_keep_n(tmp_path: Path, keyring_ok) -> None:
    from agent import backup

    home = tmp_path / "home"
    assert run_cli("ingest", str(ROOT / "agent" / "demo_data"), home=home).returncode in (0, 1)
    assert run_cli("backup", "--set-passphrase", "--passphrase-stdin", home=home, input=PHRASE).returncode == 0
    s = _open(home)
    try:
        from agent import keys

        key = keys.store_key(s.paths, "keyring", create=False)
        folder = tmp_path / "nightly"
        names = []
        for k in range(4):
            res = backup.create(s, key, folder / backup.backup_name(datetime(2026, 1, 1 + k)),
                                wrap=backup.saved_wrap(s, key), actor="engine")
            names.append(res.file.name)
            backup.rotate(folder, 2)
    finally:
        s.close()
    assert sorted(p.name for p in folder.iterdir()) == names[-2:]
    r = run_cli("restore", str(folder / names[-1]), "--passphrase-stdin", home=tmp_path / "new", input=PHRASE)
    assert r.returncode == 0, r.stderr


# -- §7 rekey -------------------------------------------------------------------------------------
def _snapshot(home: Path) -> list[tuple]:
    s = _open(home)
    try:
        return _rows(s, "SELECT id, business_key, content_hash, data FROM encounters ORDER BY id")
    finally:
        s.close()


def _pending_entry(home: Path) -> str | None:
    from agent.keyrecovery import pending_entry
    from core.paths import Paths
    from core.secrets import SERVICE, _backend

    return _backend().get_password(SERVICE, pending_entry(Paths.resolve(home)))


def _rekey_child(home: Path, crash_at: str = "") -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("CHARGEBRIDGE_TEST_CRASH_AT", None)
    if crash_at:
        env["CHARGEBRIDGE_TEST_CRASH_AT"] = crash_at
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home), "rekey", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_rekey_survives_sigkill_at_every_step_and_at_random_points(tmp_path: Path, keyring_ok) -> None:
    from agent import keys
    from agent.keyrecovery import opens
    from core.paths import Paths

    seed = int(os.environ.get("CB_REKEY_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"rekey crash seed {seed}")
    home = tmp_path / "home"
    paths = Paths.resolve(home)
    paths.ensure()
    from agent.store import Store

    s = Store.open(paths, "keyring")
    seed_old_encounters(s, 3000, days_old=10, blob=512)
    s.close()
    before = _snapshot(home)
    key0 = keys.store_key(paths, "keyring", create=False)

    # a complete rekey: new key, data identical, old key no longer opens the file, audited
    t0 = time.monotonic()
    p = _rekey_child(home)
    out, err = p.communicate(timeout=120)
    full = time.monotonic() - t0
    assert p.returncode == 0, err
    key1 = keys.store_key(paths, "keyring", create=False)
    assert key1 != key0 and not opens(paths.store, key0) and opens(paths.store, key1)
    assert _snapshot(home) == before

    # SIGKILL at each named step, then at random moments: the store opens with one key, data intact
    points = ["pending-set", "copied", "rekeyed", "replaced", "promoted"]
    kills = [("step", pt) for pt in points] + [("random", "")] * 6
    for how, pt in kills:
        if how == "step":
            p = _rekey_child(home, pt)
            p.communicate(timeout=120)
            assert p.returncode == -signal.SIGKILL, f"no crash at {pt}"
        else:
            p = _rekey_child(home)
            try:
                p.wait(timeout=rng.uniform(0, full * 1.2))
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
            p.communicate(timeout=60)
        assert _snapshot(home) == before, f"data changed after a kill ({how} {pt})"
        assert _pending_entry(home) is None  # recovery promoted or dropped the pending key
        assert not (home / "store.db.rekey").exists()
    s = _open(home)
    try:
        from agent import audit

        assert audit.verify(s) == []
    finally:
        s.close()


def test_rekey_refused_while_the_engine_runs(tmp_path: Path, keyring_ok) -> None:
    eng = start_test_engine(tmp_path)
    try:
        r = run_cli("rekey", home=eng.paths.home)
    finally:
        eng.stop()
    assert r.returncode == 2 and "stop the engine first" in r.stderr


# -- §8 retention ---------------------------------------------------------------------------------
def test_prune_removes_old_finished_work_keeps_the_rest_and_shrinks_the_file(tmp_path: Path, keyring_ok) -> None:
    from agent import audit, retention
    from agent.store import Store
    from core.paths import Paths

    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    s = Store.open(paths, "keyring")
    try:
        seed_old_encounters(s, 4000, held=50, blob=4096)
        # recent work and an old one with an open mismatch stay too
        seed_old_encounters(s, 30, days_old=5, blob=128, tag="R")
        old_id = s.conn.execute("SELECT min(id) FROM encounters").fetchone()[0]
        with s.tx():
            s.conn.execute("INSERT INTO findings (fingerprint, kind, encounter_id, status, first_seen, last_seen) "
                           "VALUES ('x', 'field_mismatch', ?, 'open', '', '')", (old_id,))
        for k in range(5):
            audit.record(s, actor="test", action="test.entry", target=str(k))
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        dry = retention.prune(s, 400, audit_days=2190, dry_run=True)
        assert (dry.encounters, dry.documents) == (3999, 3999)
        assert dry.held == {"open_mismatch": 1, "not_delivered": 50, "not_reconciled_or_recent": 0}
        rep = retention.prune(s, 400, audit_days=2190)
        assert (rep.encounters, rep.documents) == (dry.encounters, dry.documents)
        assert rep.related.get("outbox") == 3999
        left = dict(_rows(s, "SELECT state, count(*) FROM encounters GROUP BY state"))
        assert left == {"ready": 1 + 30, "needs_review": 50}
        assert s.conn.execute("SELECT count(*) FROM documents").fetchone()[0] == 81
        assert s.conn.execute("SELECT count(*) FROM encounter_search WHERE encounter_search MATCH 'Fam1234'"
                              ).fetchone()[0] == 0
        # counts for KPIs survive: events stay, the roll-up holds what went
        assert s.conn.execute("SELECT count(*) FROM events WHERE kind = 'outbox.delivered'").fetchone()[0] == 4030
        roll = retention.counts(s)
        assert sum(r["encounters"] for r in roll) == 3999 and sum(r["lines"] for r in roll) == 7998
        assert sum(float(r["charges"]) for r in roll) == pytest.approx(3999 * 125.0)
        assert rep.size_after < rep.size_before * 0.3, (rep.size_before, rep.size_after)
        assert paths.store.stat().st_size == rep.size_after or rep.size_after >= paths.store.stat().st_size
        assert audit.verify(s) == []

        # years later the audit trail's old entries go too, and the chain still verifies from the anchor
        later = datetime.now(UTC) + timedelta(days=2200)
        rep2 = retention.prune(s, 400, audit_days=2190, today=later)
        assert rep2.audit_entries >= 6
        assert audit.verify(s) == []
        first = s.conn.execute("SELECT min(seq) FROM audit").fetchone()[0]
        assert first > 1
        with s.tx():  # deleting the first kept entry is still caught
            s.conn.execute("DELETE FROM audit WHERE seq = ?", (first,))
        assert any(p.kind == "deleted" for p in audit.verify(s))
    finally:
        s.close()


def test_prune_cli_and_retention_floor(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    assert run_cli("ingest", str(ROOT / "agent" / "demo_data"), home=home).returncode in (0, 1)
    r = run_cli("prune", "--dry-run", "--json", home=home)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["encounters"] == 0  # recent and never delivered: nothing goes
    (home / "chargebridge.toml").write_text("[retention]\ndays = 30\n")
    r = run_cli("prune", home=home)
    assert r.returncode == 2 and "retention.days" in r.stderr


# -- §5 config export / import --------------------------------------------------------------------
def test_config_export_import_round_trip(tmp_path: Path, keyring_ok) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(mode=0o700)
    export = tmp_path / "export"
    export.mkdir()
    (a / "chargebridge.toml").write_text(
        f'[ingest]\nmax_file_mb = 20\n[backup]\ndir = "{tmp_path / "bk"}"\nkeep = 3\n[retention]\ndays = 500\n'
        f'[sync]\nbusiness_days = "mon-fri"\n[[folders]]\npath = "{export}"\nformat = "hl7v2"\n')
    r = run_cli("config", "export", str(tmp_path / "c.toml"), home=a)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "c.toml").read_text()
    assert "secret" not in text.lower().replace("no secrets", "")
    r = run_cli("config", "import", str(tmp_path / "c.toml"), "--dry-run", "--json", home=b)
    assert r.returncode == 0, r.stderr
    assert {c.split(":")[0] for c in json.loads(r.stdout)["changes"]} >= {"ingest", "backup", "retention", "folders"}
    assert not (b / "chargebridge.toml").exists()  # a dry run writes nothing
    r = run_cli("config", "import", str(tmp_path / "c.toml"), home=b)
    assert r.returncode == 0, r.stderr
    assert run_cli("config", "export", "-", home=b).stdout == run_cli("config", "export", "-", home=a).stdout
    s = _open(b)
    try:
        from agent import audit

        assert [e["detail"]["file"] for e in audit.entries(s, action="config.import")] == ["c.toml"]
    finally:
        s.close()
    # a secret, an unknown key or a bad value is refused before anything is written
    before = (b / "chargebridge.toml").read_text()
    for bad in ('[rcm]\ntype = "fhir"\nbase_url = "https://x.example"\nclient_secret = "s3cr3t"\n',
                "[retention]\ndays = 10\n", "[backup]\nat = \"25:99\"\n"):
        (tmp_path / "bad.toml").write_text(bad)
        r = run_cli("config", "import", str(tmp_path / "bad.toml"), home=b)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert "s3cr3t" not in r.stderr
    assert (b / "chargebridge.toml").read_text() == before
