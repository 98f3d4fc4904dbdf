"""The cached pyx12 driver (connectors/rcm/x12/validate.py) reports exactly what pyx12's own
``x12n_document`` reports, file by file — valid files, broken claims, broken envelopes — and the
parallel path (worker processes) says the same as the in-process one."""

from __future__ import annotations

import io
import json

import pytest
import pyx12.params
import pyx12.x12n_document

from connectors.rcm.x12 import validate as v
from tests.unit.test_x12_writer import ci, enc, write


def reference(text: str) -> tuple[list[v.Issue], bool]:
    """pyx12's documented entry point (maps parsed again on every call), read the same way."""
    out = io.StringIO()
    ok = pyx12.x12n_document.x12n_document(pyx12.params.ParamsBase(), io.StringIO(text), None, None, fd_json=out)
    return v._issues(json.loads(out.getvalue() or '{"interchanges": []}')), ok


GOOD = write([ci(enc(i)) for i in range(4)]).text
BROKEN = {
    "good": GOOD,
    "bad procedure code and birth date": GOOD.replace("SV1*HC:93000", "SV1*ZZ:93000", 2).replace(
        "DMG*D8*19800203", "DMG*D8*19801303", 1),
    "claim id and place of service gone": GOOD.replace("CLM*CB", "CLM**", 1).replace("*11:B:1*", "**", 1),
    "no diagnosis": write([ci(enc(0)), ci(enc(1, dx=False))]).text,
    "wrong SE count": GOOD.replace("\nSE*", "\nSE*9", 1),
    "bad GS date": GOOD.replace("*CLEARHOUSE*202603", "*CLEARHOUSE*202613", 1),
    "wrong GE count": GOOD.replace("GE*1*", "GE*2*", 1),
    "a segment out of place": GOOD.replace("~\nHI*", "~\nPAT*19~\nHI*", 1),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_same_issues_as_pyx12s_x12n_document(name: str) -> None:
    text = BROKEN[name]
    mine = v.validate(text)
    theirs, ok = reference(text)
    assert mine[:len(theirs)] == theirs  # all of pyx12's, in its order
    assert (mine == []) == ok == (name == "good")
    # beyond its JSON: element errors on ISA/GS/ST, which pyx12's JSON visitor leaves out
    assert all(i.segment in ("ISA", "GS", "ST") for i in mine[len(theirs):])


def test_an_envelope_element_error_is_named() -> None:
    [issue] = v.validate(BROKEN["bad GS date"])
    assert issue.segment == "GS" and issue.element == "GS04" and "not a valid date" in issue.message


def test_messages_never_quote_values_and_point_at_the_claims_lines() -> None:
    issues = v.validate(BROKEN["bad procedure code and birth date"])
    assert "DMG02" in {i.element for i in issues}
    assert any(i.segment == "SV1" and "Segment SV1 not found" in i.message for i in issues)
    assert all("ZZ" not in i.message and "93000" not in i.message and "19801303" not in i.message for i in issues)


def test_a_misplaced_address_segment_does_not_quote_the_address() -> None:
    text = GOOD.replace("~\nHI*", "~\nN3*1 MAIN ST~\nHI*", 1)
    issues = v.validate(text)
    assert any("Segment N3 not found" in i.message for i in issues)
    assert all("MAIN" not in i.message for i in issues)
    assert all(i.line > 0 for i in issues)


def test_not_x12_is_one_readable_issue() -> None:
    [issue] = v.validate("hello, this is not an interchange")
    assert "not a readable X12 interchange" in issue.message


def test_parallel_workers_say_the_same_as_in_process() -> None:
    texts = [BROKEN[k] for k in sorted(BROKEN)]
    try:
        assert v.validate_many(texts, workers=2) == [v.validate(t) for t in texts]
        assert v._POOL is not None  # the worker processes really ran
    finally:
        v.shutdown_pool()
    assert v.validate_many(texts[:1], workers=2) == [v.validate(texts[0])]  # one file: in-process
