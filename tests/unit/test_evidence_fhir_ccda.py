"""FHIR and C-CDA parsers fill ``Encounter.evidence`` (orders, results, the visit's length) the way
the HL7 v2 parser does, so ``doc.missing`` works for those sources too (issue 11).

Real samples from tests/data (a Synthea R4 bundle, the C-CDA documents) through the real parsers;
crafted minimal FHIR bundles for the cases the samples do not carry (CPT-coded orders, a short
visit), each firing case with a close case that stays quiet, then one path through the pipeline
with the rules on. Hostile inputs: thousands of orders, non-string codes, malformed periods."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.pipeline import Pipeline
from agent.rules import RuleSet
from connectors.ehr import ccda, evidence, fhir, hl7v2
from core.model import Encounter, Evidence, Rejected, standardize
from core.states import EncounterState

DATA = Path(__file__).resolve().parent.parent / "data"
TEMIKA = DATA / "fhir" / "Temika453_Wuckert783_b37f7960-7e9e-f3f7-f891-79ae4f632406.json"
CPT = "http://www.ama-assn.org/go/cpt"
LOINC = "http://loinc.org"


def encounters(out: list[Any]) -> list[Encounter]:
    return [p for p in out if isinstance(p, Encounter)]


def doc_missing(enc: Encounter) -> list[dict[str, Any]]:
    standardize(enc)
    return [f.to_dict() for f in RuleSet().apply_local(enc, []) if f.code == "doc.missing"]


# ---------------------------------------------------------------------------
# FHIR: the Synthea sample
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def temika() -> tuple[dict[str, Any], list[Encounter]]:
    raw = TEMIKA.read_bytes()
    return json.loads(raw), encounters(fhir.parse(raw, name=TEMIKA.name, options={}))


def test_synthea_reports_and_observations_become_results_of_their_encounter(temika: Any) -> None:
    bundle, encs = temika
    assert len(encs) == 23
    # What the bundle says, read independently: the codes of the DiagnosticReports and Observations
    # that reference each Encounter (Synthea codes them in LOINC and never sends a ServiceRequest).
    expected: dict[str, set[str]] = {}
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] in ("DiagnosticReport", "Observation"):
            eid = res["encounter"]["reference"].removeprefix("urn:uuid:")
            expected.setdefault(eid, set()).add(res["code"]["coding"][0]["code"])
    assert sum(len(v) for v in expected.values()) > 100
    for enc in encs:
        results = [e for e in enc.evidence if e.kind == "result"]
        assert {e.code for e in results} == expected.get(enc.source_id, set()), enc.source_id
        assert len(results) == len({e.code for e in results})  # deduplicated
        assert {e.system for e in results} == {"LN"}
        assert not any(e.kind == "order" for e in enc.evidence)
    first = next(e for e in encs if e.source_id.startswith("47afd8bf"))
    # period 04:34:30 to 04:49:30 (-04:00) -> a 15-minute visit, after its one note (LOINC 34117-2)
    assert first.evidence == [Evidence("result", "34117-2", "LN"), Evidence("time", minutes=15)]
    cbc = next(e for e in encs if e.source_id.startswith("45bfd5d0"))
    assert Evidence("result", "58410-2", "LN") in cbc.evidence  # the CBC panel report
    assert Evidence("result", "718-7", "LN") in cbc.evidence  # one of its observations (hemoglobin)


def test_synthea_visit_lengths_come_from_the_period(temika: Any) -> None:
    _, encs = temika
    minutes = {enc.source_id[:8]: [e.minutes for e in enc.evidence if e.kind == "time"] for enc in encs}
    assert all(len(m) == 1 for m in minutes.values())  # every Synthea period has times on one day
    assert minutes["47afd8bf"] == [15]  # 04:34:30 -> 04:49:30
    assert minutes["95d11eb7"] == [89]  # 13:34:30 -> 15:03:59: whole minutes, not rounded up
    assert minutes["96b94d93"] == [60] and minutes["4fb90d70"] == [21]
    assert sorted({m[0] for m in minutes.values()}) == [15, 21, 60, 89]


# ---------------------------------------------------------------------------
# FHIR: crafted bundles (CPT-coded orders, short visits)
# ---------------------------------------------------------------------------


def bundle(*, charges: list[str], orders: Sequence[Any] = (), results: Sequence[dict[str, Any]] = (),
           period: Any = None, length: Any = None, extra: Sequence[dict[str, Any]] = ()) -> bytes:
    """One Encounter E1 (with ``period``/``length`` as given), a Procedure per charge (CPT), a
    ServiceRequest per order (a CPT code, or anything else as the whole ``code`` element), and the given results."""
    enc: dict[str, Any] = {"resourceType": "Encounter", "id": "E1", "status": "finished",
                           "subject": {"reference": "Patient/P1"}}
    if period is not None:
        enc["period"] = period
    if length is not None:
        enc["length"] = length
    res: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "P1", "birthDate": "1970-01-01", "gender": "female",
         "name": [{"family": "Test", "given": ["Pat"]}]},
        enc,
    ]
    res += [{"resourceType": "Procedure", "id": f"PR{n}", "status": "completed", "encounter": {"reference": "Encounter/E1"},
             "subject": {"reference": "Patient/P1"}, "performedDateTime": "2026-03-10",
             "code": {"coding": [{"system": CPT, "code": c}]}} for n, c in enumerate(charges)]
    res += [{"resourceType": "ServiceRequest", "id": f"SR{n}", "status": "active", "intent": "order",
             "encounter": {"reference": "Encounter/E1"}, "subject": {"reference": "Patient/P1"},
             "code": {"coding": [{"system": CPT, "code": o}]} if isinstance(o, str) else o}
            for n, o in enumerate(orders)]
    res += [*results, *extra]
    return json.dumps({"resourceType": "Bundle", "type": "collection",
                       "entry": [{"fullUrl": f"https://ehr.example/{r['resourceType']}/{r['id']}", "resource": r}
                                 for r in res]}).encode()


def parsed(raw: bytes) -> Encounter:
    out = fhir.parse(raw, name="b.json", options={})
    assert not [p for p in out if isinstance(p, Rejected)]
    (enc,) = encounters(out)
    return enc


def test_service_requests_are_orders_preferring_the_cpt_coding() -> None:
    both = {"coding": [{"system": LOINC, "code": "24323-8"}, {"system": CPT, "code": "80053"}]}
    local = {"coding": [{"system": "http://lab.example.org/codes/orders", "code": "CHEM7"}]}
    enc = parsed(bundle(charges=["99213"], orders=[both, local, "85025", "85025"]))
    assert enc.evidence == [Evidence("order", "80053", "CPT"), Evidence("order", "CHEM7", "http://lab.examp"),
                            Evidence("order", "85025", "CPT")]


def test_a_result_based_on_an_order_is_the_result_of_that_order() -> None:
    order = {"resourceType": "ServiceRequest", "id": "SRX", "status": "completed", "intent": "order",
             "code": {"coding": [{"system": CPT, "code": "85025"}]}}  # references no encounter itself
    obs = {"resourceType": "Observation", "id": "O1", "status": "final", "encounter": {"reference": "Encounter/E1"},
           "basedOn": [{"reference": "ServiceRequest/SRX"}], "code": {"coding": [{"system": LOINC, "code": "718-7"}]}}
    report = {"resourceType": "DiagnosticReport", "id": "D1", "status": "final",
              "context": {"reference": "Encounter/E1"},  # the pre-R4 name of the element
              "code": {"coding": [{"system": LOINC, "code": "24323-8"}, {"system": CPT, "code": "80053"}]}}
    wrong = {**report, "id": "D2", "status": "entered-in-error", "code": {"coding": [{"system": CPT, "code": "80061"}]}}
    enc = parsed(bundle(charges=["99213"], results=[report, wrong], extra=[order, obs]))
    assert enc.evidence == [Evidence("result", "80053", "CPT"), Evidence("result", "85025", "CPT")]


def test_lab_billed_with_another_cpt_order_fires_and_its_own_order_does_not() -> None:
    (hit,) = doc_missing(parsed(bundle(charges=["99213", "85025"], orders=["80053"])))
    assert hit["line"] == 1 and "85025" in hit["message"] and "order or result" in hit["message"]
    assert doc_missing(parsed(bundle(charges=["99213", "85025"], orders=["80053", "85025"]))) == []
    assert doc_missing(parsed(bundle(charges=["99213", "85025"]))) == []  # no orders sent: nothing to say


def test_em_level_above_the_period_fires_and_a_long_enough_visit_does_not() -> None:
    short = parsed(bundle(charges=["99214"], period={"start": "2026-03-10T10:00:00-05:00",
                                                     "end": "2026-03-10T10:12:00-05:00"}))
    assert short.evidence == [Evidence("time", minutes=12)]
    (hit,) = doc_missing(short)
    assert "needs 30 minutes" in hit["message"] and "12 minutes" in hit["message"] and "99212" in hit["fix"]
    enough = bundle(charges=["99214"], period={"start": "2026-03-10T10:00:00-05:00", "end": "2026-03-10T10:30:00-05:00"})
    assert doc_missing(parsed(enough)) == []


def test_length_is_used_when_the_period_gives_no_visit_length() -> None:
    dates_only = {"start": "2026-03-10", "end": "2026-03-10"}
    assert parsed(bundle(charges=["99214"], period=dates_only, length={"value": 12, "unit": "min"})).evidence == [
        Evidence("time", minutes=12)]
    assert parsed(bundle(charges=["99214"], length={"value": 0.5, "code": "h",
                                                    "system": "http://unitsofmeasure.org"})).evidence == [
        Evidence("time", minutes=30)]
    for bad in ({"value": 3, "unit": "d"}, {"value": "12", "unit": "min"}, {"value": True, "unit": "min"},
                {"value": 25, "unit": "h"}, {"value": -5, "unit": "min"}, {"value": 1e300, "unit": "min"}, [12], "12"):
        assert parsed(bundle(charges=["99214"], length=bad)).evidence == [], bad


@pytest.mark.parametrize("period", [
    {"start": "2026-03-10T10:30:00Z", "end": "2026-03-10T10:00:00Z"},  # end before start
    {"start": "2026-03-10T10:00:00Z", "end": "2026-03-10T10:00:00Z"},  # no length
    {"start": "2026-03-10T23:00:00Z", "end": "2026-03-11T00:30:00Z"},  # two days
    {"start": "2026-03-10T10:00:00Z", "end": "2026-03-10T10:20:00"},  # one with a zone, one without
    {"start": "2026-03-10T25:00:00Z", "end": "2026-03-10T26:00:00Z"},  # no such hour
    {"start": 20260310, "end": ["2026-03-10T10:20:00Z"]},  # wrong JSON types
    {"start": "2026-03-10T10:00:00Z" + " " * 100, "end": "2026-03-10T10:20:00Z"},
    "2026-03-10T10:00:00Z",
])
def test_a_malformed_period_gives_no_time_and_no_exception(period: Any) -> None:
    raw = bundle(charges=["99214"], period=period)
    out = fhir.parse(raw, name="b.json", options={})
    assert not any(e.kind == "time" for enc in encounters(out) for e in enc.evidence)


def test_thousands_of_orders_are_capped_at_the_budget() -> None:
    orders = [f"{80000 + n}" for n in range(5000)]
    enc = parsed(bundle(charges=["85025"], orders=orders, period={"start": "2026-03-10T10:00:00Z",
                                                                   "end": "2026-03-10T10:20:00Z"}))
    kept = [e for e in enc.evidence if e.kind == "order"]
    assert len(kept) == evidence.MAX_EVIDENCE == hl7v2.MAX_EVIDENCE  # one budget for every format (hl7v2 imports it)
    assert [e.code for e in kept] == orders[:evidence.MAX_EVIDENCE]
    assert enc.evidence[-1] == Evidence("time", minutes=20)  # the visit's length is kept past the cap


def test_non_string_codes_and_wrong_shapes_give_no_evidence_and_keep_the_visit() -> None:
    long = "8" * 500
    odd: list[Any] = [
        {"coding": [{"system": CPT, "code": 80053}]},  # a number, not a FHIR code
        {"coding": [{"system": CPT, "code": {"x": 1}}, {"system": CPT, "code": None}]},
        {"coding": {"system": CPT, "code": "80053"}},  # coding not a list
        {"coding": [{"system": ["x"], "code": "  "}]},
        ["80053"], 80053,  # code not a CodeableConcept
        {"coding": [{"system": CPT * 20, "code": long}]},
    ]
    bad_refs = [{"resourceType": "Observation", "id": "O1", "status": "final", "encounter": "Encounter/E1",
                 "code": {"coding": [{"system": CPT, "code": "80061"}]}},
                {"resourceType": "Observation", "id": "O2", "status": ["final"], "encounter": {"reference": "Encounter/E1"},
                 "basedOn": "ServiceRequest/SR0", "code": {"coding": [{"system": LOINC, "code": "718-7"}]}}]
    enc = parsed(bundle(charges=["99213"], orders=odd, results=bad_refs))
    assert enc.lines[0].code == "99213"
    assert enc.evidence == [Evidence("order", long[:32], (CPT * 20)[:16]), Evidence("result", "718-7", "LN")]


def test_pipeline_holds_the_fhir_lab_without_its_order_for_review() -> None:
    """End to end without a store: parse, standardize, validate and the rules, as ingest runs them."""
    pipe = Pipeline(None, rules=RuleSet())
    held = parsed(bundle(charges=["99213", "85025"], orders=["80053"]))
    state, findings = pipe.prepare(held)
    assert state == EncounterState.NEEDS_REVIEW
    assert [(f.code, f.line) for f in findings if f.code == "doc.missing"] == [("doc.missing", 1)]
    ok = parsed(bundle(charges=["99213", "85025"], orders=["80053", "85025"]))
    state, findings = pipe.prepare(ok)
    assert not [f for f in findings if f.code == "doc.missing"]


# ---------------------------------------------------------------------------
# C-CDA
# ---------------------------------------------------------------------------


def ccda_encounters(raw: bytes) -> list[Encounter]:
    return encounters(ccda.parse(raw, name="d.ccda", options={}))


def sample(name: str) -> bytes:
    return (DATA / "ccda" / name).read_bytes()


def test_ccda_results_of_the_visit_day_with_their_cpt_translation() -> None:
    (amb,) = ccda_encounters(sample("170.314B2_Amb_CCD.ccda"))
    # the Results organizer is coded in CPT (82374), its observation in LOINC; the encounter's
    # effectiveTime has no high time, so no visit length
    assert amb.evidence == [Evidence("result", "82374", "CPT"), Evidence("result", "2028-9", "LN")]
    by_day = {e.dos_start[:8]: e for e in ccda_encounters(sample("Patient-1.ccda"))}
    panel = ["83701", "83721", "82465", "84478"]  # lipid panel observations: LOINC with CPT translations
    for day in ("20100331", "20101024"):
        ev = by_day[day].evidence
        assert [e.code for e in ev if e.system == "CPT"] == ["83036", *panel]
        assert {e.code for e in ev if e.system == "SCT"} == {"166312007", "16254007"}  # the organizers
    for day in ("20100430", "20100528", "20100625", "20100523"):  # no result on those days
        assert by_day[day].evidence == []
    # the HbA1c of 2010-07-25 falls on no visit's day and is left out
    assert all("83036" not in [e.code for e in enc.evidence] for d, enc in by_day.items()
               if d not in ("20100331", "20101024"))


def test_ccda_visit_note_plan_orders_go_to_its_visit_and_results_of_other_days_do_not() -> None:
    (note,) = ccda_encounters(sample("Progress_Note.ccda"))
    # Plan of Treatment: one act in moodCode INT (SNOMED 61310001); the Results (2013, 2008) are not
    # from the 2005 visit; the planned encounter (moodCode INT) and the goal (GOL) are not orders
    assert note.evidence == [Evidence("order", "61310001", "SCT")]
    assert all(enc.evidence == [] for enc in ccda_encounters(sample("CCD.ccda")))  # no result on a procedure day


def test_ccda_visit_length_from_low_and_high_times() -> None:
    raw = sample("170.314B2_Amb_CCD.ccda").decode()
    timed, n = re.subn(r'(<low value="20120815090051-0500"\s*/>\s*)<high nullFlavor="UNK"\s*/>',
                       r'\1<high value="20120815092051-0500"/>', raw)
    assert n == 1
    (enc,) = ccda_encounters(timed.encode())
    assert enc.evidence[-1] == Evidence("time", minutes=20)
    enc.lines[0].code = "99214"  # billed as an office visit of 30 minutes by time
    (hit,) = doc_missing(enc)
    assert "needs 30 minutes" in hit["message"] and "20 minutes" in hit["message"]
    for high in ("20120815082051-0500", "20120816092051-0500", "20120815092051-0600", "2012081509", "x" * 300):
        bad = raw.replace('<high nullFlavor="UNK" />', f'<high value="{high}"/>', 1)
        (enc,) = ccda_encounters(bad.encode())
        assert not any(e.kind == "time" for e in enc.evidence), high


def test_ccda_missing_or_odd_elements_give_no_evidence() -> None:
    raw = sample("170.314B2_Amb_CCD.ccda").decode()
    stripped, n = re.subn(r'<code [^>]*code="82374"[^>]*/>', '<code nullFlavor="UNK"/>', raw)  # the panel
    stripped, m = re.subn(r'<code [^>]*code="2028-9"[^>]*/>', "<code/>", stripped)  # its observation
    assert n == m == 1
    (enc,) = ccda_encounters(stripped.encode())
    assert enc.lines[0].code == "99231" and enc.evidence == []


def test_short_system_names() -> None:
    assert [evidence.short_system(s) for s in (CPT, LOINC, "2.16.840.1.113883.6.12", "urn:oid:2.16.840.1.113883.6.96",
                                               "http://lab.example.org/x", None, 7)] == [
        "CPT", "LN", "CPT", "SCT", "http://lab.examp", "", ""]
