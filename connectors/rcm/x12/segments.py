"""A small, strict X12 tokenizer for the files a clearinghouse sends back (999, 277CA, 835).

X12 carries its own delimiters in the fixed-width ISA header: the element separator is the
byte after ``ISA``, the component separator is ISA16, the segment terminator is the byte after
ISA16, and (from 5010 on) ISA11 is the repetition separator. Everything after the ISA is split
with those; line breaks after a terminator (``~\\n``, common in files people open in an editor)
are ignored.

Everything that comes from outside has a budget (bytes, segments, elements per segment, element
length) and every error says what is wrong and what to do, never what the file holds: a 277CA or
835 names patients, so an error quotes segment ids and positions, not values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from core.errors import ChargeBridgeError

__all__ = ["Budget", "Delimiters", "Interchange", "X12FormatError", "tokenize"]

# ISA01..ISA16 widths (ISA is 106 characters including the segment terminator)
ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1)
ISA_LENGTH = 106


class X12FormatError(ChargeBridgeError):
    """The file is not a well-formed X12 interchange (or not one we read)."""


@dataclass(frozen=True)
class Budget:
    """Limits on one file. A 10,000-claim 835 is about 4 MB and 150,000 segments."""

    max_bytes: int = 64 * 1024 * 1024
    max_segments: int = 2_000_000
    max_elements: int = 64  # per segment (CLP has 14, SVC 7, ISA 16)
    max_element_chars: int = 4096  # X12 elements are short; a bigger one means a wrong delimiter


DEFAULT_BUDGET = Budget()


@dataclass(frozen=True)
class Delimiters:
    element: str
    component: str
    segment: str
    repetition: str = ""  # "" for 4010 files (ISA11 was a code then)


@dataclass
class Interchange:
    """One ISA…IEA envelope: the ISA elements, the segments between ISA and IEA (each a list of
    elements, the segment id first) and what the envelope checks noticed but could live with."""

    isa: list[str]
    delimiters: Delimiters
    segments: list[list[str]]
    warnings: list[str] = field(default_factory=list)

    @property
    def sender(self) -> str:
        return self.isa[6].strip()

    @property
    def receiver(self) -> str:
        return self.isa[8].strip()

    @property
    def control(self) -> str:
        return self.isa[13]

    @property
    def version(self) -> str:
        return self.isa[12]

    @property
    def usage(self) -> str:
        return self.isa[15]


def _fail(title: str, fix: str = "ask the clearinghouse to send the file again") -> X12FormatError:
    return X12FormatError(title, fix)


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # X12's extended character set is single-byte


def _read_isa(text: str, at: int) -> tuple[list[str], Delimiters, int]:
    """The ISA's elements, the delimiters, and where the next segment starts."""
    head = text[at:at + ISA_LENGTH + 64]
    if len(head) < ISA_LENGTH:
        raise _fail("the file ends inside its ISA header (shorter than 106 characters)")
    sep = head[3]
    if sep.isalnum() or sep.isspace():
        raise _fail("the ISA header has no usable element separator after 'ISA'")
    parts = head.split(sep, 16)
    if len(parts) != 17 or parts[0] != "ISA" or len(parts[16]) < 2:
        raise _fail("the ISA header does not have 16 elements")
    component, terminator = parts[16][0], parts[16][1]
    parts[16] = component
    for i, (value, width) in enumerate(zip(parts[1:], ISA_WIDTHS, strict=True), start=1):
        if len(value) != width:
            raise _fail(f"ISA{i:02d} is {len(value)} characters wide, not {width}")
    if terminator.isalnum() or terminator in (sep, component):
        raise _fail("the segment terminator after ISA16 is missing or clashes with another delimiter")
    repetition = parts[11] if parts[12] >= "00501" and not parts[11].isalnum() else ""
    if repetition in (sep, component, terminator):
        repetition = ""
    if not parts[13].isdigit():
        raise _fail("ISA13 (interchange control number) is not 9 digits")
    return parts, Delimiters(element=sep, component=component, segment=terminator, repetition=repetition), \
        at + ISA_LENGTH


def tokenize(data: bytes | str, *, budget: Budget = DEFAULT_BUDGET) -> list[Interchange]:
    """Every interchange in ``data`` (usually one). Raises :class:`X12FormatError`."""
    return list(iter_interchanges(data, budget=budget))


