"""Eligibility in X12 5010: the 270 inquiry we write (005010X279A1) and the 271 answer we read.

**270.** One interchange per run, one transaction set, one inquiry per scheduled visit:

    ISA / GS*HS / ST*270 / BHT*0022*13
      HL 2000A (20, information source)   NM1*PR  the payer           (one per payer)
      HL 2000B (21, information receiver) NM1*1P  the practice (NPI)
      HL 2000C (22, subscriber)            TRN*1*<trace>*1<EIN>  our trace for this visit
                                           NM1*IL  member (name, member id), DMG (DOB, sex)
                                           DTP*291 date of service;  EQ*30 health benefit plan coverage
    SE / GE / IEA

The visit's patient is sent as the subscriber (the member id on the visit's coverage). The
trace number (TRN02) is what pairs a 271 answer with its visit: payers echo it back as TRN*2.

**271.** Per subscriber/dependent loop: the echoed trace, EB segments and AAA rejections:
``EB01 = 1`` active coverage, ``6``/``7``/``8`` inactive (pending states count as inactive: the
front desk must act), neither: unknown. The plan is EB05 (plan coverage description) or, when
absent, REF*18 (plan number) / REF*6P (group). The copay is EB01 = ``B`` with its amount in EB07
(office visit / plan level: service type 30, 98 or none preferred). AAA (request rejected —
invalid member id, patient not found…) makes the answer ``unknown`` with the reason code kept.

Nothing here logs. Errors name segments and positions, never values (a 271 carries names,
member ids and birth dates).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from core.errors import ChargeBridgeError

IMPLEMENTATION = "005010X279A1"
SERVICE_TYPE = "30"  # health benefit plan coverage
MAX_271_BYTES = 32 * 1024 * 1024
MAX_SEGMENTS = 2_000_000
MAX_INQUIRIES = 9_999  # HL numbering and the clearinghouses' usual per-file limit

ACTIVE, INACTIVE, UNKNOWN = "active", "inactive", "unknown"

# AAA03 reject reasons (X12 005010X279A1 code list, 2100/2000 AAA)
AAA_REASONS = {
    "04": "authorized quantity exceeded", "15": "required application data missing",
    "41": "authorization/access restrictions", "42": "unable to respond at current time",
    "43": "invalid/missing provider identification", "45": "invalid/missing provider specialty",
    "47": "invalid/missing provider state", "48": "invalid/missing referring provider identification number",
    "49": "provider is not primary care physician", "51": "provider not on file",
    "52": "service dates not within provider plan enrollment", "56": "inappropriate date",
    "57": "invalid/missing date(s) of service", "58": "invalid/missing date-of-birth",
    "60": "date of birth follows date(s) of service", "61": "date of death precedes date(s) of service",
    "62": "date of service not within allowable inquiry period", "63": "date of service in future",
    "64": "invalid/missing patient id", "65": "invalid/missing patient name",
    "66": "invalid/missing patient gender code", "67": "patient not found", "68": "duplicate patient id number",
    "71": "patient birth date does not match that for the patient on the database",
    "72": "invalid/missing subscriber/insured id", "73": "invalid/missing subscriber/insured name",
    "74": "invalid/missing subscriber/insured gender code", "75": "subscriber/insured not found",
    "76": "duplicate subscriber/insured id number", "78": "subscriber/insured not in group/plan identified",
    "79": "invalid participant identification", "80": "no response received - transaction terminated",
    "97": "invalid or missing provider address", "T4": "payer name or identifier missing",
}
INACTIVE_EB01 = {"6": "inactive", "7": "inactive - pending eligibility update", "8": "inactive - pending investigation"}


class EligibilityError(ChargeBridgeError):
    """A 270 cannot be written or a 271 cannot be read. Names fields/segments, never values."""


@dataclass(frozen=True)
class Provider:
    """The information receiver (the practice) and the TRN03 originator (its EIN)."""

    name: str
    npi: str
    tax_id: str


@dataclass(frozen=True)
class Envelope:
    sender_id: str  # ISA06 / GS02
    receiver_id: str  # ISA08 / GS03
    control: int  # ISA13 = GS06, from the engine's ledger
    usage: str = "T"  # ISA15
    when: datetime | None = None


@dataclass(frozen=True)
class Inquiry:
    """One scheduled visit to ask about."""

    trace: str  # TRN02: unique per visit and run (pairs the 271 with the visit)
    payer_name: str
    payer_id: str
    member_id: str
    family: str
    given: str
    dob: str  # ISO yyyy-mm-dd or ""
    sex: str  # M | F | "" (others are not sent)
    dos: str  # ISO yyyy-mm-dd


@dataclass
class Answer271:
    """What a 271 says about one inquiry. No names, ids or birth dates are kept."""

    trace: str
    status: str  # active | inactive | unknown
    plan: str = ""
    copay: str = ""  # decimal text, "" when not given
    reasons: list[str] = field(default_factory=list)  # "AAA 72: invalid/missing subscriber/insured id"
    plan_begin: str = ""
    plan_end: str = ""
    st_control: str = ""
    fingerprint: str = ""


# -- writing --------------------------------------------------------------------------------------
_BAD = re.compile(r"[^A-Z0-9 !&'()+,\-./;?=%@\[\]_{}\\|<>#$]")


def _text(value: str, max_len: int) -> str:
    """Upper-case X12 basic/extended characters; delimiters (* ~ : ^) and others dropped."""
    return " ".join(_BAD.sub("", (value or "").upper()).split())[:max_len].strip()


def _ident(value: str, what: str, *, max_len: int, min_len: int = 1) -> str:
    v = _text(value, 1000).replace(" ", "")
    if not min_len <= len(v) <= max_len:
        raise EligibilityError(f"the {what} is missing or longer than {max_len} characters",
                               f"correct the {what} in the EHR or in chargebridge.toml")
    return v


def _d8(iso: str, what: str) -> str:
    try:
        return date.fromisoformat(iso).strftime("%Y%m%d")
    except (TypeError, ValueError):
        raise EligibilityError(f"the {what} is not a date", f"correct the {what} in the EHR") from None


def _seg(*elements: str) -> str:
    parts = list(elements)
    while len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return "*".join(parts) + "~"


def _isa_field(value: str, width: int) -> str:
    return _text(value, width).ljust(width)


def npi_ok(npi: str) -> bool:
    """Luhn check with the 80840 prefix (the NPI's check digit)."""
    if not re.fullmatch(r"\d{10}", npi or ""):
        return False
    digits = [int(c) for c in "80840" + npi]
    total = 0
    for i, dgt in enumerate(reversed(digits)):
        if i % 2 == 1:
            dgt *= 2
            if dgt > 9:
                dgt -= 9
        total += dgt
    return total % 10 == 0


def check_inquiry(q: Inquiry) -> str:
    """Why ``q`` cannot be asked ("" when it can). Names the field, never its value."""
    if not (q.payer_id or q.payer_name):
        return "the visit's coverage has no payer"
    if not _text(q.member_id, 80):
        return "the visit's coverage has no member id"
    if not _text(q.family, 60):
        return "the patient has no last name"
    try:
        date.fromisoformat(q.dos)
    except (TypeError, ValueError):
        return "the visit has no date"
    if q.dob:
        try:
            date.fromisoformat(q.dob)
        except ValueError:
            return "the patient's date of birth is not a date"
    return ""


def write_270(inquiries: Sequence[Inquiry], *, provider: Provider, envelope: Envelope) -> str:
    """The 270 interchange for ``inquiries`` (each already passing :func:`check_inquiry`)."""
    if not inquiries:
        raise EligibilityError("there is nothing to ask about", "schedule visits with coverage first")
    if len(inquiries) > MAX_INQUIRIES:
        raise EligibilityError(f"more than {MAX_INQUIRIES} visits in one eligibility file",
                               "this is a ChargeBridge bug: the engine splits larger days")
    if not npi_ok(provider.npi):
        raise EligibilityError("the practice NPI is missing or fails its check digit", "set [practice] npi")
    ein = re.sub(r"\D", "", provider.tax_id or "")
    if len(ein) != 9:
        raise EligibilityError("the practice tax id (EIN) is not 9 digits", "set [practice] tax_id")
    if not 0 < envelope.control <= 999_999_999:
        raise EligibilityError("the interchange control number is out of range", "this is a ChargeBridge bug")
    usage = envelope.usage if envelope.usage in ("T", "P") else "T"
    sender = _ident(envelope.sender_id, "x12 sender id", max_len=15)
    receiver = _ident(envelope.receiver_id, "x12 receiver id", max_len=15)
    when = envelope.when or datetime.now().astimezone()
    ctl = f"{envelope.control:09d}"
    isa = ("ISA*00*" + " " * 10 + "*00*" + " " * 10 + f"*ZZ*{_isa_field(sender, 15)}*ZZ*{_isa_field(receiver, 15)}"
           f"*{when:%y%m%d}*{when:%H%M}*^*00501*{ctl}*0*{usage}*:~")
    body: list[str] = [
        _seg("ST", "270", "0001", IMPLEMENTATION),
        _seg("BHT", "0022", "13", f"CB{envelope.control}", f"{when:%Y%m%d}", f"{when:%H%M}"),
    ]
    hl = 0
    by_payer: dict[tuple[str, str], list[Inquiry]] = {}
    for q in inquiries:
        problem = check_inquiry(q)
        if problem:
            raise EligibilityError(f"an eligibility inquiry cannot be written: {problem}",
                                   "correct the visit in the EHR")
        by_payer.setdefault((_text(q.payer_id, 80), _text(q.payer_name, 60)), []).append(q)
    for (payer_id, payer_name), group in by_payer.items():
        hl += 1
        source = hl
        body.append(_seg("HL", str(source), "", "20", "1"))
        if payer_id:
            body.append(_seg("NM1", "PR", "2", payer_name or payer_id, "", "", "", "", "PI", payer_id))
        else:
            body.append(_seg("NM1", "PR", "2", payer_name))
        hl += 1
        receiver_hl = hl
        body.append(_seg("HL", str(receiver_hl), str(source), "21", "1"))
        body.append(_seg("NM1", "1P", "2", _text(provider.name, 60) or "PRACTICE", "", "", "", "", "XX", provider.npi))
        for q in group:
            hl += 1
            body.append(_seg("HL", str(hl), str(receiver_hl), "22", "0"))
            body.append(_seg("TRN", "1", _ident(q.trace, "trace number", max_len=50), "1" + ein))
            body.append(_seg("NM1", "IL", "1", _text(q.family, 60), _text(q.given, 35), "", "", "", "MI",
                             _ident(q.member_id, "member id", max_len=80)))
            if q.dob:
                sex = q.sex if q.sex in ("M", "F") else ""
                body.append(_seg("DMG", "D8", _d8(q.dob, "date of birth"), sex))
            body.append(_seg("DTP", "291", "D8", _d8(q.dos, "date of service")))
            body.append(_seg("EQ", SERVICE_TYPE))
    body.append(_seg("SE", str(len(body) + 1), "0001"))
    gs = _seg("GS", "HS", sender, receiver, f"{when:%Y%m%d}", f"{when:%H%M}", str(envelope.control), "X",
              IMPLEMENTATION)
    return "\n".join([isa, gs, *body, _seg("GE", "1", str(envelope.control)), _seg("IEA", "1", ctl)]) + "\n"


def check_270(text: str) -> list[str]:
    """Structural problems in a 270 we wrote (empty: fine). pyx12 4.0 ships no 005010X279A1 map
    (only 4010 X092), so the 270 is checked here: envelope counts and control numbers, HL ids
    and parents, and every subscriber loop's required segments. Messages name segments only."""
    problems: list[str] = []
    segs = [s.split("*") for s in text.replace("\n", "").split("~") if s]
    if not segs or segs[0][0] != "ISA" or len(text.split("~", 1)[0]) + 1 != 106:
        return ["ISA: the interchange header is not 106 characters"]
    ids = [s[0] for s in segs]
    if ids[1:2] != ["GS"] or ids[-2:] != ["GE", "IEA"]:
        problems.append("GS/GE/IEA: the envelope is incomplete")
    gs, ge, iea, isa = segs[1], segs[-2], segs[-1], segs[0]
    if _el(gs, 8) != IMPLEMENTATION or _el(gs, 1) != "HS":
        problems.append(f"GS08: not {IMPLEMENTATION} / HS")
    if _el(ge, 2) != _el(gs, 6) or _el(iea, 2) != _el(isa, 13):
        problems.append("GE02/IEA02: control numbers do not match GS06/ISA13")
    st_at = [i for i, s in enumerate(ids) if s == "ST"]
    se_at = [i for i, s in enumerate(ids) if s == "SE"]
    if len(st_at) != len(se_at) or _el(ge, 1) != str(len(st_at)):
        problems.append("GE01: the number of transaction sets is wrong")
    for a, b in zip(st_at, se_at, strict=False):
        if _el(segs[b], 1) != str(b - a + 1) or _el(segs[b], 2) != _el(segs[a], 2):
            problems.append(f"SE (segment {b + 1}): segment count or control number is wrong")
        hl_seen: dict[str, str] = {}
        expect = 1
        for i in range(a, b):
            s = segs[i]
            if s[0] != "HL":
                continue
            if _el(s, 1) != str(expect):
                problems.append(f"HL01 (segment {i + 1}): ids are not numbered 1, 2, 3...")
            expect += 1
            level, parent = _el(s, 3), _el(s, 2)
            want = {"20": "", "21": "20", "22": "21", "23": "22"}.get(level)
            if want is None or (want and hl_seen.get(parent) != want) or (not want and parent):
                problems.append(f"HL02/HL03 (segment {i + 1}): the loop has the wrong parent")
            hl_seen[_el(s, 1)] = level
            nxt = [x[0] for x in segs[i + 1:b]]
            end = nxt.index("HL") if "HL" in nxt else len(nxt)
            loop = nxt[:end]
            need = {"20": ["NM1"], "21": ["NM1"], "22": ["TRN", "NM1", "DTP", "EQ"]}.get(level, [])
            for n in need:
                if n not in loop:
                    problems.append(f"{n} (loop at segment {i + 1}): required segment missing")
            if level == "22" and _el(s, 4) != "0":
                problems.append(f"HL04 (segment {i + 1}): a subscriber without dependents must say 0")
    for i, s in enumerate(segs):
        if s[0] == "NM1" and _el(s, 1) == "1P" and not npi_ok(_el(s, 9)):
            problems.append(f"NM109 (segment {i + 1}): the provider NPI fails its check digit")
        if s[0] == "TRN" and (len(_el(s, 3)) != 10 or not _el(s, 2) or len(_el(s, 2)) > 50):
            problems.append(f"TRN (segment {i + 1}): trace number or originator id has the wrong length")
    return problems


# -- reading --------------------------------------------------------------------------------------
def _segments(data: bytes | str) -> list[tuple[str, list[str], str]]:
    """(segment id, elements, component separator) for every segment of every interchange."""
    if isinstance(data, bytes):
        if len(data) > MAX_271_BYTES:
            raise EligibilityError(f"the 271 file is larger than {MAX_271_BYTES // (1024 * 1024)} MiB",
                                   "ask the clearinghouse to split it")
        text = data.decode("latin-1")
    else:
        text = data
    out: list[tuple[str, list[str], str]] = []
    pos = 0
    while True:
        at = text.find("ISA", pos)
        if at < 0 or len(text) - at < 106:
            break
        sep, comp, term = text[at + 3], text[at + 104], text[at + 105]
        if sep.isalnum() or term.isalnum() or sep == term:
            raise EligibilityError("the 271 file's ISA header is malformed", "ask the clearinghouse to send it again")
        end = text.find(f"IEA{sep}", at)
        end = text.find(term, end) if end >= 0 else -1
        chunk = text[at:end + 1] if end >= 0 else text[at:]
        for raw in chunk.split(term):
            raw = raw.strip("\r\n\t ")
            if not raw:
                continue
            els = raw.split(sep)
            out.append((els[0], els, comp))
            if len(out) > MAX_SEGMENTS:
                raise EligibilityError("the 271 file has too many segments", "ask the clearinghouse to split it")
        if end < 0:
            break
        pos = end + 1
    if not out:
        raise EligibilityError("the file is not an X12 interchange (no ISA header)",
                               "import only 271 eligibility answers here")
    return out


def _el(seg: list[str], i: int) -> str:
    return seg[i].strip() if len(seg) > i else ""


def is_271(data: bytes | str) -> bool:
    """True when the interchange holds 271 transaction sets (cheap sniff: no full parse)."""
    head = data[:4096].decode("latin-1") if isinstance(data, bytes) else data[:4096]
    return bool(re.search(r"ST.271.", head))


def parse_271(data: bytes | str) -> list[Answer271]:
    """Every subscriber/dependent answer in a 271 file, in file order. Raises
    :class:`EligibilityError` for a file that is not a 271."""
    segs = _segments(data)
    answers: list[Answer271] = []
    st_control = ""
    seen_271 = False
    current: Answer271 | None = None
    in_eb = False
    copay_rank = 99
    level_aaa: list[str] = []  # AAA at the payer/receiver level applies to every subscriber below

    def close() -> None:
        nonlocal current
        if current is not None:
            answers.append(current)
        current = None

    for sid, seg, comp in segs:
        if sid == "ST":
            close()
            seen_271 = _el(seg, 1) == "271"
            if not seen_271:
                raise EligibilityError(f"transaction set {_el(seg, 1) or '(none)'} is not a 271 eligibility answer",
                                       "import only 271 files here")
            st_control, level_aaa = _el(seg, 2), []
        elif not seen_271:
            continue
        elif sid == "HL":
            level = _el(seg, 3)
            close()
            in_eb = False
            if level in ("22", "23"):
                current = Answer271(trace="", status=UNKNOWN, st_control=st_control,
                                    reasons=list(level_aaa))
                copay_rank = 99
            elif level == "20":  # a new payer: its AAA (and its receiver's) apply to the loops below
                level_aaa = []
        elif sid == "SE":
            close()
        elif current is None:
            if sid == "AAA":
                level_aaa.append(_aaa(seg))
        elif sid == "TRN":
            if _el(seg, 1) == "2" and not current.trace:  # our trace echoed (TRN*1 would be the payer's own)
                current.trace = _el(seg, 2)
        elif sid == "AAA":
            current.reasons.append(_aaa(seg))
        elif sid == "REF" and not in_eb and _el(seg, 1) in ("18", "6P") and not current.plan:
            current.plan = _text(_el(seg, 3) or _el(seg, 2), 60)
        elif sid == "DTP" and not in_eb and _el(seg, 1) in ("346", "347", "307"):
            _plan_dates(current, seg)
        elif sid == "EB":
            in_eb = True
            code = _el(seg, 1)
            services = _el(seg, 3).split(comp) if _el(seg, 3) else []
            if code == "1":
                current.status = ACTIVE
                if _el(seg, 5) and (not current.plan or not services or SERVICE_TYPE in services):
                    current.plan = _text(_el(seg, 5), 60)
            elif code in INACTIVE_EB01 and current.status != ACTIVE:
                current.status = INACTIVE
                current.reasons.append(f"EB {code}: {INACTIVE_EB01[code]}")
            elif code == "B" and _el(seg, 7):
                rank = 0 if SERVICE_TYPE in services else 1 if ("98" in services or not services) else 2
                if rank < copay_rank:
                    try:
                        current.copay = str(Decimal(_el(seg, 7)).quantize(Decimal("0.01")))
                        copay_rank = rank
                    except InvalidOperation:
                        current.reasons.append("EB07: the copay amount is not a number")
    close()
    if not seen_271:
        raise EligibilityError("the file holds no 271 transaction set", "import only 271 eligibility answers here")
    for a in answers:  # an AAA rejection without EB 1/6 stays unknown, with its reason
        a.fingerprint = hashlib.sha256(
            f"{a.trace}|{a.status}|{a.plan}|{a.copay}|{a.st_control}|{'|'.join(a.reasons)}".encode()).hexdigest()
    return answers


def _aaa(seg: list[str]) -> str:
    code = _el(seg, 3)
    return f"AAA {code}: {AAA_REASONS.get(code, 'request rejected')}" if code else "AAA: request rejected"


def _plan_dates(a: Answer271, seg: list[str]) -> None:
    fmt, value = _el(seg, 2), _el(seg, 3)
    try:
        if fmt == "D8":
            begin = end = value
        elif fmt == "RD8" and "-" in value:
            begin, end = value.split("-", 1)
        else:
            return
        b = datetime.strptime(begin, "%Y%m%d").date().isoformat()
        e = datetime.strptime(end, "%Y%m%d").date().isoformat()
    except ValueError:
        return
    q = _el(seg, 1)
    if q == "346":
        a.plan_begin = b
    elif q == "347":
        a.plan_end = e
    else:  # 307 eligibility: a range
        a.plan_begin, a.plan_end = b, e


def traces(answers: Iterable[Answer271]) -> list[str]:
    return [a.trace for a in answers if a.trace]
