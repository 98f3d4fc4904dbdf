"""Modifier rules: what NCCI bundling does to a claim without the right modifier.

* ``modifier.25_missing`` — an E/M visit billed on the same day as a procedure from the CPT
  surgery section (10004-69990, the procedures that carry a global period), with no modifier 25
  on the E/M line: NCCI bundles the visit into the procedure unless 25 says it was separately
  identifiable. Blood draws (36415 and kin, :data:`NO_GLOBAL`) carry no global period and are left out.
* ``modifier.59_review`` — two codes that NCCI's procedure-to-procedure edits pair (column 1,
  column 2; modifier indicator 1) billed together with no 59, XE, XS, XP or XU on either line: the
  column-2 code is denied unless a distinct-service modifier applies. :data:`BUNDLES` is a small
  list of pairs from the NCCI practitioner PTP table that small practices meet most (therapy and
  chiropractic); a full PTP import is future work.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.rules import EncounterFacts, Facts, Hit, Rule

DISTINCT = frozenset({"59", "XE", "XS", "XP", "XU"})
# NCCI practitioner PTP pairs (column 1, column 2), modifier indicator 1
BUNDLES: frozenset[tuple[str, str]] = frozenset({
    ("98940", "97140"), ("98941", "97140"), ("98942", "97140"),  # chiropractic manipulation / manual therapy
    ("97530", "97140"),  # therapeutic activities / manual therapy
    ("97150", "97530"),  # group therapy / therapeutic activities
    ("20610", "20550"),  # major joint injection / tendon sheath injection
    ("11042", "97597"),  # debridement, subcutaneous / selective wound debridement
    ("93000", "93005"), ("93000", "93010"),  # ECG complete / its tracing or interpretation alone
    ("36415", "36416"),  # venipuncture / capillary blood collection
})


def is_em(code: str) -> bool:
    """Office, hospital, ED, consult, nursing-facility, home and preventive E/M codes (99202-99499)."""
    return len(code) == 5 and code.isdigit() and "99202" <= code <= "99499"


# Surgery-section codes with no global period (MPFS global "XXX"): blood draws need no 25 with a visit
NO_GLOBAL = frozenset({"36400", "36405", "36406", "36410", "36415", "36416", "36591", "36592"})


def is_surgery(code: str) -> bool:
    return len(code) == 5 and code.isdigit() and "10004" <= code <= "69990" and code not in NO_GLOBAL


_SURGERY: dict[str, bool] = {}  # code -> is_surgery(code), for the codes seen (a few thousand)


def _surgery(code: str) -> bool:
    found = _SURGERY.get(code)
    if found is None:
        found = is_surgery(code)
        if len(_SURGERY) < 50_000:
            _SURGERY[code] = found
    return found


def missing_25(enc: EncounterFacts, facts: Facts) -> Sequence[Hit]:
    procs = [c for c in enc.codes if _surgery(c)]
    if not procs:
        return ()
    out = []
    for i, (code, mods) in enumerate(zip(enc.codes, enc.modifiers, strict=False)):
        if is_em(code) and "25" not in mods:
            out.append(Hit(f"lines[{i}].modifiers", f"E/M {code} is billed with procedure {procs[0]} on the same "
                           "day without modifier 25; the visit will be bundled into the procedure",
                           "add 25 if the visit was significant and separately identifiable (documented); "
                           "otherwise remove the E/M line", line=i))
    return out


_FIRST = frozenset(c for c, _ in BUNDLES)


def review_59(enc: EncounterFacts, facts: Facts) -> Sequence[Hit]:
    codes = enc.codes
    if len(codes) < 2 or _FIRST.isdisjoint(codes):
        return ()
    out = []
    mods = enc.modifiers
    for i, first in enumerate(codes):
        for j, second in enumerate(codes):
            if (first, second) in BUNDLES and DISTINCT.isdisjoint([*mods[i], *mods[j]]):
                out.append(Hit(f"lines[{j}].modifiers", f"{second} is bundled into {first} (NCCI) and neither "
                               "line has 59, XE, XS, XP or XU; it will be denied",
                               "if the services were distinct (other site, session or encounter), add the modifier "
                               "that says so to the second code; otherwise remove it", line=j))
    return out


RULES = [
    Rule("modifier.25_missing", "review", "lines", "an E/M with a same-day procedure and no modifier 25",
         missing_25),
    Rule("modifier.59_review", "review", "lines", "two codes NCCI bundles, billed without 59/XE/XS/XP/XU",
         review_59),
]
