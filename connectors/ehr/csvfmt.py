"""CSV charge exports, read through a mapping profile (see docs/csv-profiles.md).

Every EHR's "charges export" has its own column names, delimiter and encoding, so the
reader itself knows no column names: a TOML *profile* maps the export's headers onto the
canonical fields below. One data row is one charge line; rows that share an encounter id
become one :class:`~core.model.Encounter`. Values are copied raw (the pipeline
standardizes and validates); this module only rejects what cannot be read at all.

Reasons (``ParseError`` text, ``Rejected.reason``) name columns, fields and row numbers,
never cell values: cells hold patient data, header names do not.

Column-agnostic reading (decoding, delimiters, tables, ZIP sets) lives in :mod:`connectors.ehr.csvio`.
The profile ``synthea`` is different in kind (``format = "synthea"``): the document is a ZIP
of a Synthea CSV export set, handled by :mod:`connectors.ehr.synthea`.
:func:`pack_directory` turns such a folder into that ZIP, byte-for-byte reproducibly.
"""

from __future__ import annotations

import codecs
import re
import tomllib
from collections.abc import Iterable, Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any

from connectors.ehr import limits
from connectors.ehr.base import ParseError
from connectors.ehr.csvio import (  # noqa: F401  (re-exported: csvfmt.pack_directory, Profile etc. are public)
    DELIMITERS,
    Profile,
    Table,
    column_index,
    decode,
    gc_paused,
    iter_zip_tables,
    norm_header,
    pack_directory,
    read_table,
    sniff_delimiter,
)
from core.model import (
    Address,
    BadValue,
    ChargeLine,
    Coverage,
    Diagnosis,
    Encounter,
    Parsed,
    Patient,
    Provider,
    Rejected,
    std_decimal,
)

NAME = "csv"
PROFILE_DIR = Path(__file__).with_name("profiles")
DEFAULT_PROFILE = "generic"

DX_FIELDS = tuple(f"dx{i}" for i in range(1, 13))
MODIFIER_FIELDS = tuple(f"modifier{i}" for i in range(1, 5))
# Fields that describe the visit: every row of one encounter must agree on them.
ENCOUNTER_FIELDS = (
    "mrn", "family", "given", "middle", "suffix", "dob", "sex",
    "address1", "address2", "city", "state", "zip", "phone",
    "payer_name", "payer_id", "member_id", "group",
    "rendering_npi", "rendering_family", "rendering_given", "billing_npi",
    "dos_end", "place_of_service",
)
# Fields of one charge line (``dos`` too: a line may be on a later day than the visit start).
LINE_FIELDS = (
    "dos", "code", "code_system", "modifiers", *MODIFIER_FIELDS, "dx_pointers", "units",
    "unit_charge", "line_id",
)
FIELDS = ("encounter_id", *ENCOUNTER_FIELDS, *LINE_FIELDS, *DX_FIELDS, "diagnoses")
CONSTANT_ONLY = ("source_system", "dx_system")
_DELIM_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|"}
_AUTO_SPLIT = re.compile(r"[\s,;|:]+")
_PTR_SPLIT = re.compile(r"[\s,;|:/+]+")


# ---------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


_PROFILE_CACHE: dict[tuple[str, float], Profile] = {}


def load_profile(spec: str | None) -> Profile:
    """A built-in profile name or a path to a TOML file -> :class:`Profile`.

    Cached by path and modification time: the watcher parses many small files with one
    profile, and re-reading TOML per file would cost more than parsing the file.
    """
    spec = (spec or "").strip() or DEFAULT_PROFILE
    looks_like_path = spec.endswith(".toml") or "/" in spec or "\\" in spec
    if looks_like_path:
        path = Path(spec).expanduser()
        label = path.stem
        if not path.is_file():
            raise ParseError(f"CSV profile file {spec} does not exist; give a built-in profile name "
                             f"({', '.join(builtin_profiles())}) or the path of a .toml profile")
    else:
        path = PROFILE_DIR / f"{spec}.toml"
        label = spec
        if not path.is_file():
            raise ParseError(f"unknown CSV profile '{spec}'; built-in profiles: "
                             f"{', '.join(builtin_profiles())} — or give the path of a .toml profile")
    key = (str(path.resolve()), path.stat().st_mtime)
    cached = _PROFILE_CACHE.get(key)
    if cached is not None:
        return cached
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ParseError(f"CSV profile '{label}' is not valid TOML ({exc}); fix the profile file") from exc
    prof = _build_profile(label, raw)
    _PROFILE_CACHE[key] = prof
    return prof


