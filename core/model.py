"""Canonical model and standardization: the one shape every parser produces.

Parsers fill these dataclasses with what the source said (raw strings are fine);
:func:`standardize` then rewrites names, dates, addresses, phones and codes into one
form, so validation, dedupe, sync and reconciliation compare like with like.
Nothing here touches the store or any connector: it is the bottom of the import graph.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import ROUND_DOWN, Decimal
from functools import lru_cache
from typing import Any


def content_hash(blob: str) -> str:
    """The one content hash of a stored record (encounter, patient): SHA-256 of its JSON text.
    Same hash = same content, which is how a re-export is told from a revision."""
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


@dataclass
class Address:
    line1: str = ""
    line2: str = ""
    city: str = ""
    state: str = ""
    zip: str = ""
    country: str = ""


@dataclass
class Patient:
    mrn: str = ""
    family: str = ""
    given: str = ""
    middle: str = ""
    suffix: str = ""
    dob: str = ""  # ISO yyyy-mm-dd after standardize()
    sex: str = ""  # M | F | O | U after standardize()
    address: Address = field(default_factory=Address)
    phone: str = ""


@dataclass
class Coverage:
    payer_name: str = ""
    payer_id: str = ""
    member_id: str = ""
    group: str = ""
    relationship: str = ""  # self | spouse | child | other
    # The plan's dates as the EHR sent them (HL7 IN1-12 / IN1-13), ISO after standardize(); ""
    # when not sent. Left out of the stored JSON while empty, so encounters without them keep
    # the content hash they had before these fields existed (no false revisions on re-export).
    start: str = ""
    end: str = ""

    def to_dict(self) -> dict[str, str]:
        d = dict(self.__dict__)
        for k in ("start", "end"):
            if not d[k]:
                del d[k]
        return d


@dataclass
class Provider:
    npi: str = ""
    family: str = ""
    given: str = ""
    organization: str = ""
    taxonomy: str = ""


@dataclass
class Diagnosis:
    code: str
    system: str = "ICD-10-CM"  # ICD-10-CM | ICD-9-CM | SNOMED | other text


@dataclass
class ChargeLine:
    code: str
    code_system: str = "CPT"  # CPT | HCPCS | SNOMED | ... (only CPT/HCPCS are billable)
    modifiers: list[str] = field(default_factory=list)
    dx_pointers: list[int] = field(default_factory=list)  # 1-based into Encounter.diagnoses
    units: str = "1"  # decimal text, e.g. "1", "0.5"
    unit_charge: str = ""  # decimal money text, "" when the source has no price
    line_id: str = ""
    service_date: str = ""  # ISO; "" means the encounter's date of service


@dataclass
class Evidence:
    """What the source documented besides the charges, for the rules that ask whether a charge is
    documented (``doc.missing``): an order or a result with its service code, or the visit's
    length. Only parsers whose source carries these fill it (HL7 v2: OBR/OBX, PV1-44/45; FHIR:
    ServiceRequest, DiagnosticReport, Observation, Encounter.period/length; C-CDA: Results and Plan of
    Treatment sections, encounter effectiveTime low/high)."""

    kind: str  # order | result | time
    code: str = ""  # the ordered service / the order a result answers (OBR-4), as sent
    system: str = ""  # its coding system as sent (CPT, C4, LN, a local name)
    minutes: int = 0  # kind == "time": the visit's length in minutes


@dataclass
class Encounter:
    """One visit. ``kind == "expected"`` is a scheduled visit (SIU) with no charges yet."""

    source: str  # parser name: hl7v2 | csv | fhir | ccda
    source_id: str  # the encounter / visit id in the source system
    source_system: str = ""  # sending facility / application, part of the business key
    kind: str = "charge"
    patient: Patient = field(default_factory=Patient)
    coverages: list[Coverage] = field(default_factory=list)
    rendering: Provider = field(default_factory=Provider)
    billing: Provider = field(default_factory=Provider)
    dos_start: str = ""
    dos_end: str = ""
    place_of_service: str = ""  # CMS 2-digit POS code when known
    diagnoses: list[Diagnosis] = field(default_factory=list)
    lines: list[ChargeLine] = field(default_factory=list)
    # Left out of the stored JSON while empty, so encounters keep the content hash they had
    # before it existed (no false revisions on re-export).
    evidence: list[Evidence] = field(default_factory=list)

    @property
    def business_key(self) -> str:
        """Same encounter re-exported => same key (dedupe/revision), whatever the file."""
        system = self.source_system or self.source
        return f"{self.kind}|{system}|{self.source_id}"

    def to_json(self) -> str:
        """The stored form. ``to_dict()`` has a fixed key order, so this text (and its
        :func:`content_hash`) is canonical without ``sort_keys``."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        # Hand-written rather than dataclasses.asdict: asdict deep-copies every leaf and was
        # a third of the ingest time in the benchmark.
        p = self.patient
        pd = dict(p.__dict__)
        pd["address"] = dict(p.address.__dict__)
        out = {
            "source": self.source, "source_id": self.source_id, "source_system": self.source_system,
            "kind": self.kind, "patient": pd,
            "coverages": [c.to_dict() for c in self.coverages],
            "rendering": dict(self.rendering.__dict__), "billing": dict(self.billing.__dict__),
            "dos_start": self.dos_start, "dos_end": self.dos_end, "place_of_service": self.place_of_service,
            "diagnoses": [dict(d.__dict__) for d in self.diagnoses],
            "lines": [{**ln.__dict__, "modifiers": list(ln.modifiers), "dx_pointers": list(ln.dx_pointers)}
                      for ln in self.lines],
        }
        if self.evidence:
            out["evidence"] = [dict(e.__dict__) for e in self.evidence]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Encounter:
        d = dict(d)
        pat = dict(d.get("patient") or {})
        pat["address"] = Address(**(pat.get("address") or {}))
        d["patient"] = Patient(**pat)
        d["coverages"] = [Coverage(**c) for c in d.get("coverages") or []]
        d["rendering"] = Provider(**(d.get("rendering") or {}))
        d["billing"] = Provider(**(d.get("billing") or {}))
        d["diagnoses"] = [Diagnosis(**x) for x in d.get("diagnoses") or []]
        d["lines"] = [ChargeLine(**x) for x in d.get("lines") or []]
        d["evidence"] = [Evidence(**x) for x in d.get("evidence") or []]
        return cls(**d)


