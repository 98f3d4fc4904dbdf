from __future__ import annotations

from datetime import date

from agent.validate import npi_is_valid, validate
from core.model import Address, ChargeLine, Diagnosis, Encounter, Patient, Provider, standardize

GOOD_NPI = "1234567893"  # the CMS example NPI (check digit 3)


def good() -> Encounter:
    return Encounter(
        source="csv", source_id="V1",
        patient=Patient(mrn="M1", family="Doe", given="Jane", dob="1980-01-01", sex="F",
                        address=Address(zip="02081")),
        rendering=Provider(npi=GOOD_NPI),
        dos_start="2024-01-05",
        diagnoses=[Diagnosis("E11.9"), Diagnosis("I10")],
        lines=[ChargeLine(code="99213", modifiers=["25"], dx_pointers=[1, 2], units="1", unit_charge="85.00")],
    )


def codes(enc: Encounter) -> set[str]:
    standardize(enc)
    return {f.code for f in validate(enc, today=date(2025, 1, 1)) if f.severity == "error"}


def test_npi_check_digit() -> None:
    assert npi_is_valid(GOOD_NPI)
    assert not npi_is_valid("1234567890")
    assert not npi_is_valid("123456789")
    assert not npi_is_valid("12345678AB")


def test_clean_encounter_has_no_errors() -> None:
    assert codes(good()) == set()


def test_each_rule() -> None:
    e = good(); e.patient.mrn = ""; assert "patient.mrn" in codes(e)
    e = good(); e.patient.given = ""; assert "patient.name" in codes(e)
    e = good(); e.dos_start = ""; assert "dos.missing" in codes(e)
    e = good(); e.dos_start = "2030-01-01"; assert "dos.future" in codes(e)
    e = good(); e.dos_start = "1970-01-01"; assert "dos.before_birth" in codes(e)
    e = good(); e.lines = []; assert "lines.missing" in codes(e)
    e = good(); e.rendering.npi = ""; assert "npi.missing" in codes(e)
    e = good(); e.rendering.npi = "1234567890"; assert "npi.check_digit" in codes(e)
    e = good(); e.diagnoses[0] = Diagnosis("E11"); assert "dx.not_billable" in codes(e)
    e = good(); e.diagnoses[0] = Diagnosis("E99.99"); assert "dx.unknown" in codes(e)
    e = good(); e.diagnoses[0] = Diagnosis("250.00", "ICD9"); assert "dx.system" in codes(e)
    e = good(); e.diagnoses = []; e.lines[0].dx_pointers = []; assert "dx.missing" in codes(e)
    e = good(); e.lines[0].code = "9921"; assert "code.format" in codes(e)
    e = good(); e.lines[0].code_system = "HCPCS"; e.lines[0].code = "Z9999"; assert "code.format" in codes(e)
    e = good(); e.lines[0].code_system = "SNOMED"; e.lines[0].code = "185345009"; assert "code.system" in codes(e)
    e = good(); e.lines[0].modifiers = ["25", "59", "GT", "95", "XU"]; assert "modifiers.count" in codes(e)
    e = good(); e.lines[0].modifiers = ["2"]; assert "modifier.format" in codes(e)
    e = good(); e.lines[0].dx_pointers = [1, 2, 1, 2, 1]; assert "pointers.count" in codes(e)
    e = good(); e.lines[0].dx_pointers = [3]; assert "pointer.range" in codes(e)
    e = good(); e.lines[0].units = "0"; assert "units.range" in codes(e)
    e = good(); e.lines[0].units = "-1"; assert "units.range" in codes(e)


def test_category_codes_accept_cpt_category_ii_and_hcpcs() -> None:
    e = good(); e.lines.append(ChargeLine(code="3074F", dx_pointers=[1])); assert codes(e) == set()
    e = good(); e.lines.append(ChargeLine(code="G0439", dx_pointers=[1])); assert codes(e) == set()


def test_expected_encounter_needs_no_lines() -> None:
    e = good(); e.kind = "expected"; e.lines = []; e.rendering.npi = ""
    assert codes(e) == set()


def test_messages_carry_no_patient_data() -> None:
    e = good(); e.patient.family = "Wuckert"; e.dos_start = "1970-01-01"; e.rendering.npi = "1"
    standardize(e)
    for f in validate(e):
        assert "Wuckert" not in f.message and "1980" not in f.message
