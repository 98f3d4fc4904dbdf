"""Chargemaster crosswalk: clinical codes -> billing codes, the job a practice's chargemaster does.

Some sources (Synthea above all) code services in SNOMED CT, vaccines in CVX, drugs in
RxNorm and lab panels in LOINC, and diagnoses in SNOMED CT. A claim needs CPT/HCPCS and
ICD-10-CM, and only the practice can say which billing code it uses for a service — so that
knowledge lives in a data file (TOML), not in code. :meth:`Chargemaster.apply` rewrites one
:class:`~core.model.Encounter` in place and reports what it could not map; the pipeline runs
it before standardize/validate.

Crosswalk file format (see agent/data/synthea_demo_chargemaster.toml for a full example)::

    [chargemaster]
    name = "my-practice"
    demo = false                     # true: every mapped encounter gets a "demo data" warning

    [vaccine_admin]                  # added once per encounter for lines whose entry has admin = true
    first = "90471"                  # first vaccine administered
    additional = "90472"             # each additional vaccine (units = count - 1)
    price_first = "25.00"            # optional unit charges
    price_additional = "15.00"

    [lines.SNOMED]                   # also lines.CVX, lines.RxNorm, lines.LOINC
    "185345009" = { code = "99213" }
    "1000126"   = { code = "J1050", units = 150 }        # units per source unit
    "430193006" = { skip = true, why = "bundled into the visit" }
    "162673000" = { by_age = [{ under = 18, code = "99394" }, { code = "99395" }] }

    [diagnoses.SNOMED]
    "195662009" = { icd10 = "J02.9" }
    "160903007" = { skip = true, why = "social history, not a problem" }

    [providers]                      # rendering provider "Given Family" (as the source writes it) -> NPI
    "Ted955 Reilly981" = "1999000445"
    [organizations]                  # billing organization name -> NPI
    "Fitchburg Outpatient Clinic" = "1999100161"

Entry fields: ``code`` (target; CPT unless it looks like HCPCS ``A1234`` or ``system`` says),
``units`` (multiplier: billed units per source unit), ``price`` (unit charge; otherwise the
source's charge is kept, divided by ``units`` so the line total is unchanged), ``skip`` (the
line / diagnosis is dropped with a warning: not billed by a physician practice), ``admin``
(a vaccine product that needs an administration code), ``by_age`` (bands by the patient's
age in whole years at the date of service; the last band may omit ``under``), ``note`` /
``why`` (text for people). Codes not in the file stay as they are and produce an
``chargemaster.unmapped`` error finding, so validation holds the encounter for review.
Messages name codes (not PHI), never patients.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.model import (
    MAX_MONEY,
    MAX_UNITS,
    MONEY_PLACES,
    UNITS_PLACES,
    BadValue,
    ChargeLine,
    Diagnosis,
    Encounter,
    Finding,
    money_text,
    read_decimal,
    std_date,
    std_icd10,
    std_name_part,
    units_text,
)

DATA_DIR = Path(__file__).with_name("data")
BUILTIN = {"synthea-demo": DATA_DIR / "synthea_demo_chargemaster.toml"}

# Source code systems a chargemaster translates, with the spellings parsers may leave.
_SYSTEM_ALIASES = {
    "SNOMED": "SNOMED", "SCT": "SNOMED", "SNOMEDCT": "SNOMED", "SNOMED-CT": "SNOMED", "SNOMED CT": "SNOMED",
    "HTTP://SNOMED.INFO/SCT": "SNOMED", "2.16.840.1.113883.6.96": "SNOMED",
    "CVX": "CVX", "HTTP://HL7.ORG/FHIR/SID/CVX": "CVX", "2.16.840.1.113883.12.292": "CVX",
    "RXNORM": "RxNorm", "HTTP://WWW.NLM.NIH.GOV/RESEARCH/UMLS/RXNORM": "RxNorm", "2.16.840.1.113883.6.88": "RxNorm",
    "LOINC": "LOINC", "LN": "LOINC", "HTTP://LOINC.ORG": "LOINC", "2.16.840.1.113883.6.1": "LOINC",
}
SOURCE_SYSTEMS = ("SNOMED", "CVX", "RxNorm", "LOINC")
_KIND = {"SNOMED": "procedure", "CVX": "vaccine", "RxNorm": "medication", "LOINC": "test"}
_CPT_RE = re.compile(r"^\d{4}[0-9FTU]$")
_HCPCS_RE = re.compile(r"^[A-V]\d{4}$")
_ICD_RE = re.compile(r"^[A-Z]\d[0-9A-Z](\.[0-9A-Z]{1,4})?$")


class ChargemasterError(ConfigError):
    """The crosswalk file cannot be used; ``title`` says where, ``fix`` what to do."""


def norm_system(system: str) -> str:
    """Any spelling of SNOMED/CVX/RxNorm/LOINC -> the canonical name; others unchanged."""
    s = (system or "").strip()
    return _SYSTEM_ALIASES.get(s.upper(), s)


def norm_code(system: str, code: str) -> str:
    """Codes compare without spaces; CVX also without leading zeros ("03" = "3")."""
    c = re.sub(r"\s", "", code or "")
    if system == "CVX" and c.isascii() and c.isdigit():
        return c.lstrip("0") or "0"
    return c


def npi_with_check_digit(first9: str) -> str:
    """Nine digits -> a check-digit-valid 10-digit NPI (Luhn over "80840" + the nine digits).

    Used to make up demo NPIs for sources without NPIs; a made-up NPI is never a real
    provider's on purpose, but nothing stops a coincidence, so never bill with demo NPIs.
    """
    if len(first9) != 9 or not first9.isdigit():
        raise ValueError("an NPI has 9 digits before its check digit")
    total = 0
    for i, ch in enumerate(reversed("80840" + first9)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return first9 + str((10 - total % 10) % 10)


@dataclass(frozen=True)
class LineRule:
    code: str = ""
    system: str = ""
    units: Decimal | None = None
    price: str | None = None
    skip: bool = False
    why: str = ""
    admin: bool = False
    by_age: tuple[tuple[int | None, str], ...] = ()


@dataclass(frozen=True)
class DxRule:
    icd10: str = ""
    skip: bool = False
    why: str = ""
    by_age: tuple[tuple[int | None, str], ...] = ()


class Chargemaster:
    """A loaded crosswalk. Immutable after load; :meth:`apply` is safe to call from many threads."""

    def __init__(self, name: str, *, lines: Mapping[str, Mapping[str, LineRule]],
                 diagnoses: Mapping[str, Mapping[str, DxRule]], providers: Mapping[str, str] | None = None,
                 organizations: Mapping[str, str] | None = None, vaccine_admin: Mapping[str, str] | None = None,
                 demo: bool = False) -> None:
        self.name = name
        self.lines = lines
        self.diagnoses = diagnoses
        self.vaccine_admin = dict(vaccine_admin or {})
        self.demo = demo
        self.providers = _name_index(providers or {})
        self.organizations = _name_index(organizations or {})
        self._has_providers = bool(providers)
        self._has_orgs = bool(organizations)

    # -- loading -----------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str | Path) -> Chargemaster:
        """A built-in name (``synthea-demo``) or the path of a crosswalk TOML file."""
        spec = str(name_or_path).strip()
        path = BUILTIN.get(spec)
        if path is None:
            path = Path(spec).expanduser()
            if not path.is_file():
                raise ChargemasterError(
                    f"chargemaster '{spec}' is neither a built-in crosswalk nor an existing file",
                    f"use one of: {', '.join(sorted(BUILTIN))}, or the path of a crosswalk .toml file")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ChargemasterError(f"chargemaster file {path.name} is not valid TOML ({exc})",
                                    "fix the file; the format is described in agent/chargemaster.py") from exc
        return cls.from_dict(raw, label=spec if spec in BUILTIN else path.name)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, label: str = "chargemaster") -> Chargemaster:
        def bad(where: str, msg: str) -> ChargemasterError:
            return ChargemasterError(f"chargemaster {label}: {where}: {msg}",
                                     "fix the crosswalk file; the format is described in agent/chargemaster.py")

        meta = raw.get("chargemaster") or {}
        def rule_tables(section: str, example: str, build: Any) -> dict[str, dict[str, Any]]:
            """[section.<system>] tables of code -> rule, with systems and shapes checked."""
            tables: dict[str, dict[str, Any]] = {}
            for sys_name, table in (raw.get(section) or {}).items():
                system = norm_system(sys_name)
                if system not in SOURCE_SYSTEMS:
                    raise bad(f"[{section}.{sys_name}]", f"source system must be one of {', '.join(SOURCE_SYSTEMS)}")
                out = tables.setdefault(system, {})
                for code, e in table.items():
                    where = f"[{section}.{sys_name}] \"{code}\""
                    if not isinstance(e, Mapping):
                        raise bad(where, f"an entry is a table such as {example}")
                    out[norm_code(system, code)] = build(e, where, bad)
            return tables

        lines: dict[str, dict[str, LineRule]] = rule_tables("lines", '{ code = "99213" }', _line_rule)
        diagnoses: dict[str, dict[str, DxRule]] = rule_tables("diagnoses", '{ icd10 = "J02.9" }', _dx_rule)
        providers = {str(k): str(v) for k, v in (raw.get("providers") or {}).items()}
        organizations = {str(k): str(v) for k, v in (raw.get("organizations") or {}).items()}
        for table_name, table in (("providers", providers), ("organizations", organizations)):
            for k, v in table.items():
                if not (len(v) == 10 and v.isdigit() and npi_with_check_digit(v[:9]) == v):
                    raise bad(f"[{table_name}] \"{k}\"", "the NPI must be 10 digits with a valid check digit")
        admin = {str(k): str(v) for k, v in (raw.get("vaccine_admin") or {}).items()}
        for k in ("first", "additional"):
            if k in admin and not _CPT_RE.match(admin[k]):
                raise bad("[vaccine_admin]", f"{k} must be a CPT code")
        return cls(str(meta.get("name") or label), lines=lines, diagnoses=diagnoses, providers=providers,
                   organizations=organizations, vaccine_admin=admin, demo=bool(meta.get("demo", False)))

    def targets(self) -> list[tuple[str, str]]:
        """Every (kind, code) the crosswalk can produce: ('icd10', 'J02.9'), ('line', '99213') —
        for checking a crosswalk against the code sets (tests, a `doctor` command)."""
        out: set[tuple[str, str]] = set()
        for table in self.lines.values():
            for r in table.values():
                for c in (r.code, *(c for _, c in r.by_age)):
                    if c:
                        out.add(("line", c))
        for dtable in self.diagnoses.values():
            for d in dtable.values():
                for c in (d.icd10, *(c for _, c in d.by_age)):
                    if c:
                        out.add(("icd10", c))
        return sorted(out)

    # -- applying ----------------------------------------------------------------------
    def apply(self, enc: Encounter) -> list[Finding]:
        """Rewrite ``enc`` in place: codes crosswalked, skipped items dropped, pointers re-pointed,
        vaccine administration added, NPIs filled in. Returns findings (no PHI)."""
        findings: list[Finding] = []
        changed = False
        age_cache: dict[str, int | None] = {}

        def age_at(when: str) -> int | None:
            when = when or enc.dos_start
            if when not in age_cache:
                age_cache[when] = _age(enc.patient.dob, when)
            return age_cache[when]

        # -- diagnoses ---------------------------------------------------------------
        new_dx: list[Diagnosis] = []
        pos: dict[tuple[str, str], int] = {}
        remap: dict[int, int] = {}  # old 1-based -> new 1-based (absent = dropped)
        dropped_all = bool(enc.diagnoses)

        def keep_dx(d: Diagnosis, old: int) -> None:
            key = (d.system, d.code)
            if key not in pos:
                new_dx.append(d)
                pos[key] = len(new_dx)
            remap[old] = pos[key]

        for i, dx in enumerate(enc.diagnoses, 1):
            system = norm_system(dx.system)
            table = self.diagnoses.get(system) if system in SOURCE_SYSTEMS else None
            if table is None:
                keep_dx(dx, i)
                dropped_all = False
                continue
            code = norm_code(system, dx.code)
            rule = table.get(code)
            if rule is None:
                keep_dx(Diagnosis(code=dx.code, system=system), i)
                dropped_all = False
                findings.append(Finding("chargemaster.unmapped", f"diagnoses[{len(new_dx) - 1}]",
                                        f"{system} diagnosis code {code} has no chargemaster entry; "
                                        "add it to the crosswalk"))
                continue
            changed = True
            if rule.skip:
                findings.append(Finding("chargemaster.skipped", f"diagnoses[{i - 1}]",
                                        f"{system} diagnosis code {code} is not reported on claims"
                                        f"{_why(rule.why)}; it was dropped", severity="warning"))
                continue
            icd = _pick(rule.icd10, rule.by_age, age_at(""))
            if not icd:
                keep_dx(Diagnosis(code=dx.code, system=system), i)
                dropped_all = False
                findings.append(_age_finding(f"diagnoses[{len(new_dx) - 1}]", system, "diagnosis", code))
                continue
            keep_dx(Diagnosis(code=icd, system="ICD-10-CM"), i)
            dropped_all = False

        fallback_dx = 0
        if dropped_all and not new_dx:
            # Every listed diagnosis was a non-reportable finding. Synthea itself uses the
            # encounter code as the diagnosis of a visit without a reason; do the same.
            for line in enc.lines:
                system = norm_system(line.code_system)
                rule = self.diagnoses.get(system, {}).get(norm_code(system, line.code))
                icd = _pick(rule.icd10, rule.by_age, age_at(line.service_date)) if rule and not rule.skip else ""
                if icd:
                    new_dx.append(Diagnosis(code=icd, system="ICD-10-CM"))
                    fallback_dx = 1
                    findings.append(Finding(
                        "chargemaster.dx_from_encounter", "diagnoses[0]",
                        f"no listed diagnosis is reportable; {icd} was derived from the visit's {system} "
                        f"code {norm_code(system, line.code)} — review it", severity="warning"))
                    break

        # -- lines -------------------------------------------------------------------
        new_lines: list[ChargeLine] = []
        admin_lines: list[ChargeLine] = []
        for i, line in enumerate(enc.lines):
            pointers: list[int] = []
            for p in line.dx_pointers:
                q = remap.get(p) if p in remap else (None if 1 <= p <= len(enc.diagnoses) else p)
                if q is not None and q not in pointers:
                    pointers.append(q)
            if not pointers and fallback_dx:
                pointers = [fallback_dx]
            system = norm_system(line.code_system)
            line_table = self.lines.get(system) if system in SOURCE_SYSTEMS else None
            if line_table is None:
                if pointers != line.dx_pointers:
                    line.dx_pointers = pointers
                new_lines.append(line)
                continue
            code = norm_code(system, line.code)
            line_rule = line_table.get(code)
            kind = _KIND[system]
            if line_rule is None:
                line.dx_pointers = pointers
                line.code_system = system
                new_lines.append(line)
                findings.append(Finding("chargemaster.unmapped", f"lines[{len(new_lines) - 1}].code",
                                        f"{system} {kind} code {code} has no chargemaster entry; "
                                        "add it to the crosswalk"))
                continue
            changed = True
            if line_rule.skip:
                findings.append(Finding("chargemaster.skipped", f"lines[{i}]",
                                        f"{system} {kind} code {code} is not billed by the practice"
                                        f"{_why(line_rule.why)}; the line was dropped", severity="warning"))
                continue
            target = _pick(line_rule.code, line_rule.by_age, age_at(line.service_date))
            if not target:
                line.dx_pointers = pointers
                new_lines.append(line)
                findings.append(_age_finding(f"lines[{len(new_lines) - 1}].code", system, kind, code))
                continue
            units, charge = line.units, line.unit_charge
            if line_rule.units is not None:
                units, charge = _scale(line.units, line.unit_charge, line_rule.units)
            if line_rule.price is not None:
                charge = line_rule.price
            new_line = ChargeLine(
                code=target, code_system=line_rule.system or ("HCPCS" if _HCPCS_RE.match(target) else "CPT"),
                modifiers=list(line.modifiers), dx_pointers=pointers, units=units, unit_charge=charge,
                line_id=line.line_id, service_date=line.service_date)
            new_lines.append(new_line)
            if line_rule.admin:
                admin_lines.append(new_line)

        if admin_lines and self.vaccine_admin.get("first"):
            new_lines.extend(self._admin_lines(admin_lines, new_lines))

        # -- providers ---------------------------------------------------------------
        if not (enc.rendering.npi or "").strip():
            npi = _lookup(self.providers, f"{enc.rendering.given} {enc.rendering.family}")
            if npi:
                enc.rendering.npi = npi
                changed = True
            elif self._has_providers:
                findings.append(Finding("chargemaster.provider_unmapped", "rendering.npi",
                                        "the rendering provider has no NPI and no entry in the chargemaster's "
                                        "[providers] table; add one", severity="warning"))
        if not (enc.billing.npi or "").strip() and enc.billing.organization:
            npi = _lookup(self.organizations, enc.billing.organization)
            if npi:
                enc.billing.npi = npi
                changed = True
            elif self._has_orgs:
                findings.append(Finding("chargemaster.provider_unmapped", "billing.npi",
                                        "the billing organization has no NPI and no entry in the chargemaster's "
                                        "[organizations] table; add one", severity="warning"))

        enc.diagnoses = new_dx
        enc.lines = new_lines
        if changed and self.demo:
            findings.append(Finding(
                "chargemaster.demo", "lines",
                f"codes and NPIs come from the DEMO crosswalk '{self.name}' (made-up NPIs, sample mappings); "
                "do not bill these encounters — use the practice's own chargemaster", severity="warning"))
        return findings

    def _admin_lines(self, vaccines: list[ChargeLine], lines: list[ChargeLine]) -> list[ChargeLine]:
        """Immunization administration: first vaccine + (n-1) additional, minus what the source
        already coded (Synthea codes a vaccine-only visit as 'Administration of vaccine')."""
        first = self.vaccine_admin["first"]
        additional = self.vaccine_admin.get("additional", "")
        have_first = sum(1 for ln in lines if ln.code == first)
        have_more = sum(_units(ln.units) for ln in lines if additional and ln.code == additional)
        v0 = vaccines[0]
        out: list[ChargeLine] = []
        if not have_first:
            out.append(ChargeLine(code=first, code_system="CPT", dx_pointers=list(v0.dx_pointers), units="1",
                                  unit_charge=self.vaccine_admin.get("price_first", ""),
                                  line_id=f"{v0.line_id}:admin" if v0.line_id else "",
                                  service_date=v0.service_date))
        more = len(vaccines) - 1 - have_more
        if additional and more > 0:
            out.append(ChargeLine(code=additional, code_system="CPT", dx_pointers=list(v0.dx_pointers),
                                  units=str(more), unit_charge=self.vaccine_admin.get("price_additional", ""),
                                  line_id=f"{v0.line_id}:admin+" if v0.line_id else "",
                                  service_date=v0.service_date))
        return out


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _line_rule(e: Mapping[str, Any], where: str, bad: Any) -> LineRule:
    skip = bool(e.get("skip", False))
    code = str(e.get("code", "")).strip().upper()
    by_age = _bands(e.get("by_age"), "code", where, bad)
    if not skip and not code and not by_age:
        raise bad(where, "needs code, by_age or skip = true")
    for c in (code, *(c for _, c in by_age)):
        if c and not (_CPT_RE.match(c) or _HCPCS_RE.match(c)):
            raise bad(where, f"target {c} is not a CPT or HCPCS code")
    system = str(e.get("system", "")).strip().upper()
    if system and system not in ("CPT", "HCPCS"):
        raise bad(where, "system must be CPT or HCPCS")
    units = None
    if "units" in e:
        try:
            units = read_decimal(str(e["units"]), limit=MAX_UNITS, places=UNITS_PLACES)
        except BadValue:
            units = Decimal(0)
        if units <= 0:
            raise bad(where, f"units must be a number greater than 0 and at most {MAX_UNITS:,}")
    price = None
    if "price" in e:
        try:
            price = money_text(read_decimal(str(e["price"]), limit=MAX_MONEY, places=MONEY_PLACES))
        except BadValue:
            raise bad(where, "price must be an amount such as \"125.00\"") from None
    return LineRule(code=code, system=system, units=units, price=price, skip=skip, why=str(e.get("why", "")),
                    admin=bool(e.get("admin", False)), by_age=by_age)


def _dx_rule(e: Mapping[str, Any], where: str, bad: Any) -> DxRule:
    skip = bool(e.get("skip", False))
    icd = std_icd10(str(e.get("icd10", "")))
    by_age = tuple((u, std_icd10(c)) for u, c in _bands(e.get("by_age"), "icd10", where, bad))
    if not skip and not icd and not by_age:
        raise bad(where, "needs icd10, by_age or skip = true")
    for c in (icd, *(c for _, c in by_age)):
        if c and not _ICD_RE.match(c):
            raise bad(where, f"target {c} is not shaped like an ICD-10-CM code")
    return DxRule(icd10=icd, skip=skip, why=str(e.get("why", "")), by_age=by_age)


def _bands(raw: Any, key: str, where: str, bad: Any) -> tuple[tuple[int | None, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise bad(where, "by_age must be a list of { under = N, " + key + " = ... }")
    out: list[tuple[int | None, str]] = []
    last = -1
    for i, band in enumerate(raw):
        under = band.get("under") if isinstance(band, Mapping) else None
        target = str(band.get(key, "")).strip().upper() if isinstance(band, Mapping) else ""
        if not target or (under is None and i != len(raw) - 1) or (under is not None and (
                not isinstance(under, int) or under <= last)):
            raise bad(where, f"by_age bands need {key} and increasing 'under' ages; only the last may omit it")
        last = under if under is not None else last
        out.append((under, target))
    return tuple(out)


def _pick(default: str, bands: tuple[tuple[int | None, str], ...], age: int | None) -> str:
    if not bands:
        return default
    if age is None:
        return default  # "" when the entry has only bands: the caller reports it
    for under, target in bands:
        if under is None or age < under:
            return target
    return default


def _age(dob: str, when: str) -> int | None:
    try:
        b, d = std_date(dob), std_date(when)
    except BadValue:
        return None
    if not b or not d:
        return None
    bd, dd = date.fromisoformat(b), date.fromisoformat(d)
    return dd.year - bd.year - ((dd.month, dd.day) < (bd.month, bd.day))


def _age_finding(field: str, system: str, kind: str, code: str) -> Finding:
    return Finding("chargemaster.age_unknown", field,
                   f"{system} {kind} code {code} maps by the patient's age, which is unknown (date of birth or "
                   "date of service missing or unreadable); fix the dates or code it by hand")


def _why(text: str) -> str:
    return f" ({text})" if text else ""


def _units(text: str) -> int:
    """Source units as a whole count; an unreadable value counts as 1 (standardize reports it)."""
    try:
        return int(read_decimal((text or "1").strip() or "1", limit=MAX_UNITS, places=UNITS_PLACES))
    except BadValue:
        return 1


def _scale(units: str, charge: str, factor: Decimal) -> tuple[str, str]:
    """units x factor; the unit charge / factor so the line total stays what the source billed."""
    # Source values are read through the model's checked reader first (never NaN or 1e999999999
    # into arithmetic); a value it refuses is passed on untouched for standardize to report.
    try:
        u = read_decimal((units or "1").strip() or "1", limit=MAX_UNITS, places=UNITS_PLACES) * factor
    except BadValue:
        return units, charge
    new_units = units_text(u)
    if not (charge or "").strip():
        return new_units, charge
    try:
        c = read_decimal(charge.strip().replace(",", "").replace("$", ""), limit=MAX_MONEY, places=MONEY_PLACES)
    except BadValue:
        return new_units, charge
    return new_units, format((c / factor).quantize(Decimal("0.01")), "f")


def _name_key(name: str) -> str:
    return " ".join((name or "").split()).casefold()


def _std_key(name: str) -> str:
    return " ".join(std_name_part(w) for w in (name or "").split()).casefold()


def _name_index(table: Mapping[str, str]) -> dict[str, str]:
    """Exact (case/space-folded) names, plus standardized forms ('Ted955' -> 'ted') where unambiguous,
    so a lookup works before and after :func:`core.model.standardize` strips Synthea's digits."""
    idx: dict[str, str] = {_name_key(k): v for k, v in table.items()}
    std: dict[str, str | None] = {}
    for k, v in table.items():
        s = _std_key(k)
        std[s] = v if s not in std or std[s] == v else None
    for s, target in std.items():
        if target is not None:
            idx.setdefault("~" + s, target)
    return idx


def _lookup(idx: Mapping[str, str], name: str) -> str:
    if not name.strip() or not idx:
        return ""
    return idx.get(_name_key(name)) or idx.get("~" + _std_key(name)) or ""
