"""``doc.missing`` beyond unlisted codes: a lab test without an order or result, and an E/M level
above what the visit's length supports. Real HL7 v2 messages through the real parser (OBR/OBX and
PV1-44/45 become ``Encounter.evidence``), then the rules; the stored path through a real
SQLCipher store and the pipeline. Each case that fires has a close case that does not."""

from __future__ import annotations

import json
from typing import Any

from agent.pipeline import Pipeline
from agent.rules import RuleSet
from agent.rules.setting import EM_MINUTES
from connectors.ehr import hl7v2
from core.model import Encounter, Evidence, standardize

NPI = "1234567893"


def message(lines: list[str], *, extra: list[str] = (), admit: str = "20260310", discharge: str = "",
            visit: str = "V1", mrn: str = "M1") -> bytes:
    """A DFT^P03 with these FT1 codes (each pointed at DG1 1), PV1-44/45 as given, and extra
    segments (OBR/OBX) after the charges."""
    pv1 = ["PV1", "1", "O", "RFM", "", "", "", f"{NPI}^Doc^Test^^^^^^NPI"] + [""] * 37
    pv1[19], pv1[44] = visit, admit
    if discharge:
        pv1.append(discharge)
    segs = ["MSH|^~\\&|EHR|RFM|CB|BILL|202603100930||DFT^P03|C" + visit + "|P|2.5.1",
            f"PID|1||{mrn}^^^RFM^MR||Doe^Pat||19700101|F|||1 Main St^^Springfield^IL^62704",
            "|".join(pv1)]
    segs += [f"FT1|{n}|T{n}||20260310|20260310|CG|{c}^^C4|||1|50.00||||||||R07.9|{NPI}^Doc^Test|||||{c}^^C4|"
             for n, c in enumerate(lines, start=1)]
    segs += ["DG1|1|I10|R07.9^^I10|||F", *extra]
    return ("\r".join(segs) + "\r").encode()


def parsed(raw: bytes) -> Encounter:
    (enc,) = hl7v2.parse(raw, name="t.hl7", options={})
    assert isinstance(enc, Encounter)
    standardize(enc)
    return enc


def doc(enc: Encounter) -> list[dict[str, Any]]:
    return [f.to_dict() for f in RuleSet().apply_local(enc, []) if f.code == "doc.missing"]


CMP = ["OBR|1|O1|F1|80053^Comprehensive metabolic panel^C4", "OBX|1|NM|2345-7^Glucose^LN||99|mg/dL"]


def test_parser_keeps_orders_results_and_visit_length() -> None:
    enc = parsed(message(["80053", "99213"], extra=CMP, admit="202603101000", discharge="202603101025"))
    assert enc.evidence == [Evidence("order", "80053", "C4"), Evidence("result", "80053", "C4"),
                            Evidence("time", minutes=25)]
    plain = parsed(message(["99213"]))  # a date without time, no OBR/OBX: nothing to keep
    assert plain.evidence == [] and "evidence" not in plain.to_dict()  # the stored form (and hash) as before
    back = Encounter.from_dict(json.loads(enc.to_json()))
    assert back == enc


def test_lab_without_order_or_result_fires() -> None:
    enc = parsed(message(["99213", "85025", "80053"], extra=CMP))
    found = doc(enc)
    assert [(f["line"], f["field"]) for f in found] == [(1, "lines[1].code")]  # 85025 only; 80053 was ordered
    assert "85025" in found[0]["message"] and "order or result" in found[0]["message"]


def test_lab_with_its_order_or_result_or_no_orders_in_the_source_stays_quiet() -> None:
    ordered = ["OBR|1|O1|F1|85025^CBC^C4", "OBR|2|O2|F2|80053^CMP^C4"]
    assert doc(parsed(message(["85025", "80053"], extra=ordered))) == []
    result_only = ["OBX|1|NM|85025^CBC^C4||7.1"]  # a result with no OBR before it counts as well
    assert doc(parsed(message(["85025"], extra=[*result_only, "OBR|1|O1|F1|80053^CMP^C4"]))) == []
    assert doc(parsed(message(["85025"]))) == []  # the source sends no orders at all: absence says nothing
    loinc = ["OBR|1|O1|F1|24323-8^CMP^LN", "OBX|1|NM|2345-7^Glucose^LN||99"]
    assert doc(parsed(message(["85025"], extra=loinc))) == []  # orders without CPT: nothing to compare with


def test_em_level_above_a_short_visit_fires() -> None:
    enc = parsed(message(["99214"], admit="202603101000", discharge="202603101012"))
    (f,) = doc(enc)
    assert f["line"] == 0 and "needs 30 minutes" in f["message"] and "12 minutes" in f["message"]
    assert "99212" in f["fix"]  # the level 12 minutes supports
    new = parsed(message(["99205"], admit="202603100900", discharge="202603100950"))
    (g,) = doc(new)
    assert "needs 60 minutes" in g["message"] and "99204" in g["fix"]


def test_em_level_the_visit_length_supports_or_no_length_stays_quiet() -> None:
    assert doc(parsed(message(["99214"], admit="202603101000", discharge="202603101030"))) == []  # exactly 30
    assert doc(parsed(message(["99214"], admit="202603101000"))) == []  # no discharge time: no length
    assert doc(parsed(message(["99214"], admit="20260310", discharge="20260310"))) == []  # dates only
    assert doc(parsed(message(["99214"], admit="202603102300", discharge="202603110030"))) == []  # two days
    assert doc(parsed(message(["99211", "99213"], admit="202603101000", discharge="202603101020"))) == []


def test_em_minutes_table_is_the_ama_2021_office_table() -> None:
    assert EM_MINUTES == {"99202": 15, "99203": 30, "99204": 45, "99205": 60,
                          "99212": 10, "99213": 20, "99214": 30, "99215": 40}


def test_findings_land_on_the_stored_encounter_and_survive_a_rerun(fast_store: Any) -> None:
    from agent.rules.apply import rerun

    pipe = Pipeline(fast_store, rules=RuleSet())
    pipe.ingest_bytes(message(["85025"], extra=CMP, visit="V1"), origin="a.hl7")
    pipe.ingest_bytes(message(["99215"], admit="202603101000", discharge="202603101015", visit="V2",
                              mrn="M2"),
                      origin="b.hl7")
    pipe.ingest_bytes(message(["99215"], admit="202603101000", discharge="202603101045", visit="V3",
                              mrn="M3"),
                      origin="c.hl7")

    def found() -> dict[str, list[int]]:
        return {r["source_id"]: [f["line"] for f in r["findings"] if f["code"] == "doc.missing"]
                for r in fast_store.encounters()}

    assert found() == {"V1": [0], "V2": [0], "V3": []}
    states = dict(fast_store.conn.execute("SELECT source_id, state FROM encounters"))
    assert states["V1"] == states["V2"] == "needs_review"
    res = rerun(fast_store, RuleSet(), actor="test")  # decoded from the store, evidence included
    assert res.checked == 3 and res.changed == 0 and found() == {"V1": [0], "V2": [0], "V3": []}