def _build_profile(label: str, raw: dict[str, Any]) -> Profile:
    def bad(msg: str) -> ParseError:
        return ParseError(f"CSV profile '{label}': {msg}; fix the profile file")

    fmt = str(raw.get("format", "rows"))
    if fmt not in ("rows", "synthea"):
        raise bad(f"format must be 'rows' or 'synthea', not '{fmt}'")
    delimiter = str(raw.get("delimiter", "auto"))
    delimiter = _DELIM_NAMES.get(delimiter.lower(), delimiter)
    if delimiter != "auto" and len(delimiter) != 1:
        raise bad("delimiter must be one character, a name (comma, semicolon, tab, pipe) or 'auto'")
    for enc_key in ("encoding", "fallback_encoding"):
        enc = raw.get(enc_key)
        if enc:
            try:
                codecs.lookup(str(enc))
            except LookupError as exc:
                raise bad(f"{enc_key} '{enc}' is not an encoding Python knows") from exc
    header_row = raw.get("header_row", 1)
    if not isinstance(header_row, int) or header_row < 1:
        raise bad("header_row must be a whole number, 1 or more")

    columns: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for fname, headers in (raw.get("columns") or {}).items():
        if fname not in FIELDS:
            raise bad(f"unknown field '{fname}' in [columns]; known fields: {', '.join(FIELDS)}")
        alts = (headers,) if isinstance(headers, str) else tuple(headers)
        if not alts or not all(isinstance(h, str) and norm_header(h) for h in alts):
            raise bad(f"[columns] {fname} must be a header name or a list of header names")
        for h in alts:
            other = seen.setdefault(norm_header(h), fname)
            if other != fname:
                raise bad(f"header '{h}' is mapped to both {other} and {fname}")
        columns[fname] = alts

    constants = {str(k): str(v) for k, v in (raw.get("constants") or {}).items()}
    for k in constants:
        if (k not in FIELDS and k not in CONSTANT_ONLY) or k == "encounter_id":
            raise bad(f"unknown constant '{k}'; constants may set any field except encounter_id, "
                      "or source_system / dx_system")
    required = tuple(raw.get("required") or ())
    for r in required:
        if r not in FIELDS:
            raise bad(f"unknown field '{r}' in required")
        if r not in columns and r not in constants:
            raise bad(f"required field '{r}' has no column in [columns] and no constant")
    seps = raw.get("separators") or {}
    opts = raw.get("options") or {}
    pointers_default = str(opts.get("pointers_default", "row"))
    if pointers_default not in ("row", "none"):
        raise bad("options.pointers_default must be 'row' or 'none'")
    decimal = str(raw.get("decimal", "."))
    if decimal not in (".", ","):
        raise bad("decimal must be '.' or ','")
    if fmt == "rows" and "encounter_id" not in columns:
        raise bad("[columns] needs encounter_id: rows are grouped into encounters by it")
    return Profile(
        name=label, format=fmt, delimiter=delimiter,
        encoding=str(raw.get("encoding") or "utf-8"),
        fallback_encoding=str(raw.get("fallback_encoding", "cp1252") or ""),
        header_row=header_row, columns=columns, required=required, constants=constants,
        diagnoses_separator=str(seps.get("diagnoses", "auto")),
        modifiers_separator=str(seps.get("modifiers", "auto")),
        pointers_default=pointers_default, decimal=decimal, raw=raw,
    )


# ---------------------------------------------------------------------------
# Bytes -> records
# ---------------------------------------------------------------------------


def _quote_list(names: Iterable[str], limit: int = 60) -> str:
    names = [n.strip() for n in names if n.strip()]
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


# ---------------------------------------------------------------------------
# Parser entry point
# ---------------------------------------------------------------------------


