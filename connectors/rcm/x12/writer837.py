"""837P (005010X222A1) writer: canonical encounters -> one X12 interchange per batch.

Shape of a batch::

    ISA / GS (HC)                         one interchange, ISA13 = GS06 = the control number
      ST 837 (one per MAX_CLAIMS_PER_ST)  ST02 = 0001, 0002, ...
        BHT, 1000A submitter (+PER), 1000B receiver
        2000A billing provider HL (PRV, 2010AA NM1*85 / N3 / N4 / REF*EI)
          per claim: 2000B subscriber HL (SBR, 2010BA NM1*IL [N3 N4 DMG], 2010BB NM1*PR)
                     [2000C patient HL (PAT, 2010CA NM1*QC N3 N4 DMG) when not self]
                     2300 CLM (+REF*F8 for a correction or void), HI, 2310B NM1*82 (+PRV*PE)
                     2400 LX / SV1 / DTP*472 / REF*6R per line
      SE / GE / IEA

X12 has no escape character, so every value is checked here, at the boundary: free text
(names, addresses) is folded to the basic character set (accents dropped, delimiters and
control characters become spaces) and cut to the element's maximum length; identifiers and
codes that hold a delimiter, a character X12 cannot carry, or too many characters are refused.
A claim that cannot be written is left out of the file with a :class:`ClaimError` whose text
names the field, never its value. Structural completeness (e.g. a claim with no diagnosis) is
left to the validator (:mod:`connectors.rcm.x12.validate`), which checks every file before it
leaves.
"""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from core.model import MAX_MONEY, MAX_UNITS, MONEY_PLACES, UNITS_PLACES, BadValue, Encounter, read_decimal

VERSION = "005010X222A1"
ELEMENT, COMPONENT, REPETITION, SEGMENT = "*", ":", "^", "~"
DELIMITERS = frozenset(ELEMENT + COMPONENT + REPETITION + SEGMENT)
MAX_CLAIMS_PER_ST = 5000  # the TR3's recommended limit of CLM loops per transaction set
MAX_LINES = 50  # service lines per 837P claim
MAX_DIAGNOSES = 12  # HI in 2300 holds 12
MAX_POINTERS = 4
CLAIM_ID_LEN = 20  # payers echo at most 20 characters of CLM01 in 277CA/835

FREQ_ORIGINAL, FREQ_CORRECTION, FREQ_VOID = "1", "7", "8"
_RELATIONSHIP = {"spouse": "01", "child": "19", "other": "G8"}
_SEX = {"M": "M", "F": "F"}
_CPT_HCPCS = re.compile(r"^[A-Z0-9]{5}$")
_MODIFIER = re.compile(r"^[A-Z0-9]{2}$")
_ICD10 = re.compile(r"^[A-Z][0-9][0-9A-Z]{1,5}$")
_DIGITS = re.compile(r"^[0-9]+$")
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_POS = re.compile(r"^[0-9]{2}$")
_TAXONOMY = re.compile(r"^[0-9A-Z]{9}X$")
# the X12 basic + extended character set, less our delimiters
_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 !\"&'()+,-./;?=%@[]_{}\\|<>#$")


class ClaimError(ValueError):
    """One claim cannot be written. The text names the field at fault, never its value."""


@dataclass(frozen=True)
class Practice:
    """The billing provider (``[practice]``)."""

    name: str
    npi: str
    tax_id: str
    street: str
    city: str
    state: str
    zip: str
    phone: str
    taxonomy: str = ""
    pos: str = "11"


@dataclass(frozen=True)
class Envelope:
    """ISA/GS parties and this interchange's control number (``[x12]`` + the ledger)."""

    sender_id: str
    receiver_id: str
    control: int
    usage: str = "T"  # ISA15: T test | P production
    receiver_name: str = ""
    when: datetime | None = None


@dataclass(frozen=True)
class ClaimInput:
    """One encounter to bill: its stable claim id (CLM01) and its frequency (1 / 7 / 8)."""

    encounter: Encounter
    claim_id: str
    frequency: str = FREQ_ORIGINAL
    payer_claim_id: str = ""  # REF*F8 for a correction or a void, when the payer gave one