@dataclass
class PatientUpdate:
    """Demographics from ADT^A04/A08: updates the patient on encounters not yet sent."""

    source: str
    source_system: str
    patient: Patient
    event: str = ""  # e.g. A04, A08

    @property
    def business_key(self) -> str:
        return f"patient|{self.source_system or self.source}|{self.patient.mrn}"


@dataclass
class Rejected:
    """One part of a document (a message, a row group, a resource) that cannot be used.

    ``reason`` is shown to people: say what is wrong and what to do, never PHI.
    """

    part: str  # e.g. "message 3", "row 17", "Bundle.entry[4]"
    reason: str


Parsed = Encounter | PatientUpdate | Rejected


@dataclass
class Finding:
    code: str  # machine code, e.g. "npi.check_digit"
    field: str  # e.g. "rendering.npi", "lines[0].modifiers"
    message: str  # for people; no PHI
    severity: str = "error"  # error | warning

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# ---------------------------------------------------------------------------
# Standardization
# ---------------------------------------------------------------------------

_SUFFIXES = {
    "JR": "Jr", "JR.": "Jr", "SR": "Sr", "SR.": "Sr", "II": "II", "III": "III", "IV": "IV",
    "V": "V", "MD": "MD", "DO": "DO", "PHD": "PhD", "ESQ": "Esq",
}
_SPACE = re.compile(r"\s+")
_WS = re.compile(r"\s")
_NON_DIGIT = re.compile(r"\D")
_NAME_DIGITS = re.compile(r"(?<=[^\W\d])\d+\b")
_PHONE_EXT = re.compile(r"(?:x|ext\.?|#)\s*(\d+)\s*$", re.I)
_ICD_STRIP = re.compile(r"[\s.]")
_MOD_STRIP = re.compile(r"[\s\-]")
_ICD_LIKE = re.compile(r"^[A-Z]\d")
_NAME_PARTICLES = {"van", "von", "de", "del", "della", "da", "di", "la", "le", "du", "der", "den"}