def parse(data: bytes, *, name: str = "", options: Mapping[str, Any] | None = None) -> list[Parsed]:
    """One CSV file (or one Synthea ZIP) -> encounters and rejected rows.

    ``options["profile"]``: a built-in profile name or a TOML path; empty = ``generic``,
    except that a ZIP with no profile given is read as a Synthea CSV set.
    """
    options = options or {}
    spec = str(options.get("profile") or "").strip()
    if not data or not data.strip(b" \t\r\n\x0b\x0c"):
        raise ParseError("file is empty")
    if not spec and data.startswith(b"PK\x03\x04"):
        spec = "synthea"
    profile = load_profile(spec)
    budgets = limits.of(options)
    if profile.format == "synthea":
        from connectors.ehr import synthea

        return synthea.parse_zip(data, profile, budgets)
    text = decode(data, encoding=profile.encoding, fallback=profile.fallback_encoding)
    if not text.strip():
        raise ParseError("file is empty")
    with gc_paused():
        table = read_table(text, delimiter=profile.delimiter, header_row=profile.header_row,
                           max_rows=budgets.max_rows)
        return _RowsReader(profile, table).run()


_POS = {f: i for i, f in enumerate(FIELDS)}
_E0, _E1 = 1, 1 + len(ENCOUNTER_FIELDS)  # encounter fields in a row tuple
_L0, _L1 = _E1, _E1 + len(LINE_FIELDS)  # line fields
_D0, _D1 = _L1, _L1 + len(DX_FIELDS)  # dx1..dx12; the last item is "diagnoses"
_PLAIN_NUMBER = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,4})?")  # ASCII only: Unicode digits are checked in full