def iter_interchanges(data: bytes | str, *, budget: Budget = DEFAULT_BUDGET) -> Iterator[Interchange]:
    size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
    if size > budget.max_bytes:
        raise _fail(f"the file is {size:,} bytes, more than the {budget.max_bytes:,} allowed",
                    "ask the clearinghouse for smaller files (or raise the limit)")
    text = _text(data)
    at = len(text) - len(text.lstrip("\ufeff \t\r\n"))
    if not text.startswith("ISA", at):
        raise _fail("this is not an X12 file: it does not start with an ISA segment",
                    "import only 999, 277CA and 835 files from the clearinghouse")
    total = 0
    while True:
        isa, d, body_start = _read_isa(text, at)
        segments: list[list[str]] = []
        warnings: list[str] = []
        pos = body_start
        end_found = False
        while True:
            nxt = text.find(d.segment, pos)
            raw = text[pos:] if nxt < 0 else text[pos:nxt]
            pos = len(text) if nxt < 0 else nxt + 1
            raw = raw.strip("\r\n\t ")
            if raw:
                total += 1
                if total > budget.max_segments:
                    raise _fail(f"the file has more than {budget.max_segments:,} segments",
                                "ask the clearinghouse for smaller files")
                elems = raw.split(d.element)
                if len(elems) > budget.max_elements + 1:
                    raise _fail(f"segment {len(segments) + 2} ({elems[0][:3]!s}) has {len(elems) - 1} elements, "
                                f"more than {budget.max_elements}")
                if len(raw) > budget.max_element_chars and max(map(len, elems)) > budget.max_element_chars:
                    raise _fail(f"segment {len(segments) + 2} ({elems[0][:3]}) has an element longer than "
                                    f"{budget.max_element_chars} characters (a wrong delimiter?)")
                sid = elems[0]
                if not (2 <= len(sid) <= 3 and sid.isalnum() and (sid.isupper() or sid.isdigit())):
                    raise _fail(f"segment {len(segments) + 2} has no valid segment id")
                if sid == "ISA":
                    raise _fail("an ISA segment starts before the previous interchange's IEA",
                                "the file is truncated or two files were joined; ask for it again")
                if sid == "IEA":
                    if len(elems) > 2 and elems[2] != isa[13]:
                        warnings.append("IEA02 does not repeat ISA13 (interchange control number)")
                    end_found = True
                    break
                segments.append(elems)
            if nxt < 0:
                break
        if not end_found:
            raise _fail("the file ends before its IEA segment (truncated?)",
                        "ask the clearinghouse to send the file again")
        warnings += _check_envelopes(segments)
        yield Interchange(isa=isa, delimiters=d, segments=segments, warnings=warnings)
        rest = text[pos:].lstrip("\ufeff \t\r\n")
        if not rest:
            return
        if not rest.startswith("ISA"):
            raise _fail("there is data after the IEA segment that is not another interchange")
        at = len(text) - len(rest)


def _check_envelopes(segments: list[list[str]]) -> list[str]:
    """GS/GE and ST/SE must pair up (an unpaired one means a truncated or spliced file: an error);
    counts and control numbers that disagree are kept as warnings."""
    warnings: list[str] = []
    gs: list[str] | None = None
    st: list[str] | None = None
    st_index = 0
    groups = sets = 0
    for i, seg in enumerate(segments):
        sid = seg[0]
        if sid == "GS":
            if gs is not None:
                raise _fail(f"a GS segment (position {i + 2}) starts before the previous group's GE")
            gs, sets = seg, 0
        elif sid == "GE":
            if st is not None:
                raise _fail(f"a transaction set has no SE segment before the GE (position {i + 2})")
            if gs is None:
                raise _fail(f"a GE segment (position {i + 2}) closes no open functional group")
            if len(seg) > 2 and len(gs) > 6 and seg[2] != gs[6]:
                warnings.append("a GE02 does not repeat its GS06 (group control number)")
            if len(seg) > 1 and seg[1] != str(sets):
                warnings.append(f"a GE01 says {seg[1]} transaction sets, the group has {sets}")
            gs = None
            groups += 1
        elif sid == "ST":
            if gs is None or st is not None:
                raise _fail(f"an ST segment (position {i + 2}) is outside a functional group or inside another set")
            st, st_index = seg, i
        elif sid == "SE":
            if st is None:
                raise _fail(f"an SE segment (position {i + 2}) closes no transaction set")
            count = i - st_index + 1
            if len(seg) > 1 and seg[1] != str(count):
                warnings.append(f"an SE01 says {seg[1]} segments, the transaction set has {count}")
            if len(seg) > 2 and len(st) > 2 and seg[2] != st[2]:
                warnings.append("an SE02 does not repeat its ST02 (transaction set control number)")
            st = None
            sets += 1
    if st is not None:
        raise _fail("a transaction set has no SE segment (truncated file?)")
    if gs is not None:
        raise _fail("a functional group has no GE segment (truncated file?)")
    if groups == 0:
        raise _fail("the interchange holds no functional group (GS…GE)")
    return warnings


def components(value: str, d: Delimiters) -> list[str]:
    """A composite element's components (``HC:99213:25`` -> ``["HC", "99213", "25"]``)."""
    return value.split(d.component)


def element(seg: list[str], i: int) -> str:
    """Element ``i`` (1-based, as X12 counts) or "" when the segment is shorter."""
    return seg[i] if i < len(seg) else ""
