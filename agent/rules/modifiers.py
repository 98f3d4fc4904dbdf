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

from collections.abc import Iterator

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


def missing_25(enc: EncounterFacts, facts: Facts) -> Iterator[Hit]:
    procs = [ln.code for ln in enc.lines if is_surgery(ln.code)]
    if not procs:
        return
    for i, ln in enumerate(enc.lines):
        if is_em(ln.code) and "25" not in ln.modifiers:
            yield Hit(f"lines[{i}].modifiers", f"E/M {ln.code} is billed with procedure {procs[0]} on the same day "
                      "without modifier 25; the visit will be bundled into the procedure",
                      "add 25 if the visit was significant and separately identifiable (documented); "
                      "otherwise remove the E/M line", line=i)


def review_59(enc: EncounterFacts, facts: Facts) -> Iterator[Hit]:
    where = {ln.code: i for i, ln in enumerate(enc.lines)}
    if len(where) < 2:
        return
    for ln in enc.lines:
        for j, other in enumerate(enc.lines):
            if (ln.code, other.code) in BUNDLES and not (DISTINCT & (set(ln.modifiers) | set(other.modifiers))):
                yield Hit(f"lines[{j}].modifiers", f"{other.code} is bundled into {ln.code} (NCCI) and neither line "
                          "has 59, XE, XS, XP or XU; it will be denied",
                          "if the services were distinct (other site, session or encounter), add the modifier that "
                          "says so to the second code; otherwise remove it", line=j)


RULES = [
    Rule("modifier.25_missing", "review", "lines", "an E/M with a same-day procedure and no modifier 25",
         missing_25),
    Rule("modifier.59_review", "review", "lines", "two codes NCCI bundles, billed without 59/XE/XS/XP/XU",
         review_59),
]