@dataclass
class Batch:
    """A written interchange. ``spans[i]`` = (first, last) segment line of claim ``i`` in ``text``
    (1-based, ISA = line 1), so a validator error can be pinned on its claim; ``refused[i]``: why
    claim ``i`` was left out."""

    text: str
    control: int
    st_controls: list[str] = field(default_factory=list)
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    line_ids: dict[int, list[str]] = field(default_factory=dict)  # REF*6R per claim, in line order
    st_of: dict[int, str] = field(default_factory=dict)  # ST02 of the transaction holding claim i

    @property
    def claims(self) -> int:
        return len(self.spans)

    def claim_at(self, line: int) -> int | None:
        """The claim whose segments include ``line``; None for the envelope and headers."""
        for i, (first, last) in self.spans.items():
            if first <= line <= last:
                return i
        return None


# -- identifiers ----------------------------------------------------------------------------------

def claim_id(business_key: str) -> str:
    """CLM01: 20 characters, deterministic from the encounter's business key (no PHI, no
    delimiter): ``CB`` + 18 base32 characters of its SHA-256."""
    digest = hashlib.sha256(business_key.encode("utf-8")).digest()
    return "CB" + base64.b32encode(digest).decode("ascii")[:CLAIM_ID_LEN - 2]


def line_control(claim: str, line_id: str, index: int) -> str:
    """REF*6R: stable per line — from the EHR's line id when it has one, else its position."""
    basis = f"{claim}|id|{line_id}" if line_id else f"{claim}|n|{index}"
    digest = hashlib.sha256(basis.encode("utf-8")).digest()
    return f"{claim}{base64.b32encode(digest).decode('ascii')[:10]}"


def npi_ok(npi: str) -> bool:
    """10 digits with the Luhn check digit over the ``80840`` prefix (CMS NPI rule)."""
    if len(npi) != 10 or not npi.isdigit():
        return False
    total = 24  # the constant the 80840 prefix contributes
    for i, ch in enumerate(reversed(npi[:9])):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10 == int(npi[9])


# -- values ---------------------------------------------------------------------------------------

def text(value: str, max_len: int) -> str:
    """Free text for an element: accents folded, delimiters and control characters made spaces,
    upper case, spaces collapsed, cut to ``max_len``."""
    if not value:
        return ""
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    cleaned = "".join(ch if ch in _ALLOWED else " " for ch in folded.upper())
    return " ".join(cleaned.split())[:max_len].rstrip()


def ident(value: str, what: str, *, max_len: int, min_len: int = 1, required: bool = True,
          pattern: re.Pattern[str] | None = None) -> str:
    """An identifier or code: refused (never altered) when it cannot be carried as it is."""
    v = (value or "").strip()
    if not v:
        if required:
            raise ClaimError(f"{what} is missing")
        return ""
    if any(ch in DELIMITERS or ch not in _ALLOWED for ch in v):
        raise ClaimError(f"{what} contains a character an X12 file cannot carry")
    if len(v) > max_len:
        raise ClaimError(f"{what} is longer than {max_len} characters")
    if len(v) < min_len:
        raise ClaimError(f"{what} is shorter than {min_len} characters")
    if pattern is not None and not pattern.match(v):
        raise ClaimError(f"{what} is not in the expected format")
    return v


def d8(iso: str, what: str) -> str:
    m = _ISO_DATE.match(iso or "")
    if not m:
        raise ClaimError(f"{what} is missing or not a date")
    return "".join(m.groups())


def amount(value: Decimal) -> str:
    """X12 R: no plus sign, no trailing zeros after the point, at most 2 decimal places."""
    q = value.quantize(Decimal("0.01"))
    s = f"{q:f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s or "0"


def _num(value: Decimal) -> str:
    s = f"{value.normalize():f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def seg(*elements: str) -> str:
    """A segment with trailing empty elements dropped."""
    parts = list(elements)
    while len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return ELEMENT.join(parts) + SEGMENT


# -- the writer -----------------------------------------------------------------------------------

def check_practice(p: Practice) -> None:
    """The billing provider's settings, checked once per batch (config validates them too)."""
    if not npi_ok(p.npi):
        raise ClaimError("the practice NPI ([practice] npi) is not a valid NPI")
    ident(p.tax_id, "the practice tax id ([practice] tax_id)", max_len=9, min_len=9, pattern=_DIGITS)
    ident(p.phone, "the practice phone ([practice] phone)", max_len=10, min_len=10, pattern=_DIGITS)
    if p.taxonomy:
        ident(p.taxonomy, "the practice taxonomy ([practice] taxonomy)", max_len=10, pattern=_TAXONOMY)
    if not text(p.name, 60):
        raise ClaimError("the practice name ([practice] name) is missing")
    for what, v in (("street", p.street), ("city", p.city)):
        if not text(v, 55):
            raise ClaimError(f"the practice address has no {what}")
    ident(p.state, "the practice state", max_len=2, min_len=2, pattern=re.compile(r"^[A-Z]{2}$"))
    ident(p.zip.replace("-", ""), "the practice ZIP code", max_len=9, min_len=5, pattern=_DIGITS)


