"""The claim lifecycle (agent/claims.py) on a real SQLCipher store: birth at delivery, answers in
stage order, idempotence, unmatched answers kept, rejected/denied into the mismatch queue."""

from __future__ import annotations

import json

from agent import claims
from agent.config import Config
from agent.pipeline import Pipeline
from agent.store import Store
from core.answers import Answer, Reason
from core.states import AnswerKind, ClaimState, FindingKind
from tests.helpers import dft


def _deliver(store: Store, n: int = 3) -> list[tuple[int, str]]:
    """Ingest n visits and record each as delivered claim CLM<i>; [(encounter id, claim id)]."""
    pipe = Pipeline.for_config(store, Config())
    pipe.ingest_bytes("".join(dft(i) for i in range(n)).encode(), origin="t.hl7")
    out = []
    rows = store.conn.execute("SELECT id, version FROM encounters ORDER BY id").fetchall()
    with store.tx():
        for i, (enc_id, version) in enumerate(rows):
            claims.record_delivery(store, encounter_id=enc_id, version=version, claim_id=f"CLM{i}", target="x12",
                                   remote_ids={"Claim": f"CLM{i}", "isa": "000000007", "gs": "7", "st": "0001"})
            out.append((enc_id, f"CLM{i}"))
    return out


def _state(store: Store, claim_id: str) -> tuple:
    return store.conn.execute("SELECT state, paid, adjusted, patient_resp, payer_claim_id, submissions FROM claims "
                              "WHERE claim_id = ?", (claim_id,)).fetchone()


def test_delivery_creates_a_submitted_claim_with_billed_amount(fast_store: Store) -> None:
    _deliver(fast_store, 2)
    total, items = claims.list_claims(fast_store)
    assert total == 2
    c = items[-1]
    assert c["state"] == ClaimState.SUBMITTED and c["control"]["gs"] == "7" and c["submissions"] == 1
    # dft lines: two lines priced in the message; the claim's billed amount is their sum
    enc = json.loads(fast_store.conn.execute("SELECT data FROM encounters WHERE id = ?",
                                             (c["encounter_id"],)).fetchone()[0])
    from decimal import Decimal
    expect = sum(Decimal(ln["unit_charge"] or 0) * Decimal(ln["units"]) for ln in enc["lines"])
    assert Decimal(c["billed"]) == expect and expect > 0


def test_answers_move_claims_in_stage_order_and_only_once(fast_store: Store) -> None:
    _deliver(fast_store, 3)
    ack = Answer(AnswerKind.ACK_999, "f999", ClaimState.ACCEPTED, group_control="7")
    res = claims.apply_answers(fast_store, [ack])
    assert res.matched == 1 and res.counts["999"] == 1
    assert {_state(fast_store, f"CLM{i}")[0] for i in range(3)} == {ClaimState.ACCEPTED}
    paid = Answer(AnswerKind.RA_835, "f835-0", ClaimState.PARTIALLY_PAID, claim_ref="CLM0", paid="80.00",
                  adjusted="15.00", patient_resp="5.00", payer_claim_id="PAYER9",
                  reasons=[Reason("carc", "45", group="CO", amount="15.00")], answered_on="2026-11-20")
    denied = Answer(AnswerKind.RA_835, "f835-1", ClaimState.DENIED, claim_ref="CLM1", paid="0",
                    reasons=[Reason("carc", "16", group="CO"), Reason("rarc", "N362")])
    claims.apply_answers(fast_store, [paid, denied])
    assert _state(fast_store, "CLM0") == (ClaimState.PARTIALLY_PAID, "80.00", "15.00", "5.00", "PAYER9", 1)
    assert _state(fast_store, "CLM1")[0] == ClaimState.DENIED
    # a late 277CA after the 835 is kept but does not move the claim back
    late = Answer(AnswerKind.CA_277, "f277-0", ClaimState.ACCEPTED, claim_ref="CLM0")
    claims.apply_answers(fast_store, [late])
    assert _state(fast_store, "CLM0")[0] == ClaimState.PARTIALLY_PAID
    assert len(claims.get_claim(fast_store, "CLM0")["answers"]) == 3  # 999, 835, 277CA
    # the same answers again: nothing changes, nothing is added
    before = fast_store.conn.execute("SELECT count(*) FROM claim_answers").fetchone()[0]
    again = claims.apply_answers(fast_store, [ack, paid, denied, late])
    assert again.duplicates == 4 and again.matched == 0 and not again.changed
    assert fast_store.conn.execute("SELECT count(*) FROM claim_answers").fetchone()[0] == before
    # the denial waits in the mismatch queue with its reasons, once
    rows = fast_store.conn.execute("SELECT kind, diff FROM findings").fetchall()
    assert [r[0] for r in rows] == [FindingKind.CLAIM_DENIED]
    assert [r["code"] for r in json.loads(rows[0][1])] == ["16", "N362"]


