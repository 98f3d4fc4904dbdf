"""`[rcm] type = "x12"` end to end through the CLI: ingest, sync -> a valid 837P in the outbound
folder, claims `submitted` with their control numbers; sync again -> nothing new; a failed
upload is retried with the same interchange control number."""

from __future__ import annotations

import json
from pathlib import Path

from agent.store import Store
from connectors.rcm.x12.validate import validate
from core.paths import Paths
from tests.conftest import run_cli
from tests.helpers import dft


def visit(i: int) -> str:
    """A DFT^P03 with an IN1 (the payer, member id, self coverage)."""
    f = ["IN1", "1", "PLAN1", "60054", "AETNA"] + [""] * 45
    f[8], f[17], f[36] = "GRP1", "SEL", f"W{i:09d}"
    return dft(i) + "|".join(f) + "\r"


def make_home(tmp_path: Path, out: Path, n: int) -> Path:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "chargebridge.toml").write_text(f'''
[api]
port = 0
[rcm]
type = "x12"
[practice]
name = "Springfield Family Medicine"
npi = "1234567893"
tax_id = "12-3456789"
taxonomy = "207Q00000X"
phone = "(217) 555-0100"
address = {{ street = "1 Clinic Way", city = "Springfield", state = "IL", zip = "62704" }}
[x12]
sender_id = "CBSENDER"
receiver_id = "CLEARHOUSE"
usage = "T"
outbound = "{out}"
''')
    f = tmp_path / "visits.hl7"
    f.write_text("".join(visit(i) for i in range(n)))
    r = run_cli("ingest", "--json", str(f), home=home)
    assert json.loads(r.stdout)["accepted"] == n, r.stderr
    return home


def sync(home: Path) -> dict:
    r = run_cli("sync", "--json", home=home)
    assert r.stdout.strip(), r.stderr
    return json.loads(r.stdout)


def rows(home: Path, sql: str) -> list[tuple]:
    s = Store.open(Paths.resolve(home), "keyring", create=False)
    try:
        return s.conn.execute(sql).fetchall()
    finally:
        s.close()


def test_sync_writes_a_valid_837_once_and_claims_are_submitted(tmp_path: Path, keyring_ok) -> None:
    out = tmp_path / "out"
    out.mkdir()
    home = make_home(tmp_path, out, 4)
    res = sync(home)
    assert res["delivered"] == 4 and res["rejected"] == 0, res
    [f] = sorted(out.iterdir())
    assert f.name == "837P-000000001.x12" and validate(f.read_bytes()) == []
    assert f.read_text().count("CLM*") == 4
    claims = rows(home, "SELECT claim_id, state, control FROM claims ORDER BY id")
    assert len(claims) == 4 and {c[1] for c in claims} == {"submitted"}
    for claim_id, _, control in claims:
        c = json.loads(control)
        assert c["isa"] == "000000001" and c["gs"] == "1" and c["file"] == f.name and c["Claim"] == claim_id
        assert f"CLM*{claim_id}*" in f.read_text()
    assert rows(home, "SELECT control, kind, file_name FROM x12_interchanges") == [(1, "837P", f.name)]
    again = sync(home)
    assert again["delivered"] == 0 and sorted(out.iterdir()) == [f]


def test_a_failed_upload_is_sent_again_with_the_same_isa13(tmp_path: Path, keyring_ok) -> None:
    out = tmp_path / "out"  # missing: the upload fails
    home = make_home(tmp_path, out, 2)
    res = sync(home)
    assert res["failed"] == 2 and res["delivered"] == 0 and "folder" in res["error"], res
    assert rows(home, "SELECT state FROM outbox") == [("failed",), ("failed",)]
    assert rows(home, "SELECT count(*) FROM claims") == [(0,)]
    out.mkdir()
    res = sync(home)
    assert res["delivered"] == 2, res
    assert [p.name for p in out.iterdir()] == ["837P-000000001.x12"]
    assert rows(home, "SELECT control, sent_at != '' FROM x12_interchanges") == [(1, 1)]
    assert validate((out / "837P-000000001.x12").read_bytes()) == []