def _zip(value: str, what: str) -> str:
    z = (value or "").replace("-", "").strip()
    if len(z) not in (5, 9) or not z.isdigit():
        raise ClaimError(f"{what} ZIP code is missing or not 5 or 9 digits")
    return z


def _state(value: str, what: str) -> str:
    s = (value or "").strip().upper()
    if len(s) != 2 or not s.isalpha():
        raise ClaimError(f"{what} state is missing or not a 2-letter code")
    return s


@dataclass
class _Person:
    family: str
    given: str
    middle: str
    suffix: str
    street: str
    street2: str
    city: str
    state: str
    zip: str
    dob: str
    sex: str


def _patient(enc: Encounter) -> _Person:
    p = enc.patient
    a = p.address
    return _Person(p.family, p.given, p.middle, p.suffix, a.line1, a.line2, a.city, a.state, a.zip, p.dob, p.sex)


def _subscriber(cov: Any) -> _Person:
    """The policy holder of a coverage that is not the patient's own. The canonical model does
    not carry the subscriber's demographics yet; a coverage object that does (attributes
    ``subscriber_family`` ...) is billed, any other is refused rather than guessed."""
    family = str(getattr(cov, "subscriber_family", "") or "")
    if not family:
        raise ClaimError("the coverage's subscriber is not the patient, and the export does not name the "
                         "subscriber (policy holder): an 837 needs their name, address, birth date and sex")
    return _Person(family, str(getattr(cov, "subscriber_given", "") or ""),
                   str(getattr(cov, "subscriber_middle", "") or ""), str(getattr(cov, "subscriber_suffix", "") or ""),
                   str(getattr(cov, "subscriber_street", "") or ""), "",
                   str(getattr(cov, "subscriber_city", "") or ""), str(getattr(cov, "subscriber_state", "") or ""),
                   str(getattr(cov, "subscriber_zip", "") or ""), str(getattr(cov, "subscriber_dob", "") or ""),
                   str(getattr(cov, "subscriber_sex", "") or ""))


def _person_segments(code: str, who: _Person, what: str, *, id_qual: str = "", id_value: str = "") -> list[str]:
    family = text(who.family, 60)
    if not family:
        raise ClaimError(f"the {what}'s last name is missing")
    out = [seg("NM1", code, "1", family, text(who.given, 35), text(who.middle, 25), "", text(who.suffix, 10),
               id_qual, id_value)]
    street = text(who.street, 55)
    city = text(who.city, 30)
    if not street or not city:
        raise ClaimError(f"the {what}'s address is incomplete (street, city, state and ZIP are required)")
    out.append(seg("N3", street, text(who.street2, 55)))
    out.append(seg("N4", city, _state(who.state, f"the {what}'s"), _zip(who.zip, f"the {what}'s")))
    out.append(seg("DMG", "D8", d8(who.dob, f"the {what}'s birth date"), _SEX.get(who.sex, "U")))
    return out