@lru_cache(maxsize=16384)
def std_name_part(value: str) -> str:
    """'  o'NEIL-smith ' -> "O'Neil-Smith"; keeps particles lower case inside a name."""
    value = _SPACE.sub(" ", (value or "").strip()).strip(" ,.")
    if not value:
        return ""
    # Synthea appends digits to names (Temika453); real names never carry digits.
    value = _NAME_DIGITS.sub("", value).strip()
    words = []
    for i, word in enumerate(value.split(" ")):
        lw = word.lower()
        if i > 0 and lw in _NAME_PARTICLES:
            words.append(lw)
            continue
        words.append(_cap_word(lw))
    return " ".join(words)


def _cap_word(word: str) -> str:
    out = []
    cap_next = True
    for ch in word:
        out.append(ch.upper() if cap_next else ch)
        cap_next = ch in "-'’"
    s = "".join(out)
    if s.startswith("Mc") and len(s) > 2:
        s = "Mc" + s[2].upper() + s[3:]
    return s


def std_suffix(value: str) -> str:
    v = _SPACE.sub("", (value or "")).upper()
    return _SUFFIXES.get(v, _SUFFIXES.get(v.rstrip("."), value.strip()))


_DATE_FORMATS = (
    "%Y-%m-%d", "%Y%m%d", "%m/%d/%Y", "%m-%d-%Y", "%m/%d/%y", "%d.%m.%Y", "%Y/%m/%d",
    "%d-%b-%Y", "%d %b %Y", "%b %d, %Y", "%B %d, %Y", "%d-%b-%y",
)
_DATE_PREFIX = re.compile(r"^(\d{4})(\d{2})(\d{2})")  # HL7 TS: YYYYMMDD[HHMM[SS[.S]]][+ZZZZ]
_ISO_PREFIX = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ]|$)")


class BadValue(ValueError):
    """A value that cannot be standardized; the message names the field, not the value."""


@lru_cache(maxsize=16384)
def std_date(value: str) -> str:
    """Any of the usual export formats -> ISO ``yyyy-mm-dd``; "" stays "".

    Accepts ISO dates and datetimes (with zone), HL7 TS (``20240131``, ``202401311230+0100``),
    US ``01/31/2024`` and ``1/31/24``, ``31.01.2024`` and month names. Raises :class:`BadValue`.
    """
    v = (value or "").strip()
    if not v:
        return ""
    m = _ISO_PREFIX.match(v) or (_DATE_PREFIX.match(v) if v[:8].isdigit() else None)
    if m:
        try:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
        except ValueError as exc:
            raise BadValue("not a calendar date") from exc
    for fmt in _DATE_FORMATS:
        try:
            d = datetime.strptime(v, fmt).date()
        except ValueError:
            continue
        if fmt.endswith("%y") and d.year > date.today().year:
            d = d.replace(year=d.year - 100)
        return d.isoformat()
    raise BadValue("unrecognised date format")


def std_sex(value: str) -> str:
    v = (value or "").strip().upper()
    if not v:
        return ""
    if v in ("M", "MALE"):
        return "M"
    if v in ("F", "FEMALE"):
        return "F"
    if v in ("U", "UNK", "UNKNOWN"):
        return "U"
    return "O"


