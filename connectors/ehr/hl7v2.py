"""HL7 v2 parser: DFT^P03 charges, ADT^A04/A08 demographics and SIU^S12 appointments.

Why a hand-rolled splitter: the product has to move >= 5,000 encounters/s end to end and
python-hl7 builds a full object tree per message (~2,000 DFT/s). Billing needs a few dozen
values per message, so we split segments with ``str.split`` and only split the segments we
read (PID, PV1, FT1, DG1, PR1, IN1, SCH, AI*), and only unescape values that contain the
escape character.

What this module does not do: standardize or validate codes, dates, names. It copies what the
sender said (stripped of whitespace) into :mod:`core.model`; ``standardize()`` and validation
run later in the pipeline, so they see exactly what the EHR sent. Rejection reasons are shown
to people and logged, so they quote only message types, versions, segment and field names
and positions -- never a field value that could be patient data.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from connectors.ehr import limits
from connectors.ehr.base import ParseError
from connectors.ehr.evidence import MAX_EVIDENCE  # distinct orders/results per encounter (a panel's OBX are one)
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
    Evidence,
    Parsed,
    Patient,
    PatientUpdate,
    Provider,
    Rejected,
    read_decimal,
)

NAME = "hl7v2"

SUPPORTED = "ChargeBridge reads DFT^P03, ADT^A04/A08 and SIU^S12"
_VERSION_RE = re.compile(r"^2\.[1-8](\.\d{1,2})?$")
# Shapes that are safe to quote in a reason: an MSH-9 code, an MSH-12 version number.
_CODE_SHAPE = re.compile(r"^[A-Z0-9]{3}$")
_VERSION_SHAPE = re.compile(r"^[Vv]?\d{1,2}(\.\d{1,2}){0,3}$")
_NPI_OID = "2.16.840.1.113883.4.6"
_BOM = b"\xef\xbb\xbf"
_BATCH = frozenset({"FHS", "BHS", "BTS", "FTS"})
# Segment IDs that may be named in a reason (anything else could be a fragment of text).
_KNOWN_SEGMENTS = frozenset(
    ["EVN", "PID", "PD1", "PV1", "PV2", "FT1", "DG1", "PR1", "IN1", "IN2", "IN3", "GT1", "NK1", "ORC",
     "OBR", "OBX", "NTE", "SCH", "TQ1", "RGS", "AIS", "AIG", "AIL", "AIP", "ROL", "PRT", "ZPI"]
)

# HL7 table 0211 (MSH-18) -> Python codec. ASCII maps to None: the default chain
# (utf-8, then latin-1) decodes ASCII identically and survives senders that lie.
_CHARSETS: dict[str, str | None] = {
    "ASCII": None, "ISO IR6": None, "": None,
    "UNICODE": "utf-8", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "UTF8": "utf-8",
    "8859/1": "latin-1", "ISO IR100": "latin-1", "8859/2": "iso8859-2", "ISO IR101": "iso8859-2",
    "8859/3": "iso8859-3", "8859/4": "iso8859-4", "8859/5": "iso8859-5", "ISO IR144": "iso8859-5",
    "8859/6": "iso8859-6", "ISO IR127": "iso8859-6", "8859/7": "iso8859-7",
    "ISO IR126": "iso8859-7", "8859/8": "iso8859-8", "ISO IR138": "iso8859-8",
    "8859/9": "iso8859-9", "ISO IR148": "iso8859-9", "8859/15": "iso8859-15",
    "ISO IR87": "iso2022_jp", "ISO IR159": "iso2022_jp_2", "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr", "BIG-5": "big5", "CNS 11643-1992": "euc_tw",
}

# HL7 table 0063 (and the X12 codes some senders put there) -> the model's four values.
_RELATIONSHIP = {
    "SEL": "self", "SELF": "self", "18": "self",
    "SPO": "spouse", "SPOUSE": "spouse", "01": "spouse", "1": "spouse",
    "CHD": "child", "CHILD": "child", "NCH": "child", "SCH": "child", "FCH": "child",
    "DEP": "child", "GCH": "child", "19": "child",
}
_POS_BY_CLASS = {"E": "23", "I": "21"}  # PV1-2 patient class; outpatient/office left to config


class _Reject(Exception):
    """A message-level problem; ``str()`` becomes :attr:`Rejected.reason` (no PHI)."""


class _D(NamedTuple):
    """Delimiters of one message (MSH-1/MSH-2) and its codec for \\Xhh\\ escapes."""

    fs: str
    cs: str
    rs: str
    ec: str
    ss: str
    codec: str | None


# ---------------------------------------------------------------------------
# File -> messages
# ---------------------------------------------------------------------------


def parse(data: bytes, *, name: str, options: Mapping[str, Any]) -> list[Parsed]:
    """Parse one file (one or many messages) into encounters, updates and rejected parts."""
    text_data = _check_file(data)
    norm = text_data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    if b"\x0b" in norm or b"\x1c" in norm:  # MLLP frame bytes act as segment breaks
        norm = norm.replace(b"\x0b", b"\r").replace(b"\x1c", b"\r")
    if _BOM in norm:  # concatenated files each keeping their BOM
        norm = norm.replace(b"\r" + _BOM, b"\r")
    norm = b"\r" + norm
    if norm.isascii():  # common case: decode once, no per-message charset work
        chunks = norm.decode("ascii").split("\rMSH")
        texts = ["MSH" + c for c in chunks[1:]]
        preamble = chunks[0]
    else:
        raw = norm.split(b"\rMSH")
        texts = [_decode_message(b"MSH" + c) for c in raw[1:]]
        preamble = raw[0].decode("latin-1")
    if not texts:
        raise ParseError("no MSH segment: this is not an HL7 v2 message")
    budgets = limits.of(options)
    if len(texts) > budgets.max_rows:
        raise ParseError(f"the file holds {len(texts):,} messages, over the limit of {budgets.max_rows:,} per "
                         "file (ingest.max_rows); split the export into smaller files")

    out: list[Parsed] = []
    stray = [s.strip()[:3] for s in preamble.split("\r") if s.strip()]
    stray = [s for s in stray if s not in _BATCH]
    if stray:  # segments with no MSH above them: say so rather than drop them silently
        named = sorted({s for s in stray if s in _KNOWN_SEGMENTS})
        out.append(Rejected(
            "before message 1",
            f"{len(stray)} line(s){' (' + ', '.join(named) + ')' if named else ''} come before "
            "the first MSH and were ignored; a message header may be missing",
        ))
    opts = dict(options or {})
    opts["_max_lines"] = budgets.max_lines_per_encounter
    for i, text in enumerate(texts, 1):
        part = f"message {i}"
        try:
            out.append(_parse_message(text, opts))
        except _Reject as exc:
            out.append(Rejected(part, str(exc)))
        except Exception as exc:  # one malformed message must not sink the whole file
            out.append(Rejected(part, f"message could not be read ({type(exc).__name__}); "
                                      "check its segment structure against the HL7 spec"))
    return out


def _check_file(data: bytes) -> bytes:
    """Refuse empty and binary files; turn UTF-16 (BOM) into UTF-8; drop a leading BOM."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        data = data.decode("utf-16", errors="replace").encode("utf-8")
    if data.startswith(_BOM):
        data = data[3:]
    data = data.lstrip(b" \t\r\n")
    if not data.strip(b" \t\r\n\x0b\x1c"):
        raise ParseError("file is empty")
    head = data[:4096]
    controls = sum(head.count(bytes([b])) for b in (1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 16, 17, 18))
    if b"\x00" in data or controls * 20 > len(head):
        raise ParseError("file is binary, not HL7 v2 text")
    return data