def _claim_segments(ci: ClaimInput, practice: Practice, hl: int, parent: int) -> tuple[list[str], list[str], int]:
    """(segments, line control numbers, HL ids used) of one claim, from its 2000B HL."""
    enc = ci.encounter
    if not enc.coverages:
        raise ClaimError("the encounter has no insurance coverage (a self-pay visit is not billed through a "
                         "clearinghouse)")
    cov = enc.coverages[0]
    rel = (cov.relationship or "self").lower()
    self_pay = rel in ("self", "")
    member = ident(cov.member_id, "the member id", max_len=80, min_len=2)
    payer_id = ident(cov.payer_id, "the payer id", max_len=80, min_len=2)
    payer_name = text(cov.payer_name, 60)
    if not payer_name:
        raise ClaimError("the payer name is missing")
    group = ident(cov.group, "the group number", max_len=50, required=False)
    out = [seg("HL", str(hl), str(parent), "22", "0" if self_pay else "1"),
           seg("SBR", "P", "18" if self_pay else "", group, "", "", "", "", "", "CI")]
    if self_pay:
        out += _person_segments("IL", _patient(enc), "patient", id_qual="MI", id_value=member)
    else:
        sub = _person_segments("IL", _subscriber(cov), "subscriber", id_qual="MI", id_value=member)
        out += sub
    out.append(seg("NM1", "PR", "2", payer_name, "", "", "", "", "PI", payer_id))
    used = 1
    if not self_pay:
        code = _RELATIONSHIP.get(rel)
        if code is None:
            raise ClaimError("the coverage relationship is not one of self, spouse, child, other")
        out.append(seg("HL", str(hl + 1), str(hl), "23", "0"))
        out.append(seg("PAT", code))
        out += _person_segments("QC", _patient(enc), "patient")
        used = 2
    # 2300 claim
    if ci.frequency not in (FREQ_ORIGINAL, FREQ_CORRECTION, FREQ_VOID):
        raise ClaimError("the claim frequency is not 1, 7 or 8")
    pos = ident(enc.place_of_service or practice.pos, "the place of service", max_len=2, min_len=2, pattern=_POS)
    if len(enc.lines) > MAX_LINES:
        raise ClaimError(f"the encounter has {len(enc.lines)} charge lines; an 837P claim carries at most {MAX_LINES}")
    if len(enc.diagnoses) > MAX_DIAGNOSES:
        raise ClaimError(f"the encounter has {len(enc.diagnoses)} diagnoses; an 837P claim carries at most "
                         f"{MAX_DIAGNOSES}")
    dx: list[str] = []
    for n, d in enumerate(enc.diagnoses, 1):
        if d.system != "ICD-10-CM":
            raise ClaimError(f"diagnosis {n} is not an ICD-10-CM code")
        dx.append(ident(d.code.replace(".", "").upper(), f"diagnosis {n}", max_len=7, min_len=3, pattern=_ICD10))
    lines: list[list[str]] = []
    controls: list[str] = []
    total = Decimal(0)
    for n, ln in enumerate(enc.lines, 1):
        where = f"charge line {n}"
        if ln.code_system not in ("CPT", "HCPCS"):
            raise ClaimError(f"{where} is not a CPT or HCPCS code")
        code = ident(ln.code.upper(), f"{where}'s procedure code", max_len=5, min_len=5, pattern=_CPT_HCPCS)
        if len(ln.modifiers) > 4:
            raise ClaimError(f"{where} has more than 4 modifiers")
        mods = [ident(m.upper(), f"{where}'s modifier", max_len=2, min_len=2, pattern=_MODIFIER) for m in ln.modifiers]
        try:
            units = read_decimal(ln.units or "1", limit=MAX_UNITS, places=UNITS_PLACES, what=f"{where}'s units")
            if not ln.unit_charge:
                raise ClaimError(f"{where} has no charge amount")
            price = read_decimal(ln.unit_charge, limit=MAX_MONEY, places=MONEY_PLACES, what=f"{where}'s charge")
        except BadValue as exc:
            raise ClaimError(str(exc)) from None
        if units <= 0 or price < 0:
            raise ClaimError(f"{where} has units or a charge below zero")
        charge = (units * price).quantize(Decimal("0.01"))
        total += charge
        pointers = list(ln.dx_pointers)
        if not pointers and len(dx) == 1:
            pointers = [1]  # the only diagnosis: unambiguous
        # with no diagnosis at all the claim is written as it is: the validator refuses it (HI missing)
        if dx and not pointers:
            raise ClaimError(f"{where} points at no diagnosis")
        if dx and (len(pointers) > MAX_POINTERS or any(not 1 <= p <= len(dx) for p in pointers)):
            raise ClaimError(f"{where}'s diagnosis pointers are not 1 to 4 pointers into the diagnoses")
        svc_date = d8(ln.service_date or enc.dos_start, f"{where}'s date of service")
        ctl = line_control(ci.claim_id, ln.line_id, n)
        controls.append(ctl)
        lines.append([seg("LX", str(n)),
                      seg("SV1", COMPONENT.join(["HC", code, *mods]), amount(charge), "UN", _num(units), "", "",
                          COMPONENT.join(str(p) for p in pointers)),
                      seg("DTP", "472", "D8", svc_date),
                      seg("REF", "6R", ctl)])
    if total > MAX_MONEY:
        raise ClaimError("the claim's total charge is out of range")
    clm_id = ident(ci.claim_id, "the claim id", max_len=CLAIM_ID_LEN)
    out.append(seg("CLM", clm_id, amount(total), "", "", COMPONENT.join([pos, "B", ci.frequency]), "Y", "A", "Y", "Y"))
    if ci.frequency != FREQ_ORIGINAL and ci.payer_claim_id:
        out.append(seg("REF", "F8", ident(ci.payer_claim_id, "the payer's claim number", max_len=50)))
    if dx:
        out.append(seg("HI", *[COMPONENT.join(["ABK" if i == 0 else "ABF", c]) for i, c in enumerate(dx)]))
    r = enc.rendering
    if r.npi:
        if not npi_ok(r.npi):
            raise ClaimError("the rendering provider's NPI is not a valid NPI")
        family = text(r.family, 60)
        if not family:
            raise ClaimError("the rendering provider's last name is missing")
        out.append(seg("NM1", "82", "1", family, text(r.given, 35), "", "", "", "XX", r.npi))
        if r.taxonomy:
            out.append(seg("PRV", "PE", "PXC", ident(r.taxonomy, "the rendering provider's taxonomy", max_len=10,
                                                      pattern=_TAXONOMY)))
    for group_ in lines:
        out += group_
    return out, controls, used


