"""Chargemaster crosswalk (agent.chargemaster) and the built-in synthea-demo data file.

The demo crosswalk must cover the whole public Synthea sample — every CHARGE code, claim
diagnosis and encounter type — so a Synthea folder can flow to "ready" encounters; these
tests compute the code lists straight from the CSVs (not through the parser) and check the
targets against the ICD-10-CM code set.
"""

from __future__ import annotations

import copy
import csv
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from agent.chargemaster import BUILTIN, Chargemaster, ChargemasterError, norm_system, npi_with_check_digit
from agent.validate import npi_is_valid, validate
from connectors.ehr import csvfmt
from core.model import ChargeLine, Diagnosis, Encounter, Patient, Provider, standardize

DATA = Path(__file__).resolve().parents[1] / "data"
SYNTHEA = DATA / "synthea-csv"
FHIR_DIRS = [DATA / "synthea-fhir-r4", Path("/work/shared/corpus/synthea-fhir-r4")]


def _read(name: str) -> list[dict[str, str]]:
    with open(SYNTHEA / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def cm() -> Chargemaster:
    return Chargemaster.load("synthea-demo")


@pytest.fixture(scope="module")
def parsed() -> list[Encounter]:
    items = csvfmt.parse(csvfmt.pack_directory(SYNTHEA), name="synthea", options={"profile": "synthea"})
    assert all(isinstance(i, Encounter) for i in items)
    return items  # type: ignore[return-value]


@pytest.fixture(scope="module")
def applied(cm: Chargemaster, parsed: list[Encounter]) -> list[tuple[Encounter, list]]:
    out = []
    for e in parsed:
        e2 = copy.deepcopy(e)
        out.append((e2, cm.apply(e2)))
    return out


def _find(pairs: list[tuple[Encounter, list]], source_id: str) -> tuple[Encounter, list]:
    return next(p for p in pairs if p[0].source_id == source_id)


# ---------------------------------------------------------------------------
# the demo crosswalk covers the sample
# ---------------------------------------------------------------------------


def test_builtin_loads_and_is_marked_demo(cm: Chargemaster) -> None:
    assert cm.name == "synthea-demo" and cm.demo is True
    text = BUILTIN["synthea-demo"].read_text(encoding="utf-8")
    assert "a small DEMO chargemaster crosswalk for the public Synthea sample" in text
    assert "NOT a clinical or billing reference" in text


def test_every_sample_code_has_an_entry(cm: Chargemaster) -> None:
    """Independent of the parser: the codes as they stand in the CSV tables."""
    imm = {r["CODE"] for r in _read("immunizations.csv")}
    med = {r["CODE"] for r in _read("medications.csv")}
    charge_codes = {t["PROCEDURECODE"] for t in _read("claims_transactions.csv") if t["TYPE"] == "CHARGE"}
    enc_codes = {r["CODE"] for r in _read("encounters.csv")}
    dx_codes = {c[f"DIAGNOSIS{i}"] for c in _read("claims.csv") for i in range(1, 9)} - {""}
    assert len(charge_codes) == 190 and len(dx_codes) == 90
    missing = []
    for code in charge_codes | enc_codes:
        system = "CVX" if code in imm else "RxNorm" if code in med else "SNOMED"
        key = str(int(code)) if system == "CVX" else code
        if key not in cm.lines[system]:
            missing.append((system, code))
    missing += [("SNOMED dx", c) for c in dx_codes if c not in cm.diagnoses["SNOMED"]]
    assert missing == []


def test_zero_unmapped_over_the_whole_synthea_set(applied: list[tuple[Encounter, list]]) -> None:
    assert len(applied) == 388
    unmapped = [f for _, fs in applied for f in fs if f.code == "chargemaster.unmapped"]
    assert unmapped == []
    for e, _ in applied:
        assert all(ln.code_system in ("CPT", "HCPCS") for ln in e.lines), e.source_id
        assert all(d.system == "ICD-10-CM" for d in e.diagnoses), e.source_id
        assert e.rendering.npi and npi_is_valid(e.rendering.npi)
        assert e.billing.npi and npi_is_valid(e.billing.npi)
    total = sum(len(e.lines) for e, _ in applied)
    assert total == 1334  # 1,579 source lines - 358 dropped (pharmacy drugs, bundled services) + 113 admin


def test_icd10_targets_are_billable_codes(cm: Chargemaster) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import simple_icd_10_cm as icd
    targets = [c for kind, c in cm.targets() if kind == "icd10"]
    assert len(targets) > 70
    bad = [c for c in targets if not (icd.is_valid_item(c) and icd.is_leaf(c))]
    assert bad == []
    line_targets = [c for kind, c in cm.targets() if kind == "line"]
    assert all(re.fullmatch(r"\d{4}[0-9FTU]|[A-V]\d{4}", c) for c in line_targets)


def test_pipeline_view_standardize_and_validate(applied: list[tuple[Encounter, list]]) -> None:
    """After the crosswalk, all but one encounter validates without errors; the exception is a
    death certification, which has nothing billable."""
    not_ready = []
    for e, fs in applied:
        e2 = copy.deepcopy(e)
        errors = [f for f in fs + standardize(e2) + validate(e2) if f.severity == "error"]
        if errors:
            not_ready.append((e.source_id, sorted({f.code for f in errors})))
    assert not_ready == [("b55d69a4-6a2f-74fd-b363-4e3e3ff186d1", ["lines.missing"])]


def _fhir_codes() -> tuple[set[tuple[str, str]], set[str]] | None:
    folder = next((d for d in FHIR_DIRS if d.is_dir() and any(d.glob("*_*-*.json"))), None)
    if folder is None:
        return None
    items: set[tuple[str, str]] = set()
    dx: set[str] = set()
    for f in folder.glob("*_*-*.json"):
        bundle = json.loads(f.read_text(encoding="utf-8"))
        by_url = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
        for entry in bundle["entry"]:
            r = entry["resource"]
            if r["resourceType"] != "Claim":
                continue
            for it in r.get("item", []):
                for c in it["productOrService"]["coding"]:
                    items.add((norm_system(c["system"]), c["code"]))
            for d in r.get("diagnosis", []):
                cond = by_url[d["diagnosisReference"]["reference"]]
                dx |= {c["code"] for c in cond["code"]["coding"]}
    return items, dx


def test_fhir_bundle_claim_codes_are_covered(cm: Chargemaster) -> None:
    codes = _fhir_codes()
    if codes is None:
        pytest.skip("Synthea FHIR bundles not available")
    items, dx = codes
    assert len(items) > 100
    missing = [(s, c) for s, c in items if (str(int(c)) if s == "CVX" else c) not in cm.lines.get(s, {})]
    missing += [("dx", c) for c in dx if c not in cm.diagnoses["SNOMED"]]
    assert missing == []


# ---------------------------------------------------------------------------
# behaviour on concrete encounters
# ---------------------------------------------------------------------------


def test_simple_visit_is_crosswalked(applied: list[tuple[Encounter, list]]) -> None:
    e, fs = _find(applied, "47afd8bf-98df-7e85-832a-3da2a89cc222")
    assert [(d.code, d.system) for d in e.diagnoses] == [("J02.9", "ICD-10-CM")]
    (ln,) = e.lines
    assert (ln.code, ln.code_system, ln.dx_pointers, ln.unit_charge) == ("99213", "CPT", [1], "85.55")
    assert ln.line_id == "a5f98ec6-9dca-f416-bcce-59364e74a7b0"  # kept for reconciliation
    assert [f.code for f in fs] == ["chargemaster.demo"]


def test_well_child_visit_by_age_and_vaccine_administration(applied: list[tuple[Encounter, list]]) -> None:
    e, _ = _find(applied, "2950dc87-2201-5919-f182-99324d016ac7")  # age 4, five vaccines
    assert [d.code for d in e.diagnoses] == ["Z00.129"]
    assert [(ln.code, ln.units) for ln in e.lines] == [
        ("99392", "1"), ("90716", "1"), ("90713", "1"), ("90686", "1"), ("90700", "1"), ("90707", "1"),
        ("1160F", "1"), ("90471", "1"), ("90472", "4")]
    assert [ln.unit_charge for ln in e.lines[-2:]] == ["25.00", "15.00"]


def test_vaccine_only_visit_does_not_double_the_first_administration(cm: Chargemaster) -> None:
    e = Encounter(source="csv", source_id="x", dos_start="2020-01-01",
                  patient=Patient(dob="1990-01-01"),
                  diagnoses=[Diagnosis("33879002", "SNOMED")],
                  lines=[ChargeLine("33879002", "SNOMED", dx_pointers=[1]), ChargeLine("140", "CVX", dx_pointers=[1]),
                         ChargeLine("208", "CVX", dx_pointers=[1])])
    cm.apply(e)
    assert [(ln.code, ln.units) for ln in e.lines] == [("90471", "1"), ("90686", "1"), ("91300", "1"), ("90472", "1")]
    assert [d.code for d in e.diagnoses] == ["Z23"]


def test_adult_exam_by_age_and_drugs_dropped(applied: list[tuple[Encounter, list]]) -> None:
    e, fs = _find(applied, "fdef892f-8bd1-59f1-96aa-39074d9f9862")  # age 47
    assert e.lines[0].code == "99396"
    assert [d.code for d in e.diagnoses] == ["Z79.899", "R73.9", "E78.1", "E88.810", "Z73.3"]
    assert not any(ln.code in ("897122", "860975") for ln in e.lines)
    skipped = [f for f in fs if f.code == "chargemaster.skipped"]
    assert [(f.field, f.severity) for f in skipped] == [("lines[9]", "warning"), ("lines[10]", "warning")]
    assert skipped[1].message.startswith("RxNorm medication code 860975 is not billed by the practice")


def test_units_multiplier_keeps_the_line_total(applied: list[tuple[Encounter, list]]) -> None:
    e, _ = _find(applied, "ec5bd7af-7de1-4a7d-101f-381f8c28ced9")  # Depo-Provera 150 mg
    ln = e.lines[-1]
    assert (ln.code, ln.code_system, ln.units, ln.unit_charge) == ("J1050", "HCPCS", "150", "0.40")
    assert abs(Decimal(ln.units) * Decimal(ln.unit_charge) - Decimal("60.14")) < Decimal("0.75")


def test_non_reportable_diagnosis_falls_back_to_the_visit_code(applied: list[tuple[Encounter, list]]) -> None:
    e, fs = _find(applied, "53b047da-41d4-e4cf-5d03-ccf1bcb6bbae")  # only dx: "Full-time employment"
    assert [d.code for d in e.diagnoses] == ["Z00.00"]
    assert all(ln.dx_pointers == [1] for ln in e.lines)
    codes = [f.code for f in fs]
    assert "chargemaster.skipped" in codes and "chargemaster.dx_from_encounter" in codes


def test_unmapped_codes_stay_and_are_reported(cm: Chargemaster) -> None:
    e = Encounter(source="csv", source_id="x", dos_start="2024-01-01",
                  diagnoses=[Diagnosis("195662009", "SNOMED"), Diagnosis("999999001", "http://snomed.info/sct")],
                  lines=[ChargeLine("12345", "SNOMED", dx_pointers=[2, 1]),
                         ChargeLine("185345009", "SCT", dx_pointers=[2])])
    fs = cm.apply(e)
    unmapped = [f for f in fs if f.code == "chargemaster.unmapped"]
    assert [(f.field, f.message, f.severity) for f in unmapped] == [
        ("diagnoses[1]", "SNOMED diagnosis code 999999001 has no chargemaster entry; add it to the crosswalk", "error"),
        ("lines[0].code", "SNOMED procedure code 12345 has no chargemaster entry; add it to the crosswalk", "error"),
    ]
    assert [(d.code, d.system) for d in e.diagnoses] == [("J02.9", "ICD-10-CM"), ("999999001", "SNOMED")]
    assert [(ln.code, ln.code_system, ln.dx_pointers) for ln in e.lines] == [
        ("12345", "SNOMED", [2, 1]), ("99213", "CPT", [2])]


def test_apply_is_idempotent(cm: Chargemaster, parsed: list[Encounter]) -> None:
    e = copy.deepcopy(parsed[0])
    cm.apply(e)
    once = e.to_dict()
    fs = cm.apply(e)
    assert e.to_dict() == once
    assert [f.code for f in fs] == []


def test_works_after_standardize_too(cm: Chargemaster, parsed: list[Encounter]) -> None:
    """Synthea names lose their digits in standardize; provider lookup still finds them."""
    e = copy.deepcopy(parsed[0])
    standardize(e)
    assert e.rendering.family == "White"
    cm.apply(e)
    assert npi_is_valid(e.rendering.npi) and e.lines[0].code == "99213"


def test_dx_duplicates_after_mapping_are_merged_and_pointers_follow(cm: Chargemaster) -> None:
    e = Encounter(source="csv", source_id="x", dos_start="2024-01-01",
                  diagnoses=[Diagnosis("195967001", "SNOMED"), Diagnosis("160903007", "SNOMED"),
                             Diagnosis("233678006", "SNOMED"), Diagnosis("10509002", "SNOMED")],
                  lines=[ChargeLine("185345009", "SNOMED", dx_pointers=[3, 2, 4]),
                         ChargeLine("23426006", "SNOMED", dx_pointers=[2])])
    fs = cm.apply(e)
    assert [d.code for d in e.diagnoses] == ["J45.909", "J20.9"]  # both asthmas -> J45.909; employment dropped
    assert [ln.dx_pointers for ln in e.lines] == [[1, 2], []]
    assert any(f.code == "chargemaster.skipped" and f.field == "diagnoses[1]" for f in fs)


def test_age_unknown_is_reported(cm: Chargemaster) -> None:
    e = Encounter(source="csv", source_id="x", dos_start="2024-01-01", patient=Patient(dob=""),
                  diagnoses=[Diagnosis("162673000", "SNOMED")], lines=[ChargeLine("162673000", "SNOMED")])
    fs = cm.apply(e)
    assert {f.code for f in fs if f.severity == "error"} == {"chargemaster.age_unknown"}
    assert e.lines[0].code == "162673000"


# ---------------------------------------------------------------------------
# NPIs, loading, custom crosswalks
# ---------------------------------------------------------------------------


def test_npi_check_digit_matches_the_validator() -> None:
    assert npi_with_check_digit("123456789") == "1234567893"  # the CMS worked example
    for i in range(200):
        assert npi_is_valid(npi_with_check_digit(f"{199900000 + i * 37:09d}"))


def test_demo_npis_are_valid_and_distinct(cm: Chargemaster) -> None:
    providers = {r["NAME"] for r in _read("providers.csv")}
    text = BUILTIN["synthea-demo"].read_text(encoding="utf-8")
    assert "DEMO NPIs" in text and "made up" in text.lower()
    raw = __import__("tomllib").loads(text)
    assert set(raw["providers"]) == providers
    npis = list(raw["providers"].values()) + list(raw["organizations"].values())
    assert len(set(npis)) == len(npis)
    assert all(npi_is_valid(n) for n in npis)


def test_unknown_chargemaster() -> None:
    with pytest.raises(ChargemasterError, match="neither a built-in crosswalk nor an existing file"):
        Chargemaster.load("nope")


def test_custom_crosswalk_from_path(tmp_path: Path) -> None:
    f = tmp_path / "practice.toml"
    f.write_text(
        '[chargemaster]\nname = "practice"\n'
        '[lines.SNOMED]\n"185345009" = { code = "99214", price = 180 }\n'
        '"430193006" = { skip = true, why = "bundled" }\n'
        '[diagnoses.SNOMED]\n"195662009" = { icd10 = "j028" }\n'
        '[providers]\n"Ann Lee" = "1234567893"\n', encoding="utf-8")
    cm = Chargemaster.load(str(f))
    e = Encounter(source="csv", source_id="x", rendering=Provider(given="Ann", family="Lee"),
                  diagnoses=[Diagnosis("195662009", "SNOMED")],
                  lines=[ChargeLine("185345009", "SNOMED", dx_pointers=[1], unit_charge="85.55"),
                         ChargeLine("430193006", "SNOMED")])
    fs = cm.apply(e)
    assert [(ln.code, ln.unit_charge) for ln in e.lines] == [("99214", "180.00")]
    assert e.diagnoses[0].code == "J02.8"
    assert e.rendering.npi == "1234567893"
    assert "chargemaster.demo" not in {x.code for x in fs}


@pytest.mark.parametrize("body,match", [
    ('[lines.SNOMED]\n"1" = { code = "99ABC" }\n', "not a CPT or HCPCS code"),
    ('[lines.SNOMED]\n"1" = { note = "x" }\n', "needs code, by_age or skip"),
    ('[lines.ICD]\n"1" = { code = "99213" }\n', "source system must be one of"),
    ('[diagnoses.SNOMED]\n"1" = { icd10 = "hello" }\n', "not shaped like an ICD-10-CM code"),
    ('[providers]\n"A B" = "1234567890"\n', "valid check digit"),
    ('[lines.SNOMED]\n"1" = { by_age = [{ code = "99391" }, { under = 5, code = "99392" }] }\n', "increasing"),
    ("[lines.SNOMED\n", "not valid TOML"),
])
def test_bad_crosswalk_files(tmp_path: Path, body: str, match: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(body, encoding="utf-8")
    with pytest.raises(ChargemasterError, match=match):
        Chargemaster.load(str(f))


def test_no_patient_name_in_any_finding(applied: list[tuple[Encounter, list]]) -> None:
    names = set()
    for p in _read("patients.csv"):
        for k in ("FIRST", "LAST"):
            names |= {p[k], re.sub(r"\d+", "", p[k])}
    names = {n for n in names if len(n) >= 3}
    messages = [f"{f.field} {f.message}" for _, fs in applied for f in fs]
    assert len(messages) > 388
    assert not [m for m in messages for n in names if n in m]
