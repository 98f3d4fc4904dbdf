"""Rules about the visit's setting, coverage and documentation.

* ``pos.mismatch`` — the place of service does not fit the E/M family billed (the E/M code is
  the encounter's class as the claim states it): an emergency-department visit (99281-99285)
  away from POS 23, hospital inpatient/observation care (99221-99239) in an office (11), an
  office/outpatient visit (99202-99215) at an inpatient or emergency POS, nursing-facility care
  (99304-99316) outside POS 31/32, home visits (99341-99350) outside a home or domiciliary POS.
* ``coverage.missing`` — no payer or member id at all. ``info`` by default: in many practices
  the RCM, not the EHR export, holds the patient's insurance, and the charge goes out with
  self-pay coverage for the RCM to match. A practice whose EHR is the coverage source raises it
  to ``review`` (``[rules] review = ["coverage.missing"]``) so a coder confirms self-pay first.
* ``doc.missing`` — a charge that needs documentation the source did not carry. A finding for the
  coder, never a silent change. Three cases:

  - an *unlisted* procedure code (e.g. 17999, 64999, 99499): payers price it by hand and ask for
    the procedure note;
  - a *lab test without an order or result*: a code of the CPT Pathology and Laboratory section
    (80047-89398) on an encounter whose source carries orders and results (``Encounter.evidence``:
    HL7 v2 OBR/OBX; FHIR ServiceRequest, DiagnosticReport, Observation; C-CDA Results and Plan of
    Treatment entries) coded in CPT, with no order or result for that code. When the source
    sends no orders at all, or codes them only in LOINC or local codes (no CPT to compare with),
    the rule stays quiet: absence there says nothing;
  - an *E/M level above what a short visit supports*: the source gives the visit's length
    (HL7 PV1-44/45, FHIR Encounter.period or length, C-CDA encounter effectiveTime; with times of
    day) and it is below the total time the office/outpatient level
    needs when chosen by time (:data:`EM_MINUTES`). The level may rightly rest on medical
    decision making instead, so the coder checks the note says so, or bills the level the time
    supports.

:data:`EM_MINUTES` is the 2021 AMA CPT E/M guideline for office or other outpatient services
(99202-99215; total practitioner time on the date of the encounter, the lower bound of each
level's range, which CPT 2024 restated as "must be met or exceeded"), as the CMS MLN booklet
*Evaluation and Management Services Guide* (MLN006764) reproduces it. 99211 has no time.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.rules import EncounterFacts, Facts, Hit, Rule

INPATIENT_POS = frozenset({"21", "31", "32", "51", "61"})
HOME_POS = frozenset({"12", "13", "14", "16", "33"})
# (first, last, allowed POS or None, refused POS or None, what)
EM_SETTINGS: tuple[tuple[str, str, frozenset[str] | None, frozenset[str] | None, str], ...] = (
    ("99281", "99285", frozenset({"23"}), None, "an emergency department visit"),
    ("99221", "99239", None, frozenset({"11"}), "hospital inpatient or observation care"),
    ("99202", "99215", None, INPATIENT_POS | {"23"}, "an office or outpatient visit"),
    ("99304", "99316", frozenset({"31", "32"}), None, "nursing facility care"),
    ("99341", "99350", HOME_POS, None, "a home or residence visit"),
)
UNLISTED = frozenset({
    "15999", "17999", "19499", "20999", "21499", "22899", "22999", "23929", "24999", "25999", "26989", "27299",
    "27599", "27899", "28899", "29799", "29999", "30999", "31299", "31599", "31899", "32999", "33999", "36299",
    "37799", "38999", "39599", "40799", "40899", "41599", "41899", "42299", "42699", "42999", "43499", "43999",
    "44799", "44899", "45399", "45999", "46999", "47399", "47999", "48999", "49999", "50949", "51999", "53899",
    "54699", "55899", "58999", "59899", "60699", "64999", "66999", "67299", "67399", "67599", "67999", "68399",
    "68899", "69399", "69799", "69949", "69979", "76499", "77299", "77499", "78099", "78199", "78299", "78399",
    "78499", "78599", "78699", "78799", "78999", "79999", "81479", "81599", "84999", "85999", "86849", "86999",
    "87999", "88199", "88299", "88399", "89398", "90749", "90899", "92499", "93799", "94799", "95999", "96549",
    "96999", "97039", "97139", "97799", "99199", "99429", "99499",
})


_SETTING: dict[str, tuple[frozenset[str] | None, frozenset[str] | None, str] | None] = {}  # code -> its E/M setting


def _setting(code: str) -> tuple[frozenset[str] | None, frozenset[str] | None, str] | None:
    if code in _SETTING:
        return _SETTING[code]
    found = next(((allowed, refused, what) for first, last, allowed, refused, what in EM_SETTINGS
                  if len(code) == 5 and first <= code <= last), None)
    if len(_SETTING) < 50_000:
        _SETTING[code] = found
    return found


def pos_mismatch(enc: EncounterFacts, facts: Facts) -> Sequence[Hit]:
    pos = enc.pos
    if not pos:
        return ()
    out: Sequence[Hit] = ()
    for i, code in enumerate(enc.codes):
        setting = _setting(code)
        if setting is not None:
            allowed, refused, what = setting
            if (allowed is not None and pos not in allowed) or (refused is not None and pos in refused):
                out = [*out, Hit("place_of_service", f"{code} is {what}, but the place of service is {pos}",
                                 "correct the place of service or the E/M code in the EHR", line=i)]
    return out


_NO_COVERAGE = [Hit("coverages", "the encounter has no insurance coverage (no payer, no member id); it will be "
                    "billed as self-pay", "add the patient's coverage in the EHR, or approve it as self-pay")]


def coverage_missing(enc: EncounterFacts, facts: Facts) -> Sequence[Hit]:
    return () if enc.covered else _NO_COVERAGE


# office/outpatient E/M -> minutes of total time the level needs when chosen by time (AMA 2021)
EM_MINUTES = {"99202": 15, "99203": 30, "99204": 45, "99205": 60,
              "99212": 10, "99213": 20, "99214": 30, "99215": 40}
LAB_FIRST, LAB_LAST = "80047", "89398"  # CPT Pathology and Laboratory section


def _cpt5(code: str) -> bool:
    return len(code) == 5 and code.isdigit()


def _supported(code: str, minutes: int) -> str:
    """The highest level of ``code``'s family (new 9920x / established 9921x) the minutes support."""
    family = [c for c, m in EM_MINUTES.items() if c[:4] == code[:4] and m <= minutes]
    return max(family) if family else ""