def test_unmatched_answers_are_kept_and_listed(fast_store: Store) -> None:
    _deliver(fast_store, 1)
    stray = Answer(AnswerKind.RA_835, "stray", ClaimState.PAID, claim_ref="NOT-OURS", paid="10")
    res = claims.apply_answers(fast_store, [stray])
    assert (res.matched, res.unmatched) == (0, 1)
    total, items = claims.unmatched(fast_store)
    assert total == 1 and items[0]["claim_ref"] == "NOT-OURS" and items[0]["detail"]["paid"] == "10"


def test_a_resubmission_starts_the_stages_again(fast_store: Store) -> None:
    [(enc_id, cid)] = _deliver(fast_store, 1)
    claims.apply_answers(fast_store, [Answer(AnswerKind.CA_277, "r1", ClaimState.REJECTED, claim_ref=cid,
                                             reasons=[Reason("stc", "A7:21")])])
    assert _state(fast_store, cid)[0] == ClaimState.REJECTED
    with fast_store.tx():
        claims.record_delivery(fast_store, encounter_id=enc_id, version=1, claim_id=cid, target="x12",
                               remote_ids={"gs": "8"}, resubmit=True)
    assert _state(fast_store, cid)[0] == ClaimState.SUBMITTED and _state(fast_store, cid)[5] == 2
    # now a 999 for the new group can accept it again (stage 1 after the reset)
    claims.apply_answers(fast_store, [Answer(AnswerKind.ACK_999, "a2", ClaimState.ACCEPTED, group_control="8")])
    assert _state(fast_store, cid)[0] == ClaimState.ACCEPTED
    assert claims.open_claims(fast_store, "x12") == [(cid, {"gs": "8"})]


def test_the_ledger_keeps_a_batch_number_and_never_reuses_one(fast_store: Store) -> None:
    ledger = claims.StoreLedger(lambda: _Reopen(fast_store))  # type: ignore[arg-type,return-value]
    a = ledger.interchange("batch-a", "837P")
    b = ledger.interchange("batch-b", "837P")
    assert (a, b) == (1, 2) and ledger.interchange("batch-a", "837P") == 1
    ledger.sent(a, "a.837")
    assert fast_store.conn.execute("SELECT file_name FROM x12_interchanges WHERE control = 1").fetchone()[0] == "a.837"
    # the payer's number for corrections: none until an answer brings it
    _deliver(fast_store, 1)
    assert ledger.payer_claim_id("CLM0") == ""
    claims.apply_answers(fast_store, [Answer(AnswerKind.CA_277, "p", ClaimState.ACCEPTED, claim_ref="CLM0",
                                             payer_claim_id="PAY-77")])
    assert ledger.payer_claim_id("CLM0") == "PAY-77" and ledger.payer_claim_id("nope") == ""


class _Reopen:
    """The same open store, with close() a no-op (StoreLedger closes what it opens)."""

    def __init__(self, store: Store) -> None:
        self._s = store
        self.conn = store.conn
        self.tx = store.tx

    def close(self) -> None:
        pass


def test_a_partly_accepted_999_moves_only_the_claims_of_its_transaction_set(fast_store: Store) -> None:
    pipe = Pipeline.for_config(fast_store, Config())
    pipe.ingest_bytes("".join(dft(i) for i in range(3)).encode(), origin="t.hl7")
    rows = fast_store.conn.execute("SELECT id, version FROM encounters ORDER BY id").fetchall()
    with fast_store.tx():  # one group, two transaction sets: CLM0 + CLM1 in 0001, CLM2 in 0002
        for i, (enc_id, version) in enumerate(rows):
            claims.record_delivery(fast_store, encounter_id=enc_id, version=version, claim_id=f"CLM{i}",
                                   target="x12", remote_ids={"gs": "9", "st": "0001" if i < 2 else "0002"})
    claims.apply_answers(fast_store, [
        Answer(AnswerKind.ACK_999, "p1", ClaimState.ACCEPTED, group_control="9", detail={"acknowledged_set": "0001"}),
        Answer(AnswerKind.ACK_999, "p2", ClaimState.REJECTED, group_control="9", detail={"acknowledged_set": "0002"},
               reasons=[Reason("ak", "5")])])
    assert [_state(fast_store, f"CLM{i}")[0] for i in range(3)] == [ClaimState.ACCEPTED, ClaimState.ACCEPTED,
                                                                      ClaimState.REJECTED]