_US_STATES = {
    "ALABAMA": "AL", "ALASKA": "AK", "ARIZONA": "AZ", "ARKANSAS": "AR", "CALIFORNIA": "CA",
    "COLORADO": "CO", "CONNECTICUT": "CT", "DELAWARE": "DE", "DISTRICT OF COLUMBIA": "DC",
    "FLORIDA": "FL", "GEORGIA": "GA", "HAWAII": "HI", "IDAHO": "ID", "ILLINOIS": "IL",
    "INDIANA": "IN", "IOWA": "IA", "KANSAS": "KS", "KENTUCKY": "KY", "LOUISIANA": "LA",
    "MAINE": "ME", "MARYLAND": "MD", "MASSACHUSETTS": "MA", "MICHIGAN": "MI", "MINNESOTA": "MN",
    "MISSISSIPPI": "MS", "MISSOURI": "MO", "MONTANA": "MT", "NEBRASKA": "NE", "NEVADA": "NV",
    "NEW HAMPSHIRE": "NH", "NEW JERSEY": "NJ", "NEW MEXICO": "NM", "NEW YORK": "NY",
    "NORTH CAROLINA": "NC", "NORTH DAKOTA": "ND", "OHIO": "OH", "OKLAHOMA": "OK", "OREGON": "OR",
    "PENNSYLVANIA": "PA", "RHODE ISLAND": "RI", "SOUTH CAROLINA": "SC", "SOUTH DAKOTA": "SD",
    "TENNESSEE": "TN", "TEXAS": "TX", "UTAH": "UT", "VERMONT": "VT", "VIRGINIA": "VA",
    "WASHINGTON": "WA", "WEST VIRGINIA": "WV", "WISCONSIN": "WI", "WYOMING": "WY",
    "PUERTO RICO": "PR", "GUAM": "GU", "VIRGIN ISLANDS": "VI",
}
_US_ABBR = set(_US_STATES.values())


@lru_cache(maxsize=16384)
def std_state(value: str) -> str:
    v = _SPACE.sub(" ", (value or "").strip()).upper().rstrip(".")
    if v in _US_ABBR:
        return v
    return _US_STATES.get(v, v.title() if v else "")


@lru_cache(maxsize=16384)
def std_zip(value: str) -> str:
    """'02081' / '2081' (Excel ate the zero) / '020811234' / '02081-1234' -> 5 or 5+4."""
    digits = _NON_DIGIT.sub("", value or "")
    if len(digits) in (3, 4):  # leading zeros lost by a spreadsheet
        digits = digits.zfill(5)
    if len(digits) == 5:
        return digits
    if len(digits) == 9:
        return f"{digits[:5]}-{digits[5:]}"
    if len(digits) in (7, 8):
        digits = digits.zfill(9)
        return f"{digits[:5]}-{digits[5:]}"
    return (value or "").strip()


@lru_cache(maxsize=16384)
def std_phone(value: str) -> str:
    """US numbers -> (555) 555-1234; extensions kept as ' x123'; others left as digits."""
    v = (value or "").strip()
    if not v:
        return ""
    ext = ""
    m = _PHONE_EXT.search(v)
    if m:
        ext = f" x{m.group(1)}"
        v = v[: m.start()]
    digits = _NON_DIGIT.sub("", v)
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) == 10:
        return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}{ext}"
    return digits + ext


def std_address(a: Address) -> Address:
    return Address(
        line1=_SPACE.sub(" ", a.line1.strip()).title() if a.line1.isupper() or a.line1.islower()
        else _SPACE.sub(" ", a.line1.strip()),
        line2=_SPACE.sub(" ", a.line2.strip()),
        city=std_name_part(a.city) if a.city else "",
        state=std_state(a.state),
        zip=std_zip(a.zip),
        country=(a.country or "").strip().upper()[:3],
    )


