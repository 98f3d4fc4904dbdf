"""Tests for the HL7 v2 parser (connectors.ehr.hl7v2).

The corpus files in tests/data/hl7v2 (see ATTRIBUTION.md) pin the behaviour on real-world
samples. The synthetic messages below exercise one feature each: framing, terminators,
escapes, charsets, rejections. Every assertion names concrete values, so removing a feature
makes a test fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.ehr import get_parser, hl7v2
from connectors.ehr.base import ParseError
from core.model import Encounter, PatientUpdate, Rejected, standardize

DATA = Path(__file__).resolve().parents[1] / "data" / "hl7v2"
SUPPORTED = "ChargeBridge reads DFT^P03, ADT^A04/A08 and SIU^S12"
FAMILY = "ZYQUARDT"  # a family name that appears nowhere else, for the PHI checks


def parse_file(name: str, **options: object) -> list:
    return hl7v2.parse((DATA / name).read_bytes(), name=name, options=options)


def parse_text(text: str, sep: str = "\r", **options: object) -> list:
    return hl7v2.parse(text.replace("\n", sep).encode(), name="test.hl7", options=options)


def msh(mtype: str = "DFT^P03", control: str = "CTRL1", version: str = "2.5.1",
        charset: str = "") -> str:
    return (f"MSH|^~\\&|EHR|CLINIC^1.2.3^ISO|BILLING|PM|20240105083000||{mtype}|{control}|P|"
            f"{version}|||AL|NE||{charset}")


def seg(sid: str, fields: dict[int, str]) -> str:
    """Build a segment from {field number: value}, so tests never miscount pipes."""
    out = [""] * (max(fields) + 1)
    out[0] = sid
    for n, value in fields.items():
        out[n] = value
    return "|".join(out)


PID = seg("PID", {1: "1", 3: "123-45-6789^^^SSA^SS~MRN42^^^CLINIC^MR",
                  5: f"{FAMILY}^MARY^ANNE^JR", 7: "19700412", 8: "F",
                  11: "12 MAIN ST^APT 4^BOSTON^MA^02118^USA", 13: "(617)555-0100^PRN^PH",
                  18: "ACCT77"})
PV1 = seg("PV1", {1: "1", 2: "O", 3: "CLIN1^^^MAIN",
                  7: "1234567893^WELBY^MARCUS^^^^^^^^^^NPI", 19: "VISIT9", 44: "20240105"})
FT1_A = seg("FT1", {1: "1", 2: "T1001", 4: "20240105", 6: "CG", 7: "99214^Office visit^C4",
                    10: "1", 11: "150.00", 12: "150.00",
                    19: "E11.9^Diabetes^I10~I10^Hypertension^I10",
                    25: "99214^Office visit^C4", 26: "25"})
FT1_B = seg("FT1", {1: "2", 2: "T1002", 4: "20240106", 6: "CG", 7: "83036^HbA1c^C4",
                    10: "3", 11: "300.00", 19: "Z00.00^^I10", 25: "83036^^C4", 26: "QW~91"})
DG1_2 = seg("DG1", {1: "1", 3: "I10^Essential hypertension^I10", 6: "F", 15: "2"})
DG1_1 = seg("DG1", {1: "2", 3: "E11.9^Type 2 diabetes^I10", 6: "F", 15: "1"})
IN1 = seg("IN1", {1: "1", 2: "PPO^Gold PPO", 3: "60054^^^^NIIP", 4: "AETNA",
                  5: "PO BOX 1^^EL PASO^TX^79998", 7: "(800)555-1212", 8: "GRP778",
                  17: "SPO^Spouse", 36: "W123456789"})


def dft(control: str = "CTRL1", *segments: str) -> str:
    body = segments or (PID, PV1, FT1_A, FT1_B, DG1_2, DG1_1, IN1)
    return "\n".join([msh("DFT^P03^DFT_P03", control), "EVN|P03|20240105083000", *body])


def only(results: list, kind: type) -> object:
    assert len(results) == 1, results
    assert isinstance(results[0], kind), results[0]
    return results[0]


# ---------------------------------------------------------------------------
# Corpus DFT^P03
# ---------------------------------------------------------------------------


def test_parser_is_registered_under_its_name():
    assert get_parser("hl7v2") is hl7v2
    assert hl7v2.NAME == "hl7v2"


def test_corpus_dft_p03_01():
    enc = only(parse_file("DFT-P03-01.hl7"), Encounter)
    assert (enc.kind, enc.source, enc.source_id) == ("charge", "hl7v2", "40007716")  # PV1-19
    assert enc.source_system == "GHHSFacility"  # MSH-4, first component
    p = enc.patient
    assert (p.mrn, p.family, p.given, p.middle, p.suffix) == (
        "PATID1234", "EVERYMAN", "ADAM", "A", "III")
    assert (p.dob, p.sex) == ("198808181126+0215", "M")  # raw; standardize() reads HL7 TS
    assert (p.address.line1, p.address.line2, p.address.city, p.address.state) == (
        "1000 Hospital Lane", "Ste. 123", "Ann Arbor", "MI")
    assert [(d.code, d.system) for d in enc.diagnoses] == [
        ("29857009", "SCT"), ("68235000", "SCT")]
    first, second = enc.lines
    assert (first.code, first.code_system, first.modifiers) == ("71045", "C4", ["26"])
    assert (first.units, first.unit_charge, first.line_id) == ("2", "50", "12345")
    assert first.dx_pointers == [1, 2] and first.service_date == "20191122"
    # FT1-25 (99011) wins over the FT1-7 transaction code (626.2); price is FT1-11 / units
    assert (second.code, second.code_system, second.units) == ("99011", "", "1")
    assert (second.unit_charge, second.dx_pointers) == ("120", [1])
    # PV1-7 attending carries no NPI, so the FT1-20 performer with an NPI renders
    assert (enc.rendering.npi, enc.rendering.family, enc.rendering.given) == (
        "9941339108", "Smith", "Adam")
    assert (enc.dos_start, enc.dos_end, enc.place_of_service) == ("20191122", "20191122", "21")
    cov = enc.coverages[0]
    assert (cov.payer_id, cov.payer_name, cov.member_id, cov.group, cov.relationship) == (
        "Org-12345", "Blue Cross Blue Shield of Texas", "548851236L", "Grp-12345", "spouse")


def test_corpus_dft_p03_01_standardizes_cleanly():
    enc = only(parse_file("DFT-P03-01.hl7"), Encounter)
    findings = standardize(enc)
    assert findings == []
    assert (enc.dos_start, enc.patient.dob) == ("2019-11-22", "1988-08-18")
    assert [(x.code, x.code_system) for x in enc.lines] == [("71045", "CPT"), ("99011", "CPT")]
    assert enc.lines[0].unit_charge == "50.00"


def test_corpus_dft_p03_02_adds_pr1_procedure_not_on_any_ft1():
    enc = only(parse_file("DFT-P03-02.hl7"), Encounter)
    # PR1 71045 is already charged by FT1 1; PR1 7105 is not, so it becomes a line (no price)
    assert [x.code for x in enc.lines] == ["71045", "99011", "7105"]
    extra = enc.lines[2]
    assert (extra.code_system, extra.units, extra.unit_charge, extra.service_date) == (
        "C4", "1", "", "20191122")


def test_corpus_dft_example_two_messages():
    first, second = parse_file("dft-example.hl7")
    assert isinstance(first, Encounter) and isinstance(second, Encounter)
    # no PV1 and no PID-18: the message control ID is the encounter id
    assert (first.source_id, second.source_id) == ("DSD1184185250", "DSD1184189125")
    assert first.source_system == "SENDING_FAC"
    assert first.patient.mrn == "10476"  # PID-3 repetition typed MR, not the SS one
    assert (first.patient.family, first.patient.given) == ("Duck", "Daffy")
    line = only(first.lines, object)
    assert (line.code, line.modifiers, line.units, line.dx_pointers) == (
        "73630", ["RT", "GA"], "1", [])
    assert first.dos_start == "20080528114700"
    # DG1-2 "ICD9" (v2.3 coding method) is the system when DG1-3 has no component 3
    assert [(d.code, d.system) for d in first.diagnoses] == [
        ("V76.12", "ICD9"), ("959.7", "ICD9")]
    assert (first.rendering.family, first.rendering.npi) == ("mie", "")
    line2 = only(second.lines, object)
    assert (line2.code, line2.dx_pointers) == ("76775", [1, 2])
    assert [d.code for d in second.diagnoses] == ["440.0", "441.4"]
    assert (second.rendering.family, second.rendering.given) == ("Stewart", "Patrick")
    assert second.dos_start == "20100212000000"


# ---------------------------------------------------------------------------
# Synthetic DFT^P03: field rules
# ---------------------------------------------------------------------------


def test_synthetic_dft_fields():
    enc = only(parse_text(dft()), Encounter)
    assert enc.source_id == "VISIT9"  # PV1-19 before PID-18
    assert enc.patient.mrn == "MRN42"  # the MR repetition, although SS comes first
    assert (enc.patient.phone, enc.patient.address.zip) == ("(617)555-0100", "02118")
    assert (enc.rendering.npi, enc.rendering.family) == ("1234567893", "WELBY")  # PV1-7
    # DG1-15 priority puts E11.9 first; FT1-19 Z00.00 is not in DG1, so it is appended
    assert [d.code for d in enc.diagnoses] == ["E11.9", "I10", "Z00.00"]
    a, b = enc.lines
    assert (a.code, a.modifiers, a.dx_pointers, a.unit_charge) == ("99214", ["25"], [1, 2],
                                                                   "150.00")
    assert (b.code, b.modifiers, b.units, b.dx_pointers) == ("83036", ["QW", "91"], "3", [3])
    assert b.unit_charge == "100"  # FT1-11 300.00 / FT1-10 3
    assert (enc.dos_start, enc.dos_end) == ("20240105", "20240106")
    assert enc.place_of_service == ""  # outpatient: left to the practice's configuration
    cov = only(enc.coverages, object)
    assert (cov.payer_id, cov.payer_name, cov.member_id, cov.group, cov.relationship) == (
        "60054", "AETNA", "W123456789", "GRP778", "spouse")


def test_ft1_7_is_the_code_when_ft1_25_is_empty_and_pid18_is_the_id_without_pv1():
    ft1 = seg("FT1", {1: "1", 2: "T9", 4: "20240107", 7: "99213^Office visit^C4", 10: "1",
                      11: "90"})
    enc = only(parse_text(dft("C2", PID, ft1)), Encounter)
    assert (enc.lines[0].code, enc.lines[0].code_system) == ("99213", "C4")
    assert enc.lines[0].unit_charge == "90"  # FT1-11 / 1 unit
    assert enc.source_id == "ACCT77"
    assert enc.rendering.npi == "" and enc.rendering.family == ""


def test_duplicate_dg1_codes_collapse_and_line_codes_match_across_formats():
    dup = seg("DG1", {1: "3", 3: "e119^Diabetes again^I10", 15: "3"})
    ft1 = seg("FT1", {1: "1", 4: "20240105", 7: "99213", 19: "E119~I10"})
    enc = only(parse_text(dft("D", PID, ft1, DG1_2, DG1_1, dup)), Encounter)
    assert [d.code for d in enc.diagnoses] == ["E11.9", "I10"]
    assert enc.lines[0].dx_pointers == [1, 2]  # 'E119' on the line is DG1's 'E11.9'


def test_pr1_only_adds_procedures_that_no_ft1_charges():
    pr1s = [seg("PR1", {1: "1", 2: "CPT", 3: "99214", 5: "20240105", 16: "25"}),
            seg("PR1", {1: "2", 2: "CPT", 3: "J1100^Dexamethasone", 5: "20240105",
                        16: "JW~59"})]
    enc = only(parse_text(dft("R", PID, FT1_A, *pr1s)), Encounter)
    assert [(x.code, x.code_system, x.modifiers) for x in enc.lines] == [
        ("99214", "C4", ["25"]), ("J1100", "CPT", ["JW", "59"])]


def test_dos_falls_back_to_pv1_44_when_ft1_has_no_date():
    ft1 = seg("FT1", {1: "1", 2: "T9", 7: "99213"})
    enc = only(parse_text(dft("C3", PID, PV1, ft1)), Encounter)
    assert (enc.dos_start, enc.lines[0].service_date) == ("20240105", "")


def test_npi_needs_a_flag_unless_the_option_says_xcn1_is_an_npi():
    pv1 = seg("PV1", {1: "1", 2: "I", 7: "1234567893^WELBY^MARCUS"})
    ft1 = seg("FT1", {1: "1", 4: "20240107", 7: "99213", 10: "1", 11: "90",
                      20: "1497758544^HOUSE^GREG^^^^^^NPI"})
    enc = only(parse_text(dft("C4", PID, pv1, ft1)), Encounter)
    # PV1-7 has no NPI flag; FT1-20 is flagged by its assigning authority (XCN.9)
    assert (enc.rendering.npi, enc.rendering.family) == ("1497758544", "HOUSE")
    assert enc.place_of_service == "21"  # inpatient
    enc = only(parse_text(dft("C4", PID, pv1, ft1), npi_in_xcn1=True), Encounter)
    assert (enc.rendering.npi, enc.rendering.family) == ("1234567893", "WELBY")


def test_npi_flag_by_oid_in_xcn9_subcomponent():
    ft1 = seg("FT1", {1: "1", 4: "20240107", 7: "99213", 10: "1", 11: "90",
                      20: "1497758544^HOUSE^GREG^^^^^^&2.16.840.1.113883.4.6&ISO"})
    enc = only(parse_text(dft("C5", PID, ft1)), Encounter)
    assert enc.rendering.npi == "1497758544"


# ---------------------------------------------------------------------------
# Framing, terminators, batches, escapes, charsets
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n"])
def test_segment_terminators(sep):
    results = parse_text(dft("A") + "\n" + dft("B"), sep=sep)
    assert [r.lines[0].code for r in results] == ["99214", "99214"]
    assert [len(r.lines) for r in results] == [2, 2]


def test_mixed_terminators_and_blank_lines_in_one_file():
    one = dft("A").replace("\n", "\r")
    two = dft("B").replace("\n", "\r\n")
    three = dft("C").replace("\n", "\n\n")
    data = ("\n\n" + one + "\r\n\r\n" + two + "\n   \n" + three + "\n").encode()
    results = hl7v2.parse(data, name="mixed.hl7", options={})
    assert [len(r.lines) for r in results] == [2, 2, 2]
    assert all(isinstance(r, Encounter) and r.patient.mrn == "MRN42" for r in results)


def test_utf16_file_with_bom():
    data = dft("W").replace(FAMILY, "ŁUKASZ").replace("\n", "\r").encode("utf-16")
    enc = only(hl7v2.parse(data, name="w.hl7", options={}), Encounter)
    assert (enc.patient.family, enc.lines[0].code) == ("ŁUKASZ", "99214")


def test_mllp_framing():
    frames = b"".join(b"\x0b" + dft(c).replace("\n", "\r").encode() + b"\r\x1c\r"
                      for c in ("A", "B"))
    results = hl7v2.parse(frames, name="mllp.bin", options={})
    assert [type(r) for r in results] == [Encounter, Encounter]
    assert [r.lines[1].code for r in results] == ["83036", "83036"]


def test_batch_headers_are_ignored_and_bom_is_dropped():
    text = "\n".join(["FHS|^~\\&|EHR", "BHS|^~\\&|EHR", dft("A"), dft("B"), "BTS|2", "FTS|1"])
    results = hl7v2.parse(b"\xef\xbb\xbf" + text.encode(), name="batch.hl7", options={})
    assert [type(r) for r in results] == [Encounter, Encounter]
    assert results[1].lines[-1].code == "83036"


def test_segments_before_the_first_msh_are_reported():
    results = parse_text("PID|1||X\nFT1|1\n" + dft("A"))
    assert isinstance(results[0], Rejected) and results[0].part == "before message 1"
    assert "2 line(s) (FT1, PID)" in results[0].reason
    assert isinstance(results[1], Encounter)


def test_escape_sequences():
    pid = ("PID|1||MRN1^^^^MR||O\\T\\NEIL\\E\\SMITH^ANN\\F\\MARIE^\\H\\JO\\N\\||19700412|F|||"
           "1\\S\\2 MAIN\\.br\\ST^UNIT \\R\\5^CAF\\XC3A9\\ CITY^MA^02118")
    enc = only(parse_text(dft("E", pid, FT1_A)), Encounter)
    p = enc.patient
    assert (p.family, p.given, p.middle) == ("O&NEIL\\SMITH", "ANN|MARIE", "JO")
    assert (p.address.line1, p.address.line2, p.address.city) == (
        "1^2 MAIN ST", "UNIT ~5", "CAFé CITY")


def test_escaped_delimiter_does_not_split_and_lone_backslash_survives():
    pid = "PID|1||MRN1^^^^MR||SMITH\\S\\JONES^C:\\TEMP"
    p = only(parse_text(dft("E", pid, FT1_A)), Encounter).patient
    assert (p.family, p.given) == ("SMITH^JONES", "C:\\TEMP")


def test_charset_8859_1_from_msh_18():
    text = dft("L").replace(msh("DFT^P03^DFT_P03", "L"),
                            msh("DFT^P03^DFT_P03", "L", charset="8859/1"))
    data = text.replace(FAMILY, "MÜLLER").replace("\n", "\r").encode("latin-1")
    assert b"M\xdcLLER" in data
    enc = only(hl7v2.parse(data, name="latin1.hl7", options={}), Encounter)
    assert enc.patient.family == "MÜLLER"


def test_charset_is_per_message_and_declared_charset_wins():
    latin2 = dft("L2").replace(msh("DFT^P03^DFT_P03", "L2"),
                               msh("DFT^P03^DFT_P03", "L2", charset="8859/2"))
    utf8 = dft("U8").replace(msh("DFT^P03^DFT_P03", "U8"),
                             msh("DFT^P03^DFT_P03", "U8", charset="UNICODE UTF-8"))
    data = (latin2.replace(FAMILY, "ŁUKASZ").encode("iso8859-2") + b"\r"
            + utf8.replace(FAMILY, "ŁUKASZ").encode("utf-8"))
    a, b = hl7v2.parse(data, name="mixed-charsets.hl7", options={})
    # byte 0xA3 is Ł in 8859/2 but £ in latin-1: only MSH-18 gets this right
    assert (a.patient.family, b.patient.family) == ("ŁUKASZ", "ŁUKASZ")


def test_undeclared_charset_tries_utf8_then_latin1_and_never_crashes():
    utf8 = dft("A").replace(FAMILY, "GARCÍA").encode("utf-8")
    latin = dft("B").replace(FAMILY, "GARCÍA").encode("latin-1")
    a, b = hl7v2.parse(utf8 + b"\n" + latin, name="x.hl7", options={})
    assert (a.patient.family, b.patient.family) == ("GARCÍA", "GARCÍA")
    bad_ascii = dft("C").replace(msh("DFT^P03^DFT_P03", "C"),
                                 msh("DFT^P03^DFT_P03", "C", charset="ASCII"))
    enc = only(hl7v2.parse(bad_ascii.replace(FAMILY, "NUÑEZ").encode("latin-1"),
                           name="x.hl7", options={}), Encounter)
    assert enc.patient.family == "NUÑEZ"


def test_hex_escape_uses_the_message_charset():
    text = dft("H").replace(msh("DFT^P03^DFT_P03", "H"),
                            msh("DFT^P03^DFT_P03", "H", charset="8859/1"))
    enc = only(parse_text(text.replace(FAMILY, "REN\\XC9\\")), Encounter)
    assert enc.patient.family == "RENÉ"


# ---------------------------------------------------------------------------
# ADT and SIU
# ---------------------------------------------------------------------------


def test_corpus_adt_a04_with_bom_is_a_patient_update():
    upd = only(parse_file("ADT04-251.hl7"), PatientUpdate)
    assert (upd.event, upd.source, upd.source_system) == ("A04", "hl7v2", "RDX")
    assert (upd.patient.mrn, upd.patient.family, upd.patient.given) == ("MRN12345", "Doe", "Jane")
    assert (upd.patient.dob, upd.patient.sex) == ("19780101", "F")
    assert upd.business_key == "patient|RDX|MRN12345"


def test_corpus_adt_a08_is_a_patient_update():
    upd = only(parse_file("ADT-A08-01.hl7"), PatientUpdate)
    assert (upd.event, upd.patient.mrn, upd.patient.family) == ("A08", "PATID1234", "EVERYMAN")
    assert upd.patient.address.city == "Ann Arbor"


def test_synthetic_adt_a08_picks_mr_identifier():
    text = "\n".join([msh("ADT^A08^ADT_A01", "A8"), "EVN|A08|20240105", PID, PV1])
    upd = only(parse_text(text), PatientUpdate)
    assert (upd.event, upd.patient.mrn, upd.patient.family) == ("A08", "MRN42", FAMILY)


def test_adt_without_identifier_is_rejected():
    pid = f"PID|1||||{FAMILY}^MARY||19700412|F"
    rej = only(parse_text("\n".join([msh("ADT^A04", "A4"), pid])), Rejected)
    assert rej.part == "message 1" and "PID-3" in rej.reason


def test_corpus_siu_s12_is_an_expected_encounter():
    enc = only(parse_file("SIU-S12-01.hl7"), Encounter)
    assert (enc.kind, enc.source_id, enc.source_system) == ("expected", "12345", "GHHSFacility")
    assert enc.dos_start == "20210924093000+0215"  # AIS-4
    assert (enc.rendering.family, enc.rendering.given) == ("GE", "Robert")  # AIP-3
    assert enc.patient.mrn == "PATID1234"
    assert enc.lines == [] and enc.business_key == "expected|GHHSFacility|12345"


def test_corpus_siu_s12_start_from_tq1_when_ais_has_none():
    enc = only(parse_file("SIU-S12-02.hl7"), Encounter)
    assert enc.dos_start == "202108181130+0215"  # TQ1-7, not the stale SCH-11 (2020)
    assert (enc.rendering.family, enc.rendering.given) == ("PB", "Tim")


def test_synthetic_siu_s12_with_npi_provider():
    text = "\n".join([
        msh("SIU^S12^SIU_S12", "S1"), "SCH|APPT-9|FILL-9|||||ROUTINE",
        PID, "RGS|1", "AIS|1||99213^Office visit^C4|20240210093000",
        "AIP|1||1497758544^HOUSE^GREG^^^^^^^^^^NPI|MD",
    ])
    enc = only(parse_text(text), Encounter)
    assert (enc.kind, enc.source_id, enc.dos_start) == ("expected", "APPT-9", "20240210093000")
    assert (enc.rendering.npi, enc.patient.mrn) == ("1497758544", "MRN42")


# ---------------------------------------------------------------------------
# Rejections and unreadable files
# ---------------------------------------------------------------------------


def test_corpus_oru_is_rejected_as_not_billing_relevant():
    rej = only(parse_file("ORU-R01-01.hl7"), Rejected)
    assert rej.part == "message 1"
    assert rej.reason == f"message type ORU^R01 is not billing-relevant; {SUPPORTED}"


def test_corpus_siu_s14_is_rejected():
    rej = only(parse_file("siu-example.hl7"), Rejected)
    assert rej.reason == f"message type SIU^S14 is not billing-relevant; {SUPPORTED}"


@pytest.mark.parametrize("mtype", ["ADT^A01", "MDM^T02", "VXU^V04", "DFT^P11", "BAR^P01"])
def test_other_message_types_are_rejected(mtype):
    rej = only(parse_text("\n".join([msh(mtype), PID])), Rejected)
    assert rej.reason == f"message type {mtype} is not billing-relevant; {SUPPORTED}"


@pytest.mark.parametrize("version", ["3.0", "2.9", "1.0", "V2"])
def test_unknown_version_is_rejected(version):
    rej = only(parse_text(dft("V").replace("|P|2.5.1|", f"|P|{version}|")), Rejected)
    assert "version" in rej.reason and "MSH-12" in rej.reason


@pytest.mark.parametrize("version", ["2.1", "2.3.1", "2.5.1", "2.8.2"])
def test_known_versions_are_accepted(version):
    only(parse_text(dft("V").replace("|P|2.5.1|", f"|P|{version}|")), Encounter)


def test_truncated_messages_are_rejected_and_the_rest_of_the_file_survives():
    no_ft1 = dft("T1", PID, PV1, DG1_1)
    no_pid = dft("T2", PV1, FT1_A)
    results = parse_text("\n".join([dft("OK"), no_ft1, no_pid, "MSH|^~\\&|EHR|CLINIC"]))
    assert isinstance(results[0], Encounter)
    assert [(r.part, r.reason) for r in results[1:]] == [
        ("message 2", "DFT^P03 message has no FT1 charge segments"),
        ("message 3", "DFT^P03 message has no PID segment; the message looks truncated"),
        ("message 4", "MSH segment is cut short: it has 4 fields, "
                      "and HL7 needs at least MSH-12 (version)"),
    ]


def test_a_lost_msh_is_caught_by_a_second_pid():
    glued = dft("G") + "\n" + PID + "\n" + FT1_A  # the second message lost its MSH
    rej = only(parse_text(glued), Rejected)
    assert "2 PID segments" in rej.reason


@pytest.mark.parametrize("data", [b"", b"   \r\n\n", b"\xef\xbb\xbf", b"\x0b\x1c\r"])
def test_empty_file_raises(data):
    with pytest.raises(ParseError, match="file is empty"):
        hl7v2.parse(data, name="e.hl7", options={})


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"MSH|^~\\&|EHR\x00\x00\x00",
    bytes(range(1, 9)) * 50,
])
def test_binary_file_raises(data):
    with pytest.raises(ParseError, match="file is binary, not HL7 v2 text"):
        hl7v2.parse(data, name="b.hl7", options={})


def test_text_without_msh_raises():
    with pytest.raises(ParseError, match="no MSH segment: this is not an HL7 v2 message"):
        hl7v2.parse(b"PID|1||MRN1\rFT1|1\r", name="x.hl7", options={})
    with pytest.raises(ParseError, match="no MSH segment"):
        hl7v2.parse(b"patient,code\nx,99213\n", name="x.hl7", options={})


def test_reasons_never_contain_patient_data():
    """Every rejection path, fed a message full of PHI, must not echo any of it."""
    phi = [FAMILY, "MARY", "MRN42", "19700412", "123-45-6789", "MAIN ST", "617"]
    bad = [
        dft("P1", PID, PV1),  # no FT1
        dft("P2", PV1, FT1_A),  # no PID
        dft("P3").replace("DFT^P03^DFT_P03", "ORU^R01"),  # unsupported
        dft("P4").replace("|P|2.5.1|", f"|P|{FAMILY}|"),  # version field holds a name
        dft("P5").replace("DFT^P03^DFT_P03", f"{FAMILY}^MARY"),  # type field holds a name
        "\n".join([msh("ADT^A04"), f"PID|1||||{FAMILY}^MARY||19700412"]),
        dft("P6") + "\n" + PID,  # glued messages
        f"{FAMILY}^MARY^19700412\nPID|1||MRN42\n" + dft("P7"),  # text before MSH
        f"MSH|^~\\&|{FAMILY}",
    ]
    reasons = []
    for text in bad:
        rejected = [r.reason for r in parse_text(text) if isinstance(r, Rejected)]
        assert rejected, text
        reasons += rejected
    corpus = [r for f in sorted(DATA.glob("*.hl7")) for r in parse_file(f.name)]
    reasons += [r.reason for r in corpus if isinstance(r, Rejected)]
    for reason in reasons:
        for value in phi + ["EVERYMAN", "Duck"]:
            assert value.lower() not in reason.lower(), (value, reason)


def test_every_corpus_file_parses_without_error():
    kinds = {f.name: [type(r).__name__ for r in parse_file(f.name)]
             for f in sorted(DATA.glob("*.hl7"))}
    assert kinds == {
        "ADT-A08-01.hl7": ["PatientUpdate"], "ADT04-251.hl7": ["PatientUpdate"],
        "DFT-P03-01.hl7": ["Encounter"], "DFT-P03-02.hl7": ["Encounter"],
        "ORU-R01-01.hl7": ["Rejected"], "SIU-S12-01.hl7": ["Encounter"],
        "SIU-S12-02.hl7": ["Encounter"], "dft-example.hl7": ["Encounter", "Encounter"],
        "siu-example.hl7": ["Rejected"],
    }
