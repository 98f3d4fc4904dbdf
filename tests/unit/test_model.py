from __future__ import annotations

import pytest

from core.model import (
    Address,
    BadValue,
    ChargeLine,
    Diagnosis,
    Encounter,
    Patient,
    content_hash,
    standardize,
    std_date,
    std_decimal,
    std_icd10,
    std_name_part,
    std_phone,
    std_zip,
)


@pytest.mark.parametrize("raw,iso", [
    ("2024-01-31", "2024-01-31"), ("20240131", "2024-01-31"), ("202401311230+0100", "2024-01-31"),
    ("01/31/2024", "2024-01-31"), ("1/5/2024", "2024-01-05"), ("1/5/24", "2024-01-05"),
    ("31.01.2024", "2024-01-31"), ("2014-05-06T08:34:30Z", "2014-05-06"), ("Jan 31, 2024", "2024-01-31"),
    ("31-Jan-2024", "2024-01-31"), ("2024/01/31", "2024-01-31"), ("", ""),
])
def test_dates(raw: str, iso: str) -> None:
    assert std_date(raw) == iso


@pytest.mark.parametrize("raw", ["2024-02-30", "31/31/2024", "yesterday", "20241399"])
def test_bad_dates_raise(raw: str) -> None:
    with pytest.raises(BadValue):
        std_date(raw)


def test_names_zip_phone_codes() -> None:
    assert std_name_part("  o'NEIL-smith ") == "O'Neil-Smith"
    assert std_name_part("MCDONALD") == "McDonald"
    assert std_name_part("van  der BERG") == "Van der Berg"
    assert std_name_part("Temika453") == "Temika"
    assert std_zip("2081") == "02081"
    assert std_zip("020811234") == "02081-1234"
    assert std_phone("+1 (555) 555-1234 ext. 12") == "(555) 555-1234 x12"
    assert std_phone("555.555.1234") == "(555) 555-1234"
    assert std_icd10("e119") == "E11.9"
    assert std_icd10(" Z00.00 ") == "Z00.00"
    assert std_decimal("$1,234.5", places=2) == "1234.50"
    assert std_decimal("2.0") == "2"


def test_standardize_encounter_in_place() -> None:
    enc = Encounter(
        source="csv", source_id="V1",
        patient=Patient(mrn=" 123 ", family="SMITH", given="jane", suffix="jr.", dob="03/18/2011", sex="female",
                        address=Address(line1="1 MAIN ST", city="walpole", state="Massachusetts", zip="2081"),
                        phone="5555551234"),
        dos_start="20240105",
        diagnoses=[Diagnosis("j029", "I10"), Diagnosis("29857009", "SCT")],
        lines=[ChargeLine(code=" 99213 ", code_system="C4", modifiers=["25", " gt", ""], units="1.0",
                          unit_charge="85.5"),
               ChargeLine(code="j1100", code_system="", units="2")],
    )
    findings = standardize(enc)
    assert findings == []
    p = enc.patient
    assert (p.mrn, p.family, p.given, p.suffix, p.dob, p.sex) == ("123", "Smith", "Jane", "Jr", "2011-03-18", "F")
    assert (p.address.state, p.address.zip, p.address.city, p.address.line1) == ("MA", "02081", "Walpole", "1 Main St")
    assert p.phone == "(555) 555-1234"
    assert enc.dos_start == enc.dos_end == "2024-01-05"
    assert [(d.code, d.system) for d in enc.diagnoses] == [("J02.9", "ICD-10-CM"), ("29857009", "SNOMED")]
    assert (enc.lines[0].code, enc.lines[0].code_system, enc.lines[0].modifiers) == ("99213", "CPT", ["25", "GT"])
    assert (enc.lines[0].units, enc.lines[0].unit_charge) == ("1", "85.50")
    assert (enc.lines[1].code, enc.lines[1].code_system) == ("J1100", "HCPCS")


def test_standardize_reports_unreadable_values_without_the_value() -> None:
    enc = Encounter(source="csv", source_id="V1", patient=Patient(dob="not a date"), dos_start="13/45/2024",
                    lines=[ChargeLine(code="99213", units="lots", unit_charge="abc")])
    findings = standardize(enc)
    fields = {f.field for f in findings}
    assert {"patient.dob", "dos_start", "lines[0].units", "lines[0].unit_charge"} <= fields
    assert not any("not a date" in f.message or "lots" in f.message for f in findings)


def test_round_trip_dict() -> None:
    enc = Encounter(source="hl7v2", source_id="A1", source_system="FAC",
                    lines=[ChargeLine(code="99213", modifiers=["25"], dx_pointers=[1])],
                    diagnoses=[Diagnosis("I10")])
    again = Encounter.from_dict(enc.to_dict())
    assert again == enc
    assert again.business_key == "charge|FAC|A1"
    assert content_hash(again.to_json()) == content_hash(enc.to_json())
