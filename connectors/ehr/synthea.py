"""Synthea CSV export set (one ZIP) -> encounters, for the CSV profile ``synthea``.

Synthea (synthetichealth/synthea) writes a relational set of CSV tables rather than one
charges export, so a column-mapping profile cannot express it: the join lives here, and the
profile TOML only carries constants (source_system) and the ENCOUNTERCLASS -> place of
service table.

The mapping (one :class:`~core.model.Encounter` per encounters.csv row that has a claim):

* claims.csv rows whose APPOINTMENTID is the encounter Id (Synthea files medications on
  their own claim of the same visit, so there may be several) give the diagnoses
  (DIAGNOSIS1-8, SNOMED CT; merged, duplicates removed) and, through claims_transactions.csv
  rows with TYPE=CHARGE, the lines: PROCEDURECODE, MODIFIER1/2, UNITS, UNITAMOUNT, FROMDATE,
  ID; DIAGNOSISREF1-4 are 1-based pointers into that claim's DIAGNOSIS1-8, re-pointed at
  the merged list.
* A line's code system comes from the table the code appears in for that visit
  (encounters/procedures -> SNOMED, immunizations -> CVX, medications -> RxNorm), falling
  back to the whole export and then to the code's shape. Nothing is translated here: the
  chargemaster (agent.chargemaster) crosswalks to CPT/HCPCS/ICD-10-CM.
* patients.csv (Id is the MRN), providers.csv (rendering provider; Synthea has no NPIs),
  organizations.csv if present (billing organization name), payers.csv via encounters.PAYER
  (NO_INSURANCE = self-pay, no coverage). Member id: claims.PRIMARYPATIENTINSURANCEID when it
  is a real member id; recent Synthea writes the payer's Id there, so then
  payer_transitions.csv MEMBERID (if present) for that payer and date, else the patient Id.

Rejected parts name the table, row number and column — never a value.
"""

from __future__ import annotations

import zipfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from connectors.ehr import limits
from connectors.ehr.base import ParseError
from connectors.ehr.csvio import Profile, decode, gc_paused, iter_zip_tables, norm_header, read_table
from core.model import (
    Address,
    ChargeLine,
    Coverage,
    Diagnosis,
    Encounter,
    Parsed,
    Patient,
    Provider,
    Rejected,
)

REQUIRED_TABLES: dict[str, tuple[str, ...]] = {
    "patients.csv": ("Id", "BIRTHDATE", "FIRST", "LAST", "GENDER"),
    "encounters.csv": ("Id", "START", "PATIENT", "PROVIDER", "PAYER", "CODE"),
    "claims.csv": ("Id", "APPOINTMENTID", *(f"DIAGNOSIS{i}" for i in range(1, 9))),
    "claims_transactions.csv": ("ID", "CLAIMID", "TYPE", "PROCEDURECODE", "UNITS"),
    "conditions.csv": ("ENCOUNTER", "CODE"),
    "procedures.csv": ("ENCOUNTER", "CODE"),
    "providers.csv": ("Id", "NAME"),
    "payers.csv": ("Id", "NAME"),
}
OPTIONAL_TABLES: dict[str, tuple[str, ...]] = {
    "immunizations.csv": ("ENCOUNTER", "CODE"),
    "medications.csv": ("ENCOUNTER", "CODE"),
    "organizations.csv": ("Id", "NAME"),
    "payer_transitions.csv": ("PATIENT", "PAYER", "MEMBERID"),
}
# Columns read when present (they vary between Synthea versions).
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients.csv": ("MIDDLE", "SUFFIX", "ADDRESS", "CITY", "STATE", "ZIP"),
    "encounters.csv": ("STOP", "ORGANIZATION", "ENCOUNTERCLASS"),
    "claims.csv": ("PRIMARYPATIENTINSURANCEID",),
    "claims_transactions.csv": ("CHARGEID", "FROMDATE", "MODIFIER1", "MODIFIER2", "UNITAMOUNT", "AMOUNT",
                                *(f"DIAGNOSISREF{i}" for i in range(1, 5))),
    "payer_transitions.csv": ("START_DATE", "END_DATE", "START_YEAR", "END_YEAR"),
}
# The tables this reader uses (for pack_directory(only=...)).
USED_TABLES = tuple(REQUIRED_TABLES) + tuple(OPTIONAL_TABLES)
SELF_PAY_NAMES = {"NO_INSURANCE"}
_SLOT_REFS = frozenset("12345678")


@dataclass
class _Rows:
    """One table: records as {column: value} (only the columns read) with their line numbers."""

    name: str
    rows: list[tuple[int, dict[str, str]]]
    bad: list[Rejected]