def _codec_for(charset: str) -> str | None:
    """MSH-18 (first repetition) -> codec name; None means 'utf-8, else latin-1'."""
    key = charset.strip().upper()
    if key in _CHARSETS:
        return _CHARSETS[key]
    try:
        return codecs.lookup(key).name  # e.g. ISO-8859-1, WINDOWS-1252 from loose senders
    except LookupError:
        return None


def _msh18(fields: list[str]) -> str:
    """MSH-18 character set, first repetition, from the MSH split on its field separator."""
    if len(fields) <= 17 or len(fields[1]) < 2:
        return ""
    return fields[17].split(fields[1][1], 1)[0]


def _decode(raw: bytes, codec: str | None) -> str:
    """Decode with the declared codec, else utf-8, else latin-1 (which never fails)."""
    for name in (codec, "utf-8") if codec and codec != "utf-8" else ("utf-8",):
        try:
            return raw.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
    return raw.decode("latin-1")


def _decode_message(raw: bytes) -> str:
    end = raw.find(b"\r")
    msh = (raw if end < 0 else raw[:end]).decode("latin-1")
    return _decode(raw, _codec_for(_msh18(msh.split(msh[3]) if len(msh) > 3 else [])))


# ---------------------------------------------------------------------------
# Value access: fields, repetitions, components, sub-components, escapes
#
# Speed matters here (see module docstring): a field is split into components once and
# read by index, segments are padded to the widest field we read, and only values that
# contain a sub-component, escape or space character pay for cleaning.
# ---------------------------------------------------------------------------

