"""Each charge rule fires on a case and stays quiet on a close case (real ICD-10-CM code set,
real MUE fixture from CMS's table, real SQLCipher store for the history rules)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.rules import RULES, EncounterFacts, History, RuleSet
from agent.rules.units import MueFileError, read_mue_file
from core.model import ChargeLine, Coverage, Diagnosis, Encounter, Patient, Provider

DATA = Path(__file__).resolve().parents[1] / "data" / "rules"
MUE = {k: v["maxUnits"] for k, v in json.loads((DATA / "mue-sample.json").read_text()).items()}


def enc(lines: list[ChargeLine] | None = None, dx: list[str] | None = None, *, sex: str = "F",
        dob: str = "1980-05-01", dos: str = "2026-03-10", pos: str = "11", payer: str = "Acme Health",
        source_id: str = "V1", mrn: str = "M1") -> Encounter:
    return Encounter(
        source="hl7v2", source_id=source_id, source_system="EHR",
        patient=Patient(mrn=mrn, family="Doe", given="Pat", dob=dob, sex=sex),
        coverages=[Coverage(payer_name=payer, member_id="X1")] if payer else [],
        rendering=Provider(npi="1234567893"), dos_start=dos, dos_end=dos, place_of_service=pos,
        diagnoses=[Diagnosis(c) for c in (dx or ["J02.9"])],
        lines=lines if lines is not None else [ChargeLine("99213", dx_pointers=[1])])


def codes(e: Encounter, rs: RuleSet | None = None) -> list[str]:
    rs = rs or RuleSet(mue=MUE)
    return [f.code for f in rs.apply_local(e, [])]


def hist(e: Encounter, others: list[Encounter], rs: RuleSet | None = None) -> list[str]:
    rs = rs or RuleSet()
    h = History()
    for o in [e, *others]:
        f = EncounterFacts.of(o)
        h.visits.setdefault(f.mrn, []).append(f.visit())
    return [f.code for f in rs.apply_history(EncounterFacts.of(e), h)]


def L(code: str, *mods: str, units: str = "1", ptr: tuple[int, ...] = (1,)) -> ChargeLine:  # noqa: N802
    return ChargeLine(code, modifiers=list(mods), units=units, dx_pointers=list(ptr))


def test_every_listed_rule_exists_with_a_severity():
    want = {"dx.not_billable", "dx.sex_mismatch", "dx.age_mismatch", "dx.unsupported_line", "units.mue",
            "modifier.25_missing", "modifier.59_review", "line.duplicate", "pos.mismatch", "coverage.missing",
            "doc.missing", "opportunity.ccm", "opportunity.awv", "opportunity.preventive"}
    assert want <= set(RULES)
    assert all(r.severity in ("info", "review", "error") and r.summary for r in RULES.values())
    assert all(r.severity == "info" for r in RULES.values() if r.opportunity)


def test_clean_encounter_has_no_rule_findings():
    assert codes(enc()) == []


def test_dx_not_billable():
    assert "dx.not_billable" in codes(enc(dx=["J02"]))
    assert "dx.not_billable" not in codes(enc(dx=["J02.9"]))


def test_dx_sex_mismatch_from_the_code_set():
    assert "dx.sex_mismatch" in codes(enc(dx=["N40.0"], sex="F"))  # BPH: "male genital organs"
    assert "dx.sex_mismatch" not in codes(enc(dx=["N40.0"], sex="M"))
    assert "dx.sex_mismatch" in codes(enc(dx=["N80.00"], sex="M"))  # endometriosis: female genital tract
    assert "dx.sex_mismatch" not in codes(enc(dx=["C50.911"], sex="M"))  # breast cancer: either sex


def test_dx_age_mismatch():
    assert "dx.age_mismatch" in codes(enc(dx=["P07.30"], dob="1980-05-01"))  # newborn chapter, adult
    assert "dx.age_mismatch" not in codes(enc(dx=["P07.30"], dob="2026-02-20"))
    assert "dx.age_mismatch" in codes(enc(dx=["O80"], dob="1950-01-01"))  # maternal code at 76
    assert "dx.age_mismatch" not in codes(enc(dx=["O80"], dob="1995-01-01"))


def test_dx_unsupported_line():
    assert "dx.unsupported_line" in codes(enc([L("99213", ptr=())]))
    assert "dx.unsupported_line" not in codes(enc([L("99213", ptr=(1,))]))


def test_units_mue_sums_units_per_code_and_date():
    assert MUE["99213"] == 2
    found = RuleSet(mue=MUE).apply_local(enc([L("99213"), L("99213"), L("99213")]), [])
    hit = [f for f in found if f.code == "units.mue"]
    assert len(hit) == 1 and hit[0].rule_version and hit[0].severity == "error" and hit[0].line == 0
    assert "units.mue" not in codes(enc([L("99213", units="2")]))
    assert "units.mue" not in codes(enc([L("99213", units="3")]), RuleSet())  # no table imported: quiet
    assert "units.mue" not in codes(enc([L("99392")]), RuleSet(mue={"99392": 0}))  # 0: not paid, not a units edit


def test_modifier_25():
    assert "modifier.25_missing" in codes(enc([L("99213"), L("20610")]))
    assert "modifier.25_missing" not in codes(enc([L("99213", "25"), L("20610")]))
    assert "modifier.25_missing" not in codes(enc([L("99213"), L("36415")]))  # venipuncture: not surgery


def test_modifier_59():
    assert "modifier.59_review" in codes(enc([L("97530"), L("97140")]))
    assert "modifier.59_review" not in codes(enc([L("97530"), L("97140", "59")]))
    assert "modifier.59_review" not in codes(enc([L("97530"), L("97110")]))


def test_pos_mismatch():
    assert "pos.mismatch" in codes(enc([L("99283")], pos="11"))  # ED visit in an office
    assert "pos.mismatch" not in codes(enc([L("99283")], pos="23"))
    assert "pos.mismatch" in codes(enc([L("99213")], pos="21"))  # office visit, inpatient POS
    assert "pos.mismatch" not in codes(enc([L("99213")], pos="11"))


def test_coverage_missing():
    assert "coverage.missing" in codes(enc(payer=""))
    assert "coverage.missing" not in codes(enc())


def test_doc_missing_for_unlisted_codes():
    assert "doc.missing" in codes(enc([L("17999")]))
    assert "doc.missing" not in codes(enc([L("17000")]))


def test_line_duplicate():
    a = enc([L("99213")], source_id="V1")
    assert "line.duplicate" in hist(a, [enc([L("99213")], source_id="V2")])
    assert "line.duplicate" not in hist(a, [enc([L("99213")], source_id="V2", dos="2026-03-11")])
    assert "line.duplicate" not in hist(a, [enc([L("99213")], source_id="V2", mrn="OTHER")])


def test_opportunity_ccm():
    a = enc(dx=["E11.9"], source_id="V1")
    assert "opportunity.ccm" in hist(a, [enc(dx=["I10"], source_id="V2", dos="2026-03-02")])
    assert "opportunity.ccm" not in hist(a, [enc(dx=["I10"], source_id="V2", dos="2026-02-27")])  # other month
    assert "opportunity.ccm" not in hist(a, [enc([L("99490")], dx=["I10"], source_id="V2", dos="2026-03-02")])


def test_opportunity_awv():
    a = enc(payer="Medicare Part B", source_id="V1")
    assert "opportunity.awv" in hist(a, [])
    assert "opportunity.awv" not in hist(a, [enc([L("G0439")], payer="Medicare Part B", source_id="V0",
                                                   dos="2025-09-01")])
    assert "opportunity.awv" not in hist(enc(), [])  # not Medicare


def test_opportunity_preventive():
    visit = enc([L("99396")], sex="F", dob="1975-01-01")  # 51-year-old woman, preventive visit
    assert "opportunity.preventive" in hist(visit, [])
    done = [enc([L("77067"), L("82270"), L("96127"), L("88175")], sex="F", dob="1975-01-01", source_id="V0",
                dos="2025-06-01")]
    assert "opportunity.preventive" not in hist(visit, done)
    assert "opportunity.preventive" not in hist(enc([L("99213")], sex="F", dob="1975-01-01"), [])  # not preventive


def test_opportunities_never_hold_and_never_add_lines():
    rs = RuleSet()
    e = enc([L("99396")], dob="1975-01-01", payer="Medicare")
    h = History()
    found = rs.apply_history(EncounterFacts.of(e), h)
    assert found and all(f.severity == "info" and f.kind == "opportunity" for f in found)
    assert [ln.code for ln in e.lines] == ["99396"]


def test_practice_settings_switch_off_and_change_severity():
    e = enc(payer="")
    assert "coverage.missing" not in codes(e, RuleSet(disabled={"coverage.missing"}))
    assert [f.severity for f in RuleSet().apply_local(e, [])] == ["info"]  # the default: the RCM may hold it
    sev = [f.severity for f in RuleSet(severity={"coverage.missing": "review"}).apply_local(e, [])]
    assert sev == ["review"]


def test_config_refuses_unknown_rule_ids():
    from agent import config
    from core.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        config.parse({"rules": {"off": ["no.such.rule"]}})
    assert exc.value.key == "rules.off"
    cfg = config.parse({"rules": {"review": ["units.mue"], "off": ["doc.missing"]}})
    assert cfg.rules.severity == {"units.mue": "review"} and cfg.rules.disabled == {"doc.missing"}


def test_mue_file_readers(tmp_path: Path):
    assert read_mue_file(DATA / "mue-sample.json")["99213"] == 2
    csv = tmp_path / "mue.csv"
    csv.write_text('"CPT codes and descriptions only are copyright AMA"\n\n'
                   '"HCPCS/CPT Code","Practitioner Services MUE Values","MUE Adjudication Indicator"\n'
                   '"99213","2","3 Date of Service Edit: Clinical"\n"J1885","8","3 Date of Service Edit: Clinical"\n')
    assert read_mue_file(csv) == {"99213": 2, "J1885": 8}
    bad = tmp_path / "bad.csv"
    bad.write_text("name,dob\nDoe,1980-01-01\n")
    with pytest.raises(MueFileError) as exc:
        read_mue_file(bad)
    assert "Doe" not in str(exc.value)