def _load(name: str, raw: bytes, required: Iterable[str], optional: Iterable[str],
          key: str | None, max_rows: int = limits.DEFAULT.max_rows) -> tuple[_Rows, set[str]]:
    """Read one member; returns the rows and the keys of rows that could not be read."""
    what = name
    text = decode(raw, what=what)
    if not text.strip():
        raise ParseError(f"{name} in the Synthea set is empty; export the set again")
    table = read_table(text, delimiter=",", what=what, max_rows=max_rows)
    idx: dict[str, int] = {}
    for i, h in enumerate(table.header):
        idx.setdefault(norm_header(h), i)
    plan: list[tuple[str, int]] = []
    missing: list[str] = []
    for col in required:
        at = idx.get(norm_header(col))
        if at is None:
            missing.append(col)
        else:
            plan.append((col, at))
    if missing:
        raise ParseError(
            f"{name} in the Synthea set has no column {', '.join(repr(c) for c in missing)}; is it a Synthea "
            "3.x CSV export? (Synthea writes these tables with exporter.csv.export = true)")
    for col in optional:
        at = idx.get(norm_header(col))
        if at is not None:
            plan.append((col, at))
    ncols = len(table.header)
    key_i = dict(plan).get(key) if key else None
    rows: list[tuple[int, dict[str, str]]] = []
    bad: list[Rejected] = []
    bad_keys: set[str] = set()
    for line, rec in table.rows:
        if len(rec) != ncols and (len(rec) < ncols or "".join(rec[ncols:]).strip()):
            bad.append(Rejected(f"{name} row {line}", f"has {len(rec)} columns but the header has {ncols}; "
                                "the export is damaged — export the Synthea set again"))
            if key_i is not None and key_i < len(rec):
                bad_keys.add(rec[key_i])
            continue
        rows.append((line, {c: rec[i] for c, i in plan}))
    return _Rows(name, rows, bad), bad_keys


def parse_zip(data: bytes, profile: Profile, budgets: limits.Budgets = limits.DEFAULT) -> list[Parsed]:
    """The bytes of a ZIP holding a Synthea CSV set -> encounters + rejected parts."""
    members = {base: (zf, m) for base, zf, m in iter_zip_tables(data, budgets)}
    if not members:
        raise ParseError("the ZIP holds no .csv files; expected a Synthea CSV export set "
                         f"({', '.join(REQUIRED_TABLES)})")
    missing = [t for t in REQUIRED_TABLES if t not in members]
    if missing:
        raise ParseError(f"the Synthea CSV set is missing {', '.join(missing)}; it needs "
                         f"{', '.join(REQUIRED_TABLES)} from the same Synthea run")
    keys = {"encounters.csv": "Id", "claims.csv": "APPOINTMENTID", "claims_transactions.csv": "CLAIMID",
            "patients.csv": "Id"}
    t: dict[str, _Rows] = {}
    bad_keys: dict[str, set[str]] = {}
    with gc_paused():
        for name, cols in (*REQUIRED_TABLES.items(), *OPTIONAL_TABLES.items()):
            if name not in members:
                continue
            zf, m = members[name]
            try:
                raw = zf.read(m)
            except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError, EOFError) as exc:
                raise ParseError(f"{name} cannot be unpacked from the ZIP ({type(exc).__name__}); "
                                 "pack the folder again") from exc
            t[name], bad_keys[name] = _load(name, raw, cols, OPTIONAL_COLUMNS.get(name, ()), keys.get(name),
                                            budgets.max_rows)
        return _Assembler(profile, t, bad_keys).run()


def _code_system_by_shape(code: str) -> str:
    """Last resort when a code is in none of the tables: SNOMED concept ids carry a Verhoeff
    check digit and partition 00/10; CVX codes have at most 3 digits; else RxNorm."""
    if not code.isascii():
        return "unknown"
    if code.isdigit() and len(code) >= 6 and code[-3:-1] in ("00", "10") and _verhoeff_ok(code):
        return "SNOMED"
    if code.isdigit() and len(code) <= 3:
        return "CVX"
    return "RxNorm" if code.isdigit() else "unknown"


