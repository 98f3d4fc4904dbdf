"""Diagnosis rules, from the full ICD-10-CM code set (the ``simple-icd-10-cm`` package).

* ``dx.not_billable`` — a category or subcategory, not a billable leaf code.
* ``dx.sex_mismatch`` — the code set puts the code under a heading for one sex only: a block
  named for *male* or *female* genital organs / pelvic organs (e.g. N40-N53, N70-N77, N80-N98,
  C51-C58, C60-C63), or chapter 15 and category Z3A ("for use only on maternal records").
* ``dx.age_mismatch`` — chapter 16 ("for use on newborn records only") on a patient a year old or
  more, and maternal codes (chapter 15, Z3A) outside ages 9-64, the maternity age range of the
  CMS Medicare Code Editor. A review, not an error: a perinatal condition can be coded later in
  life when it still causes illness, as the chapter's own inclusion note says.
* ``dx.unsupported_line`` — a procedure line no diagnosis points to.

The derived edit table (public code set facts, no PHI) is cached per package version in the user
cache directory, like the billable table in :mod:`agent.validate`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from agent.rules import EncounterFacts, Facts, Hit, Rule
from agent.validate import icd10_table

_MALE = re.compile(r"\bmale\b", re.I)
_FEMALE = re.compile(r"\bfemale\b", re.I)
MATERNAL_AGES = (9, 64)  # CMS Medicare Code Editor maternity edit
_NO_EDIT = ("", "")


@lru_cache(maxsize=1)
def edits() -> dict[str, tuple[str, str]]:
    """ICD-10-CM code -> (sex 'M'|'F'|'', age group 'newborn'|'maternal'|'') for codes that have one."""
    from importlib.metadata import version

    import platformdirs

    ver = version("simple-icd-10-cm")
    cache = Path(platformdirs.user_cache_dir("ChargeBridge", appauthor=False)) / f"icd10cm-edits-{ver}.tsv"
    try:
        table: dict[str, tuple[str, str]] = {}
        for line in cache.read_text(encoding="ascii").splitlines():
            code, sex, age = line.split("\t")
            table[code] = (sex, age)
        if len(table) > 1000:
            return table
    except (OSError, ValueError):
        pass
    table = _derive()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("".join(f"{c}\t{s}\t{a}\n" for c, (s, a) in table.items()), encoding="ascii")
        os.replace(tmp, cache)
    except OSError:
        pass
    return table


def _derive() -> dict[str, tuple[str, str]]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import simple_icd_10_cm as cm
    head: dict[str, tuple[str, str]] = {}  # chapters, blocks and categories that carry an edit
    for ch in ("15", "16"):
        head[ch] = ("F", "maternal") if ch == "15" else ("", "newborn")
    head["Z3A"] = ("F", "maternal")  # "for use, only on the maternal record"
    out: dict[str, tuple[str, str]] = {}
    for code in cm.get_all_codes(True):
        if not code[:1].isalpha() or "-" in code:
            continue
        sex, age = "", ""
        for anc in cm.get_ancestors(code):
            if anc in head:
                s, a = head[anc]
                sex, age = sex or s, age or a
            elif "-" in anc:  # a block: its title names the sex ("Diseases of male genital organs")
                title = cm.get_description(anc)
                if _FEMALE.search(title):
                    sex = sex or "F"
                elif _MALE.search(title):
                    sex = sex or "M"
        if sex or age:
            out[cm.add_dot(code) if "." not in code and len(code) > 3 else code] = (sex, age)
    return out


def _age(dob: str, dos: str) -> int | None:
    if len(dob) != 10 or len(dos) != 10:
        return None
    try:
        y = int(dos[:4]) - int(dob[:4])
        return y - 1 if dos[5:] < dob[5:] else y
    except ValueError:
        return None


# Rules return a list of hits (an empty tuple for none): called for every encounter of a re-run,
# a plain function costs less than a generator.
NONE: tuple[Hit, ...] = ()


def not_billable(enc: EncounterFacts, facts: Facts) -> Sequence[Hit]:
    out: Sequence[Hit] = NONE
    table = icd10_table()
    for i, code in enumerate(enc.dx):
        if table.get(code, True) is False and enc.dx_systems[i] == "ICD-10-CM":  # a known code, not a leaf
            out = [*out, Hit(f"diagnoses[{i}]", f"{code} is an ICD-10-CM category, not a billable code",
                             "code to the highest specificity: add the missing characters")]
    return out


def sex_mismatch(enc: EncounterFacts, facts: Facts) -> Sequence[Hit]:
    sex = enc.sex
    if sex not in ("M", "F"):
        return NONE
    table = edits()
    out: Sequence[Hit] = NONE
    for i, d in enumerate(enc.dx):
        want = table.get(d, _NO_EDIT)[0]
        if want and want != sex:
            who = "female" if want == "F" else "male"
            out = [*out, Hit(f"diagnoses[{i}]", f"{d} is a {who}-only diagnosis in ICD-10-CM, and the patient's sex "
                             "on the encounter is not " + who,
                             "check the diagnosis and the patient's sex in the EHR; payers deny this combination")]
    return out


def age_mismatch(enc: EncounterFacts, facts: Facts) -> Sequence[Hit]:
    table = edits()
    groups = [(i, d, g) for i, d in enumerate(enc.dx) if (g := table.get(d, _NO_EDIT)[1])]
    if not groups:
        return NONE
    age = _age(enc.dob, enc.dos)
    if age is None:
        return NONE
    lo, hi = MATERNAL_AGES
    out: list[Hit] = []
    for i, d, group in groups:
        if group == "newborn" and age >= 1:
            out.append(Hit(f"diagnoses[{i}]", f"{d} is a perinatal (newborn-record) code and the patient is "
                           "a year old or more on the date of service",
                           "keep it only if the perinatal condition still causes this illness; else recode it"))
        elif group == "maternal" and not lo <= age <= hi:
            out.append(Hit(f"diagnoses[{i}]", f"{d} is a maternal-record code and the patient's age is outside "
                           f"{lo}-{hi} (the Medicare Code Editor's maternity range)",
                           "check the diagnosis and the date of birth in the EHR"))
    return out


def unsupported_line(enc: EncounterFacts, facts: Facts) -> Sequence[Hit]:
    out: Sequence[Hit] = NONE
    for i, (code, pointers) in enumerate(zip(enc.codes, enc.pointers, strict=False)):
        if not pointers:
            out = [*out, Hit(f"lines[{i}].dx_pointers", f"line {i + 1} ({code}) has no diagnosis pointing to it",
                             "point the line at the diagnosis that justifies it (medical necessity)", line=i)]
    return out


RULES = [
    Rule("dx.not_billable", "error", "diagnoses", "an ICD-10-CM category, not a billable leaf code", not_billable),
    Rule("dx.sex_mismatch", "review", "diagnoses", "a diagnosis the code set limits to the other sex", sex_mismatch),
    Rule("dx.age_mismatch", "review", "diagnoses", "a newborn or maternal diagnosis outside its age range",
         age_mismatch),
    Rule("dx.unsupported_line", "review", "lines", "a procedure with no diagnosis pointing to it", unsupported_line),
]
