"""Shared reading of ``Encounter.evidence`` for the parsers: what the source documented besides
the charges (orders, results, the visit's length), which ``doc.missing`` checks charges against.

One set of conventions for every format, the ones the HL7 v2 parser set: codes kept as sent (cut
to 32 characters), the system as a short name (cut to 16), deduplicated, at most
:data:`MAX_EVIDENCE` orders/results per encounter, and a visit length only when start and end
both carry a time of day on the same day (0 < minutes <= 24 h). Values come from outside: a
non-string code or a malformed time gives no evidence, never an exception.
"""

from __future__ import annotations

import re
from datetime import datetime

from core.model import Evidence

# Distinct orders/results kept per encounter, in every format (HL7 v2, FHIR, C-CDA).
MAX_EVIDENCE = 200
MAX_CODE = 32
MAX_SYSTEM = 16
DAY_MINUTES = 24 * 60

# Coding systems by FHIR URI or HL7 OID -> the short name evidence keeps.
SHORT_SYSTEMS: dict[str, str] = {
    "http://www.ama-assn.org/go/cpt": "CPT", "urn:oid:2.16.840.1.113883.6.12": "CPT", "2.16.840.1.113883.6.12": "CPT",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "HCPCS", "http://terminology.hl7.org/CodeSystem/HCPCS":
    "HCPCS", "urn:oid:2.16.840.1.113883.6.285": "HCPCS", "2.16.840.1.113883.6.285": "HCPCS",
    "urn:oid:2.16.840.1.113883.6.14": "HCPCS", "2.16.840.1.113883.6.14": "HCPCS",
    "http://loinc.org": "LN", "urn:oid:2.16.840.1.113883.6.1": "LN", "2.16.840.1.113883.6.1": "LN",
    "http://snomed.info/sct": "SCT", "urn:oid:2.16.840.1.113883.6.96": "SCT", "2.16.840.1.113883.6.96": "SCT",
}


def short_system(system: object) -> str:
    """A coding system URI / OID -> CPT, HCPCS, LN, SCT, else the text cut to 16 characters."""
    if not isinstance(system, str):
        return ""
    system = system.strip()
    return SHORT_SYSTEMS.get(system, system[:MAX_SYSTEM])


class Collector:
    """Evidence for one encounter: deduplicated orders/results under the budget, then the time."""

    def __init__(self) -> None:
        self.items: list[Evidence] = []
        self._seen: set[tuple[str, str, str]] = set()

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_EVIDENCE

    def add(self, kind: str, code: object, system: object) -> None:
        """An order or result; a code that is not a non-empty string is left out."""
        if self.full or not isinstance(code, str):
            return
        key = (kind, code.strip()[:MAX_CODE], short_system(system))
        if key[1] and key not in self._seen:
            self._seen.add(key)
            self.items.append(Evidence(kind, key[1], key[2]))

    def done(self, minutes: int) -> list[Evidence]:
        """The orders/results found, and the visit's length when there is one."""
        out = list(self.items)
        if 0 < minutes <= DAY_MINUTES:
            out.append(Evidence("time", minutes=minutes))
        return out


def iso_minutes(start: object, end: object) -> int:
    """Minutes between two FHIR dateTimes that both carry a time of day on the same calendar day
    (as written); 0 for dates only, other days, end not after start, or anything malformed."""
    a, b = _iso(start), _iso(end)
    if a is None or b is None or a.date() != b.date() or (a.tzinfo is None) != (b.tzinfo is None):
        return 0
    minutes = int((b - a).total_seconds() // 60)
    return minutes if 0 < minutes <= DAY_MINUTES else 0


_ISO_WITH_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?", re.ASCII)


def _iso(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40 or not _ISO_WITH_TIME.fullmatch(value):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:  # fromisoformat takes 3 or 6 fraction digits only; seconds are enough here
        head, _, tail = text.partition(".")
        text = head + tail.lstrip("0123456789")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


_HL7_TS = re.compile(r"(\d{8})(\d{4})(?:\d{2}(?:\.\d{1,4})?)?([+-]\d{4})?", re.ASCII)


def hl7_minutes(start: object, end: object) -> int:
    """Minutes between two HL7 v3/v2 timestamps (``YYYYMMDDHHMM[SS[.S]][+/-ZZZZ]``) with a time of
    day on the same day and the same UTC offset; 0 otherwise (dates only, malformed, other days)."""
    if not isinstance(start, str) or not isinstance(end, str) or len(start) > 40 or len(end) > 40:
        return 0
    a, b = _HL7_TS.fullmatch(start.strip()), _HL7_TS.fullmatch(end.strip())
    if a is None or b is None or a.group(1) != b.group(1) or a.group(3) != b.group(3):
        return 0
    ta, tb = a.group(2), b.group(2)
    x, y = int(ta[:2]) * 60 + int(ta[2:]), int(tb[:2]) * 60 + int(tb[2:])
    if x >= DAY_MINUTES or y >= DAY_MINUTES or int(ta[2:]) > 59 or int(tb[2:]) > 59:
        return 0
    return y - x if 0 < y - x <= DAY_MINUTES else 0