def doc_missing(enc: EncounterFacts, facts: Facts) -> Sequence[Hit]:
    ordered, minutes = enc.ordered, enc.minutes
    if not (ordered or minutes) and UNLISTED.isdisjoint(enc.codes):
        return ()
    cpt_orders = any(_cpt5(c) for c in ordered) if ordered else False
    out: list[Hit] = []
    for i, code in enumerate(enc.codes):
        if code in UNLISTED:
            out.append(Hit(f"lines[{i}].code", f"{code} is an unlisted procedure code: the payer prices it by hand "
                           "from the procedure note, which the export did not carry",
                           "attach the operative/procedure note to the claim in the RCM, or use a specific code",
                           line=i))
        elif cpt_orders and _cpt5(code) and LAB_FIRST <= code <= LAB_LAST and code not in ordered:
            out.append(Hit(f"lines[{i}].code", f"lab test {code} has no order or result in the export, which "
                           "carries the visit's other orders and results",
                           "check the test was ordered and resulted (the lab's report) before billing it; remove "
                           "the charge if it was not done", line=i))
        elif minutes and code in EM_MINUTES and minutes < EM_MINUTES[code]:
            lower = _supported(code, minutes)
            out.append(Hit(f"lines[{i}].code", f"{code} chosen by time needs {EM_MINUTES[code]} minutes; the export "
                           f"gives a visit of {minutes} minutes",
                           "if the level rests on medical decision making, make sure the note documents it; "
                           "otherwise " + (f"bill the level the time supports ({lower})" if lower
                                           else "the time supports no level by time"), line=i))
    return out


RULES = [
    Rule("pos.mismatch", "review", "encounter", "place of service inconsistent with the E/M family billed",
         pos_mismatch),
    Rule("coverage.missing", "info", "encounter", "no insurance coverage on the encounter", coverage_missing),
    Rule("doc.missing", "review", "lines", "a code that needs documentation the source did not carry (unlisted "
         "code, lab test without order/result, E/M level above the visit's length)",
         doc_missing),
]
