"""837P writer + pyx12 validation: structure, control numbers, HL parents, frequency codes,
escaping, and that every file written here passes pyx12."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from connectors.rcm.x12 import writer837 as w
from connectors.rcm.x12.validate import validate
from core.model import Address, ChargeLine, Coverage, Diagnosis, Encounter, Patient, Provider

DATA = Path(__file__).resolve().parents[1] / "data" / "x12"
PRACTICE = w.Practice(name="Springfield Family Medicine", npi="1234567893", tax_id="123456789",
                      street="1 Clinic Way", city="Springfield", state="IL", zip="62704", phone="2175550100",
                      taxonomy="207Q00000X", pos="11")
WHEN = datetime(2026, 3, 2, 9, 30)


def enc(i: int, *, rel: str = "self", dx: bool = True, family: str = "Doe", member: str | None = None,
        pos: str = "") -> Encounter:
    return Encounter(
        source="hl7v2", source_id=f"V{i:05d}", source_system="EHR",
        patient=Patient(mrn=f"M{i}", family=family, given="Jane", dob="1980-02-03", sex="F",
                        address=Address(line1=f"{i} Main St", city="Springfield", state="IL", zip="62704")),
        coverages=[Coverage(payer_name="Acme Health", payer_id="60054", member_id=member or f"W{i:09d}",
                            group="G1", relationship=rel)],
        rendering=Provider(npi="1245319599", family="Smith", given="Ann", taxonomy="207Q00000X"),
        dos_start="2026-03-01", place_of_service=pos,
        diagnoses=[Diagnosis("E11.9"), Diagnosis("I10")] if dx else [],
        lines=[ChargeLine(code="99213", modifiers=["25"], dx_pointers=[1, 2], units="1", unit_charge="125.00",
                          line_id=f"L{i}-1"),
               ChargeLine(code="93000", dx_pointers=[2], units="2", unit_charge="40.25", line_id=f"L{i}-2")])


def ci(e: Encounter, **kw) -> w.ClaimInput:
    return w.ClaimInput(e, w.claim_id(e.business_key), **kw)


def write(claims, control: int = 123) -> w.Batch:
    return w.write_837(claims, PRACTICE, w.Envelope("CBSENDER", "CLEARHOUSE", control, receiver_name="Clearing",
                                                    when=WHEN))


def segments(text: str) -> list[list[str]]:
    return [s.strip().split("*") for s in text.split("~") if s.strip()]


def test_envelope_control_numbers_and_counts_and_pyx12_passes() -> None:
    b = write([ci(enc(i)) for i in range(3)], control=123)
    segs = segments(b.text)
    isa, gs, ge, iea = segs[0], segs[1], segs[-2], segs[-1]
    assert isa[13] == "000000123" and iea[2] == "000000123" and iea[1] == "1"
    assert gs[6] == "123" and ge[2] == "123" and ge[1] == "1"
    assert isa[15] == "T" and gs[8] == "005010X222A1" and len("*".join(isa)) == 105
    st = next(i for i, s in enumerate(segs) if s[0] == "ST")
    se = next(i for i, s in enumerate(segs) if s[0] == "SE")
    assert segs[st][2] == segs[se][2] == "0001" and int(segs[se][1]) == se - st + 1
    assert [s for s in segs if s[0] == "CLM"].__len__() == 3 and b.claims == 3 and not b.refused
    assert validate(b.text) == []


def test_hl_parents_and_2000c_only_when_the_patient_is_not_the_subscriber() -> None:
    other = enc(2, rel="spouse")
    cov = other.coverages[0]
    for k, v in (("subscriber_family", "Doe"), ("subscriber_given", "John"), ("subscriber_street", "2 Main St"),
                 ("subscriber_city", "Springfield"), ("subscriber_state", "IL"), ("subscriber_zip", "62704"),
                 ("subscriber_dob", "1979-05-06"), ("subscriber_sex", "M")):
        setattr(cov, k, v)
    b = write([ci(enc(1)), ci(other)])
    hls = [s for s in segments(b.text) if s[0] == "HL"]
    assert [(h[1], h[2], h[3], h[4]) for h in hls] == [("1", "", "20", "1"), ("2", "1", "22", "0"),
                                                       ("3", "1", "22", "1"), ("4", "3", "23", "0")]
    segs = segments(b.text)
    assert ["PAT", "01"] in segs and any(s[:2] == ["NM1", "QC"] for s in segs)
    sbr = [s for s in segs if s[0] == "SBR"]
    assert sbr[0][2] == "18" and sbr[1][2] == ""
    assert validate(b.text) == []


def test_a_spouse_coverage_without_the_subscriber_is_refused_not_guessed() -> None:
    b = write([ci(enc(1)), ci(enc(2, rel="child"))])
    assert b.claims == 1 and "subscriber" in b.refused[1]
    assert validate(b.text) == []


def test_claim_ids_and_line_control_numbers_are_stable_and_short() -> None:
    e = enc(7)
    a, b = write([ci(e)], control=5), write([ci(enc(7))], control=6)
    assert w.claim_id(e.business_key) == w.claim_id(enc(7).business_key)
    assert len(w.claim_id(e.business_key)) <= 20 and re.fullmatch(r"[A-Z0-9]+", w.claim_id(e.business_key))
    assert w.claim_id(e.business_key) != w.claim_id(enc(8).business_key)
    assert a.line_ids[0] == b.line_ids[0] and len(set(a.line_ids[0])) == 2
    refs = [s[2] for s in segments(a.text) if s[:2] == ["REF", "6R"]]
    assert refs == a.line_ids[0]
    clm = next(s for s in segments(a.text) if s[0] == "CLM")
    assert clm[1] == w.claim_id(e.business_key) and clm[2] == "205.5" and clm[5] == "11:B:1"


def test_frequency_codes_correction_carries_the_payers_claim_number() -> None:
    b = write([ci(enc(1), frequency=w.FREQ_CORRECTION, payer_claim_id="PAYER123"), ci(enc(2), frequency="7"),
               ci(enc(3), frequency=w.FREQ_VOID, payer_claim_id="PAYER9")])
    segs = segments(b.text)
    clms = [s[5] for s in segs if s[0] == "CLM"]
    assert clms == ["11:B:7", "11:B:7", "11:B:8"]
    assert [s[2] for s in segs if s[:2] == ["REF", "F8"]] == ["PAYER123", "PAYER9"]
    assert validate(b.text) == []


def test_place_of_service_from_the_encounter_else_the_practice() -> None:
    b = write([ci(enc(1, pos="02")), ci(enc(2))])
    assert [s[5].split(":")[0] for s in segments(b.text) if s[0] == "CLM"] == ["02", "11"]


def test_delimiters_in_free_text_are_folded_and_in_identifiers_refused() -> None:
    b = write([ci(enc(1, family="O'Neil*Sm~ith:Jr^é")), ci(enc(2, member="W12*34"))])
    nm1 = next(s for s in segments(b.text) if s[:2] == ["NM1", "IL"])
    assert nm1[3] == "O'NEIL SM ITH JR E"
    assert 1 in b.refused and "member id" in b.refused[1] and "W12" not in b.refused[1]
    assert validate(b.text) == []


@pytest.mark.parametrize("mutate,field", [
    (lambda e: setattr(e.lines[0], "code", "99X1"), "procedure code"),
    (lambda e: setattr(e.lines[0], "modifiers", ["2", "25"]), "modifier"),
    (lambda e: setattr(e.lines[0], "unit_charge", "NaN"), "charge"),
    (lambda e: setattr(e.lines[0], "unit_charge", ""), "no charge amount"),
    (lambda e: setattr(e.lines[0], "dx_pointers", [5]), "pointers"),
    (lambda e: setattr(e.patient, "dob", ""), "birth date"),
    (lambda e: setattr(e.rendering, "npi", "1234567890"), "NPI"),
    (lambda e: setattr(e, "coverages", []), "no insurance coverage"),
    (lambda e: setattr(e.coverages[0], "payer_id", ""), "payer id"),
    (lambda e: setattr(e, "lines", e.lines * 26), "at most 50"),
])
def test_values_are_checked_at_the_boundary(mutate, field) -> None:
    e = enc(1)
    mutate(e)
    b = write([ci(enc(0)), ci(e)])
    assert b.claims == 1 and field in b.refused[1], b.refused
    assert "Doe" not in b.refused[1] and "W000000001" not in b.refused[1]
    assert validate(b.text) == []


def test_a_claim_with_no_diagnosis_fails_pyx12_and_the_error_points_at_that_claim() -> None:
    b = write([ci(enc(0)), ci(enc(1, dx=False)), ci(enc(2))])
    issues = validate(b.text)
    assert issues and {b.claim_at(i.line) for i in issues} == {1}
    assert any(i.segment == "HI" for i in issues)
    text = " ".join(str(i) for i in issues)
    assert "DOE" not in text and "W000000001" not in text


def test_element_errors_never_quote_the_value() -> None:
    b = write([ci(enc(0))])
    broken = b.text.replace("DMG*D8*19800203*F", "DMG*D8*19800203*Q")  # a sex code pyx12 refuses
    issues = validate(broken)
    assert issues and all("Q" not in i.message.replace("Qual", "") for i in issues), issues
    assert any(i.element.startswith("DMG03") for i in issues)


def test_large_batches_split_into_transactions(monkeypatch) -> None:
    monkeypatch.setattr(w, "MAX_CLAIMS_PER_ST", 2)
    b = write([ci(enc(i)) for i in range(5)])
    segs = segments(b.text)
    assert [s[2] for s in segs if s[0] == "ST"] == ["0001", "0002", "0003"] == b.st_controls
    assert segments(b.text)[-2][1] == "3" and b.st_of == {0: "0001", 1: "0001", 2: "0002", 3: "0002", 4: "0003"}
    assert validate(b.text) == []


def test_practice_settings_are_checked_once_for_the_batch() -> None:
    bad = w.Practice(**{**PRACTICE.__dict__, "npi": "1234567890"})
    with pytest.raises(w.ClaimError, match="practice NPI"):
        w.write_837([ci(enc(1))], bad, w.Envelope("S", "R", 1))
    with pytest.raises(w.ClaimError, match="sender id"):
        w.write_837([ci(enc(1))], PRACTICE, w.Envelope("S*X", "R", 1))


@pytest.mark.parametrize("name", ["x12_valid_imsweb.txt", "demo.example1.837"])
def test_corpus_samples_are_read_by_the_validator(name: str) -> None:
    """Public samples (tests/data/x12/SOURCES.md): pyx12 reads them; its findings on them are
    the samples' own (e.g. imsweb's HI codes are 4010-style), and come back without values."""
    issues = validate((DATA / name).read_bytes())
    for i in issues:
        assert i.message and "8901" not in i.message
