"""Clearinghouse answers into the claim lifecycle on a real SQLCipher store: the simulator answers a
hand-made 837, the inbound poll imports 999 / 277CA / 835 through a real folder transport, claims
move (accepted, rejected, paid, partially paid, denied), answers for unknown claims are kept,
an unreadable file is quarantined without stopping the rest, and importing again changes nothing."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from agent import claims, x12_inbound
from agent.config import Config
from agent.pipeline import Pipeline
from agent.store import Store
from connectors.rcm.x12.transport import FolderTransport
from core.states import ClaimState, FindingKind
from tests.clearinghouse import Clearinghouse, Outcome
from tests.helpers import dft

GS = "7001"


def _deliver(store: Store, n: int) -> list[tuple[str, list[Decimal]]]:
    """Ingest n visits and record each as delivered claim CLM<i> in group GS; [(claim id, line charges)]."""
    Pipeline.for_config(store, Config()).ingest_bytes("".join(dft(i) for i in range(n)).encode(), origin="t.hl7")
    out = []
    rows = store.conn.execute("SELECT id, version, data FROM encounters ORDER BY id").fetchall()
    with store.tx():
        for i, (enc_id, version, data) in enumerate(rows):
            claims.record_delivery(store, encounter_id=enc_id, version=version, claim_id=f"CLM{i}", target="x12",
                                   remote_ids={"Claim": f"CLM{i}", "isa": f"{int(GS):09d}", "gs": GS, "st": "0001"})
            lines = json.loads(data)["lines"]
            out.append((f"CLM{i}", [Decimal(str(ln["unit_charge"])) * Decimal(str(ln["units"])) for ln in lines]))
    return out


def _837(claim_lines: list[tuple[str, list[Decimal]]], *, broken: bool = False) -> bytes:
    """A minimal 837P envelope with the CLM/SV1/REF*6R the simulator reads."""
    body = ["BHT*0019*00*B1*20260301*1200*CH"]
    for clm, charges in claim_lines:
        total = sum(charges, Decimal(0)) + (Decimal(1) if broken else 0)
        body.append(f"CLM*{clm}*{total}***11:B:1*Y*A*Y*Y")
        for j, c in enumerate(charges):
            body += [f"LX*{j + 1}", f"SV1*HC:99213*{c}*UN*1***1", "DTP*472*D8*20260301", f"REF*6R*{clm}-{j + 1}"]
    st = ["ST*837*0001*005010X222A1", *body]
    st.append(f"SE*{len(st) + 1}*0001")
    isa = ("ISA*00*          *00*          *ZZ*PRACTICE       *ZZ*CLEARINGHOUSE  *260301*1200*^*00501*"
           f"{int(GS):09d}*1*T*:")
    segs = [isa, f"GS*HC*PRACTICE*CLEARINGHOUSE*20260301*1200*{GS}*X*005010X222A1", *st, f"GE*1*{GS}",
            f"IEA*1*{int(GS):09d}"]
    return ("~".join(segs) + "~").encode()


def _claim(store: Store, cid: str) -> dict:
    c = claims.get_claim(store, cid)
    assert c is not None
    return c


def test_poll_imports_answers_and_moves_claims(fast_store: Store, tmp_path: Path) -> None:
    sent = _deliver(fast_store, 5)
    out, inbound = tmp_path / "out", tmp_path / "in"
    out.mkdir()
    inbound.mkdir()
    (out / "batch1.837").write_bytes(_837(sent))
    ch = Clearinghouse(out, inbound, reject={"CLM1": "562"},
                       outcomes={"CLM2": Outcome("partial"), "CLM3": Outcome("denied"),
                                 "CLM4": Outcome("paid", patient=("2", Decimal("10.00")))},
                       extra_claims=[("NOT-OURS-1", Decimal("42.00"))])
    ch.run()
    (inbound / "garbage.835").write_bytes(b"ISA*this is not a real interchange")
    assert sorted(p.name for p in inbound.iterdir()) == ["batch1.277", "batch1.835", "batch1.999", "garbage.835"]

    res = x12_inbound.poll(fast_store, FolderTransport(inbound)).to_dict()
    assert (res["999"], res["277CA"], res["835"]) == (1, 5, 5)  # 835: 4 claims not rejected + 1 unknown
    assert res["unmatched"] == 1 and res["matched"] == 10 and res["failed"] == 1 and res["duplicates"] == 0
    # everything left the inbound folder, only after it was committed
    assert sorted(p.name for p in inbound.iterdir()) == ["processed"]
    assert len(list((inbound / "processed").iterdir())) == 4

    states = {cid: _claim(fast_store, cid)["state"] for cid, _ in sent}
    assert states == {"CLM0": ClaimState.PAID, "CLM1": ClaimState.REJECTED, "CLM2": ClaimState.PARTIALLY_PAID,
                      "CLM3": ClaimState.DENIED, "CLM4": ClaimState.PAID}
    billed = {cid: sum(ch_, Decimal(0)) for cid, ch_ in sent}
    c0, c2, c3, c4 = (_claim(fast_store, c) for c in ("CLM0", "CLM2", "CLM3", "CLM4"))
    assert Decimal(c0["paid"]) == billed["CLM0"] and c0["payer_claim_id"].startswith("PAYER")
    assert Decimal(c2["paid"]) == (billed["CLM2"] * Decimal("0.8")).quantize(Decimal("0.01"))
    assert [(r["group"], r["code"]) for r in c2["reasons"]] == [("CO", "151")] * len(sent[2][1])
    assert Decimal(c4["patient_resp"]) == Decimal("10.00")
    assert Decimal(c4["paid"]) == billed["CLM4"] - Decimal("10.00")
    assert {(r["kind"], r["code"]) for r in c3["reasons"]} == {("carc", "16"), ("rarc", "N362")}
    c1 = _claim(fast_store, "CLM1")
    assert [r["code"] for r in c1["reasons"]] == ["A7:562:85"]
    # lines come back with our REF*6R line control numbers
    era = [a for a in c3["answers"] if a["kind"] == "835"][0]
    assert [ln["control"] for ln in era["detail"]["lines"]] == [f"CLM3-{j + 1}" for j in range(len(sent[3][1]))]

    # rejected and denied claims wait in the mismatch queue
    kinds = {r[0]: r[1] for r in fast_store.conn.execute(
        "SELECT json_extract(remote, '$.claim_id'), kind FROM findings WHERE kind IN (?, ?)",
        (FindingKind.CLAIM_REJECTED, FindingKind.CLAIM_DENIED))}
    assert kinds == {"CLM1": FindingKind.CLAIM_REJECTED, "CLM3": FindingKind.CLAIM_DENIED}

    # the answer for a claim nobody sent is kept and listed
    total, items = claims.unmatched(fast_store)
    assert total == 1 and items[0]["claim_ref"] == "NOT-OURS-1" and items[0]["kind"] == "835"

    # the unreadable file is in the quarantine, with a reason and its bytes kept encrypted
    (q,) = fast_store.conn.execute("SELECT q.reason, d.source, d.content FROM quarantine q "
                                   "JOIN documents d ON d.id = q.document_id").fetchall()
    assert "clearinghouse file" in q[0] and "ISA" in q[0] and q[1] == "x12-inbound"
    assert q[2] == b"ISA*this is not a real interchange"
    # the answer files themselves are kept in the store, once each
    assert fast_store.conn.execute("SELECT count(*) FROM documents WHERE source = 'x12-inbound' "
                                   "AND status = 'processed'").fetchone()[0] == 3

    # the same files again (by hand) change nothing
    before = fast_store.conn.execute("SELECT * FROM claims ORDER BY id").fetchall()
    answers_before = fast_store.conn.execute("SELECT count(*) FROM claim_answers").fetchone()[0]
    again = x12_inbound.import_files(fast_store, sorted((inbound / "processed").iterdir())).to_dict()
    assert again["matched"] == 0 and again["unmatched"] == 0 and again["duplicates"] == 11
    assert fast_store.conn.execute("SELECT * FROM claims ORDER BY id").fetchall() == before
    assert fast_store.conn.execute("SELECT count(*) FROM claim_answers").fetchone()[0] == answers_before
    assert fast_store.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1


def test_a_broken_837_is_rejected_by_the_999_and_goes_no_further(fast_store: Store, tmp_path: Path) -> None:
    sent = _deliver(fast_store, 2)
    out, inbound = tmp_path / "out", tmp_path / "in"
    out.mkdir()
    inbound.mkdir()
    (out / "bad.837").write_bytes(_837(sent, broken=True))  # CLM02 is not the sum of the lines
    Clearinghouse(out, inbound).run()
    assert sorted(p.name for p in inbound.iterdir()) == ["bad.999"]
    res = x12_inbound.import_files(fast_store, [inbound / "bad.999"]).to_dict()
    assert res["999"] == 1 and res["matched"] == 1
    for cid, _ in sent:
        c = _claim(fast_store, cid)
        assert c["state"] == ClaimState.REJECTED
        assert ("ak", "IK3:8") in [(r["kind"], r["code"]) for r in c["reasons"]]


def test_poll_stops_cleanly_when_the_folder_is_gone(fast_store: Store, tmp_path: Path) -> None:
    res = x12_inbound.poll(fast_store, FolderTransport(tmp_path / "missing"))
    assert res.error and "does not exist" in res.error and res.files == []