def write_837(claims: Sequence[ClaimInput], practice: Practice, env: Envelope) -> Batch:
    """The interchange for ``claims``. Claims that cannot be written are left out (``refused``);
    the practice and envelope settings are checked first (a :class:`ClaimError` for all)."""
    check_practice(practice)
    sender = ident(env.sender_id, "the sender id ([x12] sender_id)", max_len=15)
    receiver = ident(env.receiver_id, "the receiver id ([x12] receiver_id)", max_len=15)
    if env.usage not in ("T", "P"):
        raise ClaimError("[x12] usage is not T or P")
    if not 1 <= env.control <= 999_999_999:
        raise ClaimError("the interchange control number is out of range")
    when = env.when or datetime.now().astimezone()
    isa13 = f"{env.control:09d}"
    gs06 = str(env.control)
    batch = Batch(text="", control=env.control)
    segs: list[str] = [
        seg("ISA", "00", " " * 10, "00", " " * 10, "ZZ", sender.ljust(15), "ZZ", receiver.ljust(15),
            when.strftime("%y%m%d"), when.strftime("%H%M"), REPETITION, "00501", isa13, "0", env.usage, COMPONENT),
        seg("GS", "HC", sender, receiver, when.strftime("%Y%m%d"), when.strftime("%H%M"), gs06, "X", VERSION),
    ]
    name = text(practice.name, 60)
    header = [seg("NM1", "41", "2", name, "", "", "", "", "46", sender),
              seg("PER", "IC", name, "TE", practice.phone),
              seg("NM1", "40", "2", text(env.receiver_name, 60) or receiver, "", "", "", "", "46", receiver),
              seg("HL", "1", "", "20", "1"),
              *([seg("PRV", "BI", "PXC", practice.taxonomy)] if practice.taxonomy else []),
              seg("NM1", "85", "2", name, "", "", "", "", "XX", practice.npi),
              seg("N3", text(practice.street, 55)),
              seg("N4", text(practice.city, 30), practice.state, practice.zip.replace("-", "")),
              seg("REF", "EI", practice.tax_id)]
    st_start = -1  # index of the open transaction's ST, -1 when none is open
    in_st = hl = 0

    def close() -> None:
        segs.append(seg("SE", str(len(segs) - st_start + 1), batch.st_controls[-1]))

    for i, ci in enumerate(claims):
        if st_start < 0 or in_st >= MAX_CLAIMS_PER_ST:
            try:  # refuse before opening a transaction that would have no claim
                body, controls, used = _claim_segments(ci, practice, 2, 1)
            except ClaimError as exc:
                batch.refused[i] = str(exc)
                continue
            if st_start >= 0:
                close()
            st02 = f"{len(batch.st_controls) + 1:04d}"
            batch.st_controls.append(st02)
            st_start = len(segs)
            segs.append(seg("ST", "837", st02, VERSION))
            segs.append(seg("BHT", "0019", "00", f"{isa13}{st02}", when.strftime("%Y%m%d"), when.strftime("%H%M"),
                            "CH"))
            segs += header
            in_st, hl = 0, 2
        else:
            try:
                body, controls, used = _claim_segments(ci, practice, hl, 1)
            except ClaimError as exc:
                batch.refused[i] = str(exc)
                continue
        first = len(segs) + 1
        segs += body
        batch.spans[i] = (first, len(segs))
        batch.line_ids[i] = controls
        batch.st_of[i] = batch.st_controls[-1]
        hl += used
        in_st += 1
    if st_start >= 0:
        close()
    segs.append(seg("GE", str(len(batch.st_controls)), gs06))
    segs.append(seg("IEA", "1", isa13))
    batch.text = "\n".join(segs) + "\n"
    return batch