# Highest field number read per segment (+1), so readers index without bounds checks.
_WIDTH = {"EVN": 2, "PID": 19, "PV1": 46, "FT1": 27, "DG1": 16, "PR1": 17, "IN1": 50,
          "SCH": 12, "TQ1": 8, "AIS": 7, "AIG": 7, "AIL": 7, "AIP": 7, "OBR": 5, "OBX": 4}


def _cs(raw: str, d: _D, width: int) -> list[str]:
    """Components of the first repetition: first sub-component, unescaped, stripped, padded."""
    if d.rs in raw:
        raw = raw.split(d.rs, 1)[0]
    comps = raw.split(d.cs)
    if d.ss in raw or d.ec in raw:
        comps = [_clean(c, d) for c in comps]
    elif " " in raw:
        comps = [c.strip() for c in comps]
    if len(comps) < width:
        comps += [""] * (width - len(comps))
    return comps


def _clean(value: str, d: _D) -> str:
    if d.ss in value:
        value = value.split(d.ss, 1)[0]
    if d.ec in value:
        value = _unescape(value, d)
    return value.strip()


def _v(raw: str, d: _D) -> str:
    """First component of the first repetition (the usual 'code' or 'value' of a field)."""
    if raw.isalnum():  # dates, counts, plain codes: nothing to split or clean
        return raw
    if not raw:
        return ""
    if d.cs in raw or d.rs in raw or d.ss in raw or d.ec in raw:
        return _cs(raw, d, 1)[0]
    return raw.strip()


def _sub(raw: str, n: int, m: int, d: _D) -> str:
    """Sub-component ``m`` of component ``n`` (1-based) of the first repetition."""
    comps = raw.split(d.rs, 1)[0].split(d.cs)
    subs = comps[n - 1].split(d.ss) if n <= len(comps) else []
    return _clean(subs[m - 1], d) if m <= len(subs) else ""


def _reps(raw: str, d: _D) -> list[str]:
    return raw.split(d.rs) if raw else []


def _each(raw: str, d: _D) -> list[str]:
    """The first component of every repetition, blanks dropped (modifiers, codes)."""
    if raw.isalnum():
        return [raw]
    return [v for v in (_v(r, d) for r in raw.split(d.rs)) if v] if raw else []


def _unescape(value: str, d: _D) -> str:
    """Undo HL7 escapes after splitting, so an escaped ^ or & never splits a value."""
    parts = value.split(d.ec)
    out = [parts[0]]
    i, n = 1, len(parts)
    while i < n:
        if i + 1 >= n:  # lone escape character: keep it literally
            out.append(d.ec + parts[i])
            break
        out.append(_escape(parts[i], d))
        out.append(parts[i + 1])
        i += 2
    return "".join(out)


def _escape(code: str, d: _D) -> str:
    simple = {"F": d.fs, "S": d.cs, "T": d.ss, "R": d.rs, "E": d.ec}
    if code in simple:
        return simple[code]
    if code[:1] == "X":
        try:
            return _decode(bytes.fromhex(code[1:]), d.codec)
        except ValueError:
            return ""
    if code in (".br", ".sp"):  # a line break inside a name or address reads as a space
        return " "
    return ""  # \H\ \N\ \.in\ \Cxxyy\ \Zxx\ ...: formatting and charset switches, dropped


def _safe(token: str, shape: re.Pattern[str] = _CODE_SHAPE) -> str:
    """Quote a token in a reason only if it has the shape of a code, not of patient data."""
    return token if shape.match(token) else "?"


# ---------------------------------------------------------------------------
# Message dispatch
# ---------------------------------------------------------------------------


