"""The clearinghouse round trip through the CLI (issue 10): `[rcm] type = "x12"`, folders out and
in; ingest, `chargebridge sync` writes an 837P, the simulator (tests/clearinghouse.py) answers
with 999 / 277CA / 835, `chargebridge x12 import` reads them, and `chargebridge claims` shows
accepted-then-adjudicated states with amounts and described reasons; the denied claim waits in
`chargebridge mismatches`, `resolve --action resend` sends it again as a frequency-7 claim that
names the payer's claim number from the 835; the answer for a claim nobody sent is listed by
`claims unmatched`; importing the same files again changes nothing. Also: an encounter voided
in the EHR after delivery goes out as a frequency-8 claim, and test mode records the 837 instead
of writing it. Every 837 the test sees passes pyx12."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from agent.store import Store
from connectors.rcm.x12.validate import validate
from core.paths import Paths
from tests.clearinghouse import Clearinghouse, Outcome
from tests.conftest import run_cli
from tests.integration.test_x12_sync import visit


def make_home(tmp_path: Path, n: int, *, extra: str = "") -> tuple[Path, Path, Path]:
    out, inbound = tmp_path / "out", tmp_path / "in"
    out.mkdir()
    inbound.mkdir()
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
inbound = "{inbound}"
{extra}
''')
    f = tmp_path / "visits.hl7"
    f.write_text("".join(visit(i) for i in range(n)))
    r = run_cli("ingest", "--json", str(f), home=home)
    assert json.loads(r.stdout)["accepted"] == n, r.stderr
    return home, out, inbound


def cli_json(home: Path, *args: str) -> dict:
    r = run_cli(*args, "--json", home=home)
    assert r.stdout.strip(), r.stderr
    return json.loads(r.stdout)


def rows(home: Path, sql: str, *params: object) -> list[tuple]:
    s = Store.open(Paths.resolve(home), "keyring", create=False)
    try:
        return s.conn.execute(sql, params).fetchall()
    finally:
        s.close()


def all_valid(out: Path) -> list[str]:
    names = sorted(p.name for p in out.iterdir() if p.is_file())
    for name in names:
        assert validate((out / name).read_bytes()) == [], name
    return names


def claims_by_id(home: Path) -> dict[str, dict]:
    return {c["claim_id"]: c for c in cli_json(home, "claims")["items"]}


def test_837_out_answers_in_denied_claim_resent_as_a_correction(tmp_path: Path, keyring_ok) -> None:
    home, out, inbound = make_home(tmp_path, 5)
    res = cli_json(home, "sync")
    assert res["delivered"] == 5 and res["rejected"] == 0, res
    assert all_valid(out) == ["837P-000000001.x12"]
    ids = sorted(cid for (cid,) in rows(home, "SELECT claim_id FROM claims"))
    paid, rejected, partial, denied, copay = ids
    ch = Clearinghouse(out, inbound, reject={rejected: "562"},
                       outcomes={partial: Outcome("partial"), denied: Outcome("denied"),
                                 copay: Outcome("paid", patient=("3", Decimal("20.00")))},
                       extra_claims=[("NOT-OURS-1", Decimal("42.00"))])
    [read] = ch.run()
    assert {c.clm01 for c in read.claims} == set(ids) and not read.errors
    answers = sorted(str(p) for p in inbound.iterdir())
    assert [Path(a).name for a in answers] == ["837P-000000001.277", "837P-000000001.835", "837P-000000001.999"]

    got = cli_json(home, "x12", "import", *answers)
    assert (got["999"], got["277CA"], got["835"]) == (1, 5, 5), got  # 835: 4 adjudicated + 1 nobody sent
    assert got["unmatched"] == 1 and got["failed"] == 0, got

    claims = claims_by_id(home)
    assert {cid: c["state"] for cid, c in claims.items()} == {
        paid: "paid", rejected: "rejected", partial: "partially_paid", denied: "denied", copay: "paid"}
    billed = Decimal(claims[paid]["billed"])
    assert billed > 0 and Decimal(claims[paid]["paid"]) == billed
    assert Decimal(claims[partial]["paid"]) == (Decimal(claims[partial]["billed"]) * Decimal("0.8")).quantize(
        Decimal("0.01"))
    assert Decimal(claims[copay]["patient_resp"]) == Decimal("20.00")
    assert Decimal(claims[copay]["paid"]) == Decimal(claims[copay]["billed"]) - Decimal("20.00")
    assert Decimal(claims[denied]["paid"]) == 0
    denial = {(r["kind"], r["code"]): r for r in claims[denied]["reasons"]}
    assert {("carc", "16"), ("rarc", "N362")} <= set(denial)
    assert all(r.get("description") or r.get("text") for r in denial.values())  # codes come with their words
    assert claims[rejected]["reasons"][0]["code"].startswith("A7:562")
    payer_number = claims[denied]["payer_claim_id"]
    assert payer_number.startswith("PAYER")

    # the denied and the rejected claim wait in the mismatch queue
    queue = cli_json(home, "mismatches")
    by_kind = {f["kind"]: f for f in queue}
    assert {"claim_denied", "claim_rejected"} <= set(by_kind), queue
    finding = by_kind["claim_denied"]

    # the answer for a claim nobody sent is kept and listed
    um = cli_json(home, "claims", "unmatched")
    assert um["total"] == 1 and um["items"][0]["claim_ref"] == "NOT-OURS-1"

    # importing the same files again changes nothing
    before = rows(home, "SELECT * FROM claims ORDER BY id")
    again = cli_json(home, "x12", "import", *answers)  # by hand: the files stay where they are
    assert again["matched"] == 0 and again["unmatched"] == 0, again
    assert rows(home, "SELECT * FROM claims ORDER BY id") == before

    # resend the denied claim: a correction (frequency 7) naming the payer's claim number
    r = run_cli("resolve", str(finding["id"]), "--action", "resend", home=home)
    assert r.returncode == 0, r.stderr
    names = all_valid(out)
    assert names == ["837P-000000001.x12", "837P-000000002.x12"]
    text = (out / "837P-000000002.x12").read_text()
    assert text.count("CLM*") == 1 and f"CLM*{denied}*" in text and ":B:7*" in text
    assert f"REF*F8*{payer_number}~" in text
    assert claims_by_id(home)[denied]["state"] == "submitted"
    assert "claim_denied" not in {f["kind"] for f in cli_json(home, "mismatches")}


def void_in_the_ehr(home: Path, claim_id: str) -> None:
    """What a database source does when the EHR voids a visit (agent/dbpoll.py)."""
    s = Store.open(Paths.resolve(home), "keyring", create=False)
    try:
        with s.tx():
            (enc_id,) = s.conn.execute("SELECT encounter_id FROM claims WHERE claim_id = ?", (claim_id,)).fetchone()
            s.conn.execute("UPDATE encounters SET state = 'voided', version = version + 1, "
                           "content_hash = 'voided:' || content_hash WHERE id = ?", (enc_id,))
    finally:
        s.close()


def test_a_visit_voided_after_delivery_goes_out_as_a_frequency_8_claim(tmp_path: Path, keyring_ok) -> None:
    home, out, inbound = make_home(tmp_path, 2)
    assert cli_json(home, "sync")["delivered"] == 2
    ids = sorted(cid for (cid,) in rows(home, "SELECT claim_id FROM claims"))
    Clearinghouse(out, inbound).run()  # both paid: the 835 gives the payer's claim numbers
    assert cli_json(home, "x12", "import", *(str(p) for p in sorted(inbound.iterdir())))["matched"] > 0
    payer_number = claims_by_id(home)[ids[0]]["payer_claim_id"]
    assert payer_number

    void_in_the_ehr(home, ids[0])
    res = cli_json(home, "sync")
    assert res["error"] == "", res
    assert all_valid(out) == ["837P-000000001.x12", "837P-000000002.x12"]
    text = (out / "837P-000000002.x12").read_text()
    assert text.count("CLM*") == 1 and f"CLM*{ids[0]}*" in text and ":B:8*" in text
    assert f"REF*F8*{payer_number}~" in text
    [(detail,)] = rows(home, "SELECT detail FROM events WHERE kind = 'encounter.cancelled'")
    assert json.loads(detail)["Claim"] == ids[0]
    # once per voided version: the next sync sends nothing more
    assert cli_json(home, "sync")["error"] == ""
    assert all_valid(out) == ["837P-000000001.x12", "837P-000000002.x12"]


def test_test_mode_records_the_837_and_writes_nothing(tmp_path: Path, keyring_ok) -> None:
    home, out, _ = make_home(tmp_path, 3, extra="[mode]\ntest = true")
    res = cli_json(home, "sync")
    assert res["delivered"] == 3, res
    assert sorted(out.iterdir()) == []  # nothing reached the clearinghouse's folder
    [(send_id, target, route, files)] = rows(home, "SELECT id, target, route, files FROM testmode_sends")
    assert (target, route, files) == ("x12", "dry-run", 1)
    [(name, body)] = rows(home, "SELECT name, body FROM testmode_files WHERE send_id = ?", send_id)
    assert name.endswith("837P-test-000000001.x12") and validate(body) == []
    assert bytes(body).decode().count("CLM*") == 3
    # test files take numbers from the same sequence, under their own batch keys
    assert rows(home, "SELECT control, kind, sent_at FROM x12_interchanges") == [(1, "837P-test", "")]
