"""The engine process and its local API, on a real store and keyring (no RCM needed here)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from agent.store import Store
from tests.conftest import ROOT, run_cli, start_test_engine, wait_until
from tests.helpers import dft


@pytest.fixture()
def engine(tmp_path: Path, keyring_ok):
    eng = start_test_engine(tmp_path)
    yield eng
    eng.stop()


def call(eng, method: str, path: str, role: str | None = "admin", **kw):
    headers = {"Authorization": f"Bearer {eng.tokens[role]}"} if role else {}
    return requests.request(method, eng.url + path, headers=headers, timeout=30, **kw)


def test_tokens_and_roles(engine) -> None:
    assert call(engine, "GET", "/status", role=None).status_code == 401
    r = requests.get(engine.url + "/status", headers={"Authorization": "Bearer cb_nope"}, timeout=10)
    assert r.status_code == 401
    r = call(engine, "GET", "/status", role="front_desk")
    assert r.status_code == 200 and r.json()["user"] == {"name": "front_desk-user", "role": "front_desk"}
    assert call(engine, "POST", "/pause", role="front_desk").status_code == 403
    assert call(engine, "POST", "/pause", role="manager").status_code == 200
    assert call(engine, "GET", "/status").json()["state"] == "paused"
    assert call(engine, "POST", "/resume", role="manager").status_code == 200
    assert call(engine, "GET", "/users", role="manager").status_code == 403
    r = call(engine, "POST", "/users", json={"name": "carol", "role": "manager"})
    assert r.status_code == 200 and r.json()["token"].startswith("cb_")
    rows = engine.store().conn.execute("SELECT token_sha256 FROM users WHERE name = 'carol'").fetchall()
    assert rows and rows[0][0] != r.json()["token"]  # only the hash is kept
    spec = requests.get(engine.url.replace("/api/v1", "") + "/openapi.json", timeout=10).json()
    assert "/api/v1/status" in spec["paths"] and "/api/v1/changes" in spec["paths"]


def test_change_feed_wakes_on_ingest_and_status_turns_to_attention(engine) -> None:
    seq = call(engine, "GET", "/status").json()["change_seq"]
    result: dict[str, int] = {}

    def wait() -> None:
        result["seq"] = call(engine, "GET", "/changes", params={"after": seq, "timeout": 20}).json()["seq"]

    t = threading.Thread(target=wait)
    t.start()
    t.join(0.3)
    assert t.is_alive()  # long-poll: it waits for a change instead of answering at once
    (engine.export / "good.hl7").write_text(dft(1))
    t.join(25)
    assert result["seq"] > seq
    assert wait_until(lambda: call(engine, "GET", "/status").json()["counts"]["ready"] >= 1, 20)
    (engine.export / "bad.hl7").write_bytes(b"\x00\x01")
    assert wait_until(lambda: call(engine, "GET", "/status").json()["state"] == "attention", 20)
    st = call(engine, "GET", "/status").json()
    assert st["state"] == "attention" and "1 in quarantine" in st["reason"]
    enc = call(engine, "GET", "/encounters", role="front_desk").json()
    assert enc["total"] == 1 and enc["items"][0]["codes"] == ["99214", "93000"]
    q = call(engine, "GET", "/quarantine").json()["items"]
    assert len(q) == 1
    assert call(engine, "POST", f"/quarantine/{q[0]['id']}/reprocess", role="front_desk").status_code == 403
    assert call(engine, "POST", f"/quarantine/{q[0]['id']}/reprocess", role="manager").status_code == 200


def test_status_without_rcm_and_with_a_broken_rcm_config(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "chargebridge.toml").write_text(
        '[api]\nport = 0\n[rcm]\ntype = "fhir"\nbase_url = "https://rcm.invalid/fhir"\n'
        'token_url = "https://rcm.invalid/token"\nclient_id = "x"\n')
    r = run_cli("status", "--json", home=home)
    assert r.returncode == 2 and "no store" in r.stderr  # nothing ingested yet: says what to do
    run_cli("ingest", str(ROOT / "agent" / "demo_data" / "visit-20261120-0001.hl7"), home=home)
    st = json.loads(run_cli("status", "--json", home=home).stdout)
    assert st["engine"] == "not running" and st["counts"]["ready"] == 1
    r = run_cli("sync", "--json", home=home)
    res = json.loads(r.stdout)
    assert r.returncode == 1 and "secret" in res["skipped"] and "set-secret" in res["skipped"]


def test_second_engine_refuses_and_sigterm_stops_cleanly(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "chargebridge.toml").write_text("[api]\nport = 0\n")
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--home", str(home), "engine"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "engine running" in line, proc.stderr.read() if proc.poll() is not None else line
        second = run_cli("engine", home=home)
        assert second.returncode == 2 and f"process {proc.pid} (chargebridge engine)" in second.stderr
        assert (home / "engine.json").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "engine stopped" in out and not (home / "engine.json").exists()
    log = (home / "logs" / "chargebridge.log").read_text()
    assert "engine started" in log and "engine stopped" in log


def test_scheduler_settings_catch_up_after_sleep(engine) -> None:
    job = engine.scheduler.get_job("sync")
    assert job.coalesce is True and job.misfire_grace_time >= 60 and job.max_instances == 1
    ran: list[bool] = []
    engine.scheduled_sync = lambda: ran.append(True)  # observe the catch-up trigger only
    engine._wall -= 600  # the wall clock moved 10 minutes while the monotonic clock did not: a sleep
    engine._clock_check()
    assert ran == [True]
    engine._clock_check()
    assert ran == [True]  # no jump, no extra run


def test_business_hours() -> None:
    from datetime import datetime

    from agent.schedule import in_business_hours

    mon_9 = datetime(2026, 11, 23, 9, 0)
    assert in_business_hours(mon_9, "07:00-18:00", "mon-fri")
    assert not in_business_hours(mon_9.replace(hour=19), "07:00-18:00", "mon-fri")
    assert not in_business_hours(datetime(2026, 11, 28, 9, 0), "07:00-18:00", "mon-fri")  # a Saturday
    assert in_business_hours(datetime(2026, 11, 28, 23, 59), "00:00-24:00", "mon-sun")


def test_store_is_shared_by_threads(engine) -> None:
    # each thread gets its own connection: no "objects created in a thread" errors, real isolation
    seen = []

    def worker() -> None:
        seen.append(engine.store() is not None and isinstance(engine.store(), Store))

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert seen == [True] * 4