def _parse_message(text: str, options: Mapping[str, Any]) -> Parsed:
    """One message (segments joined by CR) -> a record; raises _Reject with a PHI-free reason.

    Checks run cheapest and most fundamental first: delimiters, MSH length, message type,
    version; only billing-relevant messages have their segments read any further.
    """
    max_lines = options.get("_max_lines", limits.DEFAULT.max_lines_per_encounter)
    if text.count("\rFT1") > max_lines:  # counted before splitting: a million FT1s never become lines
        raise _Reject(f"message has more than {max_lines:,} FT1 charge segments, over the limit of lines per "
                      "encounter (ingest.max_lines_per_encounter); check the export")
    segs = text.split("\r")
    msh = segs[0]
    if len(msh) < 8 or msh[3].isalnum() or msh[3].isspace():
        raise _Reject("MSH segment is cut short: MSH-1/MSH-2 delimiters are missing")
    fs = msh[3]
    mf = msh.split(fs)
    enc = mf[1]
    if len(enc) < 2 or enc[0].isalnum():
        raise _Reject("MSH segment is cut short: MSH-2 encoding characters are missing")
    d = _D(fs, enc[0], enc[1] if len(enc) > 1 else "~", enc[2] if len(enc) > 2 else "\\",
           enc[3] if len(enc) > 3 else "&", _codec_for(_msh18(mf)))
    if len(mf) < 12:
        raise _Reject(f"MSH segment is cut short: it has {len(mf)} fields, "
                      "and HL7 needs at least MSH-12 (version)")

    by: dict[str, list[list[str]]] = {}
    for seg in segs[1:]:
        if not seg or seg[0] in " \t":
            seg = seg.strip()
            if not seg:
                continue
        width = _WIDTH.get(seg[:3])
        if width:
            fields = seg.split(fs)
            if len(fields) < width:
                fields += [""] * (width - len(fields))
            if seg[:3] == "OBX":  # which order it answers: the OBR before it (0 = none), kept last
                fields.append(str(len(by.get("OBR", ()))))
            by.setdefault(seg[:3], []).append(fields)

    mtype, trigger = _cs(mf[8], d, 2)[:2]
    mtype, trigger = mtype.upper(), trigger.upper()
    if not trigger and "EVN" in by:  # v2.1/2.2 senders may put the trigger in EVN-1 only
        trigger = _v(by["EVN"][0][1], d).upper()
    label = f"{_safe(mtype)}^{_safe(trigger)}" if trigger else _safe(mtype)
    if not mtype:
        raise _Reject("MSH-9 (message type) is empty")
    version = _v(mf[11], d)
    if not version:
        raise _Reject(f"{label} message has no HL7 version in MSH-12")
    if not _VERSION_RE.match(version):
        shown = _safe(version, _VERSION_SHAPE)
        raise _Reject(f"HL7 version {shown} in MSH-12 is not supported; "
                      "ChargeBridge reads HL7 v2.1 to v2.8.x")

    system = _v(mf[3], d) or _v(mf[2], d)
    if mtype == "DFT" and trigger == "P03":
        return _dft(by, d, label, system, _v(mf[9], d), options)
    if mtype == "ADT" and trigger in ("A04", "A08"):
        patient = _patient(_one(by, "PID", label), d)
        if not patient.mrn:
            raise _Reject(f"{label} message has no patient identifier in PID-3, "
                          "so the update cannot be matched to a patient")
        return PatientUpdate(source=NAME, source_system=system, patient=patient, event=trigger)
    if mtype == "SIU" and trigger == "S12":
        return _siu(by, d, label, system, _v(mf[9], d), options)
    raise _Reject(f"message type {label} is not billing-relevant; {SUPPORTED}")


def _one(by: dict[str, list[list[str]]], sid: str, label: str) -> list[str]:
    """The single required segment; two of them means a lost MSH glued messages together."""
    found = by.get(sid)
    if not found:
        raise _Reject(f"{label} message has no {sid} segment; the message looks truncated")
    if len(found) > 1:
        raise _Reject(f"{label} message has {len(found)} {sid} segments; a following message "
                      "may have lost its MSH header")
    return found[0]


# ---------------------------------------------------------------------------
# Segment readers (field lists are padded to _WIDTH, so fields[n] is HL7 field n)
# ---------------------------------------------------------------------------


