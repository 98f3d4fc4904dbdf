"""Rules that compare an encounter with the patient's other encounters ChargeBridge has seen.

* ``line.duplicate`` — the same procedure code for the same patient and date of service in
  another encounter: billed twice, one is denied (or paid twice and recouped).
* ``opportunity.ccm`` — two or more chronic conditions (:data:`CHRONIC`, by ICD-10-CM category)
  documented in the calendar month and no chronic care management code (:data:`CCM_CODES`) in
  that month.
* ``opportunity.awv`` — a Medicare patient with no annual wellness visit (G0438/G0439) in the 12
  months up to this visit.
* ``opportunity.preventive`` — at a preventive visit, an age/sex-due screening (USPSTF grade A/B,
  :data:`SCREENINGS`) with no code for it in its interval.

Opportunities are suggestions (severity ``info``): shown on the encounter and in a list, never
billed, never holding the encounter. Only encounters ChargeBridge has seen count; a screening done
elsewhere is not known, which is why these are suggestions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from agent.rules import EncounterFacts, History, Hit, Rule, Visit

if TYPE_CHECKING:
    from agent.store import Store

WINDOW_DAYS = 3 * 366  # the longest interval any rule looks back (cervical screening, 3 years)

CHRONIC = {  # ICD-10-CM category -> condition (CMS CCM: conditions expected to last 12+ months)
    "E10": "diabetes", "E11": "diabetes", "E13": "diabetes", "I10": "hypertension", "I11": "hypertension",
    "I12": "hypertension", "I13": "hypertension", "I50": "heart failure", "I25": "coronary artery disease",
    "I48": "atrial fibrillation", "J44": "COPD", "J45": "asthma", "N18": "chronic kidney disease",
    "E78": "hyperlipidemia", "F32": "depression", "F33": "depression", "F03": "dementia", "G30": "Alzheimer disease",
    "M05": "rheumatoid arthritis", "M06": "rheumatoid arthritis", "M17": "osteoarthritis", "M16": "osteoarthritis",
    "E66": "obesity", "E03": "hypothyroidism", "K70": "liver disease", "K74": "liver disease", "B20": "HIV",
    "G20": "Parkinson disease", "G40": "epilepsy", "F20": "schizophrenia", "F31": "bipolar disorder",
}
CCM_CODES = frozenset({"99490", "99491", "99439", "99487", "99489", "99437", "G0506"})
AWV_CODES = frozenset({"G0438", "G0439"})
PREVENTIVE_VISIT = frozenset({*(str(c) for c in range(99381, 99388)), *(str(c) for c in range(99391, 99398)),
                              *AWV_CODES, "G0402"})
# (name, sex or "", age from, age to, interval in months, codes that count as done)
SCREENINGS: tuple[tuple[str, str, int, int, int, frozenset[str]], ...] = (
    ("breast cancer screening (mammography)", "F", 40, 74, 24, frozenset({"77067", "77063", "77065", "77066"})),
    ("cervical cancer screening", "F", 21, 65, 36,
     frozenset({"88141", "88142", "88143", "88150", "88164", "88175", "87624", "87625", "G0101", "G0123", "Q0091"})),
    ("colorectal cancer screening", "", 45, 75, 12,
     frozenset({"82270", "81528", "G0328", "45378", "45380", "45385", "G0105", "G0121", "74263", "45330"})),
    ("depression screening", "", 12, 130, 12, frozenset({"G0444", "96127"})),
)


def _d(iso: str) -> date | None:
    try:
        return date.fromisoformat(iso)
    except ValueError:
        return None


def _age(dob: str, dos: str) -> int | None:
    b, d = _d(dob), _d(dos)
    if b is None or d is None:
        return None
    return d.year - b.year - ((d.month, d.day) < (b.month, b.day))


@lru_cache(maxsize=8192)
def _since(dos: str, days: int) -> str:
    """The ISO date ``days`` before ``dos`` ("" when ``dos`` is not a date): a window's start.
    Cached: a practice's visits fall on a few hundred days a year."""
    d = _d(dos)
    return "" if d is None else (d - timedelta(days=days)).isoformat()


def duplicate(enc: EncounterFacts, others: list[Visit]) -> Sequence[Hit]:
    if not others:
        return ()
    dos = enc.dos
    same_day = [v for v in others if v.dos == dos]
    if not same_day:
        return ()
    out: list[Hit] = []
    seen: set[str] = set()
    for i, code in enumerate(enc.codes):
        if code in seen:
            continue
        if any(code in v.codes for v in same_day):
            seen.add(code)
            out.append(Hit(f"lines[{i}].code", f"{code} is also billed for this patient on the same date in another "
                           "encounter", "check whether both are real (then add a modifier such as 76/77 or 91) or "
                           "reject this one as a duplicate", line=i))
    return out