_ICD_SYSTEM_ALIASES = {
    "I10": "ICD-10-CM", "ICD10": "ICD-10-CM", "ICD-10": "ICD-10-CM", "ICD-10-CM": "ICD-10-CM",
    "I10C": "ICD-10-CM", "ICD10CM": "ICD-10-CM", "2.16.840.1.113883.6.90": "ICD-10-CM",
    "HTTP://HL7.ORG/FHIR/SID/ICD-10-CM": "ICD-10-CM", "HTTP://HL7.ORG/FHIR/SID/ICD-10": "ICD-10-CM",
    "I9": "ICD-9-CM", "I9C": "ICD-9-CM", "ICD9": "ICD-9-CM", "ICD-9": "ICD-9-CM",
    "ICD-9-CM": "ICD-9-CM", "2.16.840.1.113883.6.103": "ICD-9-CM",
    "SCT": "SNOMED", "SNOMED": "SNOMED", "SNOMEDCT": "SNOMED", "SNOMED-CT": "SNOMED",
    "HTTP://SNOMED.INFO/SCT": "SNOMED", "2.16.840.1.113883.6.96": "SNOMED",
}
_PROC_SYSTEM_ALIASES = {
    "C4": "CPT", "CPT": "CPT", "CPT4": "CPT", "CPT-4": "CPT", "HTTP://WWW.AMA-ASSN.ORG/GO/CPT": "CPT",
    "2.16.840.1.113883.6.12": "CPT", "HC": "HCPCS", "HCPCS": "HCPCS", "HCPC": "HCPCS",
    "2.16.840.1.113883.6.285": "HCPCS", "2.16.840.1.113883.6.14": "HCPCS",
    "HTTPS://WWW.CMS.GOV/MEDICARE/CODING/HCPCSRELEASECODESETS": "HCPCS",
    "SCT": "SNOMED", "SNOMED": "SNOMED", "SNOMEDCT": "SNOMED", "HTTP://SNOMED.INFO/SCT": "SNOMED",
    "2.16.840.1.113883.6.96": "SNOMED",
}
_CPT_RE = re.compile(r"^\d{4}[0-9FTU]$")
_HCPCS_RE = re.compile(r"^[A-V]\d{4}$")


def std_dx_system(system: str, code: str = "") -> str:
    s = (system or "").strip().upper()
    if s in _ICD_SYSTEM_ALIASES:
        return _ICD_SYSTEM_ALIASES[s]
    if not s:
        return "ICD-10-CM" if _ICD_LIKE.match((code or "").strip().upper()) else "unknown"
    return system.strip()


@lru_cache(maxsize=16384)
def std_icd10(code: str) -> str:
    """'e119' / 'E11.9' / ' E11 .9 ' -> 'E11.9' (dot after the 3rd character)."""
    c = _ICD_STRIP.sub("", code or "").upper()
    if len(c) > 3:
        return f"{c[:3]}.{c[3:]}"
    return c


def std_proc_system(system: str, code: str) -> str:
    s = (system or "").strip().upper()
    if s in _PROC_SYSTEM_ALIASES:
        named = _PROC_SYSTEM_ALIASES[s]
        if named in ("CPT", "HCPCS"):
            return "HCPCS" if _HCPCS_RE.match(code) else "CPT"
        return named
    if not s:
        if _HCPCS_RE.match(code):
            return "HCPCS"
        if _CPT_RE.match(code):
            return "CPT"
        return "unknown"
    return system.strip()


def std_modifier(m: str) -> str:
    return _MOD_STRIP.sub("", m or "").upper()


# ---------------------------------------------------------------------------
# Numbers from outside: checked at the boundary
#
# Every unit count and amount an EHR sends passes :func:`read_decimal` before any arithmetic
# or formatting. It reads plain ASCII decimal text only (``12``, ``-3.50``, ``.5``, ``1.5E2``
# with at most a 2-digit exponent), at most ``MAX_NUMBER_CHARS`` characters, and refuses
# ``NaN``, ``sNaN``, ``Infinity``, ``-0``, ``1_000``, Unicode digits and huge exponents -- so a
# value like ``1e999999999`` is never written out as a billion-digit string. The ranges:
#
# * units: 0 < units <= 9,999, at most 4 decimal places (drug units like 0.25 are real)
# * money: |amount| <= 10,000,000.00, at most 4 decimal places in the source, stored in cents
# ---------------------------------------------------------------------------

