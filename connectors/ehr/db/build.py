"""Rows from an EHR database -> canonical encounters, every value checked at the boundary.

Pure functions over rows (mappings of ChargeBridge column names to driver values): no
connection, so they are tested without a server and run the same for every database.

What a row may hold is not trusted: text is cut to a bounded length, numbers go through
:func:`core.model.read_decimal` (a fee of ``'abc'`` or ``1e999`` never reaches arithmetic),
dates become ISO text (or stay as the text the database returned, for validation to report),
and a value of an unexpected type becomes "". Problems become validation findings on the
encounter (standardize and validate name the field), never exceptions, and never quote values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from connectors.ehr.db.profile import Profile
from core.model import (
    MAX_MONEY,
    MAX_UNITS,
    MONEY_PLACES,
    UNITS_PLACES,
    Address,
    BadValue,
    ChargeLine,
    Coverage,
    Diagnosis,
    Encounter,
    Patient,
    Provider,
    money_text,
    read_decimal,
    units_text,
)

MAX_TEXT = 200  # any text column: longer values are cut (no EHR field we read is longer)
MAX_CODE = 32
SOURCE = "db"


def text(v: Any, limit: int = MAX_TEXT) -> str:
    """A database value as bounded text: dates as ISO, numbers as their text, bytes decoded."""
    if type(v) is str:
        return v.strip()[:limit]
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.date().isoformat()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (int, Decimal, float)):
        if isinstance(v, float) and math.isnan(v):  # NaN from a double column
            return "NaN"
        return str(v)[:limit]
    if isinstance(v, (bytes, bytearray, memoryview)):
        v = bytes(v)[: limit * 4].decode("utf-8", errors="replace")
    if not isinstance(v, str):
        return ""
    return v.strip()[:limit]


def _number(v: Any) -> Any:
    """A numeric column as read_decimal takes it (a float through its shortest text)."""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "NaN"
    return v if isinstance(v, (int, Decimal)) and not isinstance(v, bool) else text(v, 40)


def unit_charge(fee: Any, units: Any, meaning: str) -> tuple[str, str]:
    """(units text, unit charge text). A value that is not a usable number is passed on as
    short text so standardize reports it as a finding on that line (it never reaches math)."""
    u_raw = _number(units)
    try:
        u = read_decimal(u_raw, limit=MAX_UNITS, places=UNITS_PLACES, what="units") if u_raw not in ("", None) \
            else Decimal(1)
        if u <= 0:
            raise BadValue("units must be above zero")
        units_s = units_text(u)
    except BadValue:
        return text(units, 40) or "?", text(fee, 40)
    f_raw = _number(fee)
    if f_raw in ("", None):
        return units_s, ""
    try:
        f = read_decimal(f_raw, limit=MAX_MONEY, places=MONEY_PLACES, what="fee")
    except BadValue:
        return units_s, text(fee, 40) or "?"
    if meaning == "line_total":
        f = f / u
    return units_s, money_text(f)


def justify_codes(value: Any, fmt: str) -> list[str]:
    """OpenEMR's billing.justify ``ICD10|E11.9:ICD10|I10:`` -> ["E11.9", "I10"] (pointer order)."""
    if fmt != "openemr":
        return []
    out = []
    for part in text(value, 400).split(":"):
        part = part.strip()
        if not part:
            continue
        code = part.split("|", 1)[1] if "|" in part else part
        code = code.strip()[:MAX_CODE]
        if code and code not in out:
            out.append(code)
    return out[:12]


def _dx_key(code: str) -> str:
    return code.replace(".", "").replace(" ", "").upper()


def build(database: str, profile: Profile, key: str, header: Mapping[str, Any] | None,
          lines: Iterable[Mapping[str, Any]], coverages: Iterable[Mapping[str, Any]]) -> Encounter:
    """One encounter from its header row, its active line rows and its coverage rows."""
    h = header or {}
    enc = Encounter(source=SOURCE, source_id=key, source_system=f"db:{database}")
    enc.patient = Patient(
        mrn=text(h.get("mrn"), 64), family=text(h.get("family")), given=text(h.get("given")),
        middle=text(h.get("middle")), dob=text(h.get("dob"), 40), sex=text(h.get("sex"), 16),
        address=Address(line1=text(h.get("street")), city=text(h.get("city")), state=text(h.get("state"), 40),
                        zip=text(h.get("zip"), 16)),
        phone=text(h.get("phone"), 40))
    enc.rendering = Provider(npi=text(h.get("npi"), 16), family=text(h.get("prov_family")),
                             given=text(h.get("prov_given")))
    enc.dos_start = text(h.get("dos"), 40)
    pos = text(h.get("pos"), 8)
    enc.place_of_service = pos.zfill(2) if pos.isdigit() and len(pos) < 2 else pos
    seen_payers: set[str] = set()
    for c in coverages:
        rank = text(c.get("rank"), 16)
        if rank in seen_payers:  # one coverage per rank: the newest effective row comes first
            continue
        seen_payers.add(rank)
        enc.coverages.append(Coverage(payer_name=text(c.get("payer_name")), payer_id=text(c.get("payer_id"), 40),
                                      member_id=text(c.get("member_id"), 64), group=text(c.get("group_no"), 64),
                                      relationship=text(c.get("relationship"), 16).lower()))
    dx_index: dict[str, int] = {}

    def dx(code: str) -> int:
        k = _dx_key(code)
        if k not in dx_index:
            enc.diagnoses.append(Diagnosis(code=code, system="ICD-10-CM"))
            dx_index[k] = len(enc.diagnoses)
        return dx_index[k]

    rows = list(lines)
    # OpenEMR: diagnoses are rows of their own, in entry order, before pointers refer to them.
    for r in rows:
        ctype = text(r.get("code_type"), 16).upper()
        if ctype and ctype in profile.diagnosis_types:
            dx(text(r.get("code"), MAX_CODE))
    for r in rows:
        ctype = text(r.get("code_type"), 16).upper()
        if ctype and ctype not in profile.procedure_types:
            continue  # a diagnosis row (done above) or a non-billable type (copay, product)
        units, charge = unit_charge(r.get("fee"), r.get("units"), profile.fee)
        mods: list[str] = []
        if "modifier" in r:
            mods = [m for m in text(r.get("modifier"), 40).replace(" ", profile.modifier_separator)
                    .split(profile.modifier_separator) if m]
        for i in range(1, 5):
            m = text(r.get(f"mod{i}"), 8)
            if m:
                mods.append(m)
        ptr_codes = justify_codes(r.get("justify"), profile.justify) if "justify" in r else []
        for i in range(1, 5):
            dx_code = text(r.get(f"dx{i}"), MAX_CODE)
            if dx_code:
                ptr_codes.append(dx_code)
        pointers = [dx(c) for c in ptr_codes]
        code = text(r.get("code"), MAX_CODE)
        system = {"CPT4": "CPT", "HCPCS": "HCPCS"}.get(ctype, "")
        line_date = text(r.get("line_date"), 40)
        enc.lines.append(ChargeLine(code=code, code_system=system, modifiers=mods[:8], dx_pointers=pointers[:8],
                                    units=units, unit_charge=charge, line_id=text(r.get("line_id"), 40),
                                    service_date="" if line_date == enc.dos_start else line_date))
    return enc