def _patient(pid: list[str], d: _D) -> Patient:
    """PID: MRN is the PID-3 repetition typed MR (CX.5), else the first; then PID-2, PID-4."""
    mrn = first = ""
    for rep in _reps(pid[3], d):
        cx = _cs(rep, d, 5)
        if cx[4].upper() == "MR" and cx[0]:
            mrn = cx[0]
            break
        first = first or cx[0]
    name = _cs(pid[5], d, 4)
    return Patient(
        mrn=mrn or first or _v(pid[2], d) or _v(pid[4], d),
        family=name[0], given=name[1], middle=name[2], suffix=name[3],
        dob=_v(pid[7], d), sex=_v(pid[8], d),
        address=_address(pid[11], d), phone=_phone(pid[13], d),
    )


def _address(raw: str, d: _D) -> Address:
    """XAD. SAD.1 is the street line; SAD.2 (street name) is appended when sent separately."""
    if not raw:
        return Address()
    a = _cs(raw, d, 6)
    street = a[0]
    if d.ss in raw:
        street_name = _sub(raw, 1, 2, d)
        if street_name and street_name not in street:
            street = f"{street} {street_name}".strip()
    return Address(line1=street, line2=a[1], city=a[2], state=a[3], zip=a[4], country=a[5])


def _phone(raw: str, d: _D) -> str:
    """First XTN that is a phone: XTN.1 (v2.1-2.6) or area+local+ext (XTN.6-8, v2.7+)."""
    for rep in _reps(raw, d):
        x = _cs(rep, d, 8)
        if x[1].upper() == "NET" or x[2].upper() in ("INTERNET", "X.400"):
            continue
        if x[0]:
            return x[0]
        if x[6]:
            return f"{x[5]}{x[6]}" + (f" x{x[7]}" if x[7] else "")
    return ""


def _provider(raw: str, d: _D, options: Mapping[str, Any]) -> Provider | None:
    """XCN -> Provider. XCN.1 is an NPI only when flagged (XCN.13, or XCN.9 names NPI).

    Senders that put bare NPIs in XCN.1 can set option ``npi_in_xcn1``; otherwise a local
    provider number is never mistaken for an NPI (a wrong NPI on a claim is worse than none).
    """
    if not raw:
        return None
    x = _cs(raw, d, 13)
    ident = x[0]
    flagged = (x[12].upper() == "NPI" or x[8].upper() == "NPI"
               or (_NPI_OID in raw and _sub(raw, 9, 2, d) == _NPI_OID))
    loose = options.get("npi_in_xcn1") and len(ident) == 10 and ident.isdigit()
    npi = ident if flagged or loose else ""
    if not (npi or x[1] or x[2]):
        return None
    return Provider(npi=npi, family=x[1], given=x[2])


def _pick_provider(candidates: list[str], d: _D, options: Mapping[str, Any]) -> Provider:
    """First XCN candidate with an NPI (billing needs it), else the first one at all.

    Parsed lazily and once per distinct value: FT1 lines usually repeat one performer.
    """
    first: Provider | None = None
    for raw in dict.fromkeys(c for c in candidates if c):
        prov = _provider(raw, d, options)
        if prov is not None:
            if prov.npi:
                return prov
            first = first or prov
    return first or Provider()


def _key(code: str) -> str:
    """Compare codes the way people mean them: 'E11.9' == 'e119'."""
    return code.replace(".", "").replace(" ", "").upper()


def _date_key(value: str) -> str:
    return value[:8] if value[:8].isdigit() else value