MAX_NUMBER_CHARS = 32
MAX_UNITS = Decimal(9999)
UNITS_PLACES = 4
MAX_MONEY = Decimal(10_000_000)
MONEY_PLACES = 4
# Charge lines on one encounter (an 837P takes 50 per claim; a big visit has a few dozen).
MAX_LINES_PER_ENCOUNTER = 999
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?")
_MAX_ADJUSTED = 12  # |exponent| of a sane amount; checked before any arithmetic


def read_decimal(value: Any, *, limit: Decimal, places: int, what: str = "value") -> Decimal:
    """Text (or a Decimal/int from a JSON reader) -> a finite Decimal within ``+-limit`` with at
    most ``places`` decimal places. Raises :class:`BadValue` naming ``what``, never the value."""
    if type(value) is str and len(value) <= MAX_NUMBER_CHARS:  # the common case; values repeat a lot
        got = _read_text_cached(value, limit, places, what)
        if isinstance(got, str):
            raise BadValue(got)
        return got
    return _read_decimal(value, limit=limit, places=places, what=what)


@lru_cache(maxsize=8192)
def _read_text_cached(value: str, limit: Decimal, places: int, what: str) -> Decimal | str:
    try:
        return _read_decimal(value, limit=limit, places=places, what=what)
    except BadValue as exc:
        return str(exc)


def _read_decimal(value: Any, *, limit: Decimal, places: int, what: str) -> Decimal:
    if isinstance(value, bool):
        raise BadValue(f"{what} is not a number")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        if not -10**15 < value < 10**15:
            raise BadValue(f"{what} is out of range")
        d = Decimal(value)
    elif isinstance(value, str):
        v = value.strip()
        if len(v) > MAX_NUMBER_CHARS:
            raise BadValue(f"{what} is not a number (more than {MAX_NUMBER_CHARS} characters)")
        if not _NUMBER_TEXT.fullmatch(v):
            raise BadValue(f"{what} is not a number")
        d = Decimal(v)
    else:
        raise BadValue(f"{what} is not a number")
    if not d.is_finite():
        raise BadValue(f"{what} is not a number")
    if d.is_zero():
        if d.is_signed():
            raise BadValue(f"{what} is negative zero")
        return Decimal(0)
    if not -_MAX_ADJUSTED <= d.adjusted() <= _MAX_ADJUSTED or abs(d) > limit:
        raise BadValue(f"{what} is out of range (the largest allowed is {limit:,})")
    if int(d.as_tuple().exponent) < -places and d != d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN):
        raise BadValue(f"{what} has more than {places} decimal places")
    return d


def money_text(d: Decimal) -> str:
    """A checked amount -> text with exactly 2 decimal places (cents, half-even)."""
    return format(d.quantize(_CENT), "f")


def units_text(d: Decimal) -> str:
    """A checked unit count -> its shortest text ('2', '0.5')."""
    d = d.normalize()
    return format(d.quantize(Decimal(1)) if d == d.to_integral() else d, "f")


_CENT = Decimal("0.01")


def std_decimal(value: str, *, places: int | None = None) -> str:
    """'$1,234.5' -> '1234.50' (places=2). Raises :class:`BadValue` on junk or an absurd size.

    ``places`` given: an amount (money range, rounded to that many places); else a unit count
    (units range, shortest form).
    """
    v = (value or "").strip().replace(",", "").replace("$", "")
    if not v:
        return ""
    if places is not None:
        d = read_decimal(v, limit=MAX_MONEY, places=max(places, MONEY_PLACES), what="amount")
        return format(d.quantize(Decimal(1).scaleb(-places)), "f")
    d = read_decimal(v, limit=MAX_UNITS, places=UNITS_PLACES, what="units")
    return units_text(d)


