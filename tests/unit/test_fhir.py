"""FHIR R4 parser: Synthea corpus values, bundle kinds, NDJSON, references, errors, no PHI in reasons."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.ehr import fhir, get_parser
from connectors.ehr.base import ParseError
from core.model import Encounter, Rejected, standardize

DATA = Path(__file__).resolve().parent.parent / "data" / "fhir"
TEMIKA = DATA / "Temika453_Wuckert783_b37f7960-7e9e-f3f7-f891-79ae4f632406.json"
PRACTITIONERS = DATA / "practitionerInformation1714182814995.json"
NPI = "http://hl7.org/fhir/sid/us-npi"
CPT = "http://www.ama-assn.org/go/cpt"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def run(doc: Any, name: str = "doc.json", **options: Any) -> list[Any]:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return fhir.parse(data, name=name, options=options)


def encounters(out: list[Any]) -> list[Encounter]:
    return [p for p in out if isinstance(p, Encounter)]


def rejected(out: list[Any]) -> list[Rejected]:
    return [p for p in out if isinstance(p, Rejected)]


@pytest.fixture(scope="module")
def temika() -> list[Any]:
    return run(TEMIKA.read_bytes(), name=TEMIKA.name)


def by_id(out: list[Any], prefix: str) -> Encounter:
    return next(e for e in encounters(out) if e.source_id.startswith(prefix))


# ---------------------------------------------------------------------------
# Synthea corpus
# ---------------------------------------------------------------------------


def test_registered_and_detected() -> None:
    assert get_parser("fhir") is fhir and fhir.NAME == "fhir"


def test_r4_type_list_is_complete() -> None:
    assert len(fhir.R4_RESOURCE_TYPES) == 146
    assert {"Patient", "Encounter", "Claim", "ExplanationOfBenefit", "MedicinalProductUndesirableEffect",
            "VisionPrescription", "Bundle"} <= fhir.R4_RESOURCE_TYPES
    assert "Foo" not in fhir.R4_RESOURCE_TYPES and "Evidence Report" not in fhir.R4_RESOURCE_TYPES


def test_synthea_bundle_counts(temika: list[Any]) -> None:
    encs = encounters(temika)
    assert len(encs) == 23  # one per FHIR Encounter
    assert rejected(temika) == []  # Observation, EOB, DocumentReference... are ignored silently
    assert sum(len(e.lines) for e in encs) == 77
    assert sum(len(e.diagnoses) for e in encs) == 25
    assert all(e.kind == "charge" and e.source == "fhir" for e in encs)
    assert {e.source_system for e in encs} == {"https://github.com/synthetichealth/synthea"}
    systems = {line.code_system for e in encs for line in e.lines}
    assert systems == {SCT, "http://hl7.org/fhir/sid/cvx", "http://loinc.org", RXNORM}
    assert sum(1 for e in encs for line in e.lines if line.code_system == RXNORM) == 7  # 7 pharmacy claims


def test_synthea_encounter_with_procedure(temika: list[Any]) -> None:
    enc = by_id(temika, "81c86a96-6069-1a45-4f2d-d63fef0bd37c")
    assert enc.dos_start == "2015-01-12T17:34:30-05:00"
    assert enc.dos_end == "2015-01-12T17:49:30-05:00"
    assert enc.rendering.npi == "9999985499"  # from a conditional reference Practitioner?identifier=...
    assert (enc.rendering.given, enc.rendering.family) == ("Abdul218", "White193")
    assert enc.billing.organization == "STEWARD NORWOOD HOSPITAL INC"
    assert [(c.payer_name) for c in enc.coverages] == ["Medicaid"]
    assert [(d.code, d.system) for d in enc.diagnoses] == [("195662009", SCT)]
    assert [(ln.code, ln.code_system, ln.units, ln.unit_charge) for ln in enc.lines] == [
        ("185345009", SCT, "1", "85.55"),  # visit line priced from Claim.total - item nets
        ("117015009", SCT, "1", "2635.03"),  # throat culture
    ]
    p = enc.patient
    assert (p.mrn, p.family, p.given, p.dob, p.sex) == (
        "b37f7960-7e9e-f3f7-f891-79ae4f632406", "Wuckert783", "Temika453", "2011-03-18", "female")
    assert (p.address.line1, p.address.city, p.address.state, p.address.zip) == (
        "676 Kirlin Village Suite 22", "Walpole", "MA", "02081")
    assert p.phone == "555-320-8883"
    assert standardize(enc) == []
    assert (enc.dos_start, enc.patient.family, enc.lines[0].code_system) == ("2015-01-12", "Wuckert", "SNOMED")


def test_synthea_diagnosis_echo_items_are_not_lines(temika: list[Any]) -> None:
    enc = by_id(temika, "95d11eb7")  # COVID visit: 7 diagnoses listed again as claim items
    assert [d.code for d in enc.diagnoses] == [
        "25064002", "49727002", "84229001", "68962001", "57676002", "386661006", "840539006"]
    assert [ln.code for ln in enc.lines] == ["185345009", "261352009", "92143-7", "94531-1"]
    assert [ln.unit_charge for ln in enc.lines] == ["85.55", "2.20", "74.58", "74.58"]


def test_synthea_institutional_claim_and_vaccines(temika: list[Any]) -> None:
    er = by_id(temika, "96b94d93")
    assert er.rendering.npi == "9999908293"
    assert [(ln.code, ln.unit_charge) for ln in er.lines] == [
        ("50849002", "146.18"), ("60027007", "431.40"), ("274474001", "431.40"), ("198405", "383.73")]
    assert [d.code for d in er.diagnoses] == ["125605004", "263102004"]
    well = by_id(temika, "2950dc87")
    assert [ln.code for ln in well.lines] == ["410620009", "21", "10", "140", "20", "03", "430193006"]
    assert well.lines[1].code_system == "http://hl7.org/fhir/sid/cvx"


def test_unpriced_line_stays_blank_when_total_does_not_cover_it(temika: list[Any]) -> None:
    enc = by_id(temika, "e0217fa2")  # Claim.total is below the sum of the item nets
    assert enc.lines[0].code == "410620009" and enc.lines[0].unit_charge == ""


def test_pharmacy_claims_follow_the_visit_and_can_be_dropped(temika: list[Any]) -> None:
    enc = by_id(temika, "7dce9f98")  # a visit with two prescriptions, each on its own pharmacy Claim
    assert [(ln.code, ln.code_system, ln.unit_charge) for ln in enc.lines] == [
        ("185345009", SCT, "85.55"), ("308192", RXNORM, "290.82"), ("198405", RXNORM, "416.70")]
    out = run(TEMIKA.read_bytes(), include_pharmacy_claims=False)
    assert [ln.code for ln in by_id(out, "7dce9f98").lines] == ["185345009"]
    assert sum(len(e.lines) for e in encounters(out)) == 70
    assert rejected(out) == []  # dropped on purpose, not an error


def test_practitioner_resolved_when_in_same_bundle() -> None:
    bundle = json.loads(TEMIKA.read_text())
    bundle["type"] = "collection"
    bundle["entry"] += json.loads(PRACTITIONERS.read_text())["entry"]
    enc = by_id(run(bundle), "81c86a96")
    assert enc.rendering.npi == "9999985499"
    assert enc.rendering.family == "White193" and enc.rendering.given == "Abdul218"


def test_practitioner_file_alone_has_nothing_to_bill() -> None:
    with pytest.raises(ParseError, match="no Encounter resources.*Practitioner, PractitionerRole"):
        run(PRACTITIONERS.read_bytes())


# ---------------------------------------------------------------------------
# Synthetic documents
# ---------------------------------------------------------------------------


def resources(family: str = "Doe", ref=lambda t, i: f"{t}/{i}") -> list[dict[str, Any]]:
    """A small, complete professional claim: patient, visit, doctor, payer, claim, condition."""
    return [
        {"resourceType": "Patient", "id": "p1", "identifier": [
            {"type": {"coding": [{"code": "SS"}]}, "system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-00-1111"},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
             "system": "urn:mrn", "value": "MRN-1"}],
         "name": [{"use": "old", "family": "Old"}, {"use": "official", "family": family, "given": ["Ann", "B"]}],
         "birthDate": "1980-02-03", "gender": "female",
         "telecom": [{"system": "email", "value": "a@b.c"}, {"system": "phone", "value": "555-111-2222", "use": "home"}],
         "address": [{"use": "home", "line": ["1 Main St", "Apt 2"], "city": "Boston", "state": "MA",
                      "postalCode": "02101"}]},
        {"resourceType": "Encounter", "id": "e1", "status": "finished",
         "identifier": [{"use": "official", "system": "urn:ehr:visits", "value": "V-100"}],
         "subject": {"reference": ref("Patient", "p1")},
         "period": {"start": "2024-03-01T09:00:00Z", "end": "2024-03-01T09:30:00Z"},
         "participant": [{"individual": {"reference": ref("Practitioner", "dr1")}}]},
        {"resourceType": "Practitioner", "id": "dr1", "identifier": [{"system": NPI, "value": "1234567893"}],
         "name": [{"family": "Smith", "given": ["Jo"]}]},
        {"resourceType": "Organization", "id": "o1", "identifier": [{"system": NPI, "value": "1111111112"}],
         "name": "Main Street Clinic"},
        {"resourceType": "Organization", "id": "payer1", "identifier": [{"system": "urn:payer", "value": "60054"}],
         "name": "Aetna"},
        {"resourceType": "Coverage", "id": "cov1", "status": "active", "subscriberId": "SUB9",
         "identifier": [{"type": {"coding": [{"code": "MB"}]}, "value": "MEM123"}],
         "beneficiary": {"reference": ref("Patient", "p1")}, "relationship": {"coding": [{"code": "self"}]},
         "payor": [{"reference": ref("Organization", "payer1")}],
         "class": [{"type": {"coding": [{"code": "group"}]}, "value": "GRP7"}]},
        {"resourceType": "Condition", "id": "c1", "encounter": {"reference": ref("Encounter", "e1")},
         "code": {"coding": [{"system": SCT, "code": "38341003"}, {"system": ICD, "code": "I10"}]}},
        {"resourceType": "Claim", "id": "cl1", "status": "active", "use": "claim",
         "type": {"coding": [{"code": "professional"}]}, "patient": {"reference": ref("Patient", "p1")},
         "provider": {"reference": ref("Organization", "o1")},
         "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": ref("Coverage", "cov1")}}],
         "diagnosis": [
             {"sequence": 1, "diagnosisCodeableConcept": {"coding": [{"system": ICD, "code": "E11.9"}]}},
             {"sequence": 2, "diagnosisReference": {"reference": ref("Condition", "c1")}}],
         "item": [
             {"sequence": 1, "encounter": [{"reference": ref("Encounter", "e1")}],
              "productOrService": {"coding": [{"system": SCT, "code": "185349003"}, {"system": CPT, "code": "99213"}]},
              "modifier": [{"coding": [{"code": "25"}]}], "quantity": {"value": 1}, "unitPrice": {"value": 150.00},
              "diagnosisSequence": [2, 1], "servicedDate": "2024-03-01"},
             {"sequence": 2, "productOrService": {"coding": [{"system": CPT, "code": "81002"}]},
              "quantity": {"value": 2}, "net": {"value": 30.00}, "diagnosisSequence": [1]}]},
        {"resourceType": "Observation", "id": "obs1", "status": "final", "code": {"text": "ignored"}},
    ]


def bundle(kind: str, res: list[dict[str, Any]], *, uuid: bool = False) -> dict[str, Any]:
    def url(r: dict[str, Any]) -> str:
        rid = r.get("id", "none") if isinstance(r, dict) else "none"
        return f"urn:uuid:{rid}" if uuid else f"http://ehr.example/fhir/{r.get('resourceType')}/{rid}"
    return {"resourceType": "Bundle", "type": kind,
            "entry": [{"fullUrl": url(r), "resource": r} for r in res]}


def check_claim(enc: Encounter) -> None:
    assert (enc.source_id, enc.source_system) == ("V-100", "urn:ehr:visits")
    assert (enc.patient.mrn, enc.patient.family, enc.patient.given, enc.patient.middle) == ("MRN-1", "Doe", "Ann", "B")
    assert (enc.patient.address.line1, enc.patient.address.line2, enc.patient.phone) == ("1 Main St", "Apt 2", "555-111-2222")
    assert (enc.rendering.npi, enc.rendering.family) == ("1234567893", "Smith")
    assert (enc.billing.npi, enc.billing.organization) == ("1111111112", "Main Street Clinic")
    assert [(c.payer_name, c.payer_id, c.member_id, c.group, c.relationship) for c in enc.coverages] == [
        ("Aetna", "60054", "MEM123", "GRP7", "self")]
    assert [(d.code, d.system) for d in enc.diagnoses] == [("E11.9", ICD), ("I10", ICD)]
    first, second = enc.lines
    assert (first.code, first.code_system, first.modifiers, first.units, first.unit_charge) == (
        "99213", CPT, ["25"], "1", "150.0")
    assert (first.dx_pointers, first.service_date, first.line_id) == ([2, 1], "2024-03-01", "cl1.1")
    assert (second.code, second.units, second.unit_charge, second.dx_pointers) == ("81002", "2", "15.0", [1])


@pytest.mark.parametrize("kind", ["transaction", "batch", "collection", "searchset", "transaction-response",
                                  "batch-response", "document"])
def test_bundle_kinds(kind: str) -> None:
    doc = bundle(kind, resources())
    doc["entry"].append({"response": {"status": "201 Created"}})  # response-only entries are skipped
    out = run(doc)
    assert rejected(out) == []
    check_claim(encounters(out)[0])


def test_uuid_references_resolve_by_full_url() -> None:
    out = run(bundle("transaction", resources(ref=lambda t, i: f"urn:uuid:{i}"), uuid=True))
    check_claim(encounters(out)[0])


def test_absolute_and_versioned_references() -> None:
    out = run(bundle("collection", resources(ref=lambda t, i: f"https://other.example/fhir/{t}/{i}/_history/3")))
    check_claim(encounters(out)[0])


def test_conditional_references() -> None:
    res = resources()
    enc = res[1]
    enc["subject"] = {"reference": "Patient?identifier=urn:mrn|MRN-1"}
    enc["participant"] = [{"individual": {"reference": f"Practitioner?identifier={NPI}|1234567893"}}]
    out = encounters(run(bundle("transaction", res)))[0]
    assert (out.patient.mrn, out.patient.family, out.rendering.family) == ("MRN-1", "Doe", "Smith")
    # not in the file: the identifier inside the conditional reference is still used
    res = [r for r in resources() if r["resourceType"] not in ("Patient", "Practitioner")]
    res[0]["subject"] = {"reference": "Patient?identifier=urn:mrn|MRN-77"}
    res[0]["participant"] = [{"individual": {"reference": f"Practitioner?identifier={NPI}|1234567893",
                                             "display": "Dr. Jo Smith"}}]
    out = encounters(run(bundle("transaction", res)))[0]
    assert (out.patient.mrn, out.rendering.npi, out.rendering.given, out.rendering.family) == (
        "MRN-77", "1234567893", "Jo", "Smith")


def test_single_resource_with_unresolved_patient() -> None:
    enc = resources()[1]
    out = run(enc)
    assert len(out) == 1
    only = out[0]
    assert only.source_id == "V-100" and only.patient.mrn == "p1" and only.lines == []


def test_ndjson_with_bad_and_unknown_lines() -> None:
    lines = [json.dumps(r) for r in resources()]
    lines.insert(2, '{"resourceType": "Patient", "id": ')
    lines.insert(4, json.dumps({"resourceType": "FooBar", "id": "x"}))
    lines.insert(5, "")
    out = run("\n".join(lines).encode(), name="export.ndjson")
    check_claim(encounters(out)[0])
    assert rejected(out) == [
        Rejected("line 3", "line 3: not valid JSON (Expecting value at column 35); fix or remove this line, "
                           "the other lines were read"),
        Rejected("line 5", "line 5: resource type 'FooBar' is not a FHIR R4 resource type; the rest of the "
                           "file was read"),
    ]


def test_ndjson_detected_without_extension() -> None:
    out = run("\n".join(json.dumps(r) for r in resources()).encode(), name="download.json")
    check_claim(encounters(out)[0])


def test_unknown_resource_type_in_bundle() -> None:
    res = resources()
    res.insert(1, {"resourceType": "DeviceUsage", "id": "f1"})
    out = run(bundle("collection", res))
    assert rejected(out) == [Rejected(
        "Bundle.entry[1]", "resource type 'DeviceUsage' is not a FHIR R4 resource type; the rest of the bundle was "
        "read")]
    check_claim(encounters(out)[0])


def test_no_claim_uses_procedures_and_conditions() -> None:
    res = [r for r in resources() if r["resourceType"] != "Claim"]
    res.append({"resourceType": "Procedure", "id": "pr1", "status": "completed",
                "encounter": {"reference": "Encounter/e1"}, "performedDateTime": "2024-03-01T09:10:00Z",
                "code": {"coding": [{"system": SCT, "code": "268556000"}]},
                "reasonReference": [{"reference": "Condition/c1"}]})
    res.append({"resourceType": "Procedure", "id": "pr2", "status": "not-done",
                "encounter": {"reference": "Encounter/e1"}, "code": {"coding": [{"system": CPT, "code": "81002"}]}})
    enc = encounters(run(bundle("collection", res)))[0]
    assert [(d.code, d.system) for d in enc.diagnoses] == [("I10", ICD)]
    assert [(ln.code, ln.code_system, ln.dx_pointers, ln.service_date, ln.line_id) for ln in enc.lines] == [
        ("268556000", SCT, [1], "2024-03-01T09:10:00Z", "Procedure/pr1")]
    # without a Claim, the patient's active Coverage is used
    assert [c.member_id for c in enc.coverages] == ["MEM123"]


def test_encounter_without_billable_content_is_still_emitted() -> None:
    res = [r for r in resources() if r["resourceType"] not in ("Claim", "Condition")]
    enc = encounters(run(bundle("collection", res)))[0]
    assert enc.lines == [] and enc.diagnoses == [] and enc.source_id == "V-100"


def test_cancelled_encounter_unlinked_claim_and_codeless_item() -> None:
    res = resources()
    extra = copy.deepcopy(res[1])
    extra.update(id="e2", status="cancelled", identifier=[])
    orphan = copy.deepcopy(res[7])
    orphan["id"] = "cl2"
    orphan["item"][0]["encounter"] = [{"reference": "Encounter/missing"}]
    res[7]["item"].append({"sequence": 3, "productOrService": {"text": "free text only"}})
    out = run(bundle("collection", [*res, extra, orphan]))
    reasons = {r.part: r.reason for r in rejected(out)}
    assert reasons["Bundle.entry[9]"].startswith("Encounter status is 'cancelled', so it is not billed")
    assert reasons["Bundle.entry[10]"].startswith("Claim is not linked to an Encounter in this file")
    assert reasons["Bundle.entry[7].item[2]"].startswith("Claim item has no productOrService code")
    assert len(encounters(out)) == 1 and len(encounters(out)[0].lines) == 2


# ---------------------------------------------------------------------------
# Whole-document errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("data, pattern", [
    (b"", "file is empty"),
    (b" \n\t\r\n", "file is empty"),
    (b'{"resourceType": "Bundle", "entry": [', r"not valid JSON: Expecting value at line 1, column 38"),
    (b"<ClinicalDocument/>", r"not valid JSON: .* at line 1, column 1"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2]", "JSON is a list, not a FHIR resource"),
    (b'{"id": "x", "name": "y"}', "no 'resourceType'"),
    (b'{"resourceType": "Bundle", "type": "transaction", "entry": []}', "Bundle has no entries"),
    (b'{"resourceType": "Bundle", "type": "searchset", "total": 0}', "Bundle has no entries"),
    (b'{"resourceType": "Bundle", "type": "batch", "entry": {"resource": {}}}', "Bundle has no entries"),
    (b'{"resourceType": "Patient", "id": "p"}', r"no Encounter resources \(it holds Patient\)"),
])
def test_document_errors(data: bytes, pattern: str) -> None:
    with pytest.raises(ParseError, match=pattern):
        run(data)


def test_json_error_gives_position_without_content() -> None:
    text = json.dumps(bundle("transaction", resources(family="Zyxwvut")), indent=1)
    broken = text.replace('"family": "Zyxwvut"', '"family": "Zyxwvut" oops')
    with pytest.raises(ParseError) as info:
        run(broken.encode())
    assert "line " in str(info.value) and "column " in str(info.value)
    assert "Zyxwvut" not in str(info.value) and "oops" not in str(info.value)


FAMILY = st.from_regex(r"Qz[a-z]{4,10}", fullmatch=True)


@settings(max_examples=40, deadline=None, database=None)
@given(family=FAMILY)
def test_reasons_never_contain_the_family_name(family: str) -> None:
    res = resources(family=family)
    res[1]["participant"] = [{"individual": {"reference": "Practitioner/none", "display": family}}]
    cancelled = copy.deepcopy(res[1])
    cancelled.update(id="e2", status="cancelled")
    orphan = copy.deepcopy(res[7])
    orphan.update(id="cl9", patient={"reference": "Patient/p1", "display": family})
    orphan["item"][0]["encounter"] = [{"reference": f"Encounter?identifier=x|{family}"}]
    res[7]["item"].append({"sequence": 3, "productOrService": {"text": family}})
    docs: list[bytes] = [
        json.dumps(bundle("transaction", [*res, cancelled, orphan, {"resourceType": "Foo", "name": family},
                                          {"name": family}, {"resourceType": {"family": family}},
                                          {"resourceType": family}])).encode(),
        "\n".join([json.dumps(res[0]), f'{{"name": "{family}" ', json.dumps(res[1]),
                   json.dumps({"resourceType": f"No {family}"})]).encode(),
    ]
    reasons = []
    for data in docs:
        out = run(data, name="x.ndjson" if data.startswith(b'{"resourceType": "Patient"') else "x.json")
        reasons += [r.reason for r in rejected(out)] + [r.part for r in rejected(out)]
        assert any(e.patient.family == family for e in encounters(out))
    assert len(reasons) >= 12
    for bad in [json.dumps({"resourceType": "Patient", "name": [{"family": family}]}).encode(),
                f'{{"resourceType": "Bundle", "entry": [{{"family": "{family}"'.encode(),
                json.dumps({"name": family}).encode(),
                json.dumps([{"family": family}]).encode()]:
        with pytest.raises(ParseError) as info:
            run(bad)
        reasons.append(str(info.value))
    assert not [r for r in reasons if family in r]


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=400, deadline=None, database=None)
@given(data=st.data())
def test_wrong_json_types_never_crash(data: st.DataObject) -> None:
    """Valid JSON that breaks FHIR's shapes rejects a part; it never raises anything but ParseError."""
    doc = bundle("transaction", resources())
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)))
        node = doc
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = data.draw(JSONISH)
    try:
        out = run(doc)
    except ParseError:
        return
    assert all(isinstance(p, (Encounter, Rejected)) for p in out)