def ccm(enc: EncounterFacts, others: list[Visit]) -> Sequence[Hit]:
    if not enc.dos:
        return ()
    month = enc.dos[:7]
    conditions = {CHRONIC[c[:3]] for c in enc.dx if c[:3] in CHRONIC}
    in_month = [v for v in others if v.dos[:7] == month] if others else []
    for v in in_month:
        conditions.update(CHRONIC[c[:3]] for c in v.dx if c[:3] in CHRONIC)
    if len(conditions) < 2:
        return ()
    if not CCM_CODES.isdisjoint(enc.codes) or any(not CCM_CODES.isdisjoint(v.codes) for v in in_month):
        return ()
    names = sorted(conditions)
    return [Hit("lines", f"{len(names)} chronic conditions documented this month ({', '.join(names)}) and "
                "no chronic care management code", "if the practice provides 20+ minutes of care management in the "
                "month with the patient's consent, bill CCM (e.g. 99490); a suggestion, not billed automatically")]


_NO_AWV = [Hit("lines", "Medicare patient with no annual wellness visit (G0438/G0439) in the last 12 months of "
               "visits seen", "offer an annual wellness visit; a suggestion, not billed automatically")]


def awv(enc: EncounterFacts, others: list[Visit]) -> Sequence[Hit]:
    if not enc.medicare or not AWV_CODES.isdisjoint(enc.codes):
        return ()
    since = _since(enc.dos, 365)
    if not since:
        return ()
    if any(not AWV_CODES.isdisjoint(v.codes) for v in others if since <= v.dos <= enc.dos):
        return ()
    return _NO_AWV


def preventive(enc: EncounterFacts, others: list[Visit]) -> Sequence[Hit]:
    if PREVENTIVE_VISIT.isdisjoint(enc.codes):
        return ()
    age = _age(enc.dob, enc.dos)
    if age is None:
        return ()
    out: list[Hit] = []
    for name, sex, lo, hi, months, codes in SCREENINGS:
        if (sex and enc.sex != sex) or not lo <= age <= hi:
            continue
        if not codes.isdisjoint(enc.codes):
            continue
        since = _since(enc.dos, months * 31)
        if any(not codes.isdisjoint(v.codes) for v in others if since <= v.dos <= enc.dos):
            continue
        out.append(Hit("lines", f"{name} is due at this age and none was coded in the last {months} months of "
                       "visits seen", "order or document it if appropriate; a suggestion, not billed automatically"))
    return out


RULES = [
    Rule("line.duplicate", "review", "history", "the same code for the same patient and date in two encounters",
         duplicate, history=True),
    Rule("opportunity.ccm", "info", "history", "2+ chronic conditions in the month and no chronic care management",
         ccm, history=True, opportunity=True),
    Rule("opportunity.awv", "info", "history", "Medicare patient without an annual wellness visit in 12 months",
         awv, history=True, opportunity=True),
    Rule("opportunity.preventive", "info", "history", "an age/sex-due screening with no code at a preventive visit",
         preventive, history=True, opportunity=True),
]

_CODES_SQL = ("(SELECT group_concat(json_extract(l.value, '$.code'), ' ') FROM json_each(e.data, '$.lines') l)")
_DX_SQL = ("(SELECT group_concat(json_extract(x.value, '$.code'), ' ') FROM json_each(e.data, '$.diagnoses') x)")


def read_history(store: Store, mrns: Iterable[str], *, exclude_states: tuple[str, ...] = ("rejected",)) -> History:
    """The stored charge encounters of these patients (codes and diagnoses only, read by SQLite's
    JSON functions: no encounter is decoded in Python). Rejected encounters are not history."""
    h = History()
    wanted = sorted({m for m in mrns if m})
    skip = ",".join("?" * len(exclude_states)) or "''"
    for i in range(0, len(wanted), 500):
        chunk = wanted[i:i + 500]
        sql = (f"SELECT e.business_key, e.mrn, e.dos, {_CODES_SQL}, {_DX_SQL} FROM encounters e "
               f"WHERE e.kind = 'charge' AND e.state NOT IN ({skip}) AND e.mrn IN ({','.join('?' * len(chunk))})")
        for key, mrn, dos, codes, dx in store.conn.execute(sql, (*exclude_states, *chunk)):
            h.visits.setdefault(mrn, []).append(
                Visit(key, dos, tuple((codes or "").split()), tuple((dx or "").split())))
    from agent.rules.coverage import read_eligibility  # the payer's answers (coverage.inactive_on_dos)

    h.eligibility = read_eligibility(store, wanted)
    return h