class _RowsReader:
    """Maps one table through one profile.

    Speed matters (tens of thousands of rows per file, a 5,000 encounters/s product target),
    so each row becomes one tuple of all canonical fields in :data:`FIELDS` order through a
    single C-level ``itemgetter`` over the stripped cells plus a tail of constants.
    """

    def __init__(self, profile: Profile, table: Table) -> None:
        self.p = profile
        self.t = table
        idx = column_index(table.header)
        self.ncols = ncols = len(table.header)
        col: dict[str, int] = {}
        self.label: dict[str, str] = {}  # field -> header name as the file spells it
        missing: list[str] = []
        for fname, alts in profile.columns.items():
            found = None
            for h in alts:
                i = idx.get(norm_header(h))
                if i is None:
                    continue
                if i == -1:
                    raise ParseError(
                        f"column '{h}' (field {fname}) appears more than once in the header, so CSV profile "
                        f"'{profile.name}' cannot tell which to use; rename one in the export")
                found = i
                break
            if found is None:
                if (fname in profile.required or fname == "encounter_id") and fname not in profile.constants:
                    missing.append(fname)
                continue
            col[fname] = found
            self.label[fname] = table.header[found].strip()
        if missing:
            parts = []
            for f in missing:
                alts = profile.columns[f]
                also = f"; also accepted: {_quote_list(alts[1:])}" if len(alts) > 1 else ""
                parts.append(f"'{alts[0]}' (field {f}{also})")
            # The header row is quoted back only when it is one: some of its cells are header names
            # this profile knows. Otherwise it is most likely the first data row of an export
            # without its header - patient data, which a reason must never show.
            known = {norm_header(h) for alts in profile.columns.values() for h in alts}
            is_header = any(norm_header(h) in known for h in table.header)
            if len(parts) == 1:
                head = f"column {parts[0]}, required by CSV profile '{profile.name}', is missing"
            else:
                head = f"columns {', '.join(parts)}, required by CSV profile '{profile.name}', are missing"
            seen = (f"the file has columns: {_quote_list(table.header)}" if is_header else
                     f"row {table.header_line}, read as the header, has none of the column names this profile "
                     f"expects ({len(table.header)} cells, not shown: it may be a data row) - the header row "
                     "may be missing")
            raise ParseError(f"{head}; {seen} — fix the export or the profile's [columns] table")
        if not table.rows:
            raise ParseError("the file has a header row but no data rows; the export selected no charges — "
                             "check its date range and export again")
        consts = {k: v for k, v in profile.constants.items() if k in FIELDS}
        # cells + tail: tail[0] is "" (absent fields), then one slot per constant-only field
        self.tail = [""]
        plan = []
        self.fallback: list[tuple[int, str]] = []  # (position, constant) for empty cells of mapped fields
        for f in FIELDS:
            if f in col:
                plan.append(col[f])
                if consts.get(f):
                    self.fallback.append((_POS[f], consts[f]))
            elif consts.get(f):
                plan.append(ncols + len(self.tail))
                self.tail.append(consts[f])
            else:
                plan.append(ncols)
        self.getter = itemgetter(*plan)
        self.col = col
        # Line fields must be in every row; visit fields (and dos, dx) in at least one row of the encounter.
        per_row = set(LINE_FIELDS) - {"dos"}
        self.required_row = [_POS[f] for f in profile.required if f in per_row]
        self.required_visit = [_POS[f] for f in profile.required if f not in per_row and f != "encounter_id"]
        self.has_diag = "diagnoses" in col or bool(consts.get("diagnoses"))
        self.has_mod_list = "modifiers" in col or bool(consts.get("modifiers"))
        self.dx_system = profile.constants.get("dx_system", "ICD-10-CM")
        self.decimal_comma = profile.decimal == ","
        # only the dx1..dx12 columns the file has (most exports have 4 of 12)
        dx_present = [_POS[f] for f in DX_FIELDS if f in col or consts.get(f)]
        self.dx_slots: Any = (itemgetter(*dx_present) if len(dx_present) > 1 else
                              (lambda v, _p=dx_present[0]: (v[_p],)) if dx_present else None)
        self.ptr_cache: dict[str, list[int] | None] = {}  # pointer text repeats: "1", "1,2", "AB"

    def _check_number(self, f: str, value: str) -> None:
        try:
            std_decimal(value, places=2 if f == "unit_charge" else None)
        except BadValue as exc:
            reason = str(exc).split(" ", 1)[-1] if f == "unit_charge" else str(exc).removeprefix("units ")
            raise _RowError(f"{self.where(f)} {reason}; use digits with an optional decimal point") from None

    def where(self, f: str) -> str:
        return f"field {f} (column '{self.label[f]}')" if f in self.label else f"field {f}"

    def run(self) -> list[Parsed]:
        out: list[Parsed] = []
        groups: dict[str, list[tuple[int, tuple[str, ...] | list[str]]]] = {}
        bad_groups: dict[str, int] = {}  # encounter id -> first unreadable row
        ncols, eid_col = self.ncols, self.col["encounter_id"]
        getter, tail, fallback = self.getter, self.tail, self.fallback
        for line, rec in self.t.rows:
            n = len(rec)
            if n != ncols:
                if n < ncols or "".join(rec[ncols:]).strip():
                    span = self._span(line, rec)
                    out.append(Rejected(
                        f"row {line}", f"{span} has {n} columns but the header has {ncols}; check that row for an "
                        "unquoted delimiter or a missing quote, or fix the export"))
                    if eid_col < n:
                        bad_groups.setdefault(rec[eid_col].strip(), line)
                    continue
                rec = rec[:ncols]  # trailing empty columns
            cells = [c.strip() for c in rec]
            cells += tail
            vals: tuple[str, ...] | list[str] = getter(cells)
            if fallback:
                vals = list(vals)
                for pos, const in fallback:
                    if not vals[pos]:
                        vals[pos] = const
            eid = vals[0]
            if not eid:
                out.append(Rejected(f"row {line}", f"{self.where('encounter_id')} is empty; every row needs the "
                                    "encounter it belongs to"))
                continue
            g = groups.get(eid)
            if g is None:
                groups[eid] = [(line, vals)]
            else:
                g.append((line, vals))
        for eid, rows in groups.items():
            if eid in bad_groups:
                lines = ", ".join(str(r[0]) for r in rows)
                out.append(Rejected(
                    f"rows {lines}" if len(rows) > 1 else f"row {lines}",
                    f"not imported: row {bad_groups[eid]} of the same encounter could not be read, and importing "
                    "the rest would bill only part of the visit; fix that row and export the encounter again"))
                continue
            out.extend(self._encounter(eid, rows))
        return out

    @staticmethod
    def _span(line: int, rec: list[str]) -> str:
        extra = sum(c.count("\n") + c.count("\r") - c.count("\r\n") for c in rec)
        return f"the record starting at line {line} (through line {line + extra})" if extra else f"row {line}"

    def _encounter(self, eid: str, rows: list[tuple[int, Any]]) -> list[Parsed]:
        """One group of rows -> an Encounter, or Rejected parts (the whole group on any error)."""
        errors: list[Rejected] = []
        for line, vals in rows:
            for pos in self.required_row:
                if not vals[pos]:
                    errors.append(Rejected(f"row {line}", f"{self.where(FIELDS[pos])} is empty, and CSV profile "
                                           f"'{self.p.name}' requires it"))
                    break
        ev = rows[0][1][_E0:_E1]
        if len(rows) > 1 and not errors:
            ev, conflict = self._merge(rows)
            if conflict:
                errors.append(conflict)
        if not errors:
            first_vals = rows[0][1]
            for pos in self.required_visit:
                if first_vals[pos]:
                    continue
                if len(rows) == 1 or not any(vals[pos] for _, vals in rows):
                    row_nums = [str(line) for line, _ in rows]
                    errors.append(Rejected(
                        f"row {row_nums[0]}" if len(row_nums) == 1 else f"rows {', '.join(row_nums)}",
                        f"{self.where(FIELDS[pos])} is empty"
                        f"{' in every row of this encounter' if len(row_nums) > 1 else ''}, and CSV profile "
                        f"'{self.p.name}' requires it"))
                    break
        if errors:
            return [*errors, *self._also_rejected(rows, errors)]

        dx_union: list[str] = []
        dx_pos: dict[str, int] = {}
        row_dxs: list[list[str]] = []
        has_diag, dx_slots = self.has_diag, self.dx_slots
        for _, vals in rows:
            row_dx = [d for d in dx_slots(vals) if d] if dx_slots else []
            if has_diag and vals[-1]:
                row_dx.extend(_split(vals[-1], self.p.diagnoses_separator))
            for d in row_dx:
                if d not in dx_pos:
                    dx_union.append(d)
                    dx_pos[d] = len(dx_union)
            row_dxs.append(row_dx)
        dos = ""
        for _, vals in rows:
            if vals[_L0]:
                dos = vals[_L0]
                break
        lines: list[ChargeLine] = []
        n_union = len(dx_union)
        for k, (line, vals) in enumerate(rows):
            try:
                lines.append(self._line(vals, row_dxs[k], dx_pos, n_union, dos))
            except _RowError as exc:
                errors.append(Rejected(f"row {line}", str(exc)))
        if errors:
            return [*errors, *self._also_rejected(rows, errors)]

        (mrn, family, given, middle, suffix, dob, sex, address1, address2, city, state, zip_, phone,
         payer_name, payer_id, member_id, group, rendering_npi, rendering_family, rendering_given,
         billing_npi, dos_end, place_of_service) = ev
        dx_system = self.dx_system
        return [Encounter(
            source="csv", source_id=eid, source_system=self.p.source_system,
            patient=Patient(
                mrn=mrn, family=family, given=given, middle=middle, suffix=suffix, dob=dob, sex=sex,
                address=Address(line1=address1, line2=address2, city=city, state=state, zip=zip_),
                phone=phone),
            coverages=[Coverage(payer_name=payer_name, payer_id=payer_id, member_id=member_id, group=group)]
            if payer_name or payer_id or member_id or group else [],
            rendering=Provider(npi=rendering_npi, family=rendering_family, given=rendering_given),
            billing=Provider(npi=billing_npi),
            dos_start=dos, dos_end=dos_end, place_of_service=place_of_service,
            diagnoses=[Diagnosis(code=d, system=dx_system) for d in dx_union],
            lines=lines,
        )]

    def _merge(self, rows: list[tuple[int, Any]]) -> tuple[list[str], Rejected | None]:
        """Encounter fields over several rows: first non-empty value; two different values = conflict."""
        first = rows[0][1][_E0:_E1]
        if all(v[_E0:_E1] == first for _, v in rows[1:]):
            return list(first), None
        merged = list(first)
        origin = [rows[0][0]] * len(merged)
        for line, vals in rows[1:]:
            for k, v in enumerate(vals[_E0:_E1]):
                if not v:
                    continue
                if not merged[k]:
                    merged[k], origin[k] = v, line
                elif merged[k] != v:
                    f = ENCOUNTER_FIELDS[k]
                    return merged, Rejected(
                        f"row {line}", f"{self.where(f)} differs from row {origin[k]} of the same encounter; one "
                        "encounter must have one value — check the export's encounter ids")
        return merged, None

    @staticmethod
    def _also_rejected(rows: list[tuple[int, Any]], errors: list[Rejected]) -> list[Rejected]:
        bad = {int(n) for e in errors for n in re.findall(r"\d+", e.part)}
        rest = [str(line) for line, _ in rows if line not in bad]
        if not rest:
            return []
        first = errors[0].part
        return [Rejected("rows " + ", ".join(rest) if len(rest) > 1 else f"row {rest[0]}",
                         f"not imported: {first} of the same encounter could not be used, and importing the rest "
                         "would bill only part of the visit; fix that row and export the encounter again")]

    def _line(self, vals: Any, row_dx: list[str], dx_pos: dict[str, int], n_union: int,
              enc_dos: str) -> ChargeLine:
        (row_dos, code, code_system, modifiers, m1, m2, m3, m4, raw_ptr, units, charge,
         line_id) = vals[_L0:_L1]
        if not code:
            raise _RowError(f"{self.where('code')} is empty; every row is one charge line and needs a code")
        units = units or "1"
        if self.decimal_comma:
            units, charge = _comma_decimal(units), _comma_decimal(charge)
        if not _PLAIN_NUMBER.fullmatch(units):
            self._check_number("units", units)
        if charge and not _PLAIN_NUMBER.fullmatch(charge):
            self._check_number("unit_charge", charge)
        mods = _split(modifiers, self.p.modifiers_separator) if self.has_mod_list and modifiers else []
        if m1 or m2 or m3 or m4:
            mods.extend(m for m in (m1, m2, m3, m4) if m)
        pointers: list[int] = []
        if raw_ptr:
            if raw_ptr in self.ptr_cache:
                nums = self.ptr_cache[raw_ptr]
            else:
                nums = self.ptr_cache[raw_ptr] = parse_pointers(raw_ptr)
            if nums is None:
                raise _RowError(f"{self.where('dx_pointers')} is not a list of diagnosis pointers; write numbers "
                                "(1,2) or letters (AB)")
            base = len(row_dx) or n_union
            for k in nums:
                if not 1 <= k <= base:
                    raise _RowError(f"{self.where('dx_pointers')} points at diagnosis {k}, but the "
                                    f"{'row' if row_dx else 'encounter'} has {base}")
                p = dx_pos[row_dx[k - 1]] if row_dx else k
                if p not in pointers:
                    pointers.append(p)
        elif row_dx and self.p.pointers_default == "row":
            for d in row_dx:
                p = dx_pos[d]
                if p not in pointers:
                    pointers.append(p)
                    if len(pointers) == 4:
                        break
        return ChargeLine(
            code=code, code_system=code_system, modifiers=mods, dx_pointers=pointers, units=units,
            unit_charge=charge, line_id=line_id,
            service_date=row_dos if row_dos and row_dos != enc_dos else "",
        )


