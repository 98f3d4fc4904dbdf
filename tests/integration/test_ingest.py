"""One-shot ingest through the CLI and the pipeline, against the real store and keyring."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.pipeline import Pipeline
from tests.conftest import run_cli
from tests.helpers import FAMILIES, GIVENS, dft


def write(p: Path, text: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def ingest_json(home: Path, *paths: Path, extra: tuple[str, ...] = ()) -> tuple[int, dict]:
    r = run_cli("ingest", "--json", *extra, *map(str, paths), home=home)
    assert r.stdout.strip(), r.stderr
    return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])


def test_ingest_counts_and_states(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    a = write(tmp_path / "in" / "a.hl7", dft(1) + dft(2))
    b = write(tmp_path / "in" / "b.hl7", b"")
    rc, out = ingest_json(home, a, b)
    assert out == {"files": 2, "accepted": 2, "duplicates": 0, "quarantined": 1}
    assert rc == 1  # something was quarantined
    r = run_cli("encounters", "--json", home=home)
    encs = json.loads(r.stdout)
    assert [e["state"] for e in encs] == ["ready", "ready"]
    assert encs[0]["lines"][0]["code"] == "99214" and encs[0]["rendering_npi"] == "1987654328"
    q = json.loads(run_cli("quarantine", "--json", home=home).stdout)
    assert len(q) == 1 and q[0]["file"].endswith("b.hl7") and "empty" in q[0]["reason"]


def test_same_file_twice_and_same_encounter_reexported(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    a = write(tmp_path / "a.hl7", dft(7))
    assert ingest_json(home, a)[1]["accepted"] == 1
    rc, out = ingest_json(home, a)
    assert (rc, out) == (0, {"files": 1, "accepted": 0, "duplicates": 1, "quarantined": 0})
    # the EHR re-exports the same visit: new file, new control id, same content
    again = write(tmp_path / "again.hl7", dft(7, control="RESEND-1"))
    rc, out = ingest_json(home, again)
    assert out["duplicates"] == 1 and out["accepted"] == 0
    encs = json.loads(run_cli("encounters", "--json", home=home).stdout)
    assert len(encs) == 1 and encs[0]["version"] == 1


def test_corrected_reexport_is_a_revision_not_a_second_encounter(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    ingest_json(home, write(tmp_path / "a.hl7", dft(7, lines=1)))
    rc, out = ingest_json(home, write(tmp_path / "b.hl7", dft(7, lines=2)))
    assert out["accepted"] == 1
    encs = json.loads(run_cli("encounters", "--json", home=home).stdout)
    assert len(encs) == 1 and encs[0]["version"] == 2 and len(encs[0]["lines"]) == 2


def test_validation_findings_hold_for_review(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    bad = dft(3).replace("1678901236", "1678901230")  # NPI with a wrong check digit
    ingest_json(home, write(tmp_path / "a.hl7", bad))
    encs = json.loads(run_cli("encounters", "--json", "--state", "needs_review", home=home).stdout)
    assert len(encs) == 1
    assert any(f["code"] == "npi.check_digit" and f["field"] == "rendering.npi" for f in encs[0]["findings"])
    assert json.loads(run_cli("encounters", "--json", "--state", "ready", home=home).stdout) == []


@pytest.mark.parametrize("name,content,needle", [
    ("empty.hl7", b"", "empty"),
    ("binary.hl7", bytes(range(256)) * 4, "binary"),
    ("trunc.hl7", b"MSH|^~\\&|EHR|FAC|CB|BILL|20261001||DFT^P03|C1|P|2.5.1\rPID|1||MRN1", "FT1"),
    ("unknown-version.hl7", b"MSH|^~\\&|EHR|FAC|CB|BILL|20261001||DFT^P03|C1|P|9.9\rPID|1||M^^^^MR||A^B\r", "version"),
    ("oru.hl7", b"MSH|^~\\&|EHR|FAC|CB|BILL|20261001||ORU^R01|C1|P|2.5.1\rPID|1||M^^^^MR||A^B\r", "ORU"),
    ("mystery.bin", b"\x00\x01hello", "format"),
])
def test_bad_input_is_quarantined_with_a_reason(tmp_path: Path, keyring_ok, name: str, content: bytes,
                                                 needle: str) -> None:
    home = tmp_path / "home"
    rc, out = ingest_json(home, write(tmp_path / name, content))
    assert rc == 1 and out["quarantined"] == 1 and out["accepted"] == 0
    q = json.loads(run_cli("quarantine", "--json", home=home).stdout)
    assert needle.lower() in q[0]["reason"].lower(), q[0]["reason"]


def test_oversize_file_is_refused_with_a_reason(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "chargebridge.toml").write_text("[ingest]\nmax_file_mb = 0.01\n")
    big = write(tmp_path / "big.hl7", "".join(dft(i) for i in range(60)))
    assert big.stat().st_size > 10_000
    rc, out = ingest_json(home, big)
    assert rc == 1 and out["quarantined"] == 1
    q = json.loads(run_cli("quarantine", "--json", home=home).stdout)
    assert "limit" in q[0]["reason"] and "max_file_mb" in q[0]["reason"]
    r = run_cli("reprocess", str(q[0]["id"]), home=home)
    assert r.returncode == 1 and "too large" in r.stderr


def test_reprocess_after_fixing_the_format(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    f = write(tmp_path / "export.dat", dft(11))  # unknown extension
    f2 = write(tmp_path / "export2.dat", b"\x01\x02 not any format")
    rc, out = ingest_json(home, f2)
    assert out["quarantined"] == 1
    q = json.loads(run_cli("quarantine", "--json", home=home).stdout)
    r = run_cli("reprocess", str(q[0]["id"]), "--format", "hl7v2", home=home)
    assert r.returncode == 1  # still not HL7: stays quarantined, with a new entry
    assert len(json.loads(run_cli("quarantine", "--json", home=home).stdout)) == 1
    rc, out = ingest_json(home, f)
    assert out["accepted"] == 1  # sniffed as HL7 by content


def test_store_holds_no_plaintext_phi(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    files = [write(tmp_path / f"{i}.hl7", dft(i)) for i in range(16)]
    ingest_json(home, *files)
    names = {n.encode() for n in FAMILIES + GIVENS} | {b"MRN000003", b"Main St"}
    store_files = [p for p in home.iterdir() if p.name.startswith("store")]
    assert store_files
    for p in store_files:
        blob = p.read_bytes()
        for n in names:
            assert n not in blob, f"{n!r} in plaintext in {p.name}"
    log = (home / "logs" / "chargebridge.log").read_text()
    for n in names:
        assert n.decode() not in log
    assert "document" in log  # the log does say what happened, by id


def test_lock_refuses_a_second_writer(tmp_path: Path, keyring_ok) -> None:
    from agent.lock import HomeLock
    from core.errors import LockHeld

    home = tmp_path / "home"
    home.mkdir()
    with HomeLock(home / "chargebridge.lock", "test holder"):
        r = run_cli("ingest", str(write(tmp_path / "a.hl7", dft(1))), home=home)
        assert r.returncode == 2
        assert f"process {os.getpid()} (test holder)" in r.stderr
        with pytest.raises(LockHeld):
            HomeLock(home / "chargebridge.lock", "again").acquire()


def test_crash_between_commit_and_processing_is_recovered(store) -> None:
    pipe = Pipeline(store)
    doc_id, status = pipe.admit(dft(5).encode(), origin="x.hl7", source="cli", fmt="auto", profile="")
    assert status == "pending"
    assert store.encounters() == []
    outs = Pipeline(store).recover()
    assert [o.status for o in outs] == ["accepted"]
    assert len(store.encounters()) == 1
    assert Pipeline(store).recover() == []


def test_doctor_and_version(tmp_path: Path, keyring_ok) -> None:
    home = tmp_path / "home"
    r = run_cli("doctor", home=home)
    assert r.returncode == 0 and "keyring is usable" in r.stdout, r.stdout + r.stderr
    home.mkdir(exist_ok=True)
    (home / "chargebridge.toml").write_text(f'[[folders]]\npath = "{tmp_path}/missing"\n')
    r = run_cli("doctor", home=home)
    assert r.returncode == 1 and "To fix" in r.stdout and "missing" in r.stdout
    (home / "chargebridge.toml").write_text('[[folders]]\npath = "/x"\nafter = "shred"\n')
    r = run_cli("doctor", home=home)
    assert r.returncode == 2 and "folders[0].after" in r.stderr and "archive, move" in r.stderr
    r = run_cli("--version", home=home)
    assert r.returncode == 0 and "chargebridge 0." in r.stdout