def _dft(by: dict[str, list[list[str]]], d: _D, label: str, system: str, control_id: str,
         options: Mapping[str, Any]) -> Encounter:
    """DFT^P03 -> a charge encounter: one ChargeLine per FT1, plus PR1 procedures no FT1 bills.

    Dx pointers index the DG1 list (priority order); FT1-19 codes missing from DG1 are
    appended so no line loses its diagnosis. Rendering is the first of PV1-7 / FT1-20 with
    an NPI, else the first named one.
    """
    pid = _one(by, "PID", label)
    ft1s = by.get("FT1")
    if not ft1s:
        raise _Reject(f"{label} message has no FT1 charge segments")
    pv1 = by["PV1"][0] if "PV1" in by else [""] * _WIDTH["PV1"]
    diagnoses = _diagnoses(by.get("DG1", ()), d)
    dx_index = {_key(x.code): i for i, x in enumerate(diagnoses, 1)}
    pointer_cache: dict[str, list[int]] = {}  # FT1-19 text -> pointers (lines repeat it)

    lines: list[ChargeLine] = []
    performers = [pv1[7]]
    starts: list[str] = []
    ends: list[str] = []
    for ft1 in ft1s:
        proc = _cs(ft1[25], d, 3)
        if not proc[0]:  # the transaction code doubles as the procedure code in many feeds
            proc = _cs(ft1[7], d, 3)
        units = _v(ft1[10], d) or "1"
        pointers = pointer_cache.get(ft1[19]) if ft1[19] else []
        if pointers is None:
            pointers = pointer_cache[ft1[19]] = []
            for rep in _reps(ft1[19], d):
                dx = _cs(rep, d, 3)
                key = _key(dx[0])
                if not key:
                    continue
                if key not in dx_index:  # coded on the line but not in DG1: add it
                    diagnoses.append(Diagnosis(code=dx[0], system=dx[2]))
                    dx_index[key] = len(diagnoses)
                if dx_index[key] not in pointers:
                    pointers.append(dx_index[key])
        when = (ft1[4], "") if ft1[4].isdigit() else _cs(ft1[4], d, 2)
        if when[0]:
            starts.append(when[0])
            ends.append(when[1] or when[0])
        lines.append(ChargeLine(
            code=proc[0], code_system=proc[2],
            modifiers=_each(ft1[26], d),
            dx_pointers=list(pointers), units=units,
            unit_charge=_v(ft1[12], d) or _unit_charge(_v(ft1[11], d), units),
            line_id=_v(ft1[2], d), service_date=when[0],
        ))
        performers.append(ft1[20])

    pr1s = by.get("PR1", ())
    billed = {_key(line.code) for line in lines} if pr1s else set()
    for pr1 in pr1s:
        proc = _cs(pr1[3], d, 3)
        if not proc[0] or _key(proc[0]) in billed:
            continue
        billed.add(_key(proc[0]))
        lines.append(ChargeLine(
            code=proc[0], code_system=proc[2] or _v(pr1[2], d),
            modifiers=_each(pr1[16], d),
            service_date=_v(pr1[5], d),
        ))

    if starts:
        if len(set(starts + ends)) == 1:  # the usual case: every line on one day
            dos_start = dos_end = starts[0]
        else:
            dos_start, dos_end = min(starts, key=_date_key), max(ends, key=_date_key)
    else:
        dos_start, dos_end = _v(pv1[44], d), _v(pv1[45], d)
    return Encounter(
        source=NAME,
        source_id=_v(pv1[19], d) or _v(pid[18], d) or control_id,
        source_system=system, kind="charge", patient=_patient(pid, d),
        coverages=[_coverage(in1, d) for in1 in by.get("IN1", ())],
        rendering=_pick_provider(performers, d, options), dos_start=dos_start, dos_end=dos_end,
        place_of_service=_POS_BY_CLASS.get(_v(pv1[2], d).upper(), ""),
        diagnoses=diagnoses, lines=lines, evidence=_evidence(by, pv1, d),
    )




def _evidence(by: dict[str, list[list[str]]], pv1: list[str], d: _D) -> list[Evidence]:
    """Orders (OBR-4) and results (OBX, under the OBR they follow; else OBX-3) the message carries,
    and the visit's length from PV1-44/45 when both carry a time of day: what ``doc.missing``
    checks charges against. Codes are kept as sent (cut to 32 characters), deduplicated."""
    out: list[Evidence] = []
    seen: set[tuple[str, str, str]] = set()

    def add(kind: str, comps: list[str]) -> None:
        key = (kind, comps[0][:32], comps[2][:16])
        if key[1] and key not in seen and len(out) < MAX_EVIDENCE:
            seen.add(key)
            out.append(Evidence(kind, key[1], key[2]))

    orders = [_cs(obr[4], d, 3) for obr in by.get("OBR", ())]
    for comps in orders:
        add("order", comps)
    for obx in by.get("OBX", ()):
        group = int(obx[-1]) if obx[-1].isdigit() else 0
        add("result", orders[group - 1] if 0 < group <= len(orders) else _cs(obx[3], d, 3))
    minutes = _minutes(_v(pv1[44], d), _v(pv1[45], d))
    if minutes:
        out.append(Evidence("time", minutes=minutes))
    return out


def _minutes(start: str, end: str) -> int:
    """Minutes from PV1-44 to PV1-45 (``YYYYMMDDHHMM[SS]``, same day, up to 24 h); 0 when either
    has no time of day or they do not make a visit length."""
    if len(start) < 12 or len(end) < 12 or not (start[:12].isdigit() and end[:12].isdigit()):
        return 0
    if start[:8] != end[:8]:
        return 0
    a = int(start[8:10]) * 60 + int(start[10:12])
    b = int(end[8:10]) * 60 + int(end[10:12])
    return b - a if 0 < b - a <= 24 * 60 and a < 24 * 60 and b < 24 * 60 else 0


