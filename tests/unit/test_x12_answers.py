"""Reading clearinghouse answers: the X12 tokenizer's checks and budgets, 999 / 277CA / 835 into
Answer objects (states, amounts, reasons, fingerprints), the public samples, the code lists."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from connectors.rcm.x12.answers import parse, state_835
from connectors.rcm.x12.codes import describe, table
from connectors.rcm.x12.segments import Budget, X12FormatError, tokenize
from core.answers import Reason
from core.states import AnswerKind, ClaimState

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "x12" / "answers"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


# -- the public samples ----------------------------------------------------------------------------

EXPECTED = {  # file -> (kinds, answers)
    "x12_999_accepted.txt": (["999"], 1),
    "x12_999_rejected.txt": (["999"], 1),
    "x12_277CA_accepted.txt": (["277"], 1),
    "x12_277CA_rejected.txt": (["277"], 1),
    "cob-contractural-adjustment.835": (["835"], 1),
    "managed-care.835": (["835"], 2),
    "medicare-part-a.835": (["835"], 2),
    "secondary-payment.835": (["835"], 2),
    "tertiary-payment.835": (["835"], 1),
    "pyx12_835_mult_loops.txt": (["835"], 1),
    "pyx12_835_simple_4010.txt": (["835"], 3),
}


def test_every_sample_answer_file_parses() -> None:
    files = sorted(p.name for p in SAMPLES.iterdir() if p.suffix != ".md")
    assert files == sorted(EXPECTED), "a sample was added or removed: list it here"
    for name, (kinds, n) in EXPECTED.items():
        got = parse(sample(name))
        assert got.kinds == kinds and len(got.answers) == n, name
        assert len({a.fingerprint for a in got.answers}) == n, name


def test_999_accepted_and_rejected() -> None:
    (ok,) = parse(sample("x12_999_accepted.txt")).answers
    assert ok.kind == AnswerKind.ACK_999 and ok.state == ClaimState.ACCEPTED and ok.group_control == "17456"
    assert ok.claim_ref == "" and ok.reasons == []
    assert parse(sample("x12_999_accepted.txt")).warnings == ["IEA02 does not repeat ISA13 (interchange control number)"]
    (bad,) = parse(sample("x12_999_rejected.txt")).answers
    assert bad.state == ClaimState.REJECTED and bad.group_control == "28"
    assert [(r.kind, r.code) for r in bad.reasons] == [("ak", "IK3:1"), ("ak", "IK5:5")]
    assert bad.reasons[0].text == "segment NM at position 17"
    assert describe("ak", "IK3:1") == "Unrecognized segment ID"


def test_277ca_claim_ref_payer_number_and_categories() -> None:
    (acc,) = parse(sample("x12_277CA_accepted.txt")).answers
    assert acc.kind == AnswerKind.CA_277 and acc.state == ClaimState.ACCEPTED
    assert acc.claim_ref == "5781" and acc.payer_claim_id == "1107000000014420"
    assert [(r.kind, r.code, r.amount) for r in acc.reasons] == [("stc", "A2:20", "125")]
    assert acc.answered_on == "2011-03-11"
    (rej,) = parse(sample("x12_277CA_rejected.txt")).answers  # component separator '|' in this one
    assert rej.state == ClaimState.REJECTED and rej.claim_ref == "3920394930203"
    assert [r.code for r in rej.reasons] == ["A7:562:85"]
    assert describe("stc", "A7:562:85").startswith("Acknowledgement/Rejected for Invalid Information")


def test_835_amounts_states_and_reasons() -> None:
    a, b = parse(sample("managed-care.835")).answers
    assert (a.claim_ref, a.paid, a.patient_resp, a.payer_claim_id) == ("5554555444", "450.00", "300.00",
                                                                      "94060555410000")
    assert a.state == ClaimState.PARTIALLY_PAID  # 450 + 300 < 800 billed: CO-A2 50 kept by the payer
    assert [(r.group, r.code, r.amount) for r in a.reasons] == [("CO", "A2", "50.00"), ("PR", "1", "300.00")]
    assert a.adjusted == "50.00" and a.answered_on == "2002-03-14" and a.detail["status"] == "1"
    assert b.adjusted == "105.00" and ("CO", "45", "50.00") in [(r.group, r.code, r.amount) for r in b.reasons]
    assert a.detail["lines"][0]["code"] == "HC:99211" and a.detail["lines"][0]["paid"] == "500.00"
    # claim-level remark codes (MOA) are RARCs
    _, m = parse(sample("medicare-part-a.835")).answers
    assert ("rarc", "MA02") in [(r.kind, r.code) for r in m.reasons]


def test_835_denial_with_line_level_cas_and_remarks() -> None:
    (d,) = parse(sample("pyx12_835_mult_loops.txt")).answers
    assert d.state == ClaimState.DENIED and d.paid == "0.00" and d.detail["status"] == "4"
    assert [ln["reasons"][0]["code"] for ln in d.detail["lines"]] == ["16", "A7", "A7"]
    assert [r.code for r in d.reasons if r.kind == "rarc"] == ["N14", "N14", "N14"]
    assert "patient" not in repr(d.detail).lower() and "BACH" not in repr(d)  # NM1*QC is never read


def test_835_reversal_carries_no_state_and_the_correction_follows() -> None:
    rev, new, rev2 = parse(sample("pyx12_835_simple_4010.txt")).answers
    assert rev.state is None and rev.detail["reversal"] is True and rev.paid == "-210.00"
    assert new.claim_ref == rev.claim_ref and new.state is not None
    assert rev2.state is None
    assert rev.fingerprint != new.fingerprint


def test_state_rules() -> None:
    D = Decimal

    def carc(group: str, code: str, amount: str) -> Reason:
        return Reason(kind="carc", code=code, group=group, amount=amount)

    co16, pr1 = [carc("CO", "16", "100")], [carc("PR", "1", "100")]
    assert state_835("4", D(100), D(0), D(0), co16) == ClaimState.DENIED
    assert state_835("1", D(100), D(0), D(0), co16) == ClaimState.DENIED  # nothing paid, payer's reason
    assert state_835("1", D(100), D(0), D(100), pr1) == ClaimState.PAID  # all deductible: the patient owes
    assert state_835("1", D(100), D(80), D(20), [carc("PR", "2", "20")]) == ClaimState.PAID
    # paid at the contracted amount: the fee-schedule write-off (CO-45) is the contract, not a shortfall
    assert state_835("1", D(100), D(70), D(10), [carc("CO", "45", "20"), carc("PR", "3", "10")]) == ClaimState.PAID
    # ... but a reduction for another reason (CO-151 frequency) is a partial payment
    assert state_835("1", D(100), D(70), D(10),
                     [carc("CO", "151", "20"), carc("PR", "3", "10")]) == ClaimState.PARTIALLY_PAID
    # CO-45 covering only part of the shortfall: partial
    assert state_835("1", D(100), D(70), D(10), [carc("CO", "45", "5"), carc("CO", "97", "15")]) \
        == ClaimState.PARTIALLY_PAID
    # a service line denied while others were paid: partial, whatever the totals say
    assert state_835("1", D(100), D(100), D(0), [], line_denied=True) == ClaimState.PARTIALLY_PAID
    assert state_835("2", D(100), D(100), D(0), []) == ClaimState.PAID
    assert state_835("22", D(-100), D(-100), D(0), []) is None  # reversal
    assert state_835("5", D(100), D(0), D(0), []) is None  # pended


# -- the tokenizer ---------------------------------------------------------------------------------

def _redelimit(data: bytes, element: str, component: str, terminator: str) -> bytes:
    text = data.decode()
    old_el, old_comp, old_term = text[3], text[104], text[105]
    out = []
    for ch in text:
        out.append({old_el: element, old_comp: component, old_term: terminator}.get(ch, ch))
    return "".join(out).replace("\n", "").encode() if terminator != "\n" else "".join(out).encode()


def test_delimiters_come_from_the_isa() -> None:
    base = parse(sample("managed-care.835"))
    other = parse(_redelimit(sample("managed-care.835"), "|", ">", "\n"))
    assert [(a.claim_ref, a.paid, a.state, [r.code for r in a.reasons]) for a in other.answers] == \
        [(a.claim_ref, a.paid, a.state, [r.code for r in a.reasons]) for a in base.answers]
    assert other.answers[0].detail["lines"][0]["code"] == "HC:99211"


def test_clear_errors_without_patient_data() -> None:
    ca = sample("x12_277CA_rejected.txt")
    cases = {
        b"hello, not x12": "does not start with an ISA",
        ca[:80]: "ends inside its ISA header",
        ca.replace(b"*ZZ*EMEDNYBAT      *", b"*ZZ*EMEDNYBAT *", 1): "ISA06 is 10 characters wide",
        ca[: ca.index(b"IEA")]: "before its IEA",
        ca.replace(b"SE*24*000001120~", b""): "no SE segment",
        ca.replace(b"ST*277", b"ST*837"): "transaction set 837 is not an answer",
    }
    for data, expect in cases.items():
        with pytest.raises(X12FormatError) as e:
            parse(data)
        assert expect in e.value.title, (expect, e.value.title)
        assert e.value.fix
        for name in ("CLILNAME", "CLIFNAME", "XX99999X"):  # the sample's patient
            assert name not in str(e.value)


def test_budgets() -> None:
    data = sample("managed-care.835")
    with pytest.raises(X12FormatError, match="bytes"):
        tokenize(data, budget=Budget(max_bytes=500))
    with pytest.raises(X12FormatError, match="segments"):
        tokenize(data, budget=Budget(max_segments=10))
    with pytest.raises(X12FormatError, match="elements"):
        tokenize(data, budget=Budget(max_elements=8))
    with pytest.raises(X12FormatError, match="longer than"):
        tokenize(data, budget=Budget(max_element_chars=12))
    bad_amount = data.replace(b"CLP*5554555444*1*800.00", b"CLP*5554555444*1*8e9999")
    with pytest.raises(X12FormatError, match="CLP03 is not an amount|CLP03 is out of range"):
        parse(bad_amount)


def test_fingerprints_are_stable_and_content_sensitive() -> None:
    one = [a.fingerprint for a in parse(sample("managed-care.835")).answers]
    assert one == [a.fingerprint for a in parse(sample("managed-care.835")).answers]
    changed = sample("managed-care.835").replace(b"CAS*PR*1*600.00", b"CAS*PR*1*601.00")
    two = [a.fingerprint for a in parse(changed).answers]
    assert two[0] == one[0] and two[1] != one[1]


def test_partly_accepted_999_answers_per_transaction_set() -> None:
    isa = "ISA*00*          *00*          *ZZ*CH             *ZZ*US             *260301*1200*^*00501*000000042*0*T*:~"
    body = ["GS*FA*CH*US*20260301*1200*42*X*005010X231A1", "ST*999*0001*005010X231A1", "AK1*HC*77*005010X222A1",
            "AK2*837*0001*005010X222A1", "IK5*A", "AK2*837*0002*005010X222A1", "IK3*CLM*12**8",
            "IK4*2*782*7*SECRETVALUE", "IK5*R*5", "AK9*P*2*2*1", "SE*10*0001", "GE*1*42", "IEA*1*000000042"]
    got = parse((isa + "~".join(body) + "~").encode())
    a, b = got.answers
    assert (a.state, a.detail["acknowledged_set"]) == (ClaimState.ACCEPTED, "0001")
    assert (b.state, b.detail["acknowledged_set"]) == (ClaimState.REJECTED, "0002")
    assert [r.code for r in b.reasons] == ["IK3:8", "IK4:7", "IK5:5"] and b.reasons[1].text == "element CLM02"
    assert "SECRETVALUE" not in repr(got)  # IK404 copies the bad value: never kept


# -- code lists ------------------------------------------------------------------------------------

def test_code_lists() -> None:
    carc = table("carc")
    for code in ("1", "2", "3", *map(str, range(4, 15)), "16", "18", "22", "23", "26", "27", "29", "31", "45",
                 "50", "96", "97", "109", "119", "151", "167", "197", "204", "242", "253"):
        assert carc.get(code), code
    assert len(carc) >= 60
    assert describe("carc", "45").startswith("Charge exceeds fee schedule")
    assert describe("carc", "CO-45") == describe("carc", "45")
    for code in ("M15", "M51", "N130", "N362", "MA130"):
        assert describe("rarc", code), code
    for cat in ("A0", "A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "P1", "F1", "F2"):
        assert describe("stc", cat + ":20"), cat
    assert describe("carc", "99999") == "" and describe("nope", "1") == "" and describe("carc", "") == ""
    assert (SAMPLES.parent.parent.parent.parent / "connectors/rcm/x12/data/SOURCES.md").is_file()
