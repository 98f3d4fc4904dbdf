"""Property-based: whatever bytes or values arrive, each parser and the validator give only a
parse or validation result. A parser returns Encounter / PatientUpdate / Rejected records or
raises ParseError -- never another exception; standardize + validate (through the pipeline's
``prepare``) return findings, never raise; and no Encounter that comes out holds a number that
is not finite and bounded."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.pipeline import Pipeline
from agent.validate import validate
from connectors.ehr import ccda, csvfmt, fhir, hl7v2
from connectors.ehr.base import ParseError
from core.model import (
    Address,
    ChargeLine,
    Coverage,
    Diagnosis,
    Encounter,
    Finding,
    Patient,
    PatientUpdate,
    Provider,
    Rejected,
)
from tests.helpers import CSV_HEADER, csv_row
from tests.hostile.cases import BAD_NUMBERS, dft_with_ft1, fhir_bundle, is_sane_number

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PIPE = Pipeline(None)  # prepare() only: standardize + validate, no store

number_text = st.one_of(
    st.sampled_from(BAD_NUMBERS + ("1", "0.5", "125.00", "-3", "0", "9999", "10000", "1e3", ".5", "5.")),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.from_regex(r"[+-]?[0-9]{0,30}(\.[0-9]{0,12})?([eE][+-]?[0-9]{1,12})?", fullmatch=True),
    st.text(max_size=40),
)
json_number = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999999999", "-0", "-0.0", "0", "true", "null",
                     '"12.5"', '"abc"', "[]", "{}", "9" * 400]),
    st.from_regex(r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,10})?", fullmatch=True),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)


def check_result(items: list, *, prepare: bool = True) -> None:  # type: ignore[type-arg]
    assert isinstance(items, list)
    for item in items:
        assert isinstance(item, (Encounter, PatientUpdate, Rejected)), type(item)
        if isinstance(item, Rejected):
            assert isinstance(item.reason, str) and item.reason
        if isinstance(item, Encounter) and prepare:
            state, findings = PIPE.prepare(item)
            assert state in ("ready", "needs_review", "expected")
            assert all(isinstance(f, Finding) for f in findings)
            for ln in item.lines:
                assert is_sane_number(ln.units, money=False), ln.units[:40]
                assert is_sane_number(ln.unit_charge, money=True), ln.unit_charge[:40]
            json.loads(item.to_json())


def parse_or_refuse(parser, data: bytes, name: str) -> None:  # type: ignore[no-untyped-def]
    try:
        items = parser.parse(data, name=name, options={})
    except ParseError as exc:
        assert str(exc)
        return
    check_result(items)


# -- HL7 v2 ---------------------------------------------------------------------------

@SETTINGS
@given(units=number_text, price=number_text, extended=number_text)
def test_hl7_ft1_numbers(units: str, price: str, extended: str) -> None:
    text = dft_with_ft1(units=units.replace("|", "").replace("\r", ""), price=price.replace("|", "").replace("\r", ""),
                        extended=extended.replace("|", "").replace("\r", ""))
    parse_or_refuse(hl7v2, text.encode("utf-8", "surrogatepass"), "x.hl7")


@SETTINGS
@given(st.binary(max_size=600))
def test_hl7_arbitrary_bytes(data: bytes) -> None:
    parse_or_refuse(hl7v2, data, "x.hl7")


@SETTINGS
@given(st.data())
def test_hl7_mutated_message(data: st.DataObject) -> None:
    """A valid DFT with random characters replaced: every field position sees junk."""
    msg = bytearray(dft_with_ft1().encode())
    for _ in range(data.draw(st.integers(1, 12))):
        pos = data.draw(st.integers(0, len(msg) - 1))
        msg[pos] = data.draw(st.sampled_from(b"|^~\\&\r\n0123456789.eE-+NaIf\x00\xff \x0b\x1c"))
    parse_or_refuse(hl7v2, bytes(msg), "x.hl7")


# -- FHIR -----------------------------------------------------------------------------

@SETTINGS
@given(q=json_number, u=json_number, n=st.one_of(st.none(), json_number), t=st.one_of(st.none(), json_number))
def test_fhir_claim_numbers(q: str, u: str, n: str | None, t: str | None) -> None:
    parse_or_refuse(fhir, fhir_bundle(quantity=q, unit_price=u, net=n, total=t), "x.json")


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
              st.floats(allow_nan=False, allow_infinity=False)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(
        st.sampled_from(["resourceType", "entry", "resource", "item", "quantity", "value", "id", "status",
                         "subject", "reference", "period", "start", "encounter", "productOrService",
                         "coding", "code", "system", "identifier", "net", "unitPrice", "diagnosis"]),
        kids, max_size=5)),
    max_leaves=30,
)


@SETTINGS
@given(json_value)
def test_fhir_arbitrary_json_shapes(doc: object) -> None:
    parse_or_refuse(fhir, json.dumps(doc).encode(), "x.json")


@SETTINGS
@given(st.data())
def test_fhir_mutated_bundle(data: st.DataObject) -> None:
    """Resources of the right type with elements swapped for random JSON values."""
    doc = json.loads(fhir_bundle())
    for _ in range(data.draw(st.integers(1, 4))):
        res = data.draw(st.sampled_from(doc["entry"]))["resource"]
        key = data.draw(st.sampled_from(sorted(res)))
        if key != "resourceType":
            res[key] = data.draw(json_value)
    parse_or_refuse(fhir, json.dumps(doc).encode(), "x.json")


@SETTINGS
@given(st.binary(max_size=400))
def test_fhir_arbitrary_bytes(data: bytes) -> None:
    parse_or_refuse(fhir, data, "x.json")


# -- CSV ------------------------------------------------------------------------------

cell = st.one_of(number_text, st.text(max_size=12))


@SETTINGS
@given(st.lists(st.lists(cell, min_size=1, max_size=24), max_size=6))
def test_csv_random_rows_under_a_real_header(rows: list[list[str]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    for r in rows:
        w.writerow(r)
    data = (CSV_HEADER + csv_row(1) + buf.getvalue()).encode("utf-8", "surrogatepass")
    parse_or_refuse(csvfmt, data, "x.csv")


@SETTINGS
@given(units=number_text, price=number_text, ptr=st.text(max_size=10))
def test_csv_number_and_pointer_cells(units: str, price: str, ptr: str) -> None:
    import csv
    import io

    row = next(csv.reader(io.StringIO(csv_row(3))))
    row[-3], row[-2], row[-1] = ptr, units, price
    buf = io.StringIO()
    csv.writer(buf).writerow(row)
    parse_or_refuse(csvfmt, (CSV_HEADER + buf.getvalue()).encode("utf-8", "surrogatepass"), "x.csv")


@SETTINGS
@given(st.binary(max_size=400))
def test_csv_arbitrary_bytes(data: bytes) -> None:
    parse_or_refuse(csvfmt, data, "x.csv")


# -- C-CDA ----------------------------------------------------------------------------

_CCDA = (__import__("pathlib").Path(__file__).parents[1] / "data" / "ccda" / "Progress_Note.ccda").read_bytes()


@SETTINGS
@given(st.data())
def test_ccda_mutated_document(data: st.DataObject) -> None:
    doc = bytearray(_CCDA)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(doc) - 1))
        doc[pos] = data.draw(st.sampled_from(b'<>/="&;0123456789 aZ\x00\xff'))
    parse_or_refuse(ccda, bytes(doc), "x.xml")


@SETTINGS
@given(st.binary(max_size=400))
def test_ccda_arbitrary_bytes(data: bytes) -> None:
    parse_or_refuse(ccda, data, "x.xml")


# -- the validator alone --------------------------------------------------------------

text = st.text(max_size=16)
lines = st.builds(ChargeLine, code=text, code_system=text, modifiers=st.lists(text, max_size=6),
                  dx_pointers=st.lists(st.integers(-5, 20), max_size=6), units=number_text,
                  unit_charge=number_text, line_id=text, service_date=text)
encounters = st.builds(
    Encounter, source=st.just("csv"), source_id=text, kind=st.sampled_from(["charge", "expected"]),
    patient=st.builds(Patient, mrn=text, family=text, given=text, dob=text, sex=text,
                      address=st.builds(Address, zip=text, state=text)),
    coverages=st.lists(st.builds(Coverage, member_id=text), max_size=2),
    rendering=st.builds(Provider, npi=text), billing=st.builds(Provider, npi=text),
    dos_start=text, dos_end=text, place_of_service=text,
    diagnoses=st.lists(st.builds(Diagnosis, code=text, system=text), max_size=5),
    lines=st.lists(lines, max_size=5),
)


@SETTINGS
@given(encounters)
def test_validator_gives_findings_only(enc: Encounter) -> None:
    raw = validate(enc)  # straight from a reader, not standardized: still findings only
    assert all(isinstance(f, Finding) for f in raw)
    check_result([enc])


def test_sane_number_rule_itself() -> None:
    assert is_sane_number("125.00", money=True) and is_sane_number("", money=False)
    assert not is_sane_number("NaN", money=True) and not is_sane_number("1" + "0" * 30, money=True)
    assert Decimal("9999") and not is_sane_number("10000", money=False)


def test_ccda_unknown_declared_encoding_is_a_parse_error() -> None:
    """Found by test_ccda_mutated_document: encoding="U0F-8" escaped as a LookupError."""
    doc = _CCDA.replace(b'encoding="UTF-8"', b'encoding="U0F-8"', 1)
    assert doc != _CCDA
    try:
        ccda.parse(doc, name="x.xml", options={})
    except ParseError as exc:
        assert "character encoding" in str(exc)
    else:
        raise AssertionError("an unknown declared encoding was accepted")