def standardize(enc: Encounter) -> list[Finding]:
    """Rewrite ``enc`` in place into the canonical forms; return what could not be read.

    Unreadable values are left as they came and reported, so validation and people see them.
    """
    findings: list[Finding] = []

    def _date(path: str, value: str) -> str:
        try:
            return std_date(value)
        except BadValue as exc:
            findings.append(Finding("date.format", path, f"{path}: {exc}; use YYYY-MM-DD"))
            return value

    standardize_patient(enc.patient, findings)
    enc.dos_start = _date("dos_start", enc.dos_start)
    enc.dos_end = _date("dos_end", enc.dos_end) if enc.dos_end else enc.dos_start
    for prov in (enc.rendering, enc.billing):
        prov.npi = _WS.sub("", prov.npi or "")
        prov.family = std_name_part(prov.family)
        prov.given = std_name_part(prov.given)
        prov.organization = _SPACE.sub(" ", prov.organization.strip())
    for cov in enc.coverages:
        cov.member_id = cov.member_id.strip()
        cov.group = cov.group.strip()
        cov.payer_name = _SPACE.sub(" ", cov.payer_name.strip())
        for which in ("start", "end"):  # an unreadable plan date is dropped with a warning: it must not hold a charge
            raw = getattr(cov, which)
            try:
                setattr(cov, which, std_date(raw))
            except BadValue as exc:
                findings.append(Finding("date.format", f"coverages.{which}", f"coverage plan {which} date: {exc}; "
                                        "it was ignored", "warning"))
                setattr(cov, which, "")
    enc.place_of_service = (enc.place_of_service or "").strip()
    if enc.place_of_service.isdigit() and len(enc.place_of_service) == 1:
        enc.place_of_service = enc.place_of_service.zfill(2)
    for dx in enc.diagnoses:
        dx.system = std_dx_system(dx.system, dx.code)
        dx.code = std_icd10(dx.code) if dx.system in ("ICD-10-CM",) else (dx.code or "").strip()
    for i, line in enumerate(enc.lines):
        line.code = _WS.sub("", line.code or "").upper()
        line.code_system = std_proc_system(line.code_system, line.code)
        line.modifiers = [m for m in (std_modifier(x) for x in line.modifiers) if m]
        # A refused number is dropped (set to ""), not kept: the raw document holds what the
        # EHR sent, and no later reader (sync, X12, the window) ever sees NaN or 1e999999999.
        try:
            line.units = std_decimal(_text_of(line.units)) or "1"
        except BadValue as exc:
            findings.append(Finding("units.format", f"lines[{i}].units",
                                    f"{exc}; the source value was dropped - enter the units (0 < units <= 9999)"))
            line.units = ""
        try:
            line.unit_charge = std_decimal(_text_of(line.unit_charge), places=2)
        except BadValue as exc:
            findings.append(Finding("charge.format", f"lines[{i}].unit_charge",
                                    f"unit charge: {exc}; the source value was dropped - enter the amount"))
            line.unit_charge = ""
        if line.service_date:
            line.service_date = _date(f"lines[{i}].service_date", line.service_date)
    return findings


def _text_of(value: Any) -> str:
    """A model field that should be text; a reader that left a number there is tolerated."""
    if isinstance(value, str):
        return value
    if isinstance(value, Decimal) or (isinstance(value, int) and not isinstance(value, bool)
                                      and -10**15 < value < 10**15):
        return str(value)  # a huge Decimal prints as 1E+999999999, which read_decimal refuses
    return "" if value is None else "?"


def standardize_patient(p: Patient, findings: list[Finding] | None = None) -> None:
    p.mrn = (p.mrn or "").strip()
    p.family = std_name_part(p.family)
    p.given = std_name_part(p.given)
    p.middle = std_name_part(p.middle)
    p.suffix = std_suffix(p.suffix)
    try:
        p.dob = std_date(p.dob)
    except BadValue as exc:
        if findings is not None:
            findings.append(Finding("date.format", "patient.dob", f"patient.dob: {exc}"))
    p.sex = std_sex(p.sex)
    p.address = std_address(p.address)
    p.phone = std_phone(p.phone)
