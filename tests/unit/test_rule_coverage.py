"""``coverage.inactive_on_dos``: fires on the payer's inactive answer for the date of service or
on EHR plan dates that do not span it; close cases stay quiet. The EHR dates come from a real
HL7 IN1 segment through the parser and standardize()."""

from __future__ import annotations

from agent.rules import RULES, EncounterFacts, History, RuleSet
from connectors.ehr.hl7v2 import parse as parse_hl7
from core.model import ChargeLine, Coverage, Diagnosis, Encounter, Patient, Provider, standardize
from tests.helpers import dft

RULE = "coverage.inactive_on_dos"
DOS = "2026-03-10"


def enc(*, coverages: list[Coverage] | None = None, mrn: str = "M1", dos: str = DOS) -> Encounter:
    return Encounter(
        source="hl7v2", source_id="V1", source_system="EHR",
        patient=Patient(mrn=mrn, family="Doe", given="Pat", dob="1980-05-01", sex="F"),
        coverages=coverages if coverages is not None else [Coverage(payer_name="Acme", member_id="X1")],
        rendering=Provider(npi="1234567893"), dos_start=dos, dos_end=dos, place_of_service="11",
        diagnoses=[Diagnosis("J02.9")], lines=[ChargeLine("99213", dx_pointers=[1])])


def fired(e: Encounter, answers: dict[tuple[str, str], str] | None = None,
          rs: RuleSet | None = None) -> list[dict[str, object]]:
    h = History(eligibility=dict(answers or {}))
    f = EncounterFacts.of(e)
    h.visits.setdefault(f.mrn, []).append(f.visit())
    return [x.to_dict() for x in (rs or RuleSet()).apply_history(f, h) if x.code == RULE]


def test_registered_with_review_severity() -> None:
    assert RULES[RULE].severity == "review" and RULES[RULE].history


def test_payer_answer_inactive_for_the_dos_fires() -> None:
    got = fired(enc(), {("M1", DOS): "inactive"})
    assert len(got) == 1 and got[0]["severity"] == "review" and got[0]["field"] == "coverages"
    assert "not active" in str(got[0]["message"]) and got[0]["rule_version"]
    assert "Doe" not in str(got[0]) and "M1" not in str(got[0])  # no patient data in the finding


def test_close_cases_do_not_fire() -> None:
    assert fired(enc(), {("M1", DOS): "active"}) == []
    assert fired(enc(), {("M1", "2026-03-11"): "inactive"}) == []  # an answer for another date
    assert fired(enc(), {("M2", DOS): "inactive"}) == []  # another patient
    assert fired(enc(), {("M1", DOS): "unknown"}) == []  # the payer could not say: not a "no"
    assert fired(enc(), {}) == []  # never asked
    assert fired(enc(coverages=[])) == []  # no coverage at all: coverage.missing's case


def test_ehr_plan_dates_outside_the_dos_fire() -> None:
    ended = [Coverage(payer_name="Acme", member_id="X1", start="2025-01-01", end="2026-02-28")]
    got = fired(enc(coverages=ended))
    assert len(got) == 1 and "ended on 2026-02-28" in str(got[0]["message"])
    later = [Coverage(payer_name="Acme", member_id="X1", start="2026-04-01")]
    assert len(fired(enc(coverages=later))) == 1


def test_ehr_plan_dates_close_cases() -> None:
    spans = [Coverage(payer_name="Acme", member_id="X1", start="2026-01-01", end="2026-03-10")]  # ends that day
    assert fired(enc(coverages=spans)) == []
    ended = Coverage(payer_name="Acme", member_id="X1", end="2026-02-28")
    other = Coverage(payer_name="Beta", member_id="Y1")  # a second coverage without dates may be active
    assert fired(enc(coverages=[ended, other])) == []
    assert fired(enc(coverages=[ended]), {("M1", DOS): "active"}) == []  # the payer's answer wins


def test_rule_switched_off_and_severity_changed() -> None:
    assert fired(enc(), {("M1", DOS): "inactive"}, RuleSet(disabled={RULE})) == []
    got = fired(enc(), {("M1", DOS): "inactive"}, RuleSet(severity={RULE: "error"}))
    assert got[0]["severity"] == "error"


def _dft_with_in1(in1_12: str, in1_13: str) -> bytes:
    f = ["IN1", "1", "PLAN1", "60054", "AETNA"] + [""] * 45
    f[8], f[12], f[13], f[17], f[36] = "GRP1", in1_12, in1_13, "SEL", "W000000001"
    return (dft(0) + "|".join(f) + "\r").encode()


def _parsed(data: bytes) -> Encounter:
    items = [x for x in parse_hl7(data, name="t.hl7", options={}) if isinstance(x, Encounter)]
    assert len(items) == 1
    return items[0]


def test_hl7_in1_plan_dates_reach_the_rule() -> None:
    e = _parsed(_dft_with_in1("20250101", "20260930"))  # dft(0) is a visit on 2026-10-01
    findings = standardize(e)
    assert (e.coverages[0].start, e.coverages[0].end) == ("2025-01-01", "2026-09-30") and findings == []
    got = fired(e)
    assert len(got) == 1 and "ended on 2026-09-30" in str(got[0]["message"])
    e2 = _parsed(_dft_with_in1("20250101", "20261231"))
    standardize(e2)
    assert fired(e2) == []


def test_unreadable_plan_date_is_dropped_with_a_warning() -> None:
    e = _parsed(_dft_with_in1("", "20261399"))
    findings = standardize(e)
    assert e.coverages[0].end == "" and [(f.code, f.severity) for f in findings] == [("date.format", "warning")]
    assert fired(e) == []


def test_coverage_without_dates_keeps_its_stored_form() -> None:
    """Encounters without plan dates serialize as before the fields existed: a re-export of an
    already stored encounter is still a duplicate, not a revision."""
    d = enc().to_dict()["coverages"][0]
    assert set(d) == {"payer_name", "payer_id", "member_id", "group", "relationship"}
    dated = enc(coverages=[Coverage(member_id="X1", end="2026-01-01")])
    assert dated.to_dict()["coverages"][0]["end"] == "2026-01-01"
    assert Encounter.from_dict(dated.to_dict()).coverages[0].end == "2026-01-01"
