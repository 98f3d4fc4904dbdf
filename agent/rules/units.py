"""``units.mue``: units of a code on one date of service above its CMS Medically Unlikely Edit.

An MUE is the most units of a HCPCS/CPT code a provider would report for one patient on one date
of service; claim lines above it are denied. The practice imports CMS's table (quarterly) with
``chargebridge rules import-mue FILE``: the CMS practitioner-services CSV (columns "HCPCS/CPT
Code" and "Practitioner Services MUE Values"; the licence preamble before the header row is
skipped) or a JSON object ``{code: {"maxUnits": n}}``. Units are summed per code and date over
the encounter's lines, as the edit is applied. An MUE of 0 is not a units edit: it marks a code
Medicare does not pay practitioners for (e.g. preventive visits, 99381-99397), which other payers
do pay, so it raises no finding.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from agent.rules import EncounterFacts, Facts, Hit, Rule
from core.model import MAX_UNITS, UNITS_PLACES, BadValue, read_decimal

MAX_FILE = 20 * 1024 * 1024  # the CMS table is ~1 MB
MAX_ROWS = 100_000  # ~15,000 codes today
_CODE = re.compile(r"^(?:\d{4}[0-9FTUM]|[A-V]\d{4})$")


class MueFileError(ValueError):
    """The file is not an MUE table; the message says what was expected (never a row's content)."""


_UNITS: dict[str, Decimal | None] = {}  # units as stored -> their value (None: unreadable); a few dozen distinct


def _units(text: str) -> Decimal | None:
    value = _UNITS.get(text, _UNREAD)
    if value is _UNREAD:
        try:
            value = read_decimal(text, limit=MAX_UNITS, places=UNITS_PLACES, what="units")
        except BadValue:
            value = None  # the validator reports unreadable units
        if len(_UNITS) < 10_000:
            _UNITS[text] = value
    return value if isinstance(value, Decimal) else None


_UNREAD = Decimal("NaN")


def mue(enc: EncounterFacts, facts: Facts) -> Sequence[Hit]:
    table = facts.mue
    if not table:
        return ()
    totals: dict[tuple[str, str], tuple[Decimal, int]] = {}
    for i, code in enumerate(enc.codes):
        limit = table.get(code)
        if not limit:  # unknown, or 0: Medicare does not pay practitioners for it (coverage, not units)
            continue
        units = _units(enc.units[i])
        if units is None:
            continue
        key = (code, enc.dates[i] or enc.dos)
        total, first = totals.get(key, (_ZERO, i))
        totals[key] = (total + units, first)
    if not totals:
        return ()
    out = []
    for (code, _day), (total, first) in totals.items():
        limit = table[code]
        if total > limit:
            out.append(Hit(f"lines[{first}].units", f"{code}: {total:f} units on one date of service, above its "
                           f"Medically Unlikely Edit of {limit}",
                           "check the units against the documentation; split across dates only if the service "
                           "was", line=first))
    return out


_ZERO = Decimal(0)


def read_mue_file(path: Path) -> dict[str, int]:
    """An MUE table file -> {code: max units}. Raises :class:`MueFileError`."""
    size = path.stat().st_size
    if size > MAX_FILE:
        raise MueFileError(f"the file is {size / 1e6:.1f} MB; an MUE table is about 1 MB "
                           f"(limit {MAX_FILE // 10**6} MB)")
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig", errors="replace")
    if text.lstrip().startswith("{"):
        return _from_json(text)
    return _from_csv(text)


def _check(code: str, value: object, where: str) -> tuple[str, int]:
    code = code.strip().upper()
    if not _CODE.match(code):
        raise MueFileError(f"{where}: the code is not a CPT/HCPCS code")
    try:
        n = int(str(value).strip())
    except ValueError:
        raise MueFileError(f"{where}: the MUE value is not a whole number") from None
    if not 0 <= n <= 100_000:
        raise MueFileError(f"{where}: the MUE value is out of range")
    return code, n


def _from_json(text: str) -> dict[str, int]:
    try:
        data = json.loads(text)
    except ValueError:
        raise MueFileError("the file starts like JSON but is not valid JSON") from None
    if not isinstance(data, dict) or len(data) > MAX_ROWS:
        raise MueFileError(f"expected a JSON object of at most {MAX_ROWS:,} codes")
    out: dict[str, int] = {}
    for i, (code, entry) in enumerate(data.items(), start=1):
        value = entry.get("maxUnits") if isinstance(entry, dict) else entry
        c, n = _check(str(code), value, f"entry {i}")
        out[c] = n
    return out


def _from_csv(text: str) -> dict[str, int]:
    rows = csv.reader(io.StringIO(text))
    code_col = value_col = -1
    out: dict[str, int] = {}
    for i, row in enumerate(rows, start=1):
        if i > MAX_ROWS:
            raise MueFileError(f"more than {MAX_ROWS:,} rows; an MUE table has about 15,000")
        if code_col < 0:
            names = [c.strip().lower() for c in row]
            code_col = next((j for j, c in enumerate(names) if "hcpcs" in c or c.startswith("cpt")), -1)
            value_col = next((j for j, c in enumerate(names) if "mue value" in c or "mue values" in c), -1)
            if code_col < 0 or value_col < 0:
                code_col = value_col = -1  # still in the licence preamble
            continue
        if len(row) <= max(code_col, value_col) or not row[code_col].strip():
            continue
        c, n = _check(row[code_col], row[value_col], f"row {i}")
        out[c] = n
    if code_col < 0:
        raise MueFileError('no header row with a "HCPCS/CPT Code" and an "MUE Values" column was found')
    if not out:
        raise MueFileError("the table has a header but no codes")
    return out


RULES = [Rule("units.mue", "error", "lines", "units above the CMS Medically Unlikely Edit for the code", mue)]
