"""Validation of standardized encounters, as structured findings (code, field, message).

An encounter with any ``error`` finding waits in ``needs_review``; one with none is ``ready``
to bill. Messages say what is wrong and how to fix it; they may name codes (a code alone is
not PHI) but never patient names, dates of birth or identifiers.
"""

from __future__ import annotations

import os
import re
from datetime import date
from functools import lru_cache
from pathlib import Path

from core.model import (
    MAX_LINES_PER_ENCOUNTER,
    MAX_MONEY,
    MAX_UNITS,
    MONEY_PLACES,
    UNITS_PLACES,
    BadValue,
    Encounter,
    Finding,
    read_decimal,
)

CPT_RE = re.compile(r"^\d{4}[0-9FTU]$")
HCPCS_RE = re.compile(r"^[A-V]\d{4}$")
MODIFIER_RE = re.compile(r"^[A-Z0-9]{2}$")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_MODIFIERS = 4
MAX_POINTERS = 4


def npi_is_valid(npi: str) -> bool:
    """NPI check digit: Luhn over the prefix 80840 + the first 9 digits (CMS NPI standard)."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed("80840" + npi[:9])):
        d = int(ch)
        if i % 2 == 0:  # every second digit from the right, starting with the rightmost
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10 == int(npi[9])


_ICD_CODE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")


@lru_cache(maxsize=1)
def _icd_table() -> dict[str, bool]:
    """ICD-10-CM code -> billable, from the ``simple-icd-10-cm`` package's full code set.

    Parsing the package's XML takes ~2 s, so the derived table (public code set, no PHI) is
    cached per package version in the user cache directory; later processes load it in ~50 ms.
    """
    from importlib.metadata import version

    import platformdirs

    ver = version("simple-icd-10-cm")
    cache = Path(platformdirs.user_cache_dir("ChargeBridge", appauthor=False)) / f"icd10cm-{ver}.tsv"
    try:
        table: dict[str, bool] = {}
        for line in cache.read_text(encoding="ascii").splitlines():
            code, _, billable = line.partition("\t")
            table[code] = billable == "1"
        if len(table) > 50_000:
            return table
    except (OSError, ValueError):
        pass
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import simple_icd_10_cm as cm
    table = {c: bool(cm.is_leaf(c)) for c in cm.get_all_codes(True) if _ICD_CODE.match(c)}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("".join(f"{c}\t{int(b)}\n" for c, b in table.items()), encoding="ascii")
        os.replace(tmp, cache)
    except OSError:
        pass  # no cache dir: still correct, just slower to start
    return table


def icd10_table() -> dict[str, bool]:
    """ICD-10-CM code -> billable (a leaf code), loaded once: for checks that look up many codes."""
    return _icd_table()


def icd10_status(code: str) -> str:
    """'billable' | 'header' (valid but not billable) | 'unknown'."""
    billable = _icd_table().get(code)
    if billable is None:
        return "unknown"
    return "billable" if billable else "header"


def validate(enc: Encounter, *, today: date | None = None) -> list[Finding]:
    today = today or date.today()
    out: list[Finding] = []
    add = out.append
    p = enc.patient

    # -- patient identity ------------------------------------------------------------
    if not p.mrn:
        add(Finding("patient.mrn", "patient.mrn", "patient has no medical record number (MRN)"))
    if not p.family or not p.given:
        add(Finding("patient.name", "patient.name", "patient family and given name are required"))
    if not p.dob:
        add(Finding("patient.dob", "patient.dob", "patient date of birth is missing"))
    elif ISO_RE.match(p.dob) and p.dob > today.isoformat():
        add(Finding("patient.dob", "patient.dob", "patient date of birth is in the future"))

    # -- date of service -------------------------------------------------------------
    if not enc.dos_start:
        add(Finding("dos.missing", "dos_start", "date of service is missing"))
    elif ISO_RE.match(enc.dos_start):
        if enc.kind == "charge" and enc.dos_start > today.isoformat():
            add(Finding("dos.future", "dos_start",
                        "date of service is in the future; charges are billed after the visit"))
        if p.dob and ISO_RE.match(p.dob) and enc.dos_start < p.dob:
            add(Finding("dos.before_birth", "dos_start", "date of service is before the patient's date of birth"))
        if enc.dos_end and ISO_RE.match(enc.dos_end) and enc.dos_end < enc.dos_start:
            add(Finding("dos.order", "dos_end", "date of service ends before it starts"))

    if enc.kind == "expected":
        return out

    # -- rendering provider ----------------------------------------------------------
    npi = enc.rendering.npi
    if not npi:
        add(Finding("npi.missing", "rendering.npi", "rendering provider NPI is missing"))
    elif not npi_is_valid(npi):
        add(Finding("npi.check_digit", "rendering.npi",
                    f"rendering provider NPI {_shown(npi)} is not a valid NPI (10 digits with a correct check digit)"))
    if enc.billing.npi and not npi_is_valid(enc.billing.npi):
        add(Finding("npi.check_digit", "billing.npi",
                    f"billing provider NPI {_shown(enc.billing.npi)} is not a valid NPI"))

    # -- diagnoses -------------------------------------------------------------------
    if not enc.diagnoses:
        add(Finding("dx.missing", "diagnoses", "no diagnosis: a claim needs at least one ICD-10-CM code"))
    for i, dx in enumerate(enc.diagnoses):
        f = f"diagnoses[{i}]"
        if dx.system != "ICD-10-CM":
            add(Finding("dx.system", f, f"diagnosis {_shown(dx.code)} is coded in {_shown(dx.system)}, not ICD-10-CM; "
                        "map it in the chargemaster or recode it"))
            continue
        status = icd10_status(dx.code)
        if status == "unknown":
            add(Finding("dx.unknown", f, f"{_shown(dx.code)} is not an ICD-10-CM code"))
        elif status == "header":
            add(Finding("dx.not_billable", f, f"{dx.code} is an ICD-10-CM category, not a billable code; "
                        "add the missing characters"))

    # -- charge lines ----------------------------------------------------------------
    if not enc.lines:
        add(Finding("lines.missing", "lines", "no charge lines: nothing to bill for this encounter"))
    elif len(enc.lines) > MAX_LINES_PER_ENCOUNTER:
        add(Finding("lines.count", "lines", f"{len(enc.lines):,} charge lines; an encounter takes at most "
                    f"{MAX_LINES_PER_ENCOUNTER} - check the export"))
    for i, ln in enumerate(enc.lines):
        f = f"lines[{i}]"
        if ln.code_system == "CPT":
            if not CPT_RE.match(ln.code):
                add(Finding("code.format", f"{f}.code",
                            f"{_shown(ln.code)} is not a CPT code (5 characters: 4 digits, then a digit or F/T/U)"))
        elif ln.code_system == "HCPCS":
            if not HCPCS_RE.match(ln.code):
                add(Finding("code.format", f"{f}.code",
                            f"{_shown(ln.code)} is not a HCPCS Level II code (a letter A-V and 4 digits)"))
        else:
            add(Finding("code.system", f"{f}.code",
                        f"charge code {_shown(ln.code)} is coded in {_shown(ln.code_system)}, not CPT/HCPCS; "
                        "map it in the chargemaster"))
        if len(ln.modifiers) > MAX_MODIFIERS:
            add(Finding("modifiers.count", f"{f}.modifiers",
                        f"{len(ln.modifiers)} modifiers; a line takes at most {MAX_MODIFIERS}"))
        for m in ln.modifiers:
            if not MODIFIER_RE.match(m):
                add(Finding("modifier.format", f"{f}.modifiers", f"modifier {_shown(m)} is not 2 letters/digits"))
        if len(ln.dx_pointers) > MAX_POINTERS:
            add(Finding("pointers.count", f"{f}.dx_pointers",
                        f"{len(ln.dx_pointers)} diagnosis pointers; a line takes at most {MAX_POINTERS}"))
        for ptr in ln.dx_pointers:
            if not 1 <= ptr <= len(enc.diagnoses):
                add(Finding("pointer.range", f"{f}.dx_pointers", f"diagnosis pointer {ptr} points at no diagnosis "
                            f"(the encounter has {len(enc.diagnoses)})"))
        if not ln.dx_pointers and enc.diagnoses:
            add(Finding("pointer.missing", f"{f}.dx_pointers",
                        "line has no diagnosis pointer; the first diagnosis will be used", severity="warning"))
        # Numbers go through the model's checked reader: validation never raises on a
        # hostile value (NaN, sNaN, 1e999999999), it reports it.
        try:
            units = read_decimal(ln.units, limit=MAX_UNITS, places=UNITS_PLACES, what="units")
        except BadValue as exc:
            add(Finding("units.format", f"{f}.units", f"{exc}; enter the units (0 < units <= {MAX_UNITS:,})"))
        else:
            if units <= 0:
                add(Finding("units.range", f"{f}.units", "units must be greater than 0"))
        if ln.unit_charge:
            try:
                charge = read_decimal(ln.unit_charge, limit=MAX_MONEY, places=MONEY_PLACES, what="unit charge")
            except BadValue as exc:
                add(Finding("charge.format", f"{f}.unit_charge", f"{exc}; enter the amount"))
            else:
                if charge < 0:
                    add(Finding("charge.range", f"{f}.unit_charge", "unit charge is negative"))
        if ln.service_date and ISO_RE.match(ln.service_date) and ln.service_date > today.isoformat():
            add(Finding("dos.future", f"{f}.service_date", "line date of service is in the future"))
    return out


def _shown(value: str, limit: int = 24) -> str:
    """A code as quoted in a message: codes are not PHI, but a file may put anything there."""
    v = str(value)
    return v if len(v) <= limit and v.isprintable() else v[:limit].encode("ascii", "replace").decode() + "..."


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)