_VD = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 0, 6, 7, 8, 9, 5), (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
       (3, 4, 0, 1, 2, 8, 9, 5, 6, 7), (4, 0, 1, 2, 3, 9, 5, 6, 7, 8), (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
       (6, 5, 9, 8, 7, 1, 0, 4, 3, 2), (7, 6, 5, 9, 8, 2, 1, 0, 4, 3), (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
       (9, 8, 7, 6, 5, 4, 3, 2, 1, 0))
_VP = ((0, 1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 5, 7, 6, 2, 8, 3, 0, 9, 4), (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
       (8, 9, 1, 6, 0, 4, 3, 5, 2, 7), (9, 4, 5, 3, 1, 2, 6, 8, 7, 0), (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
       (2, 7, 9, 3, 8, 0, 6, 4, 1, 5), (7, 0, 4, 6, 9, 1, 3, 2, 5, 8))


def _verhoeff_ok(num: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(num)):
        c = _VD[c][_VP[i % 8][int(ch)]]
    return c == 0


class _Assembler:
    """Joins the tables. Indexes are built once; each encounter is then a few dict lookups."""

    def __init__(self, profile: Profile, t: dict[str, _Rows], bad_keys: dict[str, set[str]]) -> None:
        self.p = profile
        self.t = t
        self.bad_keys = bad_keys
        self.pos_map = {str(k).lower(): str(v) for k, v in (profile.raw.get("place_of_service") or {}).items()}
        self.patients = {r["Id"]: r for _, r in t["patients.csv"].rows}
        self.providers = {r["Id"]: r for _, r in t["providers.csv"].rows}
        self.payers = {r["Id"]: r for _, r in t["payers.csv"].rows}
        self.orgs = {r["Id"]: r for _, r in t["organizations.csv"].rows} if "organizations.csv" in t else {}
        self.claims: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
        for line, r in t["claims.csv"].rows:
            self.claims[r["APPOINTMENTID"]].append((line, r))
        self.charges: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
        for line, r in t["claims_transactions.csv"].rows:
            if r["TYPE"].strip().upper() == "CHARGE":
                self.charges[r["CLAIMID"]].append((line, r))
        for lst in self.charges.values():
            lst.sort(key=lambda x: (_int_or(x[1].get("CHARGEID", ""), x[0]), x[0]))
        # code -> system, per encounter and for the whole export
        self.by_enc: dict[tuple[str, str], str] = {}
        self.global_sys: dict[str, str] = {}
        for table, system in (("medications.csv", "RxNorm"), ("immunizations.csv", "CVX"),
                              ("procedures.csv", "SNOMED")):  # later wins: SNOMED tables last
            if table in t:
                for _, r in t[table].rows:
                    self.by_enc[(r["ENCOUNTER"], r["CODE"])] = system
                    self.global_sys[r["CODE"]] = system
        for _, r in t["encounters.csv"].rows:
            self.by_enc[(r["Id"], r["CODE"])] = "SNOMED"
            self.global_sys[r["CODE"]] = "SNOMED"
        self.members: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
        if "payer_transitions.csv" in t:
            for _, r in t["payer_transitions.csv"].rows:
                start = r.get("START_DATE") or r.get("START_YEAR", "")
                end = r.get("END_DATE") or r.get("END_YEAR", "")
                self.members[(r["PATIENT"], r["PAYER"])].append((start, end, r["MEMBERID"]))

    def system_for(self, enc_id: str, code: str) -> str:
        return self.by_enc.get((enc_id, code)) or self.global_sys.get(code) or _code_system_by_shape(code)

    def run(self) -> list[Parsed]:
        out: list[Parsed] = []
        for rows in self.t.values():
            out.extend(rows.bad)
        bad_claims = self.bad_keys.get("claims_transactions.csv", set())
        bad_encs = self.bad_keys.get("claims.csv", set())
        bad_patients = self.bad_keys.get("patients.csv", set())
        for line, e in self.t["encounters.csv"].rows:
            part = f"encounters.csv row {line}"
            claims = self.claims.get(e["Id"])
            if not claims and e["Id"] not in bad_encs:
                continue  # no claim: nothing was billed for this visit
            if e["Id"] in bad_encs or any(c["Id"] in bad_claims for _, c in claims or ()):
                out.append(Rejected(part, "not imported: one of its claims.csv or claims_transactions.csv rows "
                                    "could not be read (see those rows); export the Synthea set again"))
                continue
            assert claims is not None
            if e["PATIENT"] not in self.patients:
                reason = ("its patient's row in patients.csv could not be read" if e["PATIENT"] in bad_patients
                          else "its PATIENT is not in patients.csv")
                out.append(Rejected(part, f"{reason}; the tables must come from the same Synthea run"))
                continue
            try:
                out.append(self._encounter(e, claims))
            except _Reject as exc:
                out.append(Rejected(exc.part or part, str(exc)))
        return out

    def _encounter(self, e: dict[str, str], claims: list[tuple[int, dict[str, str]]]) -> Encounter:
        pat = self.patients[e["PATIENT"]]
        dx: list[str] = []
        dx_pos: dict[str, int] = {}
        lines: list[ChargeLine] = []
        member_id = ""
        for cline, c in claims:
            slots = [c[f"DIAGNOSIS{i}"].strip() for i in range(1, 9)]
            for d in slots:
                if d and d not in dx_pos:
                    dx_pos[d] = len(dx) + 1
                    dx.append(d)
            mid = c.get("PRIMARYPATIENTINSURANCEID", "").strip()
            if mid and not member_id and mid not in self.payers:
                member_id = mid
            for tline, tx in self.charges.get(c["Id"], ()):
                part = f"claims_transactions.csv row {tline}"
                code = tx["PROCEDURECODE"].strip()
                if not code:
                    raise _Reject(part, "PROCEDURECODE is empty on a CHARGE row; export the Synthea set again")
                pointers: list[int] = []
                for i in range(1, 5):
                    ref = tx.get(f"DIAGNOSISREF{i}", "").strip()
                    if not ref:
                        continue
                    if ref not in _SLOT_REFS or not slots[int(ref) - 1]:
                        raise _Reject(part, f"DIAGNOSISREF{i} does not point at a filled DIAGNOSIS1-8 column of "
                                      f"its claim (claims.csv row {cline}); export the Synthea set again")
                    p = dx_pos[slots[int(ref) - 1]]
                    if p not in pointers:
                        pointers.append(p)
                unit = tx.get("UNITAMOUNT", "").strip() or tx.get("AMOUNT", "").strip()
                lines.append(ChargeLine(
                    code=code, code_system=self.system_for(e["Id"], code),
                    modifiers=[m for m in (tx.get("MODIFIER1", "").strip(), tx.get("MODIFIER2", "").strip()) if m],
                    dx_pointers=pointers, units=tx["UNITS"].strip() or "1", unit_charge=unit,
                    line_id=tx["ID"].strip(), service_date=tx.get("FROMDATE", "").strip(),
                ))
        if not lines:
            raise _Reject("", "its claim has no CHARGE rows in claims_transactions.csv, so there is nothing to bill")
        coverages: list[Coverage] = []
        payer = self.payers.get(e["PAYER"])
        if payer is not None and payer["NAME"].strip().upper() not in SELF_PAY_NAMES:
            coverages.append(Coverage(
                payer_name=payer["NAME"].strip(), payer_id=payer["Id"].strip(),
                member_id=member_id or self._member_id(e["PATIENT"], e["PAYER"], e["START"]) or pat["Id"].strip(),
                relationship="self"))
        prov = self.providers.get(e["PROVIDER"])
        given, family = _split_name(prov["NAME"]) if prov else ("", "")
        org = self.orgs.get(e.get("ORGANIZATION", ""))
        org_name = org["NAME"].strip() if org else ""
        return Encounter(
            source="csv", source_id=e["Id"].strip(), source_system=self.p.source_system,
            patient=Patient(
                mrn=pat["Id"].strip(), family=pat["LAST"], given=pat["FIRST"], middle=pat.get("MIDDLE", ""),
                suffix=pat.get("SUFFIX", ""), dob=pat["BIRTHDATE"], sex=pat["GENDER"],
                address=Address(line1=pat.get("ADDRESS", ""), city=pat.get("CITY", ""),
                                state=pat.get("STATE", ""), zip=pat.get("ZIP", ""))),
            coverages=coverages,
            rendering=Provider(family=family, given=given, organization=org_name),
            billing=Provider(organization=org_name),
            dos_start=e["START"], dos_end=e.get("STOP", ""),
            place_of_service=self.pos_map.get(e.get("ENCOUNTERCLASS", "").strip().lower(), ""),
            diagnoses=[Diagnosis(code=d, system="SNOMED") for d in dx],
            lines=lines,
        )

    def _member_id(self, patient: str, payer: str, when: str) -> str:
        for start, end, mid in self.members.get((patient, payer), ()):
            if (not start or start[:10] <= when[:10]) and (not end or when[:10] <= end[:10]) and mid.strip():
                return mid.strip()
        return ""


class _Reject(Exception):
    def __init__(self, part: str, reason: str) -> None:
        super().__init__(reason)
        self.part = part


def _split_name(name: str) -> tuple[str, str]:
    """'Ted955 Reilly981' -> ('Ted955', 'Reilly981'): Synthea writes 'GIVEN FAMILY'."""
    parts = name.strip().rsplit(" ", 1)
    return (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])


def _int_or(text: str, default: int) -> int:
    t = text.strip()
    return int(t) if t.isascii() and t.isdigit() and len(t) <= 18 else default
