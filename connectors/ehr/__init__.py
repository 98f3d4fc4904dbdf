"""EHR formats. Adding one = a module with ``NAME`` + ``parse()`` and a line in ``FORMATS``."""

from __future__ import annotations

import importlib
from types import ModuleType

from connectors.ehr.base import ParseError

FORMATS: dict[str, str] = {
    "hl7v2": "connectors.ehr.hl7v2",
    "csv": "connectors.ehr.csvfmt",
    "fhir": "connectors.ehr.fhir",
    "ccda": "connectors.ehr.ccda",
}

_EXT = {
    ".hl7": "hl7v2", ".hl7v2": "hl7v2", ".txt": "", ".dat": "",
    ".csv": "csv", ".tsv": "csv", ".zip": "csv",
    ".json": "fhir", ".ndjson": "fhir",
    ".xml": "ccda", ".ccda": "ccda", ".cda": "ccda",
}


def get_parser(fmt: str) -> ModuleType:
    if fmt not in FORMATS:
        raise ParseError(f"unknown format '{fmt}'; known formats: {', '.join(sorted(FORMATS))}")
    return importlib.import_module(FORMATS[fmt])


def detect_format(name: str, head: bytes) -> str:
    """Guess the format from the file name, then from the first bytes; "" if unknown."""
    lower = name.lower()
    for ext, fmt in _EXT.items():
        if lower.endswith(ext) and fmt:
            return fmt
    h = head.lstrip(b"\xef\xbb\xbf\x0b \t\r\n")
    if h.startswith(b"MSH") or h.startswith(b"FHS") or h.startswith(b"BHS"):
        return "hl7v2"
    if h.startswith(b"{") or h.startswith(b"["):
        return "fhir"
    if h.startswith(b"<"):
        return "ccda"
    if h.startswith(b"PK\x03\x04"):
        return "csv"
    if b"," in h.split(b"\n", 1)[0] or b";" in h.split(b"\n", 1)[0]:
        return "csv"
    return ""
