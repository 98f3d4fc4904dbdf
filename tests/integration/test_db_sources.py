"""EHR database connectors against real MariaDB and PostgreSQL servers (tests/db_fixture.py),
with schemas shaped like OpenEMR and Open Dental (tests/db_schemas.py), and a real SQLCipher store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent.config import parse
from agent.dbpoll import Poller, PollResult
from agent.store import Store
from connectors.ehr.db import DbSource, load_profile
from core.states import EncounterState
from tests import db_schemas as S
from tests.conftest import ROOT, run_cli
from tests.db_fixture import DbServer, mariadb, postgres  # noqa: F401  (session servers)


@pytest.fixture(params=["mariadb", "postgres"])
def server(request: pytest.FixtureRequest) -> DbServer:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


class Ehr:
    """One fresh EHR database on a server, a read-only login, and pollers over it."""

    def __init__(self, srv: DbServer, profile: str) -> None:
        self.srv = srv
        self.profile = profile
        self.db = srv.fresh_db(profile[:4])
        self.admin = srv.admin_engine(self.db)
        S.create(self.admin, srv.kind, S.OPENEMR_DDL if profile == "openemr" else S.OPENDENTAL_DDL)
        self.user, self.password = "", ""

    def login(self, *, write: bool = False) -> None:
        self.user, self.password = self.srv.add_user(self.db, write=write)

    def poller(self, store: Store, *, rescan_days: int = 45, password: str | None = None) -> Poller:
        if not self.user:
            self.login()
        cfg = parse({"databases": [{"name": "ehr", "url": self.srv.url_no_password(self.db, self.user),
                                    "profile": self.profile, "rescan_days": rescan_days}]})
        d = cfg.databases[0]
        src = DbSource(d.name, d.url, load_profile(self.profile),
                       self.password if password is None else password, max_rows=d.max_rows)
        return Poller(store, cfg, d, source=src)

    def poll(self, store: Store, **kw: Any) -> PollResult:
        p = self.poller(store, **kw)
        try:
            return p.run()
        finally:
            p.source.close()

    def sql(self, stmt: str, **params: Any) -> None:
        with self.admin.begin() as c:
            c.execute(sa.text(stmt), params)


def encounter(store: Store, key: str) -> dict[str, Any]:
    row = store.conn.execute("SELECT state, version, data, findings FROM encounters WHERE source_id = ?",
                             (key,)).fetchone()
    assert row is not None, key
    return {"state": row[0], "version": row[1], "data": json.loads(row[2]), "findings": json.loads(row[3])}


def counts(r: PollResult) -> dict[str, int]:
    assert not r.error, r.error
    return r.counts()


# -- OpenEMR ------------------------------------------------------------------------------------
def test_openemr_first_load_new_edit_void(server: DbServer, fast_store: Store) -> None:
    ehr = Ehr(server, "openemr")
    with ehr.admin.begin() as c:
        S.openemr_base(c)
        for e in range(1, 7):
            S.openemr_visit(c, 5000 + e, S.days_ago(5 + e), pid=e, lines=2)
    assert counts(ehr.poll(fast_store)) == {"new": 6, "changed": 0, "voided": 0, "unchanged": 0}
    first = encounter(fast_store, "5001")
    assert first["state"] == EncounterState.READY, first["findings"]
    d = first["data"]
    assert d["patient"]["mrn"] == "MRN00001"  # pubpid, not pid
    assert d["rendering"]["npi"] == S.npi("23456789")
    assert d["place_of_service"] == "11"
    assert d["coverages"][0]["payer_name"] == "Acme Health Plan"
    assert [x["code"] for x in d["diagnoses"]] == [S.ICD[5001 % 6], S.ICD[5002 % 6]]
    line2 = d["lines"][1]
    assert line2["units"] == "2" and line2["unit_charge"] == "37.50"  # billing.fee is the line total
    assert line2["dx_pointers"] == [1, 2] and d["lines"][0]["modifiers"] == ["25"]
    assert counts(ehr.poll(fast_store)) == {"new": 0, "changed": 0, "voided": 0, "unchanged": 6}

    with ehr.admin.begin() as c:
        S.openemr_visit(c, 5100, S.days_ago(1), pid=2)  # new visit
    ehr.sql("UPDATE billing SET fee = 90 WHERE encounter = 5002 AND code_type = 'CPT4' AND units = 1")  # edit
    ehr.sql("UPDATE billing SET activity = 0 WHERE encounter = 5003 AND code_type = 'CPT4' AND units = 2")  # one line
    ehr.sql("UPDATE billing SET activity = 0 WHERE encounter = 5004")  # the whole visit voided
    ehr.sql("DELETE FROM billing WHERE encounter = 5005")  # lines deleted: a void too
    r = ehr.poll(fast_store)
    assert counts(r) == {"new": 1, "changed": 2, "voided": 2, "unchanged": 2}
    assert sorted(r.keys["changed"]) == ["5002", "5003"] and sorted(r.keys["voided"]) == ["5004", "5005"]
    e2 = encounter(fast_store, "5002")
    assert e2["version"] == 2 and e2["data"]["lines"][0]["unit_charge"] == "90.00"
    assert len(encounter(fast_store, "5003")["data"]["lines"]) == 1
    for k in ("5004", "5005"):
        assert encounter(fast_store, k)["state"] == EncounterState.VOIDED
    assert fast_store.conn.execute("SELECT count(*) FROM events WHERE kind = 'encounter.voided'").fetchone()[0] == 2
    # A voided visit whose lines come back is billable again (a revision), not a duplicate.
    ehr.sql("UPDATE billing SET activity = 1 WHERE encounter = 5004")
    r = ehr.poll(fast_store)
    assert counts(r)["changed"] == 1 and r.keys["changed"] == ["5004"]
    assert encounter(fast_store, "5004")["state"] == EncounterState.READY
    assert fast_store.conn.execute("SELECT count(*) FROM encounters").fetchone()[0] == 7


def test_out_of_order_autoincrement_commit_is_not_skipped(server: DbServer, fast_store: Store) -> None:
    """Two connections: the one holding the lower billing id commits after the higher one was
    polled. Visits are older than the rescan window (rescan_days = 0), so only the id window's
    re-read below the watermark can find the late line."""
    ehr = Ehr(server, "openemr")
    old = S.days_ago(200)
    with ehr.admin.begin() as c:
        S.openemr_base(c)
        S.openemr_visit(c, 7001, old, pid=1)
        S.openemr_visit(c, 7002, old, pid=2, lines=0)  # visit opened, no charge yet
        S.openemr_visit(c, 7003, old, pid=3, lines=0)
    assert counts(ehr.poll(fast_store, rescan_days=0))["new"] == 1
    slow = ehr.admin.connect()
    fast = ehr.admin.connect()
    try:
        slow.execution_options(isolation_level="READ COMMITTED")
        tx_slow = slow.begin()
        S.ins(slow, "billing", [{"date": old, "code_type": "CPT4", "code": "99213", "pid": 2, "provider_id": 1,
                                 "encounter": 7002, "code_text": "", "activity": 1, "modifier": "", "units": 1,
                                 "fee": 80, "justify": ""}])  # lower id, not committed yet
        with fast.begin():
            S.ins(fast, "billing", [{"date": old, "code_type": "CPT4", "code": "99214", "pid": 3, "provider_id": 1,
                                     "encounter": 7003, "code_text": "", "activity": 1, "modifier": "", "units": 1,
                                     "fee": 120, "justify": ""}])  # higher id, committed first
        r = ehr.poll(fast_store, rescan_days=0)
        assert counts(r)["new"] == 1 and r.keys["new"] == ["7003"]
        tx_slow.commit()
    finally:
        slow.close()
        fast.close()
    r = ehr.poll(fast_store, rescan_days=0)
    assert counts(r)["new"] == 1 and r.keys["new"] == ["7002"]
    assert fast_store.conn.execute("SELECT count(*) FROM encounters").fetchone()[0] == 3


# -- Open Dental --------------------------------------------------------------------------------
def test_opendental_watermark_edits_and_status_voids(server: DbServer, fast_store: Store) -> None:
    ehr = Ehr(server, "opendental")
    old = S.days_ago(120)  # outside the rescan window (rescan_days = 0): only DateTStamp finds changes
    with ehr.admin.begin() as c:
        S.opendental_base(c)
        for p in range(1, 5):
            S.opendental_procs(c, p, old, [1, 2, 4])
        S.opendental_procs(c, 5, old, [3], status=1)  # treatment-planned, not complete: not a charge
    assert counts(ehr.poll(fast_store, rescan_days=0)) == {"new": 4, "changed": 0, "voided": 0, "unchanged": 0}
    key1 = f"1-{old.isoformat()}"
    e = encounter(fast_store, key1)
    assert e["state"] == EncounterState.READY, e["findings"]
    assert [ln["code"] for ln in e["data"]["lines"]] == ["D0120", "D1110", "D2391"]
    assert e["data"]["lines"][2]["dx_pointers"] == [2] and e["data"]["diagnoses"][1]["code"] == "K02.52"
    assert e["data"]["coverages"][0]["member_id"] == "DD000001" and e["data"]["patient"]["sex"] == "F"  # Gender 1
    # Open Dental stamps DateTStamp on every edit (MariaDB: ON UPDATE; set explicitly for PostgreSQL)
    ehr.sql("UPDATE procedurelog SET ProcFee = 140, DateTStamp = CURRENT_TIMESTAMP WHERE PatNum = 2 AND CodeNum = 1")
    ehr.sql("UPDATE procedurelog SET ProcStatus = 6, DateTStamp = CURRENT_TIMESTAMP WHERE PatNum = 3")  # deleted
    ehr.sql("UPDATE procedurelog SET ProcStatus = 2, DateTStamp = CURRENT_TIMESTAMP WHERE PatNum = 5")  # completed
    r = ehr.poll(fast_store, rescan_days=0)
    # unchanged: visits 1 and 4, stamped within overlap_seconds of the last watermark, are re-read
    assert counts(r) == {"new": 1, "changed": 1, "voided": 1, "unchanged": 2}, r.keys
    assert encounter(fast_store, f"2-{old.isoformat()}")["data"]["lines"][0]["unit_charge"] == "140.00"
    assert encounter(fast_store, f"3-{old.isoformat()}")["state"] == EncounterState.VOIDED
    assert counts(ehr.poll(fast_store, rescan_days=0))["new"] == 0


# -- failures -----------------------------------------------------------------------------------
def test_server_restarted_mid_poll_rereads_everything(mariadb: DbServer, fast_store: Store,  # noqa: F811
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ehr = Ehr(mariadb, "openemr")
    with ehr.admin.begin() as c:
        S.openemr_base(c)
        for e in range(1, 5):
            S.openemr_visit(c, 9000 + e, S.days_ago(2), pid=e)
    real_rows = DbSource._rows
    calls = {"n": 0}

    def restart_once(self: DbSource, *a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # after the headers were read, before the lines
            mariadb.restart()
        return real_rows(self, *a, **kw)

    monkeypatch.setattr(DbSource, "_rows", restart_once)
    r = ehr.poll(fast_store)
    assert r.error_kind == "unreachable" and "cannot be reached" in r.error
    assert fast_store.conn.execute("SELECT count(*) FROM documents").fetchone()[0] == 0
    assert fast_store.conn.execute("SELECT count(*) FROM db_cursors").fetchone()[0] == 0
    health = json.loads(fast_store.setting("db.health.ehr"))
    assert health["ok"] is False and health["retry_after"]  # backing off
    monkeypatch.setattr(DbSource, "_rows", real_rows)
    assert counts(ehr.poll(fast_store)) == {"new": 4, "changed": 0, "voided": 0, "unchanged": 0}
    assert json.loads(fast_store.setting("db.health.ehr"))["ok"] is True


def _home(tmp_path: Path, srv: DbServer, db: str, user: str, profile: str = "openemr") -> Path:
    home = tmp_path / "home"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "chargebridge.toml").write_text(
        f'[[databases]]\nname = "ehr"\nurl = "{srv.url_no_password(db, user)}"\nprofile = "{profile}"\n')
    return home


def test_cli_password_test_poll_and_schema_errors(mariadb: DbServer, tmp_path: Path) -> None:  # noqa: F811
    ehr = Ehr(mariadb, "openemr")
    with ehr.admin.begin() as c:
        S.openemr_base(c)
        S.openemr_visit(c, 4001, S.days_ago(3))
    ehr.login()
    home = _home(tmp_path, mariadb, ehr.db, ehr.user)
    assert run_cli("db", "set-password", "ehr", home=home, input="not-the-password\n").returncode == 0
    r = run_cli("db", "test", "ehr", home=home)
    assert r.returncode == 1 and "refused the login" in r.stdout and "set-password ehr" in r.stdout
    r = run_cli("poll", "--json", home=home)
    assert r.returncode == 1 and "refused the login" in json.loads(r.stdout)["error"]
    assert "not-the-password" not in r.stdout + r.stderr

    assert run_cli("db", "set-password", "ehr", home=home, input=ehr.password + "\n").returncode == 0
    r = run_cli("db", "test", "ehr", home=home)
    assert r.returncode == 0 and "warning" not in r.stdout, r.stdout  # SELECT-only: no warning
    r = run_cli("poll", "ehr", "--json", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {k: out[k] for k in ("new", "changed", "voided", "unchanged")} == {
        "new": 1, "changed": 0, "voided": 0, "unchanged": 0}
    assert ehr.password not in (home / "chargebridge.toml").read_text()

    w_user, w_pw = mariadb.add_user(ehr.db, write=True)
    home_w = _home(tmp_path / "w", mariadb, ehr.db, w_user)
    run_cli("db", "set-password", "ehr", home=home_w, input=w_pw + "\n")
    r = run_cli("db", "test", "ehr", home=home_w)
    assert r.returncode == 0 and "warning: this account can change the EHR database" in r.stdout, r.stdout

    ehr.sql("ALTER TABLE billing DROP COLUMN justify")
    r = run_cli("db", "test", "ehr", home=home)
    assert r.returncode == 1 and "billing.justify" in r.stdout
    r = run_cli("poll", "--json", home=home)
    assert r.returncode == 1 and "missing billing.justify" in json.loads(r.stdout)["error"]


def test_sigkill_between_fetch_and_commit(postgres: DbServer, tmp_path: Path) -> None:  # noqa: F811
    """The process dies after reading and before its one commit: nothing is skipped, nothing doubled."""
    ehr = Ehr(postgres, "openemr")
    with ehr.admin.begin() as c:
        S.openemr_base(c)
        for e in range(1, 6):
            S.openemr_visit(c, 3000 + e, S.days_ago(4), pid=e)
    ehr.login()
    home = _home(tmp_path, postgres, ehr.db, ehr.user)
    assert run_cli("db", "set-password", "ehr", home=home, input=ehr.password + "\n").returncode == 0
    assert json.loads(run_cli("poll", "--json", home=home).stdout)["new"] == 5
    ehr.sql("UPDATE billing SET fee = 99 WHERE encounter = 3001 AND code_type = 'CPT4'")
    with ehr.admin.begin() as c:
        S.openemr_visit(c, 3100, S.days_ago(1), pid=2)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from agent import dbpoll, cli
        real = dbpoll.Poller._commit
        def die(self, res, *a, **kw):
            assert res.new == 1 and res.changed == 1, (res.new, res.changed)
            os.kill(os.getpid(), signal.SIGKILL)
        dbpoll.Poller._commit = die
        sys.exit(cli.main(["--home", {str(home)!r}, "poll", "--json"]))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == -signal.SIGKILL, p.stderr
    r = run_cli("poll", "--json", home=home)
    out = json.loads(r.stdout)
    assert (out["new"], out["changed"], out["voided"]) == (1, 1, 0), out
    assert json.loads(run_cli("poll", "--json", home=home).stdout)["unchanged"] == 6
    r = run_cli("encounters", "--json", home=home)
    rows = json.loads(r.stdout)
    items = rows["items"] if isinstance(rows, dict) else rows
    assert len(items) == 6 and len({i["source_id"] for i in items}) == 6


# -- bad data ------------------------------------------------------------------------------------
def test_bad_rows_become_findings_and_the_poll_goes_on(tmp_path: Path, fast_store: Store) -> None:
    """SQLite lets a numeric column hold text: the value is checked at the boundary, never used."""
    path = tmp_path / "openemr.sqlite"
    eng = sa.create_engine(f"sqlite:///{path}")
    S.create(eng, "sqlite", S.OPENEMR_DDL)
    dos = S.days_ago(3)
    with eng.begin() as c:
        S.openemr_base(c)
        S.openemr_visit(c, 1, dos, pid=1)  # fine
        S.openemr_visit(c, 2, dos, pid=2, fee="12abc")  # text in a numeric column
        S.openemr_visit(c, 3, dos, pid=3, provider=None)  # no provider
        S.openemr_visit(c, 4, dos, pid=4)
        c.execute(sa.text("UPDATE billing SET code = 'XYZ' WHERE encounter = 4 AND code_type = 'CPT4'"))  # unknown
        S.openemr_visit(c, 5, dos, pid=5)
        c.execute(sa.text("UPDATE form_encounter SET date = NULL WHERE encounter = 5"))  # NULL date
        S.openemr_visit(c, 6, dos, pid=6, fee="1e999999999")
    eng.dispose()
    cfg = parse({"databases": [{"name": "lite", "url": f"sqlite:///{path}", "profile": "openemr"}]})
    d = cfg.databases[0]
    src = DbSource(d.name, d.url, load_profile("openemr"))
    r = Poller(fast_store, cfg, d, source=src).run()
    assert counts(r)["new"] == 6  # the first load reads every billing id, whatever the dates
    found = {k: encounter(fast_store, k) for k in ("1", "2", "3", "4", "6")}
    assert found["1"]["state"] == EncounterState.READY
    for k, code in (("2", "charge.format"), ("3", "npi"), ("4", "code"), ("6", "charge.format")):
        assert found[k]["state"] == EncounterState.NEEDS_REVIEW
        assert any(code in f["code"] for f in found[k]["findings"]), (k, found[k]["findings"])
    text = json.dumps([f["findings"] for f in found.values()])
    assert "12abc" not in text and "Okafor" not in text and "1e999999999" not in text
    e5 = fast_store.conn.execute("SELECT state, findings FROM encounters WHERE source_id = '5'").fetchone()
    assert e5 is not None and e5[0] == EncounterState.NEEDS_REVIEW and "dos" in e5[1]
    check = src.check()
    assert check.ok and any("writable" in w for w in check.warnings)
    src.close()


def test_row_budget_stops_a_poll_with_a_reason(mariadb: DbServer, fast_store: Store) -> None:  # noqa: F811
    ehr = Ehr(mariadb, "openemr")
    with ehr.admin.begin() as c:
        S.openemr_base(c)
        for e in range(1, 30):
            S.openemr_visit(c, 600 + e, S.days_ago(2), pid=1 + e % 8)
    p = ehr.poller(fast_store)
    p.source.max_rows = 100
    r = p.run()
    p.source.close()
    assert r.error_kind == "budget" and "100 rows" in r.error and "max_rows" in r.error
    assert fast_store.conn.execute("SELECT count(*) FROM encounters").fetchone()[0] == 0


# -- end to end ------------------------------------------------------------------------------------
def test_database_encounters_sync_and_reconcile_to_the_fhir_peer(mariadb: DbServer, clean_peer: Any,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    """Polled encounters reach the RCM once; an edited line goes as a new version of the same
    Claim (a correction), not a second Claim; reconciliation matches them."""
    from tests.integration.test_sync import claims_by_identifier

    ehr = Ehr(mariadb, "openemr")
    with ehr.admin.begin() as c:
        S.openemr_base(c)
        for e in range(1, 4):
            S.openemr_visit(c, 8000 + e, S.days_ago(6), pid=e)
    ehr.login()
    home = _home(tmp_path, mariadb, ehr.db, ehr.user)
    peer = clean_peer
    with open(home / "chargebridge.toml", "a") as fh:
        fh.write(f'[rcm]\ntype = "fhir"\nbase_url = "{peer.base_url}"\ntoken_url = "{peer.token_url}"\n'
                 f'client_id = "{peer.client_id}"\ntimeout_seconds = 10\n')
    assert run_cli("rcm", "set-secret", home=home, input=peer.client_secret + "\n").returncode == 0
    assert run_cli("db", "set-password", "ehr", home=home, input=ehr.password + "\n").returncode == 0
    assert json.loads(run_cli("poll", "--json", home=home).stdout)["new"] == 3
    r = run_cli("sync", "--json", home=home, timeout=120)
    assert json.loads(r.stdout)["delivered"] == 3, r.stdout
    claims = claims_by_identifier(peer)
    assert len(claims) == 3 and set(claims.values()) == {1}

    ehr.sql("UPDATE billing SET fee = 140 WHERE encounter = 8001 AND code_type = 'CPT4' AND units = 1")
    assert json.loads(run_cli("poll", "--json", home=home).stdout)["changed"] == 1
    assert json.loads(run_cli("sync", "--json", home=home, timeout=120).stdout)["delivered"] == 1
    claims = claims_by_identifier(peer)
    assert len(claims) == 3 and set(claims.values()) == {1}  # the same Claim, a new version
    prices = sorted(it.get("unitPrice", {}).get("value") for cl in peer.search("Claim", _count=100)
                    for it in cl["item"])
    assert prices.count(140.0) == 1 and prices.count(75.0) == 2  # only visit 8001's first line changed
    r = run_cli("reconcile", "--json", home=home, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    out = json.loads(r.stdout)
    assert out["matched"] == 3 and out["field_mismatch"] == 0 and out["orphan_in_rcm"] == 0, out

    # A void in the EHR cancels the Claim at the RCM (a new version, status cancelled), once.
    ehr.sql("UPDATE billing SET activity = 0 WHERE encounter = 8002")
    assert json.loads(run_cli("poll", "--json", home=home).stdout)["voided"] == 1
    run_cli("sync", "--json", home=home, timeout=120)
    run_cli("sync", "--json", home=home, timeout=120)
    by_status = sorted(cl["status"] for cl in peer.search("Claim", _count=100))
    assert by_status == ["active", "active", "cancelled"], by_status
    assert len(claims_by_identifier(peer)) == 3
    cancelled = next(cl["id"] for cl in peer.search("Claim", _count=100) if cl["status"] == "cancelled")
    history = peer.fhir("GET", f"Claim/{cancelled}/_history").json()
    assert len(history.get("entry", [])) == 2  # created, then cancelled once (the second sync did nothing)
    out = json.loads(run_cli("reconcile", "--json", home=home, timeout=120).stdout)
    assert out["matched"] == 2 and out["orphan_in_rcm"] == 0 and out["missing_in_rcm"] == 0, out


# -- engine ----------------------------------------------------------------------------------------
def test_engine_polls_on_its_schedule_and_reports_health(mariadb: DbServer, tmp_path: Path,  # noqa: F811
                                                         keyring_ok: None) -> None:
    import requests

    from agent import config as configmod
    from agent import dbpoll
    from agent.engine import Engine
    from agent.users import add_user
    from core.paths import Paths
    from tests.conftest import wait_until

    ehr = Ehr(mariadb, "openemr")
    with ehr.admin.begin() as c:
        S.openemr_base(c)
        for e in range(1, 4):
            S.openemr_visit(c, 2000 + e, S.days_ago(2), pid=e)
    ehr.login()
    paths = Paths.resolve(tmp_path / "home")
    paths.ensure()
    paths.config.write_text(f'[api]\nport = 0\n[[databases]]\nname = "ehr"\n'
                            f'url = "{mariadb.url_no_password(ehr.db, ehr.user)}"\nprofile = "openemr"\n')
    cfg = configmod.load(paths.config)
    dbpoll.set_password(paths, cfg.databases[0], ehr.password)
    eng = Engine(paths, cfg)
    eng.start()
    try:
        tokens = {r: add_user(eng.store(), f"{r}-user", r) for r in ("front_desk", "manager")}
        url = f"http://127.0.0.1:{eng.port}/api/v1"

        def status() -> dict[str, Any]:
            return dict(requests.get(f"{url}/status", headers={"Authorization": f"Bearer {tokens['front_desk']}"},
                                     timeout=10).json())

        def conn() -> dict[str, Any]:
            return next((c for c in status()["connectors"] if c["name"] == "database ehr"), {})

        assert wait_until(lambda: "3 new" in conn().get("detail", ""), timeout=60), conn()
        assert conn()["healthy"] is True and conn()["kind"] == "ehr"
        h = {"Authorization": f"Bearer {tokens['manager']}"}
        page = requests.get(f"{url}/databases", headers=h, timeout=10).json()
        assert page["total"] == 1 and "@" in page["items"][0]["url"] and ehr.password not in json.dumps(page)
        r = requests.post(f"{url}/databases/ehr/poll", headers={"Authorization": f"Bearer {tokens['front_desk']}"},
                          timeout=60)
        assert r.status_code == 403
        assert requests.post(f"{url}/databases/nosuch/poll", headers=h, timeout=60).status_code == 404
        mariadb.stop()
        try:
            r = requests.post(f"{url}/databases/ehr/poll", headers=h, timeout=120)
            assert r.status_code == 200 and r.json()["error_kind"] == "unreachable", r.text
            assert conn()["healthy"] is False and "next try after" in conn()["detail"]
            st = status()  # the tray shows it too: the engine's state is an error naming the database
            assert st["state"] == "error" and "database ehr" in st["reason"], st
            assert dbpoll.backing_off(eng.store(), "ehr")  # the scheduled polls wait out the backoff
        finally:
            mariadb._spawn()
        r = requests.post(f"{url}/databases/ehr/poll", headers=h, timeout=120)
        assert r.json()["unchanged"] == 3 and not r.json()["error"], r.text
        assert conn()["healthy"] is True and status()["state"] != "error"
    finally:
        eng.stop()