class _RowError(Exception):
    """A row's value is unusable; the message names the field and column, not the value."""


def _split(text: str, sep: str) -> list[str]:
    if not text:
        return []
    parts = _AUTO_SPLIT.split(text) if sep == "auto" else text.split(sep)
    return [p.strip() for p in parts if p.strip()]


def _comma_decimal(text: str) -> str:
    """'1.234,50' -> '1234.50' for exports written with a decimal comma."""
    return text.replace(".", "").replace(" ", "").replace(",", ".") if text else text


def parse_pointers(text: str) -> list[int] | None:
    """'1,2' / '1 2' / '12' / 'AB' / 'A,B' -> [1, 2]; None if unreadable.

    Digits written together are one pointer each (``1234`` = 1, 2, 3, 4) as in most PM
    exports; pointers 10-12 need separators (``1,10``) or letters (J-L).
    """
    tokens = [t for t in _PTR_SPLIT.split(text.strip().upper()) if t]
    out: list[int] = []
    for t in tokens:
        if not t.isascii():
            return None
        if t.isdigit():
            if len(t) > 2 and len(tokens) > 1:
                return None
            if len(tokens) == 1 and len(t) > 1:
                out.extend(int(ch) for ch in t)
            else:
                out.append(int(t))
        elif t.isalpha() and t.isascii() and all("A" <= ch <= "L" for ch in t):
            out.extend(ord(ch) - 64 for ch in t)
        else:
            return None
    return out


# ---------------------------------------------------------------------------
# Folder -> deterministic ZIP
# ---------------------------------------------------------------------------


