"""Rows -> encounters for the EHR database connectors: boundary checks on every value."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from connectors.ehr.db.build import build, justify_codes, text, unit_charge
from connectors.ehr.db.profile import load_profile, parse_profile
from core.errors import ConfigError


def test_justify_is_read_in_pointer_order() -> None:
    assert justify_codes("ICD10|E11.9:ICD10|I10:", "openemr") == ["E11.9", "I10"]
    assert justify_codes("ICD10|I10:ICD10|I10:", "openemr") == ["I10"]
    assert justify_codes(None, "openemr") == [] and justify_codes("ICD10|I10:", "none") == []


@pytest.mark.parametrize(("fee", "units", "meaning", "expected"), [
    (Decimal("75.00"), 1, "line_total", ("1", "75.00")),
    (Decimal("75.00"), 2, "line_total", ("2", "37.50")),  # OpenEMR's fee is units x price
    (85.5, 1, "unit_price", ("1", "85.50")),  # Open Dental's double column
    ("12abc", 1, "line_total", ("1", "12abc")),  # passed on as text: standardize reports it
    ("1e999999999", 1, "line_total", ("1", "1e999999999")),
    (float("nan"), 1, "unit_price", ("1", "NaN")),
    (Decimal("75"), 0, "line_total", ("0", "75")),  # zero units: kept for validation to report
    (None, 1, "line_total", ("1", "")),
])
def test_unit_charge_checks_numbers_before_any_arithmetic(fee, units, meaning, expected) -> None:  # type: ignore[no-untyped-def]
    assert unit_charge(fee, units, meaning) == expected


def test_text_is_bounded_and_typed() -> None:
    assert text("x" * 500) == "x" * 200
    assert text(datetime(2026, 1, 2, 3, 4)) == "2026-01-02" and text(date(2026, 1, 2)) == "2026-01-02"
    assert text(b"\xffabc") == "\ufffdabc" and text(object()) == "" and text(None) == ""


def test_build_maps_openemr_rows() -> None:
    prof = load_profile("openemr")
    header = {"k": 7, "dos": datetime(2026, 3, 4, 9, 30), "pos": 11, "mrn": "MRN1", "family": "Okafor",
              "given": "Amara", "npi": "1234567893"}
    lines = [{"code_type": "ICD10", "code": "I10"}, {"code_type": "ICD10", "code": "E11.9"},
             {"code_type": "CPT4", "code": "99213", "modifier": "25:59", "units": 1, "fee": Decimal("90"),
              "justify": "ICD10|E11.9:ICD10|I10:", "line_id": 12},
             {"code_type": "COPAY", "code": "", "fee": Decimal("-20")}]
    enc = build("oe", prof, "7", header, lines, [{"rank": "primary", "payer_name": "Acme", "member_id": "P1"}])
    assert enc.business_key == "charge|db:oe|7" and enc.dos_start == "2026-03-04"
    assert [d.code for d in enc.diagnoses] == ["I10", "E11.9"]
    (line,) = enc.lines  # the copay row is not a charge line
    assert line.dx_pointers == [2, 1] and line.modifiers == ["25", "59"] and line.unit_charge == "90.00"
    assert line.line_id == "12" and enc.coverages[0].payer_name == "Acme"


def test_profile_errors_name_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="strategy"):
        parse_profile({"strategy": "magic"})
    with pytest.raises(ConfigError, match="query 'coverage' is missing"):
        parse_profile({"strategy": "id_window", "tables": {"t": ["a"]},
                       "queries": {"max_id": "x", "changed": "x", "lines": "x", "encounters": "x"}})
    with pytest.raises(ConfigError, match="neither a built-in"):
        load_profile("nosuch")