def _diagnoses(dg1s: Any, d: _D) -> list[Diagnosis]:
    """DG1 in DG1-15 priority order (1 first; 0/blank = unranked, kept in message order)."""
    found: list[Diagnosis] = []
    ranks: list[int] = []
    seen: set[str] = set()
    for dg1 in dg1s:
        dx = _cs(dg1[3], d, 3)
        key = _key(dx[0])
        if not key or key in seen:
            continue
        seen.add(key)
        prio = dg1[15].strip()
        ranks.append(int(prio) if prio.isascii() and prio.isdigit() and 0 < len(prio) < 7 and int(prio) > 0
                     else 1_000_000)
        found.append(Diagnosis(code=dx[0], system=dx[2] or _v(dg1[2], d)))
    if ranks != sorted(ranks):  # sorted() is stable: equal ranks keep message order
        order = sorted(range(len(found)), key=ranks.__getitem__)
        found = [found[i] for i in order]
    return found


def _unit_charge(extended: str, units: str) -> str:
    """No FT1-12 unit amount: FT1-11 extended amount divided by FT1-10 quantity.

    Both are read through the model's checked reader first, so a hostile value (NaN,
    1e999999999) never reaches arithmetic; it is left raw for ``standardize()`` to refuse."""
    if not extended:
        return ""
    try:
        qty = read_decimal(units, limit=MAX_UNITS, places=UNITS_PLACES)
        total = read_decimal(extended.replace(",", "").replace("$", ""), limit=MAX_MONEY, places=MONEY_PLACES)
    except BadValue:
        return extended
    if not qty:
        return extended
    per = (total / qty).quantize(Decimal("0.0001")).normalize()
    return format(per.quantize(Decimal(1)) if per == per.to_integral() else per, "f")


def _coverage(in1: list[str], d: _D) -> Coverage:
    rel = _v(in1[17], d)
    return Coverage(
        payer_name=_v(in1[4], d) or _cs(in1[2], d, 2)[1],
        payer_id=_v(in1[3], d),
        member_id=_v(in1[36], d) or _v(in1[49], d),
        group=_v(in1[8], d),
        relationship=_RELATIONSHIP.get(rel.upper(), "other") if rel else "",
        start=_v(in1[12], d)[:8],  # IN1-12 plan effective date (DT; standardize() makes it ISO)
        end=_v(in1[13], d)[:8],  # IN1-13 plan expiration date
    )


def _siu(by: dict[str, list[list[str]]], d: _D, label: str, system: str, control_id: str,
         options: Mapping[str, Any]) -> Encounter:
    """SIU^S12 -> an expected encounter: who is coming, when, to see whom. No charges yet."""
    sch = _one(by, "SCH", label)
    pid = _one(by, "PID", label)
    pv1 = by["PV1"][0] if "PV1" in by else [""] * _WIDTH["PV1"]
    # Start: AIS-4 (service), TQ1-7 (v2.5+), SCH-11.4 (deprecated TQ), then AIG/AIL/AIP-6.
    starts = [_v(s[4], d) for s in by.get("AIS", ())]
    starts += [_v(s[7], d) for s in by.get("TQ1", ())]
    starts.append(_cs(sch[11], d, 4)[3])
    starts += [_v(s[6], d) for sid in ("AIG", "AIL", "AIP") for s in by.get(sid, ())]
    # AIG holds equipment and other general resources (the corpus books a colonoscope
    # there), so only AIP personnel and the PV1 attending can be the rendering provider.
    people = [s[3] for s in by.get("AIP", ())] + [pv1[7]]
    return Encounter(
        source=NAME, source_id=_v(sch[1], d) or _v(sch[2], d) or control_id,
        source_system=system, kind="expected", patient=_patient(pid, d),
        coverages=[_coverage(in1, d) for in1 in by.get("IN1", ())],  # not in SIU_S12; EHRs add it (eligibility)
        rendering=_pick_provider(people, d, options), dos_start=next((s for s in starts if s), ""),
        place_of_service=_POS_BY_CLASS.get(_v(pv1[2], d).upper(), ""),
    )
